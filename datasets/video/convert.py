"""Turn census-format data into PaddleRec's short-video multi-task data (tasks like, completion).

PaddleRec's multi-task tutorial ("基于PaddleRec打造多任务视频推荐方案", Share-Bottom vs
MMoE vs PLE) builds its short-video dataset from the census data: the same lines, the
first label read as video completion (完播, census ``marital``) and the second as like
(点赞, census ``income``); its metrics are ``auc_like`` and ``auc_completion``.

The labels are **named, not reordered**: every line is copied unchanged, so a line is
``completion,like,f1,...,fN`` exactly as in PaddleRec's video files, and the models read
it with the core census reader and ``hyper_parameters.task_names: [like, completion]``
(the tasks in output order; the file holds them in reverse, like census's
``marital,income`` for tasks income, marital). The new names are recorded in
``meta.json``. Lines are checked on the way (same number of columns everywhere, labels
0 or 1); blank lines are dropped.

Usage::

    python datasets/video/convert.py --input datasets/census/data --output datasets/video/data

``--input`` holds ``train/`` and ``test/`` (every non-hidden file of each is converted,
keeping its name) and, when it comes from ``datasets/census/preprocess.py``, a
``meta.json`` whose feature description is carried over.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recstack.fileio import atomic_open

SPLITS = ("train", "test")
#: census label column -> short-video name, in file order
RENAMED = {"marital": "completion", "income": "like"}
LABEL_COLUMNS = list(RENAMED.values())  # completion, like (file order)
TASK_NAMES = LABEL_COLUMNS[::-1]  # like, completion (the models' output order, hyper_parameters.task_names)


class InputError(ValueError):
    """A malformed input; the message names the file and the line."""


def convert_file(source: Path, target: Path, width: int | None) -> tuple[int, list[int], int]:
    """Copy the non-blank lines of ``source`` to ``target`` (atomically), checking each.

    Args:
        source: a census-format file.
        target: the file to write.
        width: the expected number of columns (``None``: the first line's).

    Returns:
        ``(rows, positives per label column, width)``.

    Raises:
        InputError: a line with another number of columns, fewer than 3, or a label not 0/1.
    """
    rows, positives = 0, [0, 0]
    with open(source, "rb") as f, atomic_open(target) as out:
        for line_no, raw in enumerate(f, start=1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                text = line.decode("ascii")
            except UnicodeDecodeError:
                raise InputError(f"{source} line {line_no}: not ASCII text") from None
            fields = text.split(",")
            if width is None:
                if len(fields) < 3:
                    raise InputError(f"{source} line {line_no}: expected 2 labels and features, got {len(fields)} "
                                     "column(s)")
                width = len(fields)
            elif len(fields) != width:
                raise InputError(f"{source} line {line_no}: expected {width} comma-separated columns, "
                                 f"got {len(fields)}")
            for k, name in enumerate(RENAMED):
                if fields[k] not in ("0", "1"):
                    raise InputError(f"{source} line {line_no}: column {k + 1} ({name}, here "
                                     f"{LABEL_COLUMNS[k]}) must be 0 or 1, got {fields[k]!r}")
                positives[k] += fields[k] == "1"
            out.write(text + "\n")
            rows += 1
    if rows == 0:
        raise InputError(f"{source}: no data lines")
    return rows, positives, width


def convert(input_dir: Path, output_dir: Path) -> dict:
    """Convert ``input_dir/{train,test}/*`` into ``output_dir`` and write ``output_dir/meta.json``.

    Returns:
        The metadata written.

    Raises:
        InputError: a missing split folder, a census meta.json with other labels, a malformed line.
    """
    census_meta = None
    if (input_dir / "meta.json").is_file():
        census_meta = json.loads((input_dir / "meta.json").read_text())
        if census_meta.get("label_columns") != list(RENAMED):
            raise InputError(f"{input_dir / 'meta.json'}: label_columns is {census_meta.get('label_columns')!r}, "
                             f"expected {list(RENAMED)!r} (datasets/census/preprocess.py's output)")
    width = None
    meta: dict = {
        "label_columns": LABEL_COLUMNS,
        "task_names": TASK_NAMES,
        "renamed_from": {new: old for old, new in RENAMED.items()},
        "files": {}, "rows": {}, "label_rates": {},
    }  # fmt: skip
    for split in SPLITS:
        folder = input_dir / split
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) \
            if folder.is_dir() else []
        if not files:
            raise InputError(f"{folder}: expected a folder of census-format files")
        rows, positives = 0, [0, 0]
        for path in files:
            n, pos, width = convert_file(path, output_dir / split / path.name, width)
            rows += n
            positives = [a + b for a, b in zip(positives, pos)]
        meta["files"][split] = [p.name for p in files]
        meta["rows"][split] = rows
        meta["label_rates"][split] = {name: p / rows for name, p in zip(LABEL_COLUMNS, positives)}
    meta["num_features"] = width - 2
    meta["source"] = str(input_dir)
    if census_meta is not None:
        meta["census_meta"] = {k: v for k, v in census_meta.items() if k not in ("label_columns", "label_rates")}
    with atomic_open(output_dir / "meta.json") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True, help="census-format folder with train/ and test/")
    parser.add_argument("--output", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    try:
        meta = convert(args.input, args.output)
    except (InputError, OSError, ValueError) as err:
        print(f"{sys.argv[0]}: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: tasks {', '.join(TASK_NAMES)} (label columns {', '.join(LABEL_COLUMNS)}), "
          f"{meta['num_features']} features, {meta['rows']['train']} train rows, {meta['rows']['test']} test rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
