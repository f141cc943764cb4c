"""Turn raw UCI Census-Income (KDD) files into PaddleRec's MMoE/PLE census CSV.

Each output line is ``marital,income,f1,...,fN`` (no header): the two labels,
then the 11 numeric columns (in column order), then the one-hot encoding of the
29 categorical columns (in column order, categories sorted as
``pandas.get_dummies`` sorts them: numerically when every category is a number;
``?`` is a category of its own). This follows PaddleRec's
``datasets/census/data_preparation.py`` with these deliberate differences:

* categories are fitted on the train file only (PaddleRec fits each file on its
  own and patches the one known gap); a test category unseen in train is encoded
  as all zeros for its column and counted on stderr. The full UCI data gives
  499 features, PaddleRec's ``feature_size``;
* numeric columns are standardised with the train mean/std (std 0 -> 1), saved in
  ``meta.json`` so serving data gets the same transform (raw magnitudes such as
  instance_weight ~ 1,700 make multi-task training unstable); ``--no-standardize``
  writes PaddleRec's raw values;
* the whole test file is written (PaddleRec keeps a random half of it).

Labels: ``marital`` = 1 if marital_stat is "Never married" (marital_stat is not a
feature), ``income`` = 1 if the class is "50000+.".

Usage::

    python datasets/census/preprocess.py --train census-income.data \\
        --test census-income.test --output datasets/census/data
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from recstack.fileio import atomic_open

logger = logging.getLogger(__name__)

COLUMNS = (
    "age", "class_worker", "det_ind_code", "det_occ_code", "education", "wage_per_hour",
    "hs_college", "marital_stat", "major_ind_code", "major_occ_code", "race", "hisp_origin",
    "sex", "union_member", "unemp_reason", "full_or_part_emp", "capital_gains",
    "capital_losses", "stock_dividends", "tax_filer_stat", "region_prev_res",
    "state_prev_res", "det_hh_fam_stat", "det_hh_summ", "instance_weight", "mig_chg_msa",
    "mig_chg_reg", "mig_move_reg", "mig_same", "mig_prev_sunbelt", "num_emp", "fam_under_18",
    "country_father", "country_mother", "country_self", "citizenship", "own_or_self",
    "vet_question", "vet_benefits", "weeks_worked", "year", "income_50k",
)  # fmt: skip
CATEGORICAL = (
    "class_worker", "det_ind_code", "det_occ_code", "education", "hs_college",
    "major_ind_code", "major_occ_code", "race", "hisp_origin", "sex", "union_member",
    "unemp_reason", "full_or_part_emp", "tax_filer_stat", "region_prev_res", "state_prev_res",
    "det_hh_fam_stat", "det_hh_summ", "mig_chg_msa", "mig_chg_reg", "mig_move_reg", "mig_same",
    "mig_prev_sunbelt", "fam_under_18", "country_father", "country_mother", "country_self",
    "citizenship", "vet_question",
)  # fmt: skip
LABELS = ("marital_stat", "income_50k")
NUMERIC = tuple(c for c in COLUMNS if c not in CATEGORICAL and c not in LABELS)
SEPARATOR = ", "
_INDEX = {name: i for i, name in enumerate(COLUMNS)}


class InputError(ValueError):
    """A malformed input line; the message names the file and the line."""


def read_records(path: Path) -> Iterator[tuple[int, list[str], list[float]]]:
    """Yield ``(line_no, fields, numeric_values)`` for each non-empty line of a raw file.

    Raises:
        InputError: wrong number of columns, a non-numeric value in a numeric column,
            or bytes that are not UTF-8.
    """
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise InputError(f"{path} line {line_no}: not valid UTF-8 text") from None
            if not line.strip():
                continue
            fields = line.split(SEPARATOR)
            if len(fields) != len(COLUMNS):
                raise InputError(
                    f"{path} line {line_no}: expected {len(COLUMNS)} columns separated by "
                    f"{SEPARATOR!r}, got {len(fields)}"
                )
            values = []
            for name in NUMERIC:
                text = fields[_INDEX[name]]
                try:
                    values.append(float(text))
                except ValueError:
                    raise InputError(
                        f"{path} line {line_no}: column {_INDEX[name] + 1} ({name}): "
                        f"expected a number, got {text!r}"
                    ) from None
            yield line_no, fields, values


def labels_of(fields: list[str]) -> tuple[int, int]:
    """``(marital, income)`` labels of one raw record."""
    marital = int(fields[_INDEX["marital_stat"]] == "Never married")
    income = int(fields[_INDEX["income_50k"]].strip() == "50000+.")
    return marital, income


def sort_categories(values: set[str]) -> list[str]:
    """Sort like ``pandas.get_dummies``: numerically if every value is a number, else as text."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def fit(path: Path) -> dict:
    """First pass over the train file: categories per column and numeric mean/std."""
    seen: dict[str, set[str]] = {name: set() for name in CATEGORICAL}
    chunks: list[np.ndarray] = []
    rows: list[list[float]] = []
    for _, fields, values in read_records(path):
        for name in CATEGORICAL:
            seen[name].add(fields[_INDEX[name]])
        rows.append(values)
        if len(rows) == 10_000:  # keep memory low: float64 blocks, not Python floats
            chunks.append(np.asarray(rows, dtype=np.float64))
            rows = []
    chunks.append(np.asarray(rows, dtype=np.float64).reshape(-1, len(NUMERIC)))
    matrix = np.concatenate(chunks)
    if not len(matrix):
        raise InputError(f"{path}: no records")
    std = matrix.std(axis=0)
    return {
        "categories": {name: sort_categories(seen[name]) for name in CATEGORICAL},
        "mean": matrix.mean(axis=0),
        "std": np.where(std > 0, std, 1.0),
    }


class Encoder:
    """Encodes raw records into output lines with statistics fitted on the train file.

    Args:
        stats: the result of :func:`fit`.
        standardize: standardise numeric columns (else write raw values).
    """

    def __init__(self, stats: dict, standardize: bool) -> None:
        self.categories: dict[str, list[str]] = stats["categories"]
        self.mean = stats["mean"].tolist() if standardize else [0.0] * len(NUMERIC)
        self.std = stats["std"].tolist() if standardize else [1.0] * len(NUMERIC)
        self.number_format = ".6g" if standardize else ".10g"
        # One pre-built ",0,1,0" text per (column, category); "" key = unseen (all zeros).
        self.blocks: list[dict[str, str]] = []
        for name in CATEGORICAL:
            cats = self.categories[name]
            block = {c: "," + ",".join("1" if j == i else "0" for j in range(len(cats)))
                     for i, c in enumerate(cats)}  # fmt: skip
            self.blocks.append(block)
        self.unseen_text = ["," + ",".join("0" * len(self.categories[n])) for n in CATEGORICAL]
        self.feature_names = list(NUMERIC) + [
            f"{name}_{c}" for name in CATEGORICAL for c in self.categories[name]
        ]

    def encode_file(self, path: Path, out_path: Path) -> dict:
        """Encode every record of ``path`` into ``out_path`` (atomically); return counts."""
        unseen: Counter[str] = Counter()
        rows = positives_marital = positives_income = 0
        with atomic_open(out_path) as out:
            for _, fields, values in read_records(path):
                marital, income = labels_of(fields)
                parts = [f"{marital},{income}"]
                parts.extend(
                    "," + format((v - m) / s, self.number_format)
                    for v, m, s in zip(values, self.mean, self.std)
                )
                for k, name in enumerate(CATEGORICAL):
                    text = self.blocks[k].get(fields[_INDEX[name]])
                    if text is None:
                        unseen[name] += 1
                        text = self.unseen_text[k]
                    parts.append(text)
                out.write("".join(parts) + "\n")
                rows += 1
                positives_marital += marital
                positives_income += income
        return {
            "rows": rows,
            "label_rates": {
                "marital": positives_marital / rows if rows else 0.0,
                "income": positives_income / rows if rows else 0.0,
            },
            "unseen": dict(unseen),
        }


def preprocess(train: Path, test: Path, output: Path, standardize: bool = True) -> dict:
    """Fit on ``train``, write ``output/{train/train_data.txt,test/test_data.txt,meta.json}``.

    Returns:
        The metadata written to ``meta.json``.

    Raises:
        InputError: a malformed line in either file.
    """
    stats = fit(train)
    encoder = Encoder(stats, standardize)
    train_info = encoder.encode_file(train, output / "train" / "train_data.txt")
    test_info = encoder.encode_file(test, output / "test" / "test_data.txt")
    if test_info["unseen"]:
        logger.warning(
            "test: %d categorical value(s) unseen in train, encoded as all zeros: %s",
            sum(test_info["unseen"].values()),
            ", ".join(f"{k}={v}" for k, v in sorted(test_info["unseen"].items())),
        )
    meta = {
        "label_columns": ["marital", "income"],
        "num_features": len(encoder.feature_names),
        "feature_names": encoder.feature_names,
        "numeric_columns": list(NUMERIC),
        "categorical_columns": list(CATEGORICAL),
        "categories": encoder.categories,
        "standardized": standardize,
        "numeric_mean": dict(zip(NUMERIC, stats["mean"].tolist())),
        "numeric_std": dict(zip(NUMERIC, stats["std"].tolist())),
        "rows": {"train": train_info["rows"], "test": test_info["rows"]},
        "label_rates": {"train": train_info["label_rates"], "test": test_info["label_rates"]},
        "unseen_test_categories": test_info["unseen"],
        "sources": {"train": str(train), "test": str(test)},
    }
    with atomic_open(output / "meta.json") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True, help="raw census-income.data")
    parser.add_argument("--test", type=Path, required=True, help="raw census-income.test")
    parser.add_argument("--output", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--no-standardize", action="store_true", help="write raw numeric values (PaddleRec's)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        meta = preprocess(args.train, args.test, args.output, not args.no_standardize)
    except (InputError, OSError, UnicodeDecodeError) as err:
        print(f"{sys.argv[0]}: error: {err}", file=sys.stderr)
        return 1
    logger.info(
        "wrote %s: %d features, %d train rows, %d test rows",
        args.output, meta["num_features"], meta["rows"]["train"], meta["rows"]["test"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
