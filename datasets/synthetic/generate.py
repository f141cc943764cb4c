"""Seeded synthetic data with a planted, learnable signal, in PaddleRec's formats.

Used for the models' bundled sample data, for tests and for benchmarks::

    python datasets/synthetic/generate.py criteo --rows 200000 --seed 1 --output /tmp/train.txt
    python datasets/synthetic/generate.py census --rows 2000 --seed 1 --output data/train

* ``criteo``: Criteo slot format, exactly like ``datasets/criteo/preprocess.py`` writes it
  (``click:<0/1>``, 13 ``dense_feature:<v>`` in [0, 1], ``1:<id>`` .. ``26:<id>``).
  With ``--layout tsv``: the same rows in Criteo's raw TSV layout (``label \t I1..I13 \t C1..C26``,
  dense values as above, categorical values as raw 8-hex-digit strings, empty when missing), as
  EasyRec's Criteo configs read it. With ``--layout libsvm``: the same rows as libSVM / libFM lines
  (``<-1/1> <id>:<value> x 39``, see :class:`CriteoLibSVMWorld`), as the NFM / AFM papers' CTR sets ship.
* ``census``: PaddleRec's census CSV (``marital,income`` + 11 standardised numeric
  columns + 488 one-hot columns of 29 categorical columns = 501 columns).
* ``aliccp``: PaddleRec's Ali-CCP (ESMM) CSV (``<id>,<click>,<conversion>,<field>:<id>,...``,
  the 23 fields of its reader, several multi-valued); ``--emit-proba`` writes ``pCTR,pCVR``.
* ``aitm``: PaddleRec's AITM CSV (a header ``click,purchase,101,...,301``, then the 18 Ali-CCP field ids of
  each exposure; a purchase only after a click); ``--emit-proba`` writes ``pClick,pPurchase-given-click``.
* ``video_play``: EasyRec-style CSV of short-video impressions for DBMTL
  (``is_valid_play,play_time,user_id,city,...``, 17 named fields, see ``VideoPlayWorld``);
  ``play_time`` depends on ``is_valid_play``; ``--emit-proba`` writes p(is_valid_play).
* ``e2e_mm``: grouped short-video impressions with item images for E2E_MM_DBMTL (EasyRec's
  GroupRTPInput: one line per item visit, ``--rows`` visits, ``--mean-group-size``,
  ``--ungrouped`` for the same samples one per line; 64x64 PNGs in ``--image-dir``;
  see ``E2EMMWorld``).
* ``ctr_csv``: EasyRec-style CSV of ad impressions for the rank models' feature configs
  (``click,user_id,item_id,category,...``, 13 named fields, see ``CtrCsvWorld``): hashed string
  ids, integer ids, raw and bucketised numbers, planted pairwise interactions.
* ``amazon``: PaddleRec's DIN format (Amazon Electronics) with a user id field,
  ``hist_items;hist_cats;target_item;target_cat;label;user_id`` (see ``AmazonWorld``).
* ``taobao``: EasyRec's taobao display-ad CSV (``clk,buy,pid,adgroup_id,...,tag_category_list,tag_brand_list,
  price``, 20 named fields, ``|``-separated tag lists; see ``TaobaoWorld``): ``buy`` only after a click, both
  labels reading user x ad features and the tag lists; ``--emit-proba`` writes ``pCTR,pCVR``.
* ``alimama``: PaddleRec's Alimama format for DMR (267 comma-separated numbers: 50-behaviour type, category and
  brand histories, their masks, the user profile, the ad, the price, the pid and the click; see ``AlimamaWorld``).
* ``movielens``: GroupLens's MovieLens-1M files for the retrieval stage, ``ratings.dat``, ``users.dat`` and
  ``movies.dat`` (``::``-separated, latin-1) in the folder ``--output``, about ``--rows`` ratings (see
  ``MovieLensWorld``): planted user interests (preferred genres that follow gender and age), item popularity
  and successor items (a sequential signal). No ``--emit-proba`` (there is no label to give a probability of).

The *world* (vocabularies, true weights, biases) depends only on ``--world-seed``,
so files made with different ``--seed`` share one ground truth (train / test).
Identical arguments give byte-identical files. Rows are generated and written in
fixed-size chunks, so large ``--rows`` need little memory. ``--emit-proba`` writes
the true click probability (criteo) or the ``marital,income`` probabilities
(census) of each row, for computing the Bayes-optimal AUC.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from recstack.data.hashing import CRITEO_HASH_DIM, criteo_hash
from recstack.fileio import atomic_open, atomic_path

CHUNK_ROWS = 100_000  # fixed: the random stream (and so the output) depends on it
CALIBRATION_ROWS = 50_000


# ----------------------------------------------------------------------------- shared helpers
def world_rng(world_seed: int, name: str) -> np.random.Generator:
    """The generator of a world: seeded by ``world_seed`` and the data set's name only."""
    return np.random.default_rng([world_seed, *name.encode("ascii")])


def zipf_cdf(size: int, exponent: float) -> np.ndarray:
    """Cumulative probabilities of the Zipf-like law ``p_i ~ (i + 1) ** -exponent``, i < size."""
    cdf = np.cumsum(np.arange(1, size + 1, dtype=np.float64) ** -exponent)
    return cdf / cdf[-1]


def draw(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """``n`` category indices drawn from the law with cumulative probabilities ``cdf``."""
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def calibrate_bias(logits: np.ndarray, rate: float) -> float:
    """The bias ``b`` with ``mean(sigmoid(logits + b)) == rate`` (bisection)."""
    low, high = -30.0, 30.0
    for _ in range(60):
        mid = (low + high) / 2
        if sigmoid(logits + mid).mean() < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def standardize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and stds (std 0 -> 1) of a ``(rows, columns)`` array."""
    std = values.std(axis=0)
    return values.mean(axis=0), np.where(std > 0, std, 1.0)


def scale_effect(table: np.ndarray, index: np.ndarray | tuple, std: float) -> np.ndarray:
    """Shift and scale ``table`` so that ``table[index]`` has mean 0 and std ``std``.

    ``index`` picks the entries of a calibration sample. Planting each effect with a
    fixed spread keeps a world's Bayes AUC near its target whatever the weights drawn.
    """
    values = table[index]
    return (table - values.mean()) * (std / max(values.std(), 1e-12))


def token_table(texts: list[str]) -> np.ndarray:
    """An object array of strings, indexed with integer arrays to render a column."""
    table = np.empty(len(texts), dtype=object)
    table[:] = texts
    return table


def join_rows(columns: list[list[str]], separator: str) -> str:
    """Text of rows given column-wise: fields joined by ``separator``, one line per row."""
    return "".join(line + "\n" for line in map(separator.join, zip(*columns)))


def format_float(value: float) -> str:
    """12 significant digits, ``.0`` on integers (as datasets/criteo/preprocess.py writes)."""
    text = format(value, ".12g")
    return text if any(c in text for c in ".en") else text + ".0"


class World(Protocol):
    """What :func:`generate` needs from a data set's ground truth."""

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Draw the features of ``n`` rows."""

    def logits(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """True logits, ``(n,)`` or ``(n, tasks)``."""

    def render(self, features: dict[str, np.ndarray], labels: np.ndarray) -> str:
        """The rows as text, one line each, newline-terminated."""


# ----------------------------------------------------------------------------- criteo
# (vocabulary size, Zipf exponent, missing rate) of the 26 slots: tiny, medium and large
# vocabularies; the large ones (10k-100k values) carry no signal.
CRITEO_SLOTS = (
    (1000, 1.1, 0.0), (500, 1.1, 0.0), (100000, 1.05, 0.03), (50000, 1.05, 0.03),
    (200, 1.2, 0.0), (12, 0.8, 0.1), (10000, 1.0, 0.0), (600, 1.1, 0.0), (3, 0.5, 0.0),
    (30000, 1.05, 0.03), (20000, 1.0, 0.0), (80000, 1.05, 0.03), (300, 1.1, 0.0),
    (20, 0.9, 0.0), (40000, 1.0, 0.0), (60000, 1.05, 0.03), (10, 0.7, 0.0),
    (15000, 1.0, 0.0), (800, 1.1, 0.4), (4, 0.5, 0.4), (70000, 1.05, 0.03), (15, 0.8, 0.7),
    (16, 0.9, 0.0), (25000, 1.0, 0.0), (100, 1.0, 0.4), (12000, 1.0, 0.4),
)  # fmt: skip
# Planted signal: 1-based informative slot -> std of its per-value weights' contribution
# to the logit; a pairwise table on two of them; 0-based dense feature -> weight (on the
# standardised value).
CRITEO_INFORMATIVE = {1: 0.45, 2: 0.45, 5: 0.45, 6: 0.55, 8: 0.45, 14: 0.55, 17: 0.55, 23: 0.55}
CRITEO_INTERACTION = (6, 17, 0.5)
CRITEO_DENSE_SIGNAL = {1: 0.5, 4: -0.4, 7: 0.3}
CONT_DIFF = (20, 603, 100, 50, 64000, 500, 100, 50, 500, 10, 10, 10, 50)
CRITEO_RATE = 0.25


class CriteoWorld:
    """Ground truth of the synthetic Criteo data.

    Each slot draws a raw value index from a Zipf-like law over its vocabulary
    (an extra index means "missing", the empty string); a value's raw text is an
    8-hex-digit string (a bijection of its index, unique in its slot) and its id is
    ``criteo_hash(13 + k, text)`` for slot ``k`` (1..26), like a real hashed Criteo id.
    Dense feature ``j`` is ``q / CONT_DIFF[j]``, ``q`` a clipped exponential integer
    (or 0, missing).
    The logit adds per-value weights of the informative slots, a pairwise table of
    two of them and a linear term in three standardised dense features.
    """

    def __init__(self, world_seed: int, hash_dim: int = CRITEO_HASH_DIM) -> None:
        rng = world_rng(world_seed, "criteo")
        self.hash_dim = hash_dim
        self.cdfs = [zipf_cdf(size, a) for size, a, _ in CRITEO_SLOTS]
        self.missing = np.array([m for _, _, m in CRITEO_SLOTS])
        self.offsets = rng.integers(0, 2**32, len(CRITEO_SLOTS))
        self.dense_scale = rng.uniform(0.02, 0.3, len(CONT_DIFF))
        self.dense_missing = rng.uniform(0.0, 0.4, len(CONT_DIFF))
        self.ids = [np.full(size + 1, -1, dtype=np.int64) for size, _, _ in CRITEO_SLOTS]
        self.dense_tables: dict[int, np.ndarray] = {}
        # Normal weights, scaled so each effect has its planted spread on a calibration sample.
        calibration = self.sample(rng, CALIBRATION_ROWS)
        values = calibration["values"]
        self.weights = {
            k: scale_effect(rng.standard_normal(CRITEO_SLOTS[k - 1][0] + 1), values[:, k - 1], std)
            for k, std in CRITEO_INFORMATIVE.items()
        }
        a, b, std = CRITEO_INTERACTION
        pairs = rng.standard_normal((CRITEO_SLOTS[a - 1][0] + 1, CRITEO_SLOTS[b - 1][0] + 1))
        self.pair_weights = scale_effect(pairs, (values[:, a - 1], values[:, b - 1]), std)
        dense = calibration["dense"][:, list(CRITEO_DENSE_SIGNAL)]
        self.dense_mean, self.dense_std = standardize(dense)
        self.bias = 0.0
        self.bias = calibrate_bias(self.logits(calibration), CRITEO_RATE)

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Value indices ``(n, 26)`` and dense grid values ``(n, 13)`` of ``n`` rows."""
        values = np.stack([draw(rng, cdf, n) for cdf in self.cdfs], axis=1)
        missing_index = np.array([size for size, _, _ in CRITEO_SLOTS])
        values = np.where(rng.random(values.shape) < self.missing, missing_index, values)
        diff = np.asarray(CONT_DIFF)
        q = np.minimum(np.floor(rng.exponential(self.dense_scale * diff, (n, len(diff)))), diff)
        q[rng.random(q.shape) < self.dense_missing] = 0
        return {"values": values, "q": q.astype(np.int64), "dense": q / diff}

    def logits(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """True click logits ``(n,)``."""
        values = features["values"]
        z = np.full(len(values), self.bias)
        for k, w in self.weights.items():
            z += w[values[:, k - 1]]
        a, b, _ = CRITEO_INTERACTION
        z += self.pair_weights[values[:, a - 1], values[:, b - 1]]
        dense = (features["dense"][:, list(CRITEO_DENSE_SIGNAL)] - self.dense_mean) / self.dense_std
        return z + dense @ np.array(list(CRITEO_DENSE_SIGNAL.values()))

    def raw_text(self, slot: int, index: int) -> str:
        """Raw Criteo-like text of value ``index`` of 0-based ``slot`` ("" = missing)."""
        if index == CRITEO_SLOTS[slot][0]:
            return ""
        return format((index * 2654435761 + int(self.offsets[slot])) % 2**32, "08x")

    def _slot_tokens(self, slot: int, values: np.ndarray) -> list[str]:
        """``"<slot>:<id>"`` tokens of one slot's column, hashing each raw value once."""
        unique, inverse = np.unique(values, return_inverse=True)
        ids = self.ids[slot]
        for index in unique[ids[unique] < 0].tolist():
            ids[index] = criteo_hash(14 + slot, self.raw_text(slot, index), self.hash_dim)
        tokens = token_table([f"{slot + 1}:{i}" for i in ids[unique].tolist()])
        return tokens[inverse].tolist()

    def _dense_tokens(self, j: int, q: np.ndarray) -> list[str]:
        """``"dense_feature:<q / CONT_DIFF[j]>"`` tokens of dense column ``j``."""
        if j not in self.dense_tables:
            d = CONT_DIFF[j]
            self.dense_tables[j] = token_table(
                [f"dense_feature:{format_float(v / d)}" for v in range(d + 1)]
            )
        return self.dense_tables[j][q].tolist()

    def render(self, features: dict[str, np.ndarray], labels: np.ndarray) -> str:
        """Slot-format lines."""
        columns = [token_table(["click:0", "click:1"])[labels.astype(np.int64)].tolist()]
        columns += [self._dense_tokens(j, features["q"][:, j]) for j in range(len(CONT_DIFF))]
        columns += [self._slot_tokens(k, col) for k, col in enumerate(features["values"].T)]
        return join_rows(columns, " ")


class CriteoTSVWorld(CriteoWorld):
    """The Criteo world in the layout of Criteo's raw TSV (``--layout tsv``; what EasyRec's Criteo configs read).

    ``label \t I1 .. I13 \t C1 .. C26``: the same world and rows as the slot format, the dense values
    as the slot format writes them (in [0, 1]), each categorical value as its raw 8-hex-digit text
    (empty when missing) instead of its hashed id.
    """

    def _raw_tokens(self, slot: int, values: np.ndarray) -> list[str]:
        """Raw texts of one slot's column, each distinct value rendered once."""
        unique, inverse = np.unique(values, return_inverse=True)
        return token_table([self.raw_text(slot, i) for i in unique.tolist()])[inverse].tolist()

    def _dense_values(self, j: int, q: np.ndarray) -> list[str]:
        """Texts ``q / CONT_DIFF[j]`` of dense column ``j`` (the slot format's values without their key)."""
        key = -1 - j  # beside the slot format's tables of dense_feature:<v> tokens
        if key not in self.dense_tables:
            d = CONT_DIFF[j]
            self.dense_tables[key] = token_table([format_float(v / d) for v in range(d + 1)])
        return self.dense_tables[key][q].tolist()

    def render(self, features: dict[str, np.ndarray], labels: np.ndarray) -> str:
        """Tab-separated lines."""
        columns = [token_table(["0", "1"])[labels.astype(np.int64)].tolist()]
        columns += [self._dense_values(j, features["q"][:, j]) for j in range(len(CONT_DIFF))]
        columns += [self._raw_tokens(k, col) for k, col in enumerate(features["values"].T)]
        return join_rows(columns, "\t")


class CriteoLibSVMWorld(CriteoWorld):
    """The Criteo world as libSVM / libFM lines (``--layout libsvm``; read by the ``libsvm`` reader).

    ``<label> <id>:<value> ...``, label ``-1`` / ``1`` (the NFM / AFM papers' files), one token per field in a fixed
    order: dense feature ``j`` has global id ``j`` and its value in [0, 1] (0 when missing), sparse slot ``k`` the
    global id ``13 + <its slot-format id>`` and value 1. The same rows as the slot format.
    """

    def render(self, features: dict[str, np.ndarray], labels: np.ndarray) -> str:
        """libSVM lines."""
        q, values = features["q"], features["values"]
        columns = [token_table(["-1", "1"])[labels.astype(np.int64)].tolist()]
        for j in range(len(CONT_DIFF)):
            columns.append([f"{j}:{format_float(v)}" for v in (q[:, j] / CONT_DIFF[j]).tolist()])
        for k, column in enumerate(values.T):
            ids = [int(t.split(":", 1)[1]) for t in self._slot_tokens(k, column)]
            columns.append([f"{len(CONT_DIFF) + i}:1" for i in ids])
        return join_rows(columns, " ")


class CriteoLRWorld(CriteoWorld):
    """The Criteo world in PaddleRec's logistic-regression format.

    ``feat_idx:<i>`` x 39, ``feat_value:<v>`` x 39, ``label:<0/1>``: dense feature ``j``
    has index ``j + 1`` and its value (index 0, value 0.0 when missing); a sparse slot
    has its hashed id (the same as in the slot format) and value 1.0 (0 and 0.0 when
    missing), as PaddleRec's LR sample data.
    """

    def render(self, features: dict[str, np.ndarray], labels: np.ndarray) -> str:
        """LR-format lines."""
        q, values = features["q"], features["values"]
        idx_cols, value_cols = [], []
        for j in range(len(CONT_DIFF)):
            present = q[:, j] > 0
            idx_cols.append(np.where(present, f"feat_idx:{j + 1}", "feat_idx:0").tolist())
            value_cols.append([f"feat_value:{format_float(v)}" for v in (q[:, j] / CONT_DIFF[j]).tolist()])
        for k, column in enumerate(values.T):
            missing = column == CRITEO_SLOTS[k][0]
            ids = [t.split(":", 1)[1] for t in self._slot_tokens(k, column)]
            idx_cols.append([f"feat_idx:{0 if m else i}" for i, m in zip(ids, missing.tolist())])
            value_cols.append(np.where(missing, "feat_value:0.0", "feat_value:1.0").tolist())
        label_col = token_table(["label:0", "label:1"])[labels.astype(np.int64)].tolist()
        return join_rows(idx_cols + value_cols + [label_col], " ")


# ----------------------------------------------------------------------------- census
NUM_NUMERIC = 11
# Cardinalities of the 29 categorical columns (those of the UCI data; they sum to 488).
CENSUS_CARDINALITIES = {
    "class_worker": 9, "det_ind_code": 52, "det_occ_code": 47, "education": 17,
    "hs_college": 3, "major_ind_code": 24, "major_occ_code": 15, "race": 5, "hisp_origin": 10,
    "sex": 2, "union_member": 3, "unemp_reason": 6, "full_or_part_emp": 8,
    "tax_filer_stat": 6, "region_prev_res": 6, "state_prev_res": 51, "det_hh_fam_stat": 38,
    "det_hh_summ": 8, "mig_chg_msa": 10, "mig_chg_reg": 9, "mig_move_reg": 10, "mig_same": 3,
    "mig_prev_sunbelt": 4, "fam_under_18": 5, "country_father": 43, "country_mother": 43,
    "country_self": 43, "citizenship": 5, "vet_question": 3,
}  # fmt: skip
# Categorical columns of the shared and task-specific parts -> std of their effect on the logit.
CENSUS_SHARED = {"education": 0.7, "class_worker": 0.6, "det_occ_code": 0.5, "sex": 0.5}
CENSUS_INCOME = {"major_occ_code": 0.7, "tax_filer_stat": 0.6}
CENSUS_MARITAL = {"det_hh_fam_stat": 0.8, "det_hh_summ": 0.6}
CENSUS_RATES = {"marital": 0.40, "income": 0.08}


class CensusWorld:
    """Ground truth of the synthetic census data: two correlated tasks.

    Numeric columns are N(0, 1) (0 = "age", 9 = "weeks worked"); each categorical column
    draws from its own Dirichlet-distributed law. A shared component ``s`` (two numerics
    plus four categorical effects) enters income with +1 and marital with -1; income adds
    a product ``x2 * x4`` and its own categorical effects, marital an age-squared-like
    term ``-x0**2`` (and ``-x0``) and household effects.
    """

    def __init__(self, world_seed: int) -> None:
        rng = world_rng(world_seed, "census")
        assert sum(CENSUS_CARDINALITIES.values()) == 488
        self.names = list(CENSUS_CARDINALITIES)
        sizes = list(CENSUS_CARDINALITIES.values())
        self.cdfs = [np.cumsum(rng.dirichlet(np.full(c, 0.8))) for c in sizes]
        self.blocks = [  # the one-hot text of each category of each column
            token_table([",".join("1" if i == j else "0" for i in range(c)) for j in range(c)])
            for c in sizes
        ]
        calibration = self.sample(rng, CALIBRATION_ROWS)
        self.effects = {
            name: scale_effect(
                rng.standard_normal(CENSUS_CARDINALITIES[name]),
                calibration["categories"][:, self.names.index(name)],
                std,
            )
            for name, std in {**CENSUS_SHARED, **CENSUS_INCOME, **CENSUS_MARITAL}.items()
        }
        self.bias = np.zeros(2)
        logits = self.logits(calibration)
        rates = CENSUS_RATES.values()
        self.bias = np.array([calibrate_bias(logits[:, t], r) for t, r in enumerate(rates)])

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Numeric values ``(n, 11)`` and category indices ``(n, 29)`` of ``n`` rows."""
        numeric = rng.standard_normal((n, NUM_NUMERIC))
        categories = np.stack([draw(rng, cdf, n) for cdf in self.cdfs], axis=1)
        return {"numeric": numeric, "categories": categories}

    def _effect(self, features: dict[str, np.ndarray], columns: dict[str, float]) -> np.ndarray:
        """Sum of the planted effects of ``columns`` on each row."""
        cats = features["categories"]
        return sum(self.effects[name][cats[:, self.names.index(name)]] for name in columns)

    def logits(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """True logits ``(n, 2)``: column 0 marital, column 1 income."""
        x = features["numeric"]
        shared = 0.8 * x[:, 0] + 0.6 * x[:, 9] + self._effect(features, CENSUS_SHARED)
        income = shared + 0.6 * x[:, 3] + 0.7 * x[:, 2] * x[:, 4]
        marital = -shared - 0.8 * x[:, 0] - 0.7 * x[:, 0] ** 2
        income += self._effect(features, CENSUS_INCOME)
        marital += self._effect(features, CENSUS_MARITAL)
        return np.stack([marital, income], axis=1) + self.bias

    def render(self, features: dict[str, np.ndarray], labels: np.ndarray) -> str:
        """CSV lines ``marital,income,<11 numerics>,<488 one-hot>``."""
        columns = [np.where(labels[:, t], "1", "0").tolist() for t in range(2)]
        columns += [[format(v, ".4g") for v in col] for col in features["numeric"].T.tolist()]
        columns += [block[c].tolist() for block, c in zip(self.blocks, features["categories"].T)]
        return join_rows(columns, ",")


# ----------------------------------------------------------------------------- ali-ccp
# The 23 fields of PaddleRec's ESMM reader -> (vocabulary size, Zipf exponent, (fewest, most) values in a
# row, missing rate). Multi-valued fields draw a count uniformly in [fewest, most] (0: the field is absent).
# Vocabularies are far smaller than the real ones (3,928 ids in all) so that a few thousand rows show
# the planted signal; the rates are far higher than Ali-CCP's (about 4% clicks, under 1% of clicks converting).
ALICCP_FIELDS = {
    "101": (1000, 0.8, (1, 1), 0.0), "109_14": (200, 1.0, (0, 5), 0.0), "110_14": (200, 1.0, (0, 6), 0.0),
    "127_14": (200, 1.0, (0, 5), 0.0), "150_14": (100, 1.0, (0, 5), 0.0), "121": (10, 0.8, (1, 1), 0.0),
    "122": (8, 0.6, (1, 1), 0.0), "124": (3, 0.5, (1, 1), 0.0), "125": (8, 0.6, (1, 1), 0.0),
    "126": (4, 0.5, (1, 1), 0.0), "127": (4, 0.5, (1, 1), 0.0), "128": (3, 0.5, (1, 1), 0.0),
    "129": (5, 0.5, (1, 1), 0.0), "205": (600, 1.0, (1, 1), 0.0), "206": (80, 1.0, (1, 1), 0.0),
    "207": (300, 1.0, (1, 1), 0.0), "210": (300, 1.0, (1, 6), 0.0), "216": (200, 1.0, (1, 1), 0.0),
    "508": (200, 1.0, (1, 1), 0.3), "509": (200, 1.0, (1, 1), 0.6), "702": (200, 1.0, (1, 1), 0.6),
    "853": (100, 1.0, (1, 3), 0.3), "301": (3, 0.5, (1, 1), 0.0),
}  # fmt: skip
# Written in this order on a line (ad-side fields first, as in PaddleRec's sample lines).
ALICCP_ORDER = ("210", "216", "301", "205", "206", "207", "508", "509", "702", "853", "121", "122", "101",
                "124", "125", "126", "127", "128", "129", "150_14", "127_14", "109_14", "110_14")
# Planted signal: field -> std of its effect on the click logit / on the conversion-given-click logit.
# A multi-valued field's effect is the mean of its values' weights.
ALICCP_CTR = {"206": 0.7, "122": 0.6, "301": 0.5, "150_14": 0.7, "210": 0.6}
ALICCP_CVR = {"125": 0.7, "126": 0.6, "206": 0.7, "109_14": 0.7, "129": 0.5}
ALICCP_RATES = (0.25, 0.35)  # click rate, conversion rate among clicks


class AliCCPWorld:
    """Ground truth of the synthetic Ali-CCP data (PaddleRec's ESMM format).

    Lines ``<sample_id>,<click>,<conversion>,<field>:<id>,...`` with the 23 fields of
    PaddleRec's reader; ids are globally unique (field ``k``'s value ``v`` has id
    ``1 + offset_k + v``; 0 is the reader's padding). A click is drawn from the click
    logit, a conversion only after a click, from its own logit (``logits`` returns both
    columns, so ``--emit-proba`` writes pCTR and pCVR; pCTCVR is their product).
    ``hash_dim`` is accepted for the driver's uniform call and unused (ids lie in [1, 3928]).
    """

    def __init__(self, world_seed: int, hash_dim: int | None = None) -> None:
        rng = world_rng(world_seed, "aliccp")
        self.cdfs = {f: zipf_cdf(size, a) for f, (size, a, _, _) in ALICCP_FIELDS.items()}
        sizes = [spec[0] for spec in ALICCP_FIELDS.values()]
        self.offsets = dict(zip(ALICCP_FIELDS, np.cumsum([0, *sizes[:-1]]).tolist()))
        self.next_id = 1
        calibration = self.sample(rng, CALIBRATION_ROWS)
        self.weights: dict[str, dict[str, np.ndarray]] = {"ctr": {}, "cvr": {}}
        for task, effects in (("ctr", ALICCP_CTR), ("cvr", ALICCP_CVR)):
            for field, std in effects.items():
                table = rng.standard_normal(ALICCP_FIELDS[field][0])
                effect = self._pooled(table, calibration[field])
                self.weights[task][field] = (table - effect.mean()) * (std / max(effect.std(), 1e-12))
        self.bias = np.zeros(2)
        logits = self.logits(calibration)
        self.bias = np.array([calibrate_bias(logits[:, t], r) for t, r in enumerate(ALICCP_RATES)])

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Per field, value indices ``(n, most)`` padded with -1."""
        features = {}
        for field, (_size, _, (fewest, most), missing) in ALICCP_FIELDS.items():
            values = draw(rng, self.cdfs[field], n * most).reshape(n, most)
            count = rng.integers(fewest, most + 1, n)
            count[rng.random(n) < missing] = 0
            features[field] = np.where(np.arange(most) < count[:, None], values, -1)
        return features

    @staticmethod
    def _pooled(table: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Mean of ``table`` over each row's values (0 for a row without values)."""
        present = values >= 0
        total = np.where(present, table[np.maximum(values, 0)], 0.0).sum(axis=1)
        return total / np.maximum(present.sum(axis=1), 1)

    def logits(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """True logits ``(n, 2)``: column 0 click, column 1 conversion given a click."""
        n = len(features["101"])
        z = np.zeros((n, 2)) + self.bias
        for t, task in enumerate(("ctr", "cvr")):
            for field, table in self.weights[task].items():
                z[:, t] += self._pooled(table, features[field])
        return z

    def render(self, features: dict[str, np.ndarray], labels: np.ndarray) -> str:
        """Ali-CCP lines; the conversion column is ``click and converted``."""
        n = len(labels)
        click = labels[:, 0].astype(np.int64)
        conversion = click & labels[:, 1].astype(np.int64)
        columns = [[str(i) for i in range(self.next_id, self.next_id + n)],
                   token_table(["0", "1"])[click].tolist(), token_table(["0", "1"])[conversion].tolist()]
        self.next_id += n
        for field in ALICCP_ORDER:
            size = ALICCP_FIELDS[field][0]
            tokens = token_table([f"{field}:{1 + self.offsets[field] + v}" for v in range(size)] + [""])
            values = features[field]
            columns += [tokens[np.where(col >= 0, col, size)].tolist() for col in values.T]
        return "".join(",".join(filter(None, row)) + "\n" for row in zip(*columns))


# ----------------------------------------------------------------------------- aitm (AITM's Ali-CCP layout)
# The 18 fields of PaddleRec's AITM CSV, in its column order -> (values, Zipf exponent, missing rate). Field f's
# value v is written as id v + 1; a missing value as 0 (PaddleRec's preprocessing writes 0 for a rare or absent
# value). Every id lies below PaddleRec's feature_vocabulary size of its field, so the model's config reads these
# files and the full data with the same keys.
AITM_FIELDS = {
    "101": (1000, 0.8, 0.0), "121": (60, 0.8, 0.0), "122": (13, 0.6, 0.0), "124": (2, 0.5, 0.0),
    "125": (7, 0.6, 0.0), "126": (3, 0.5, 0.0), "127": (3, 0.5, 0.0), "128": (2, 0.5, 0.0), "129": (4, 0.5, 0.0),
    "205": (600, 1.0, 0.0), "206": (80, 1.0, 0.0), "207": (300, 1.0, 0.0), "216": (200, 1.0, 0.0),
    "508": (200, 1.0, 0.3), "509": (200, 1.0, 0.6), "702": (200, 1.0, 0.6), "853": (100, 1.0, 0.3),
    "301": (3, 0.5, 0.0),
}  # fmt: skip
# Planted signal: field -> std of its effect on the click logit / on the purchase-given-click logit.
AITM_CLICK = {"206": 0.7, "122": 0.6, "301": 0.5, "216": 0.6, "101": 0.5}
AITM_PURCHASE = {"125": 0.7, "126": 0.6, "206": 0.7, "129": 0.5, "207": 0.6}
AITM_RATES = (0.25, 0.35)  # click rate, purchase rate among clicks


class AITMWorld:
    """Ground truth of the synthetic data in PaddleRec's AITM layout (``click,purchase,101,...,301``).

    A sequential funnel: a click is drawn from the click logit; a purchase only after a click, from its own
    logit (``logits`` returns both columns, so ``--emit-proba`` writes pClick and pPurchase-given-click; the
    purchase probability is their product). Each file starts with the header line.
    ``hash_dim`` is accepted for the driver's uniform call and unused.
    """

    def __init__(self, world_seed: int, hash_dim: int | None = None) -> None:
        rng = world_rng(world_seed, "aitm")
        self.cdfs = {f: zipf_cdf(size, a) for f, (size, a, _) in AITM_FIELDS.items()}
        self.header_written = False
        calibration = self.sample(rng, CALIBRATION_ROWS)
        self.weights: list[dict[str, np.ndarray]] = [{}, {}]
        for task, effects in enumerate((AITM_CLICK, AITM_PURCHASE)):
            for field, std in effects.items():
                table = rng.standard_normal(AITM_FIELDS[field][0] + 1)  # + the missing value's id 0
                self.weights[task][field] = scale_effect(table, calibration[field], std)
        self.bias = np.zeros(2)
        logits = self.logits(calibration)
        self.bias = np.array([calibrate_bias(logits[:, t], r) for t, r in enumerate(AITM_RATES)])

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Per field, the ids ``(n,)``: value + 1, or 0 when missing."""
        features = {}
        for field, (_size, _, missing) in AITM_FIELDS.items():
            ids = draw(rng, self.cdfs[field], n) + 1
            ids[rng.random(n) < missing] = 0
            features[field] = ids
        return features

    def logits(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """True logits ``(n, 2)``: column 0 click, column 1 purchase given a click."""
        z = np.zeros((len(features["101"]), 2)) + self.bias
        for task, effects in enumerate(self.weights):
            for field, table in effects.items():
                z[:, task] += table[features[field]]
        return z

    def render(self, features: dict[str, np.ndarray], labels: np.ndarray) -> str:
        """CSV lines (the header before the first chunk); the purchase column is ``click and purchased``."""
        click = labels[:, 0].astype(np.int64)
        purchase = click & labels[:, 1].astype(np.int64)
        columns = [click.astype(str).tolist(), purchase.astype(str).tolist()]
        columns += [features[field].astype(str).tolist() for field in AITM_FIELDS]
        header = "" if self.header_written else ",".join(["click", "purchase", *AITM_FIELDS]) + "\n"
        self.header_written = True
        return header + join_rows(columns, ",")


# ----------------------------------------------------------------------------- video_play (DBMTL)
# Columns of the short-video play data, in file order (EasyRec-style CSV with named fields).
VIDEO_PLAY_COLUMNS = (
    "is_valid_play", "play_time", "user_id", "city", "province", "os", "os_version", "day_h", "week_day",
    "is_new_userid", "level", "is_member", "gender", "fans_num", "follow_num", "video_category", "video_duration",
)  # fmt: skip
VIDEO_PLAY_CITIES, VIDEO_PLAY_PROVINCES, VIDEO_PLAY_CATEGORIES, VIDEO_PLAY_USERS = 300, 34, 40, 100_000
VIDEO_PLAY_OS_VERSIONS = {"android": [f"android_{v}" for v in range(8, 15)], "ios": [f"ios_{v}" for v in range(13, 18)]}
VIDEO_PLAY_RATE = 0.45  # rate of valid plays


class VideoPlayWorld:
    """Ground truth of the synthetic short-video play data (DBMTL's ``is_valid_play`` -> ``play_time``).

    One CSV line per (user, video) impression: the two labels, then user and context
    fields (``city`` with its ``province``, ``os``, ``os_version``, ``day_h``, ``week_day``,
    ``is_new_userid``, ``level``, ``is_member``, ``gender``, ``fans_num``, ``follow_num``),
    the video's ``video_category`` and ``video_duration`` (minutes), and a ``user_id``
    that carries no signal (100,000 Zipf-distributed ids, for hashing). Some fields are
    empty (missing): ``os_version`` 5%, ``gender`` 10%, ``fans_num`` 3% (meaning 0).

    ``is_valid_play`` ~ Bernoulli(sigmoid(logit)): category, city, os_version and a
    gender x category table, membership, new users, level, an evening peak of
    ``day_h``, ``log(fans_num)`` and ``-log(video_duration)``. ``play_time`` (minutes)
    depends on it (the planted relation): a valid play lasts ``video_duration *
    sigmoid(completion logit + noise)``, the completion logit having its own category
    effects and member / level / duration terms; an invalid play lasts a few seconds
    (exponential, mean 0.05 min, at most the duration). So
    ``E[play_time | x] = p(x) * duration * E[completion | x] + (1 - p(x)) * ~0.05``.
    ``hash_dim`` is accepted for the driver's uniform call and unused.
    """

    def __init__(self, world_seed: int, hash_dim: int | None = None) -> None:
        rng = world_rng(world_seed, "video_play")
        self.city_cdf = zipf_cdf(VIDEO_PLAY_CITIES, 1.0)
        self.user_cdf = zipf_cdf(VIDEO_PLAY_USERS, 0.9)
        self.category_cdf = zipf_cdf(VIDEO_PLAY_CATEGORIES, 0.9)
        self.city_province = rng.integers(0, VIDEO_PLAY_PROVINCES, VIDEO_PLAY_CITIES)
        self.versions = VIDEO_PLAY_OS_VERSIONS["android"] + VIDEO_PLAY_OS_VERSIONS["ios"]
        self.version_cdfs = {os: np.cumsum(rng.dirichlet(np.full(len(v), 2.0)))
                             for os, v in VIDEO_PLAY_OS_VERSIONS.items()}
        calibration = self.sample(rng, CALIBRATION_ROWS)
        cat, city, version, gender = (calibration[k] for k in ("category", "city", "version", "gender"))
        self.valid_effects = {
            "category": scale_effect(rng.standard_normal(VIDEO_PLAY_CATEGORIES), cat, 0.9),
            "city": scale_effect(rng.standard_normal(VIDEO_PLAY_CITIES), city, 0.4),
            "version": scale_effect(rng.standard_normal(len(self.versions) + 1), version, 0.25),
            "gender_category": scale_effect(rng.standard_normal((3, VIDEO_PLAY_CATEGORIES)), (gender, cat), 0.6),
        }
        self.completion_effect = scale_effect(rng.standard_normal(VIDEO_PLAY_CATEGORIES), cat, 0.8)
        self.bias = 0.0
        self.bias = calibrate_bias(self.logits(calibration), VIDEO_PLAY_RATE)
        self.tokens = {
            "city": token_table([f"city_{i:03d}" for i in range(VIDEO_PLAY_CITIES)]),
            "province": token_table([f"prov_{i:02d}" for i in range(VIDEO_PLAY_PROVINCES)]),
            "os": token_table(["android", "ios"]),
            "version": token_table(self.versions + [""]),
            "gender": token_table(["M", "F", ""]),
            "category": token_table([f"cat_{i:02d}" for i in range(VIDEO_PLAY_CATEGORIES)]),
            "binary": token_table(["0", "1"]),
        }

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Field values of ``n`` impressions, plus the noise of their play times."""
        os_ios = rng.random(n) < 0.3
        version = np.where(os_ios, len(VIDEO_PLAY_OS_VERSIONS["android"]) + draw(rng, self.version_cdfs["ios"], n),
                           draw(rng, self.version_cdfs["android"], n))
        version = np.where(rng.random(n) < 0.05, len(self.versions), version)  # missing
        hour = np.floor(np.mod(rng.normal(20.0, 5.0, n), 24)).astype(np.int64)
        fans = np.floor(np.exp(rng.normal(2.0, 1.8, n))).astype(np.int64)
        follow = np.floor(np.exp(rng.normal(3.0, 1.2, n))).astype(np.int64)
        return {
            "user": draw(rng, self.user_cdf, n), "city": draw(rng, self.city_cdf, n), "os": os_ios.astype(np.int64),
            "version": version, "hour": hour, "week_day": rng.integers(1, 8, n),
            "new": (rng.random(n) < 0.15).astype(np.int64), "level": rng.binomial(10, 0.35, n),
            "member": (rng.random(n) < 0.2).astype(np.int64),
            "gender": np.where(rng.random(n) < 0.1, 2, (rng.random(n) < 0.45).astype(np.int64)),
            "fans": fans, "fans_missing": rng.random(n) < 0.03, "follow": follow,
            "category": draw(rng, self.category_cdf, n),
            "duration": np.clip(np.exp(rng.normal(0.0, 0.7, n)), 0.1, 10.0).round(3),
            "completion_noise": rng.normal(0.0, 0.4, n), "short_play": rng.exponential(0.05, n),
        }

    def logits(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """True ``is_valid_play`` logits ``(n,)``."""
        e = self.valid_effects
        fans = np.where(features["fans_missing"], 0, features["fans"])
        return (self.bias + e["category"][features["category"]] + e["city"][features["city"]]
                + e["version"][features["version"]] + e["gender_category"][features["gender"], features["category"]]
                + 0.7 * features["member"] - 0.9 * features["new"] + 0.15 * (features["level"] - 3.5)
                + 0.6 * np.cos(2 * np.pi * (features["hour"] - 21) / 24) + 0.2 * np.log1p(fans)
                - 0.6 * np.log(features["duration"]))

    def completion(self, features: dict[str, np.ndarray], noise: bool = True) -> np.ndarray:
        """Fraction of the video a valid play watches: sigmoid(completion logit [+ noise])."""
        z = (0.3 + self.completion_effect[features["category"]] + 0.6 * features["member"]
             + 0.1 * (features["level"] - 3.5) - 0.5 * np.log(features["duration"]))
        return sigmoid(z + features["completion_noise"]) if noise else sigmoid(z)

    def play_time(self, features: dict[str, np.ndarray], valid: np.ndarray) -> np.ndarray:
        """Minutes played: ``duration * completion`` for a valid play, a few seconds otherwise."""
        short = np.minimum(features["short_play"], features["duration"])
        return np.where(valid, features["duration"] * self.completion(features), short)

    def render(self, features: dict[str, np.ndarray], labels: np.ndarray) -> str:
        """CSV lines with the fields of :data:`VIDEO_PLAY_COLUMNS`."""
        t = self.tokens
        valid = labels.astype(bool)
        fans = np.where(features["fans_missing"], "", features["fans"].astype(str)).tolist()
        columns = [
            t["binary"][valid.astype(np.int64)].tolist(),
            [f"{v:.3f}" for v in self.play_time(features, valid).tolist()],
            [f"u{v:06d}" for v in features["user"].tolist()],
            t["city"][features["city"]].tolist(),
            t["province"][self.city_province[features["city"]]].tolist(),
            t["os"][features["os"]].tolist(),
            t["version"][features["version"]].tolist(),
            features["hour"].astype(str).tolist(),
            features["week_day"].astype(str).tolist(),
            t["binary"][features["new"]].tolist(),
            features["level"].astype(str).tolist(),
            t["binary"][features["member"]].tolist(),
            t["gender"][features["gender"]].tolist(),
            fans,
            features["follow"].astype(str).tolist(),
            t["category"][features["category"]].tolist(),
            [f"{v:.3f}" for v in features["duration"].tolist()],
        ]
        return join_rows(columns, ",")


# ----------------------------------------------------------------------------- amazon (DIN)
# PaddleRec's Amazon Electronics id spaces (item_count 63001, cat_count 801), so DIN's configs
# share their model keys with config_bigdata.yaml.
AMAZON_ITEMS, AMAZON_CATS, AMAZON_USERS = 63001, 801, 100_000
AMAZON_SESSION = 4  # consecutive rows of one user and one history, different candidates
AMAZON_SHARE_WEIGHT = 3.0  # logit per unit of the candidate category's share of the history
AMAZON_ITEM_STD = 0.3  # spread of the per-item quality effect
AMAZON_RATE = 0.5  # PaddleRec's data pairs each positive with a sampled negative


class AmazonWorld:
    """Ground truth of the synthetic Amazon-Electronics-like data for DIN (PaddleRec's DIN format).

    Items ``0..63000`` each belong to one of 801 categories (category sizes follow a
    Zipf-like law; every category has an item). Each of 100,000 users has a favourite
    category, a *purity* (the share of their behaviours in it, uniform in [0.3, 0.95]) and
    a maximal history length (log-normal, median 10, at most 300). Rows come in sessions
    of 4: one user, one history (a length uniform in ``1..max``, each behaviour in the
    favourite category with the user's purity, otherwise in a category drawn from the
    global law; items uniform within their category), and 4 candidates, each half the
    time in the category of one of the history's items, otherwise in a category from the
    global law.

    Planted signal: ``logit = bias + 3.0 * share + quality[candidate]``, ``share`` the
    fraction of the history in the candidate's category (so users who mostly interact
    with one category click candidates of that category) and ``quality`` a per-item
    effect (std 0.3); ``bias`` calibrated to a 50% click rate.

    Lines: ``hist_items;hist_cats;target_item;target_cat;label;user_id`` (the optional
    sixth field of :mod:`recstack.data.din`, for GAUC). ``hash_dim`` is accepted for the
    driver's uniform call and unused.
    """

    def __init__(self, world_seed: int, hash_dim: int | None = None) -> None:
        rng = world_rng(world_seed, "amazon")
        self.cat_cdf = zipf_cdf(AMAZON_CATS, 1.0)
        item_cat = np.concatenate([np.arange(AMAZON_CATS), draw(rng, self.cat_cdf, AMAZON_ITEMS - AMAZON_CATS)])
        self.item_cat = rng.permutation(item_cat)
        self.items_by_cat = np.argsort(self.item_cat, kind="stable")  # items grouped by category
        self.cat_size = np.bincount(self.item_cat, minlength=AMAZON_CATS)
        self.cat_start = np.concatenate([[0], np.cumsum(self.cat_size)[:-1]])
        self.favourite = draw(rng, self.cat_cdf, AMAZON_USERS)
        self.purity = rng.uniform(0.3, 0.95, AMAZON_USERS)
        self.max_len = np.clip(np.floor(np.exp(rng.normal(np.log(10), 0.9, AMAZON_USERS))), 1, 300).astype(np.int64)
        self.quality = rng.normal(0.0, AMAZON_ITEM_STD, AMAZON_ITEMS)
        self.bias = 0.0
        self.bias = calibrate_bias(self.logits(self.sample(rng, CALIBRATION_ROWS)), AMAZON_RATE)

    def _items(self, rng: np.random.Generator, cats: np.ndarray) -> np.ndarray:
        """An item of each category in ``cats``, uniform within the category."""
        return self.items_by_cat[self.cat_start[cats]
                                 + np.floor(rng.random(len(cats)) * self.cat_size[cats]).astype(np.int64)]

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Sessions of 4 rows: users, histories (flat, with offsets), candidates and their share."""
        sessions = -(-n // AMAZON_SESSION)
        user = rng.integers(0, AMAZON_USERS, sessions)
        length = np.floor(rng.random(sessions) * self.max_len[user]).astype(np.int64) + 1
        offsets = np.concatenate([[0], np.cumsum(length)])
        owner = np.repeat(np.arange(sessions), length)
        favourite = rng.random(len(owner)) < self.purity[user][owner]
        hist_cat = np.where(favourite, self.favourite[user][owner], draw(rng, self.cat_cdf, len(owner)))
        hist_item = self._items(rng, hist_cat)
        session = np.repeat(np.arange(sessions), AMAZON_SESSION)[:n]
        from_history = rng.random(n) < 0.5
        picked = offsets[session] + np.floor(rng.random(n) * length[session]).astype(np.int64)
        target_cat = np.where(from_history, hist_cat[picked], draw(rng, self.cat_cdf, n))
        target_item = self._items(rng, target_cat)
        # share of each row's history in its candidate's category
        row_len = length[session]
        positions = np.repeat(offsets[session], row_len) + (np.arange(row_len.sum())
                                                            - np.repeat(np.cumsum(row_len) - row_len, row_len))
        match = hist_cat[positions] == np.repeat(target_cat, row_len)
        share = np.bincount(np.repeat(np.arange(n), row_len), weights=match, minlength=n) / row_len
        return {"user": user[session], "session": session, "offsets": offsets, "hist_item": hist_item,
                "hist_cat": hist_cat, "target_item": target_item, "target_cat": target_cat, "share": share}

    def logits(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """True click logits ``(n,)``."""
        return self.bias + AMAZON_SHARE_WEIGHT * features["share"] + self.quality[features["target_item"]]

    def render(self, features: dict[str, np.ndarray], labels: np.ndarray) -> str:
        """DIN-format lines with the user id field."""
        offsets, items, cats = features["offsets"], features["hist_item"].tolist(), features["hist_cat"].tolist()
        histories = [(" ".join(map(str, items[a:b])), " ".join(map(str, cats[a:b])))
                     for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
        return "".join(f"{histories[s][0]};{histories[s][1]};{t};{c};{y};{u}\n" for s, t, c, y, u in zip(
            features["session"].tolist(), features["target_item"].tolist(), features["target_cat"].tolist(),
            labels.astype(np.int64).tolist(), features["user"].tolist()))


# ----------------------------------------------------------------------------- ctr_csv (rank models, feature config)
# Columns of the CTR impression data, in file order (EasyRec-style CSV with named fields).
CTR_CSV_COLUMNS = ("click", "user_id", "item_id", "category", "brand", "device", "city", "gender", "hour", "weekday",
                   "age", "price", "item_ctr")
CTR_CSV_USERS, CTR_CSV_ITEMS, CTR_CSV_CATEGORIES, CTR_CSV_BRANDS, CTR_CSV_CITIES = 50_000, 20_000, 40, 200, 100
CTR_CSV_AGE_BOUNDARIES = (20, 25, 30, 35, 40, 50, 60)  # the age groups of the planted effects
CTR_CSV_DEVICES = ("android", "ios", "pc")
CTR_CSV_RATE = 0.3
# planted pairwise interactions: (field a, field b, rank, std of the effect)
CTR_CSV_PAIRS = (("age_group", "category", 2, 0.7), ("gender", "category", 2, 0.5), ("device", "hour", 2, 0.45))


class CtrCsvWorld:
    """Ground truth of the synthetic CTR impression data for the rank models' feature configs (config_tabular.yaml).

    One CSV line per impression: ``click``, then ``user_id`` (50,000 Zipf ids, no signal, for hashing),
    ``item_id`` (20,000 Zipf items; each item has a fixed ``category``, ``brand``, list ``price`` and a
    hidden quality), ``device``, ``city`` (100, Zipf), ``gender`` (M / F, 8% missing), ``hour`` (0..23,
    evening peak), ``weekday`` (0..6), ``age`` (16..70), ``price`` (the item's price times a small
    discount noise) and ``item_ctr`` (a noisy historical click rate of the item, in [0, 1]).

    ``click`` ~ Bernoulli(sigmoid(logit)): main effects of category, brand, city, device, age group
    (:data:`CTR_CSV_AGE_BOUNDARIES`), an evening peak of ``hour``, ``-log(price)``, the item's quality (which
    ``item_ctr`` reveals with noise) and three planted pairwise interactions of rank 2
    (:data:`CTR_CSV_PAIRS`: age group x category, gender x category, device x hour), which a
    factorization machine or a cross network can represent and a first-order model cannot.
    ``hash_dim`` is accepted for the driver's uniform call and unused.
    """

    def __init__(self, world_seed: int, hash_dim: int | None = None) -> None:
        rng = world_rng(world_seed, "ctr_csv")
        self.user_cdf = zipf_cdf(CTR_CSV_USERS, 0.9)
        self.item_cdf = zipf_cdf(CTR_CSV_ITEMS, 1.0)
        self.city_cdf = zipf_cdf(CTR_CSV_CITIES, 1.0)
        self.item_category = draw(rng, zipf_cdf(CTR_CSV_CATEGORIES, 0.8), CTR_CSV_ITEMS)
        self.item_brand = draw(rng, zipf_cdf(CTR_CSV_BRANDS, 0.9), CTR_CSV_ITEMS)
        self.item_price = np.clip(np.exp(rng.normal(3.7, 0.8, CTR_CSV_ITEMS)), 1.0, 500.0)
        self.item_quality = rng.standard_normal(CTR_CSV_ITEMS)
        calibration = self.sample(rng, CALIBRATION_ROWS)
        sizes = {"category": CTR_CSV_CATEGORIES, "brand": CTR_CSV_BRANDS, "city": CTR_CSV_CITIES, "device": 3,
                 "age_group": len(CTR_CSV_AGE_BOUNDARIES) + 1, "gender": 3, "hour": 24}
        self.main = {name: scale_effect(rng.standard_normal(sizes[name]), calibration[name], std)
                     for name, std in (("category", 0.45), ("brand", 0.3), ("city", 0.25), ("device", 0.2),
                                       ("age_group", 0.2))}
        self.pairs = []
        for a, b, rank, std in CTR_CSV_PAIRS:
            table = rng.standard_normal((sizes[a], rank)) @ rng.standard_normal((rank, sizes[b]))
            self.pairs.append((a, b, scale_effect(table, (calibration[a], calibration[b]), std)))
        log_price = np.log(calibration["price"])
        self.price_mean, self.price_std = log_price.mean(), log_price.std()
        self.bias = 0.0
        self.bias = calibrate_bias(self.logits(calibration), CTR_CSV_RATE)
        self.tokens = {
            "category": token_table([f"cat_{i:02d}" for i in range(CTR_CSV_CATEGORIES)]),
            "brand": token_table([f"brand_{i:03d}" for i in range(CTR_CSV_BRANDS)]),
            "city": token_table([f"city_{i:03d}" for i in range(CTR_CSV_CITIES)]),
            "device": token_table(list(CTR_CSV_DEVICES)),
            "gender": token_table(["M", "F", ""]),
        }

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Field values of ``n`` impressions (``age_group`` is the age's bucket, not a column)."""
        item = draw(rng, self.item_cdf, n)
        age = np.clip(np.round(rng.normal(33.0, 11.0, n)), 16, 70).astype(np.int64)
        device = np.searchsorted(np.cumsum([0.55, 0.35, 0.10]), rng.random(n), side="right").clip(0, 2)
        return {
            "user": draw(rng, self.user_cdf, n), "item": item, "category": self.item_category[item],
            "brand": self.item_brand[item], "device": device, "city": draw(rng, self.city_cdf, n),
            "gender": np.where(rng.random(n) < 0.08, 2, (rng.random(n) < 0.5).astype(np.int64)),
            "hour": np.floor(np.mod(rng.normal(20.0, 5.0, n), 24)).astype(np.int64),
            "weekday": rng.integers(0, 7, n), "age": age,
            "age_group": np.searchsorted(CTR_CSV_AGE_BOUNDARIES, age, side="right"),
            "price": (self.item_price[item] * rng.uniform(0.8, 1.0, n)).round(2),
            "item_ctr": np.clip(sigmoid(-1.0 + 0.8 * (self.item_quality[item] + rng.normal(0.0, 0.5, n))),
                                0, 1).round(4),
        }

    def logits(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """True click logits ``(n,)``."""
        z = self.bias + sum(table[features[name]] for name, table in self.main.items())
        for a, b, table in self.pairs:
            z = z + table[features[a], features[b]]
        z = z + 0.35 * np.cos(2 * np.pi * (features["hour"] - 21) / 24)
        z = z - 0.3 * (np.log(features["price"]) - self.price_mean) / self.price_std
        return z + 0.5 * self.item_quality[features["item"]]

    def render(self, features: dict[str, np.ndarray], labels: np.ndarray) -> str:
        """CSV lines with the fields of :data:`CTR_CSV_COLUMNS`."""
        t = self.tokens
        columns = [
            labels.astype(np.int64).astype(str).tolist(),
            [f"u{v:06d}" for v in features["user"].tolist()],
            [f"i{v:05d}" for v in features["item"].tolist()],
            t["category"][features["category"]].tolist(),
            t["brand"][features["brand"]].tolist(),
            t["device"][features["device"]].tolist(),
            t["city"][features["city"]].tolist(),
            t["gender"][features["gender"]].tolist(),
            features["hour"].astype(str).tolist(),
            features["weekday"].astype(str).tolist(),
            features["age"].astype(str).tolist(),
            [f"{v:.2f}" for v in features["price"].tolist()],
            [f"{v:.4f}" for v in features["item_ctr"].tolist()],
        ]
        return join_rows(columns, ",")


# ----------------------------------------------------------------------------- taobao (EasyRec's taobao sample)
# Columns of EasyRec's taobao CSV (data/test/tb_data/taobao_train_data, samples/model_config/*_on_taobao.config), in
# file order: the labels, the ad (from ad_feature.csv), the user (user_profile.csv), the user's interest tags and
# the ad's price level. datasets/taobao/preprocess.py writes the real data in this layout.
TAOBAO_COLUMNS = (
    "clk", "buy", "pid", "adgroup_id", "cate_id", "campaign_id", "customer", "brand", "user_id", "cms_segid",
    "cms_group_id", "final_gender_code", "age_level", "pvalue_level", "shopping_level", "occupation",
    "new_user_class_level", "tag_category_list", "tag_brand_list", "price",
)  # fmt: skip
TAOBAO_USERS, TAOBAO_ADS, TAOBAO_CATEGORIES, TAOBAO_BRANDS = 2_000, 600, 24, 120
TAOBAO_CAMPAIGNS, TAOBAO_CUSTOMERS = 300, 200
# The real files' id ranges (user, adgroup_id, cate_id, campaign_id, customer, brand): ids are drawn in them.
TAOBAO_ID_RANGES = {"user": 1_141_729, "ad": 846_811, "category": 12_960, "campaign": 423_436,
                    "customer": 255_875, "brand": 461_497}
TAOBAO_PIDS = ("430548_1007", "430539_1007")  # the two ad positions of raw_sample.csv
TAOBAO_MAX_TAGS = 8  # most interest categories of a user (tag_category_list); brands: up to 2 per category
TAOBAO_TARGETED = 0.4  # share of impressions whose ad is in one of the user's tag categories
TAOBAO_MATCH = {"click_category": 1.5, "click_brand": 0.8, "buy_category": 0.6, "buy_brand": 1.2}
TAOBAO_RATES = (0.2, 0.3)  # click rate, buy rate among clicks
TAOBAO_PRICE_LEVELS = 50  # price is written as a level in [0, 50): EasyRec's IdFeature with num_buckets: 50


def taobao_price_level(price: np.ndarray) -> np.ndarray:
    """Half-octave price levels ``min(49, floor(2 * log2(1 + price)))`` (datasets/taobao/preprocess.py's)."""
    return np.minimum(np.floor(2.0 * np.log2(1.0 + np.maximum(price, 0.0))), TAOBAO_PRICE_LEVELS - 1).astype(np.int64)


def distinct_prefix(values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Per row of ``values`` ``(n, m)``, the first ``count[i]`` distinct values in row order, left-aligned,
    padded with -1 (fewer when the row has fewer distinct values; entries < 0 are ignored)."""
    n, m = values.shape
    order = np.argsort(values, axis=1, kind="stable")
    ranked = np.take_along_axis(values, order, axis=1)
    repeat = np.zeros((n, m), dtype=bool)
    repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]  # a later occurrence (stable sort keeps row order)
    first = np.empty((n, m), dtype=bool)
    np.put_along_axis(first, order, ~repeat, axis=1)
    keep = first & (values >= 0) & (np.cumsum(first & (values >= 0), axis=1) <= count[:, None])
    left = np.argsort(~keep, axis=1, kind="stable")
    return np.where(np.take_along_axis(keep, left, axis=1), np.take_along_axis(values, left, axis=1), -1)


class TaobaoWorld:
    """Ground truth of the synthetic taobao display-ad data (EasyRec's taobao sample: MMoE / ESMM / DBMTL).

    One CSV line per ad impression with the 20 columns of :data:`TAOBAO_COLUMNS`, like the real data that
    ``datasets/taobao/preprocess.py`` joins from Alimama's files. 2,000 users, each with a fixed profile
    (``cms_segid`` 0 for 85%, ``cms_group_id`` from gender and age, ``final_gender_code`` 1/2,
    ``age_level`` 0..6, ``pvalue_level`` 1..3 or empty (30%), ``shopping_level`` 1..3, ``occupation`` 0/1,
    ``new_user_class_level`` 1..4 or empty (25%)) and fixed interest tags: ``tag_category_list``, 0..8
    distinct categories (none for 12% of the users), and ``tag_brand_list``, brands of those categories
    (0..2 each; none for 15%), both ``|``-separated. 600 ads over 24 categories and 120 brands (each brand
    belongs to a category; 11% of the ads have no brand, an empty field), 300 campaigns of 200 customers,
    and a price written as its half-octave level (:func:`taobao_price_level`, an integer below 50). Ids are
    drawn in the real files' ranges; tags share the id space of ``cate_id`` / ``brand``. Each impression
    picks a user (Zipf-like), a ``pid`` (two positions) and an ad: with probability 0.4 one of a tag
    category of the user (targeting), otherwise from a Zipf-like law over the ads.

    ``clk`` ~ Bernoulli(sigmoid(click logit)): per-value effects of the ad's category and brand and of
    ``pid``, user x ad tables (``age_level`` x category, rank 2; ``final_gender_code`` x category), the
    mean affinity of the user's tag categories (std 0.5), and the *tag matches* (:data:`TAOBAO_MATCH`):
    +1.5 when the ad's category is in ``tag_category_list``, +0.8 when its brand is in ``tag_brand_list``.
    ``buy`` only after a click (ESMM's relation: ``buy = 1`` implies ``clk = 1``), from a second logit:
    category effects, ``-price``, a ``pvalue_level`` x price table, ``shopping_level``, ``occupation`` and
    the tag matches (+0.6 category, +1.2 brand). ``logits`` returns both columns (``--emit-proba`` writes
    ``pCTR,pCVR``; p(buy) is their product); ``logits(..., tags=False)`` leaves the tag terms out.
    ``user_id``, ``adgroup_id``, ``campaign_id``, ``customer`` and ``cms_segid`` carry no signal of their
    own. ``hash_dim`` is accepted for the driver's uniform call and unused.
    """

    def __init__(self, world_seed: int, hash_dim: int | None = None) -> None:
        rng = world_rng(world_seed, "taobao")
        ids = {name: np.sort(rng.choice(top, size, replace=False) + 1) for name, top, size in (
            ("user", TAOBAO_ID_RANGES["user"], TAOBAO_USERS), ("ad", TAOBAO_ID_RANGES["ad"], TAOBAO_ADS),
            ("category", TAOBAO_ID_RANGES["category"], TAOBAO_CATEGORIES),
            ("campaign", TAOBAO_ID_RANGES["campaign"], TAOBAO_CAMPAIGNS),
            ("customer", TAOBAO_ID_RANGES["customer"], TAOBAO_CUSTOMERS),
            ("brand", TAOBAO_ID_RANGES["brand"], TAOBAO_BRANDS))}
        self.ids = ids
        self.user_cdf = zipf_cdf(TAOBAO_USERS, 0.5)
        self.ad_cdf = zipf_cdf(TAOBAO_ADS, 0.6)
        cat_cdf = zipf_cdf(TAOBAO_CATEGORIES, 0.8)
        # brands and ads by category (every category has at least one of each)
        self.brand_cat = rng.permutation(np.concatenate([np.arange(TAOBAO_CATEGORIES),
                                                         draw(rng, cat_cdf, TAOBAO_BRANDS - TAOBAO_CATEGORIES)]))
        self.ad_cat = rng.permutation(np.concatenate([np.arange(TAOBAO_CATEGORIES),
                                                      draw(rng, cat_cdf, TAOBAO_ADS - TAOBAO_CATEGORIES)]))
        self.brands_by_cat, self.brand_start, self.brand_count = self._by_category(self.brand_cat)
        self.ads_by_cat, self.ad_start, self.ad_count = self._by_category(self.ad_cat)
        no_brand = rng.random(TAOBAO_ADS) < 0.12
        self.ad_brand = np.where(no_brand, TAOBAO_BRANDS, self._pick(rng, self.ad_cat, "brand"))  # TAOBAO_BRANDS: none
        self.ad_campaign = draw(rng, zipf_cdf(TAOBAO_CAMPAIGNS, 0.7), TAOBAO_ADS)
        campaign_customer = draw(rng, zipf_cdf(TAOBAO_CUSTOMERS, 0.7), TAOBAO_CAMPAIGNS)
        cat_price = rng.normal(0.0, 0.7, TAOBAO_CATEGORIES)
        self.ad_price = taobao_price_level(np.exp(rng.normal(4.3 + cat_price[self.ad_cat], 0.8)))
        # users: profile and interest tags
        u = TAOBAO_USERS
        self.gender = np.where(rng.random(u) < 0.35, 1, 2)
        self.age = draw(rng, np.cumsum([0.02, 0.12, 0.25, 0.28, 0.2, 0.1, 0.03]), u)
        group = np.minimum(self.age, 5) + np.where(self.gender == 1, 0, 6)
        self.pvalue = np.where(rng.random(u) < 0.3, 0, 1 + draw(rng, np.cumsum([0.3, 0.5, 0.2]), u))  # 0: empty
        self.shopping = 1 + draw(rng, np.cumsum([0.05, 0.15, 0.8]), u)
        self.occupation = (rng.random(u) < 0.06).astype(np.int64)
        profile = {
            "cms_segid": np.where(rng.random(u) < 0.85, 0, rng.integers(1, 97, u)).astype(str),
            "cms_group_id": np.where(rng.random(u) < 0.03, 12, group).astype(str),
            "final_gender_code": self.gender.astype(str), "age_level": self.age.astype(str),
            "pvalue_level": np.where(self.pvalue > 0, self.pvalue.astype(str), ""),
            "shopping_level": self.shopping.astype(str), "occupation": self.occupation.astype(str),
            "new_user_class_level": np.where(rng.random(u) < 0.25, "",
                                             (1 + draw(rng, np.cumsum([0.1, 0.3, 0.35, 0.25]), u)).astype(str)),
        }
        tag_count = np.where(rng.random(u) < 0.12, 0, np.minimum(1 + rng.poisson(2.0, u), TAOBAO_MAX_TAGS))
        candidates = draw(rng, cat_cdf, u * 2 * TAOBAO_MAX_TAGS).reshape(u, 2 * TAOBAO_MAX_TAGS)
        self.tag_cats = distinct_prefix(candidates, tag_count)[:, :TAOBAO_MAX_TAGS]
        self.tag_count = (self.tag_cats >= 0).sum(axis=1)
        brand_slots = np.repeat(self.tag_cats, 2, axis=1)
        brands = np.where(brand_slots >= 0, self._pick(rng, np.maximum(brand_slots, 0).ravel(), "brand")
                          .reshape(brand_slots.shape), -1)
        brands = np.where(rng.random(brands.shape) < 0.55, brands, -1)
        self.tag_brands = distinct_prefix(brands, np.full(u, brands.shape[1]))
        # the planted effects, each with a fixed spread on a calibration sample
        calibration = self.sample(rng, CALIBRATION_ROWS)
        user, ad, pid = calibration["user"], calibration["ad"], calibration["pid"]
        cat, brand, price = self.ad_cat[ad], self.ad_brand[ad], self.ad_price[ad]
        self.price_mean, self.price_std = price.mean(), price.std()
        normal = rng.standard_normal
        self.click_effects = {
            "category": scale_effect(normal(TAOBAO_CATEGORIES), cat, 0.5),
            "brand": scale_effect(normal(TAOBAO_BRANDS + 1), brand, 0.3),
            "pid": scale_effect(normal(len(TAOBAO_PIDS)), pid, 0.3),
            "age_category": scale_effect(normal((7, 2)) @ normal((2, TAOBAO_CATEGORIES)), (self.age[user], cat), 0.4),
            "gender_category": scale_effect(normal((3, TAOBAO_CATEGORIES)), (self.gender[user], cat), 0.3),
        }
        affinity = normal(TAOBAO_CATEGORIES)
        pooled = self._tag_mean(affinity, user)
        self.tag_affinity = (affinity - pooled.mean()) * (0.5 / max(pooled.std(), 1e-12))
        self.buy_effects = {
            "category": scale_effect(normal(TAOBAO_CATEGORIES), cat, 0.5),
            "pvalue_price": scale_effect(normal((4, TAOBAO_PRICE_LEVELS // 5)), (self.pvalue[user], price // 5), 0.3),
        }
        self.bias = np.zeros(2)
        logits = self.logits(calibration)
        self.bias = np.array([calibrate_bias(logits[:, t], r) for t, r in enumerate(TAOBAO_RATES)])
        # text: the ad part and the user part of a line, and the pid and label tokens
        def text(index: np.ndarray, name: str) -> np.ndarray:
            return ids[name][index].astype(str)

        brand_text = np.where(self.ad_brand < TAOBAO_BRANDS, text(np.minimum(self.ad_brand, TAOBAO_BRANDS - 1),
                                                                   "brand"), "")
        self.ad_text = token_table(list(map(",".join, zip(
            text(np.arange(TAOBAO_ADS), "ad"), text(self.ad_cat, "category"), text(self.ad_campaign, "campaign"),
            text(campaign_customer[self.ad_campaign], "customer"), brand_text))))
        self.price_text = token_table(self.ad_price.astype(str).tolist())
        tags = [self._tag_text(self.tag_cats, "category"), self._tag_text(self.tag_brands, "brand")]
        self.user_text = token_table(list(map(",".join, zip(text(np.arange(u), "user"), *profile.values(), *tags))))
        self.tokens = {"pid": token_table(list(TAOBAO_PIDS)), "binary": token_table(["0", "1"])}

    @staticmethod
    def _by_category(cats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices grouped by category, each category's start in them and its size."""
        count = np.bincount(cats, minlength=TAOBAO_CATEGORIES)
        return np.argsort(cats, kind="stable"), np.concatenate([[0], np.cumsum(count)[:-1]]), count

    def _pick(self, rng: np.random.Generator, cats: np.ndarray, what: str) -> np.ndarray:
        """A brand (``what="brand"``) or an ad (``"ad"``) of each category of ``cats``, uniform within it."""
        by_cat, start, count = ((self.brands_by_cat, self.brand_start, self.brand_count) if what == "brand"
                                else (self.ads_by_cat, self.ad_start, self.ad_count))
        return by_cat[start[cats] + np.floor(rng.random(len(cats)) * count[cats]).astype(np.int64)]

    def _tag_text(self, tags: np.ndarray, name: str) -> list[str]:
        """``|``-joined ids of each row of ``tags`` (padded with -1), empty for none."""
        text = np.where(tags >= 0, self.ids[name][np.maximum(tags, 0)].astype(str), "")
        return ["|".join(filter(None, row)) for row in text.tolist()]

    def _tag_mean(self, table: np.ndarray, user: np.ndarray) -> np.ndarray:
        """Mean of ``table`` over each user's tag categories (0 without tags)."""
        tags = self.tag_cats[user]
        total = np.where(tags >= 0, table[np.maximum(tags, 0)], 0.0).sum(axis=1)
        return total / np.maximum(self.tag_count[user], 1)

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Users, ``pid`` indices and ads of ``n`` impressions."""
        user = draw(rng, self.user_cdf, n)
        pid = (rng.random(n) < 0.3).astype(np.int64)
        count = self.tag_count[user]
        targeted = (rng.random(n) < TAOBAO_TARGETED) & (count > 0)
        slot = np.floor(rng.random(n) * np.maximum(count, 1)).astype(np.int64)
        tag_cat = np.maximum(self.tag_cats[user, slot], 0)
        ad = np.where(targeted, self._pick(rng, tag_cat, "ad"), draw(rng, self.ad_cdf, n))
        return {"user": user, "pid": pid, "ad": ad}

    def matches(self, features: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Whether each impression's ad category is in the user's ``tag_category_list``, and its brand in
        ``tag_brand_list`` (never for an ad without a brand)."""
        user, ad = features["user"], features["ad"]
        category = (self.tag_cats[user] == self.ad_cat[ad][:, None]).any(axis=1)
        brand = (self.tag_brands[user] == self.ad_brand[ad][:, None]).any(axis=1)
        return category, brand

    def logits(self, features: dict[str, np.ndarray], tags: bool = True) -> np.ndarray:
        """True logits ``(n, 2)``: column 0 click, column 1 buy given a click. ``tags=False`` leaves out
        every term that reads the tag lists (what a model blind to them could reach at best, roughly)."""
        user, ad, pid = features["user"], features["ad"], features["pid"]
        cat, brand, price = self.ad_cat[ad], self.ad_brand[ad], self.ad_price[ad]
        e, b = self.click_effects, self.buy_effects
        click = (e["category"][cat] + e["brand"][brand] + e["pid"][pid] + e["age_category"][self.age[user], cat]
                 + e["gender_category"][self.gender[user], cat])
        buy = (b["category"][cat] - 0.5 * (price - self.price_mean) / self.price_std
               + b["pvalue_price"][self.pvalue[user], price // 5] + 0.4 * (self.shopping[user] - 2.5)
               - 0.4 * self.occupation[user])
        if tags:
            match_category, match_brand = self.matches(features)
            m = TAOBAO_MATCH
            click = click + m["click_category"] * match_category + m["click_brand"] * match_brand
            click = click + self._tag_mean(self.tag_affinity, user)
            buy = buy + m["buy_category"] * match_category + m["buy_brand"] * match_brand
        return np.stack([click, buy], axis=1) + self.bias

    def render(self, features: dict[str, np.ndarray], labels: np.ndarray) -> str:
        """CSV lines with the fields of :data:`TAOBAO_COLUMNS`; ``buy`` is ``clk and bought``."""
        click = labels[:, 0].astype(np.int64)
        binary = self.tokens["binary"]
        columns = [binary[click].tolist(), binary[click & labels[:, 1].astype(np.int64)].tolist(),
                   self.tokens["pid"][features["pid"]].tolist(), self.ad_text[features["ad"]].tolist(),
                   self.user_text[features["user"]].tolist(), self.price_text[features["ad"]].tolist()]
        return join_rows(columns, ",")


# ----------------------------------------------------------------------------- alimama (DMR)
# Small id spaces (rows of the sample config's tables; the full data's are PaddleRec's, README of models/rank/dmr);
# the profile fields keep PaddleRec's table sizes. Id 0 pads the histories; real ids start at 1.
ALIMAMA_HISTORY = 50
ALIMAMA_USERS, ALIMAMA_ADS, ALIMAMA_CATES, ALIMAMA_CAMPAIGNS, ALIMAMA_CUSTOMERS = 2000, 5000, 300, 3000, 2000
ALIMAMA_BRANDS_PER_CATE = 4  # brand ids 1 + 4 * (cate - 1) + k, k < 4: brand_size 1200
ALIMAMA_PROFILE = (("cms_segid", 0, 97), ("cms_group_id", 1, 13), ("final_gender_code", 1, 3), ("age_level", 1, 7),
                   ("pvalue_level", 0, 4), ("shopping_level", 1, 4), ("occupation", 0, 2),
                   ("new_user_class_level", 0, 5))  # (field, lowest id, table size)
ALIMAMA_FULL = 0.7  # share of rows with all 50 behaviours (the rest: 1..49, left-padded)
ALIMAMA_STICKY = 0.4  # chance that a behaviour repeats the previous one's category
ALIMAMA_TARGETED = 0.5  # share of impressions whose ad is in the category of one of the user's behaviours
ALIMAMA_EFFECTS = {"share": 4.0, "brand": 1.0, "last": 1.2, "pid": 0.3, "shopping": 0.3}
ALIMAMA_AD_STD = 0.3
ALIMAMA_RATE = 0.35


class AlimamaWorld:
    """Ground truth of the synthetic Alimama-like data for DMR (PaddleRec's 267-column Alimama format).

    Ads ``1..4999`` each have a category (Zipf-like law over ``1..299``), one of the category's 4 brands, a
    campaign, a customer and a price in [0.5, 1]. Each of 2,000 users has a profile (PaddleRec's value ranges),
    3 favourite categories, a *purity* (uniform in [0.3, 0.9]) and a favourite brand rank (0..3). A history holds
    50 behaviours (70% of rows) or 1..49, left-padded with 0; behaviour ``t`` repeats the category of ``t - 1``
    with chance 0.4, else is one of the favourites with the user's purity, else drawn from the global law (a
    sequential signal the match loss can learn); its brand is the user's favourite rank with chance 0.6; its type
    (``btag``) pv=1 (90%), cart, fav, buy. ``match_mask`` is the mask of the histories with at least 3 behaviours
    (all 0 otherwise, as PaddleRec's data leaves it for short histories). The ad shown is, half the time, one of
    the category of a random behaviour, otherwise any ad.

    Planted signal: ``logit = bias + 4 share + 1.0 brand_hit + 1.2 last_match + 0.3 pid + 0.3 (shopping - 2)
    + quality[ad]``: ``share`` the fraction of behaviours in the ad's category, ``brand_hit`` whether the ad's
    brand occurs among them, ``last_match`` whether the last behaviour has the ad's category; ``quality`` an ad
    effect (std 0.3); ``bias`` calibrated to a 35% click rate.
    """

    def __init__(self, world_seed: int, hash_dim: int | None = None) -> None:
        rng = world_rng(world_seed, "alimama")
        self.cate_cdf = zipf_cdf(ALIMAMA_CATES - 1, 1.0)
        ad_cate = np.concatenate([np.arange(ALIMAMA_CATES - 1), draw(rng, self.cate_cdf,
                                                                      ALIMAMA_ADS - ALIMAMA_CATES)])
        self.ad_cate = np.concatenate([[0], rng.permutation(ad_cate) + 1])  # ad 0 unused
        self.ad_brand = 1 + ALIMAMA_BRANDS_PER_CATE * (self.ad_cate - 1) + rng.integers(0, ALIMAMA_BRANDS_PER_CATE,
                                                                                         ALIMAMA_ADS)
        self.ad_campaign = rng.integers(1, ALIMAMA_CAMPAIGNS, ALIMAMA_ADS)
        self.ad_customer = rng.integers(1, ALIMAMA_CUSTOMERS, ALIMAMA_ADS)
        self.ad_price = np.round(rng.uniform(0.5, 1.0, ALIMAMA_ADS), 6)
        self.quality = rng.normal(0.0, ALIMAMA_AD_STD, ALIMAMA_ADS)
        real_ads = np.arange(1, ALIMAMA_ADS)
        self.ads_by_cate = real_ads[np.argsort(self.ad_cate[1:], kind="stable")]
        self.cate_count = np.bincount(self.ad_cate[1:], minlength=ALIMAMA_CATES)
        self.cate_start = np.concatenate([[0], np.cumsum(self.cate_count)[:-1]])
        self.profile = np.stack([rng.integers(low, size, ALIMAMA_USERS) for _, low, size in ALIMAMA_PROFILE], 1)
        self.favourites = draw(rng, self.cate_cdf, ALIMAMA_USERS * 3).reshape(ALIMAMA_USERS, 3) + 1
        self.purity = rng.uniform(0.3, 0.9, ALIMAMA_USERS)
        self.brand_rank = rng.integers(0, ALIMAMA_BRANDS_PER_CATE, ALIMAMA_USERS)
        self.bias = 0.0
        self.bias = calibrate_bias(self.logits(self.sample(rng, CALIBRATION_ROWS)), ALIMAMA_RATE)

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Users, left-padded histories ``(n, 50)``, masks, ads and the pid."""
        t_len = ALIMAMA_HISTORY
        user = rng.integers(1, ALIMAMA_USERS, n)
        length = np.where(rng.random(n) < ALIMAMA_FULL, t_len, rng.integers(1, t_len, n))
        cate = np.zeros((n, t_len), dtype=np.int64)
        for t in range(t_len):
            favourite = self.favourites[user, rng.integers(0, 3, n)]
            fresh = np.where(rng.random(n) < self.purity[user], favourite, draw(rng, self.cate_cdf, n) + 1)
            cate[:, t] = fresh if t == 0 else np.where(rng.random(n) < ALIMAMA_STICKY, cate[:, t - 1], fresh)
        rank = np.where(rng.random((n, t_len)) < 0.6, self.brand_rank[user][:, None],
                        rng.integers(0, ALIMAMA_BRANDS_PER_CATE, (n, t_len)))
        brand = 1 + ALIMAMA_BRANDS_PER_CATE * (cate - 1) + rank
        btag = np.searchsorted(np.array([0.9, 0.94, 0.97]), rng.random((n, t_len)), side="right") + 1
        mask = np.arange(t_len)[None, :] >= (t_len - length)[:, None]
        cate, brand, btag = cate * mask, brand * mask, btag * mask
        picked = t_len - 1 - np.floor(rng.random(n) * length).astype(np.int64)  # a real position
        targeted = rng.random(n) < ALIMAMA_TARGETED
        ad_cate = cate[np.arange(n), picked]
        in_cate = self.ads_by_cate[self.cate_start[ad_cate]
                                   + np.floor(rng.random(n) * self.cate_count[ad_cate]).astype(np.int64)]
        ad = np.where(targeted, in_cate, rng.integers(1, ALIMAMA_ADS, n))
        return {"user": user, "cate_his": cate, "brand_his": brand, "btag_his": btag, "mask": mask.astype(np.int64),
                "match_mask": (mask & (length >= 3)[:, None]).astype(np.int64), "ad": ad,
                "pid": rng.integers(0, 2, n)}

    def logits(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """True click logits ``(n,)``."""
        ad, mask = features["ad"], features["mask"].astype(bool)
        cate, brand = self.ad_cate[ad][:, None], self.ad_brand[ad][:, None]
        share = ((features["cate_his"] == cate) & mask).sum(1) / mask.sum(1)
        brand_hit = ((features["brand_his"] == brand) & mask).any(1)
        last = features["cate_his"][:, -1] == cate[:, 0]
        effects = ALIMAMA_EFFECTS
        shopping = self.profile[features["user"], 5]
        return (self.bias + effects["share"] * share + effects["brand"] * brand_hit + effects["last"] * last
                + effects["pid"] * features["pid"] + effects["shopping"] * (shopping - 2) + self.quality[ad])

    def render(self, features: dict[str, np.ndarray], labels: np.ndarray) -> str:
        """Lines of 267 comma-separated numbers (recstack/data/alimama.py)."""
        ad = features["ad"]
        ids = np.column_stack([features["btag_his"], features["cate_his"], features["brand_his"], features["mask"],
                               features["match_mask"], features["user"], self.profile[features["user"]], ad,
                               self.ad_cate[ad], self.ad_campaign[ad], self.ad_customer[ad], self.ad_brand[ad]])
        head = [",".join(map(str, row)) for row in ids.tolist()]
        prices = [format_float(v) for v in self.ad_price[ad].tolist()]
        return "".join(f"{h},{p},{q},{y}\n" for h, p, q, y in zip(head, prices, features["pid"].tolist(),
                                                                   labels.astype(np.int64).tolist()))


WORLDS = {"criteo": CriteoWorld, "criteo_lr": CriteoLRWorld, "census": CensusWorld, "aliccp": AliCCPWorld,
          "aitm": AITMWorld,
          "video_play": VideoPlayWorld, "amazon": AmazonWorld, "ctr_csv": CtrCsvWorld,
          "taobao": TaobaoWorld, "alimama": AlimamaWorld}


# ----------------------------------------------------------------------------- e2e_mm (E2E_MM_DBMTL)
E2E_MM_ITEMS = 300  # items (one image each)
E2E_MM_IMAGE = 64  # image width = height (pixels)
E2E_MM_VALID_QUALITY = 1.2  # is_valid_play logit per unit of the hidden item quality (std 1)
E2E_MM_COMPLETION_QUALITY = 0.5  # completion logit per unit of quality
E2E_MM_SEPARATORS = (";", "\x01", "\x02")  # rtp_separator, group_sample_separator, separator


class E2EMMWorld:
    """Ground truth of the synthetic grouped short-video data with item images (E2E_MM_DBMTL).

    The :class:`VideoPlayWorld` impressions (same fields, labels ``is_valid_play`` and
    ``play_time``, same tabular signal), grouped by item: ``E2E_MM_ITEMS`` items, each with a
    fixed ``video_category`` and ``video_duration`` (repeated in its samples), a hidden
    *quality* ``q ~ N(0, 1)`` and a 64x64 RGB PNG. The quality is visible only through the
    image: a centred square whose colour goes from blue (low q) to red (high q),
    ``(40 + 200 t, 60, 240 - 200 t)`` with ``t = sigmoid(1.5 q)``, on a random background
    colour with random stripes (period, direction, colour: no signal). It adds
    ``1.2 q`` to the ``is_valid_play`` logit and ``0.5 q`` to the completion logit of
    ``play_time``. No item id is written, so only the image tower can learn ``q``.
    """

    def __init__(self, world_seed: int, items: int = E2E_MM_ITEMS) -> None:
        self.video = VideoPlayWorld(world_seed)
        rng = world_rng(world_seed, "e2e_mm")
        self.items = items
        self.category = draw(rng, self.video.category_cdf, items)
        self.duration = np.clip(np.exp(rng.normal(0.0, 0.7, items)), 0.1, 10.0).round(3)
        self.quality = rng.standard_normal(items)
        self.background = rng.integers(60, 200, (items, 3))
        self.stripe_period = rng.choice([6, 8, 12, 16], items)
        self.stripe_direction = rng.integers(0, 3, items)  # rows, columns, diagonals
        self.stripe_shift = rng.integers(-50, 51, (items, 3))
        self.offset = rng.integers(-6, 7, (items, 2))

    def image(self, item: int) -> np.ndarray:
        """``(64, 64, 3)`` uint8 RGB of an item."""
        size = E2E_MM_IMAGE
        y, x = np.mgrid[0:size, 0:size]
        coord = (y, x, x + y)[self.stripe_direction[item]]
        stripe = (coord // (self.stripe_period[item] // 2)) % 2 == 1
        image = np.broadcast_to(self.background[item], (size, size, 3)).copy()
        image[stripe] = np.clip(self.background[item] + self.stripe_shift[item], 0, 255)
        t = sigmoid(1.5 * self.quality[item])
        cy, cx = size // 2 + self.offset[item]
        image[cy - 12:cy + 12, cx - 12:cx + 12] = (40 + 200 * t, 60, 240 - 200 * t)
        return image.astype(np.uint8)

    def quality_class(self, item: int) -> int:
        """The item's quality as one of 16 equally likely classes: ``floor(16 Phi(q))``."""
        import math

        return min(15, int(16 * 0.5 * (1.0 + math.erf(self.quality[item] / math.sqrt(2.0)))))

    def write_images(self, folder: Path) -> None:
        """``item_<i>.png`` of every item (unchanged files are not rewritten)."""
        import io

        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        for item in range(self.items):
            buffer = io.BytesIO()
            Image.fromarray(self.image(item), "RGB").save(buffer, format="PNG", optimize=True)
            path = folder / f"item_{item:04d}.png"
            if not path.is_file() or path.read_bytes() != buffer.getvalue():
                path.write_bytes(buffer.getvalue())

    def samples(self, rng: np.random.Generator, visits: int, mean_group_size: float) -> list[dict]:
        """Flat per-sample rows of ``visits`` item visits of ``1 + Poisson(mean - 1)`` impressions each:
        ``{"visit", "item", "labels": [is_valid_play, play_time], "fields": [15 feature texts], "proba"}``
        (``proba``: the true p(is_valid_play) and the one without the image part, sigmoid(tabular logit))."""
        items = rng.integers(0, self.items, visits)
        sizes = 1 + rng.poisson(mean_group_size - 1.0, visits)
        item = np.repeat(items, sizes)
        features = self.video.sample(rng, len(item))
        features["category"], features["duration"] = self.category[item], self.duration[item]
        q = self.quality[item]
        features["completion_noise"] = features["completion_noise"] + E2E_MM_COMPLETION_QUALITY * q
        tabular = self.video.logits(features)
        p = sigmoid(tabular + E2E_MM_VALID_QUALITY * q)
        labels = rng.random(len(p)) < p
        lines = self.video.render(features, labels).splitlines()
        visit = np.repeat(np.arange(visits), sizes)
        return [{"visit": v, "item": i, "labels": line.split(",", 2)[:2], "fields": line.split(",")[2:],
                 "proba": (a, b)} for v, i, line, a, b in zip(visit.tolist(), item.tolist(), lines, p.tolist(),
                                                               sigmoid(tabular).tolist())]


def generate_e2e_mm(visits: int, seed: int, output: Path, image_dir: Path, world_seed: int = 0,
                    mean_group_size: float = 4.0, max_group_size: int = 0, ungrouped: bool = False,
                    items: int = E2E_MM_ITEMS, proba: Path | None = None, cate_label: bool = False) -> Path:
    """Write GroupRTPInput lines of ``visits`` item visits (see :class:`E2EMMWorld`) and the item images.

    Each visit's impressions form one group, split into lines of at most ``max_group_size`` samples
    (:func:`recstack.easyrec.group_rtp.group_by_item`; 0: no limit). With ``ungrouped`` every sample is
    its own line (group size 1, the image path repeated): the same samples, in the same order.
    Columns: ``is_valid_play;play_time;<features>;<image path>;<group size>``, samples separated by
    ``\\x01``, the 15 features of a sample (the video_play fields after the labels) by ``\\x02``; image
    paths relative to the data file's folder. With ``cate_label`` a third label column follows ``play_time``:
    ``cate_label``, the item's quality class (``floor(16 Phi(q))`` in 0..15, a target the image shows, for the
    auxiliary image loss), so ``selected_cols`` is ``0,1,2,3,4,5``. ``proba`` receives one line per sample,
    in file order: ``p,p_tabular`` (the true p(is_valid_play), and the one an image-blind model could reach at best).
    """
    from recstack.easyrec.group_rtp import group_by_item

    if mean_group_size < 1:
        raise ValueError(f"mean_group_size must be >= 1, got {mean_group_size}")
    world = E2EMMWorld(world_seed, items)
    world.write_images(image_dir)
    path = output_file(output)
    rows = world.samples(np.random.default_rng(seed), visits, mean_group_size)
    groups = [[row] for row in rows] if ungrouped else group_by_item(rows, lambda r: r["visit"], max_group_size)
    rtp, sample_sep, feature_sep = E2E_MM_SEPARATORS
    prefix = Path(os.path.relpath(image_dir.resolve(), path.parent.resolve())).as_posix()
    with atomic_open(path) as out:
        for group in groups:
            columns = [sample_sep.join(row["labels"][j] for row in group) for j in range(2)]
            if cate_label:
                columns.append(sample_sep.join([str(world.quality_class(group[0]["item"]))] * len(group)))
            columns.append(sample_sep.join(feature_sep.join(row["fields"]) for row in group))
            columns += [f"{prefix}/item_{group[0]['item']:04d}.png", str(len(group))]
            out.write(rtp.join(columns) + "\n")
    if proba is not None:
        with atomic_open(proba) as out:
            out.write("".join(f"{row['proba'][0]:.6g},{row['proba'][1]:.6g}\n" for group in groups for row in group))
    return path


# ----------------------------------------------------------------------------- movielens (GroupLens's ML-1M files)
#: ML-1M's 18 genres, in GroupLens's (alphabetical) order, and about how many of its 3,883 movies list each
MOVIELENS_GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
                    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
                    "Western")
MOVIELENS_GENRE_COUNTS = (503, 283, 105, 251, 1200, 211, 127, 1603, 68, 44, 343, 114, 106, 471, 276, 492, 143, 68)
#: users.dat's age codes and about how many of ML-1M's 6,040 users have each; gender and occupation (0..20) counts
MOVIELENS_AGES = (1, 18, 25, 35, 45, 50, 56)
MOVIELENS_AGE_COUNTS = (222, 1103, 2096, 1193, 550, 496, 380)
MOVIELENS_GENDER_COUNTS = (4331, 1709)  # M, F
MOVIELENS_OCCUPATION_COUNTS = (711, 528, 267, 173, 759, 112, 236, 679, 17, 92, 195, 129, 388, 142, 302, 144, 241,
                               502, 70, 72, 281)
MOVIELENS_MAX_USERS, MOVIELENS_MAX_ITEMS = 6040, 3706  # ML-1M's users and rated movies
MOVIELENS_RATINGS_PER_USER = 50  # --rows / 50 users and items, up to ML-1M's numbers (at least 200 items)
MOVIELENS_MIN_ITEMS = 200
MOVIELENS_MAX_SHARE = 0.6  # a user rates at most this share of the items (ML-1M's most active user: 62%)
MOVIELENS_SUCCESSORS = 3  # successor items of each item
MOVIELENS_MODES = (0.25, 0.6)  # chances that the next item is a successor of the last one / of a preferred genre
MOVIELENS_POPULARITY = 0.9  # Zipf exponent of the items' popularity
MOVIELENS_TRIES = 8  # draws by popularity, then uniform ones in a preferred genre, before a draw among all unrated
MOVIELENS_START = 956_703_932  # 2000-04-25, ML-1M's first time stamp
#: rating laws (1..5) of items in / out of the user's preferred genres (ML-1M's overall law is between)
MOVIELENS_RATING_LAWS = ((0.03, 0.07, 0.22, 0.38, 0.30), (0.10, 0.16, 0.30, 0.30, 0.14))


def movielens_sizes(rows: int) -> tuple[int, int]:
    """``(users, items)`` of a world of about ``rows`` ratings: ``rows / 50`` each, capped at ML-1M's 6,040 users
    and 3,706 movies, at least 1 user and 200 items."""
    n = round(rows / MOVIELENS_RATINGS_PER_USER)
    return min(max(n, 1), MOVIELENS_MAX_USERS), min(max(n, MOVIELENS_MIN_ITEMS), MOVIELENS_MAX_ITEMS)


def normalised(counts: tuple[int, ...]) -> np.ndarray:
    """Probabilities proportional to ``counts``."""
    p = np.asarray(counts, dtype=np.float64)
    return p / p.sum()


class MovieLensWorld:
    """Ground truth of the synthetic MovieLens-1M-like files (retrieval: user features, histories, next item).

    Items ``1..items`` have 1-3 of ML-1M's 18 genres (the first drawn from ML-1M's genre shares, a second with
    probability 0.45, a third with 0.15; every genre has an item), a title ``Movie <id> (<year>)`` (5% end with
    ``, The``, like ML-1M's ``Usual Suspects, The (1995)``; 2% carry a latin-1 ``é``), a Zipf-like popularity
    (exponent 0.9 over a random order) and 3 *successors*: other items of its first genre, drawn uniformly.
    Users ``1..users`` have ML-1M's laws of gender, age code and occupation, a zip code (a 3-digit prefix from a
    Zipf-like law over 300 prefixes, 3% with a ``-dddd`` extension) and **1-3 preferred genres** (40% / 35% / 25%),
    drawn from a softmax over genres of ``0.5 log(share) + gender effect + age effect`` (normal tables, std 0.8),
    so the user features predict the tastes.

    A user's ratings (see :meth:`ratings`) form a sequence without repeats: each next item is, with probability
    0.25, a successor of the previous item (what a sequence model can learn and a bag of history cannot), with
    0.6 an item of a preferred genre (a genre uniformly, then an item by popularity), otherwise an item by
    popularity; a draw the user already rated is drawn again (see :meth:`_next`). Ratings (1..5) are higher on
    items of a preferred genre; time stamps strictly increase (a gap of seconds within a session, 90%, or of
    days). The world (items, users, tastes, successors) depends on ``world_seed`` and the sizes only; the
    ratings on the generator passed to :meth:`ratings`.
    """

    def __init__(self, world_seed: int, users: int, items: int) -> None:
        if users < 1 or items < len(MOVIELENS_GENRES):
            raise ValueError(f"movielens needs >= 1 user and >= {len(MOVIELENS_GENRES)} items, got {users}, {items}")
        rng = world_rng(world_seed, "movielens")
        genres = len(MOVIELENS_GENRES)
        self.users, self.items = users, items
        share = normalised(MOVIELENS_GENRE_COUNTS)
        genre_cdf = np.cumsum(share)
        # items: genres (membership (items, 18)), year, title decorations, popularity, successors
        first = rng.permutation(np.concatenate([np.arange(genres), draw(rng, genre_cdf, items - genres)]))
        member = np.zeros((items, genres), dtype=bool)
        member[np.arange(items), first] = True
        for chance in (0.45, 0.15):
            extra = draw(rng, genre_cdf, items)
            add = rng.random(items) < chance
            member[np.flatnonzero(add), extra[add]] = True
        self.member, self.first_genre = member, first
        self.year = np.clip(np.round(2000.5 - rng.exponential(9.0, items)), 1919, 2000).astype(np.int64)
        self.decoration = draw(rng, np.array([0.93, 0.98, 1.0]), items)  # 0 none, 1 ", The", 2 latin-1
        rank = rng.permutation(items)  # popularity rank of each item
        self.popularity = (rank + 1.0) ** -MOVIELENS_POPULARITY
        self.by_rank = np.argsort(rank)
        self.popularity_cdf = zipf_cdf(items, MOVIELENS_POPULARITY)
        # items of each genre with their popularity: segment g of genre_cdf holds cumulative shares in [g, g + 1]
        owner, item = np.nonzero(member.T)
        self.genre_items = item
        weight = self.popularity[item]
        total = np.bincount(owner, weights=weight, minlength=genres)
        cum = np.cumsum(weight) - np.repeat(np.cumsum(total) - total, np.bincount(owner, minlength=genres))
        self.genre_cdf = owner + cum / total[owner]
        self.genre_end = np.cumsum(np.bincount(owner, minlength=genres)) - 1
        self.genre_start = self.genre_end + 1 - np.bincount(owner, minlength=genres)
        # successors: distinct items of the item's first genre, uniformly (any items when the genre is too small)
        key = rng.random((items, items)) + (first[None, :] == first[:, None])  # same genre first
        key[np.arange(items), np.arange(items)] = -1.0  # not the item itself
        top = np.argpartition(-key, MOVIELENS_SUCCESSORS, axis=1)[:, :MOVIELENS_SUCCESSORS]
        self.successors = np.take_along_axis(top, np.argsort(-np.take_along_axis(key, top, axis=1), axis=1), axis=1)
        # users: features, preferred genres
        self.gender = draw(rng, np.cumsum(normalised(MOVIELENS_GENDER_COUNTS)), users)
        self.age = draw(rng, np.cumsum(normalised(MOVIELENS_AGE_COUNTS)), users)
        self.occupation = draw(rng, np.cumsum(normalised(MOVIELENS_OCCUPATION_COUNTS)), users)
        prefixes = rng.choice(1000, 300, replace=False)
        self.zip_code = [f"{z:05d}" for z in prefixes[draw(rng, zipf_cdf(300, 0.8), users)] * 100
                         + rng.integers(0, 100, users)]
        for u in np.flatnonzero(rng.random(users) < 0.03).tolist():
            self.zip_code[u] += f"-{rng.integers(0, 10000):04d}"
        gender_effect = rng.normal(0.0, 0.8, (2, genres))
        age_effect = rng.normal(0.0, 0.8, (len(MOVIELENS_AGES), genres))
        logits = 0.5 * np.log(share) + gender_effect[self.gender] + age_effect[self.age]
        ranked = np.argsort(-(logits + rng.gumbel(size=(users, genres))), axis=1, kind="stable")  # Gumbel top-k
        self.preferred_count = draw(rng, np.array([0.40, 0.75, 1.0]), users) + 1
        self.preferred = ranked[:, :3]
        self.preferred_mask = np.zeros((users, genres), dtype=bool)
        for k in range(3):
            chosen = self.preferred_count > k
            self.preferred_mask[np.flatnonzero(chosen), self.preferred[chosen, k]] = True
        self.liked = (self.preferred_mask.astype(np.float32) @ self.member.T.astype(np.float32)) > 0  # (users, items)

    def genre_item(self, rng: np.random.Generator, genre: np.ndarray) -> np.ndarray:
        """An item of each genre in ``genre``, drawn by popularity within the genre."""
        at = np.searchsorted(self.genre_cdf, genre + rng.random(len(genre)), side="right")
        return self.genre_items[np.minimum(at, self.genre_end[genre])]

    def counts(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """Ratings per user, ``(users,)``: a floor (20, less for small worlds) plus a multinomial share of the rest
        by log-normal activity (sigma 0.9), capped at 60% of the items (the excess goes to the other users)."""
        users = self.users
        floor = min(20, max(2, rows // users // 3), rows // users)
        cap = max(floor, int(MOVIELENS_MAX_SHARE * self.items))
        activity = np.exp(rng.normal(0.0, 0.9, users))
        counts = np.full(users, floor, dtype=np.int64)
        for _ in range(20):
            left, open_ = rows - int(counts.sum()), counts < cap
            if left <= 0 or not open_.any():
                break
            weight = np.where(open_, activity, 0.0)
            counts = np.minimum(counts + rng.multinomial(left, weight / weight.sum()), cap)
        return counts

    def _next(self, rng: np.random.Generator, users: np.ndarray, previous: np.ndarray, seen: np.ndarray,
              ) -> np.ndarray:
        """The next item of each user in ``users`` (``previous``: their last items, -1 for none), not in ``seen``.

        A way (successor / preferred genre / popularity) is drawn once; a draw the user has rated is drawn again
        the same way (the successors in turn, then a preferred genre), up to ``MOVIELENS_TRIES`` times, then
        uniformly within a preferred genre (as many times), then uniformly among the unrated items of the user's
        preferred genres (of all genres if none is left).
        """
        successor_chance, preferred_chance = MOVIELENS_MODES
        r = rng.random(len(users))
        way = np.where((r < successor_chance) & (previous >= 0), 0, np.where(r < successor_chance + preferred_chance,
                                                                               1, 2))
        offset = rng.integers(0, MOVIELENS_SUCCESSORS, len(users))  # the successor tried first
        out = np.empty(len(users), dtype=np.int64)
        todo = np.arange(len(users))
        for attempt in range(MOVIELENS_TRIES):
            u, n = users[todo], len(todo)
            if attempt == MOVIELENS_SUCCESSORS:  # every successor rated: a preferred genre
                way[todo[way[todo] == 0]] = 1
            successor, preferred, popular = way[todo] == 0, way[todo] == 1, way[todo] == 2
            candidate = np.empty(n, dtype=np.int64)
            candidate[successor] = self.successors[previous[todo][successor],
                                                   (offset[todo][successor] + attempt) % MOVIELENS_SUCCESSORS]
            pick = np.floor(rng.random(int(preferred.sum())) * self.preferred_count[u[preferred]]).astype(np.int64)
            candidate[preferred] = self.genre_item(rng, self.preferred[u[preferred], pick])
            candidate[popular] = self.by_rank[draw(rng, self.popularity_cdf, int(popular.sum()))]
            fresh = ~seen[u, candidate]
            out[todo[fresh]] = candidate[fresh]
            todo = todo[~fresh]
            if not len(todo):
                return out
        for _ in range(MOVIELENS_TRIES):  # uniformly within a preferred genre
            u = users[todo]
            pick = np.floor(rng.random(len(todo)) * self.preferred_count[u]).astype(np.int64)
            genre = self.preferred[u, pick]
            size = self.genre_end[genre] + 1 - self.genre_start[genre]
            candidate = self.genre_items[self.genre_start[genre] + np.floor(rng.random(len(todo)) * size)
                                         .astype(np.int64)]
            fresh = ~seen[u, candidate]
            out[todo[fresh]] = candidate[fresh]
            todo = todo[~fresh]
            if not len(todo):
                return out
        u = users[todo]
        left = self.liked[u] & ~seen[u]  # (n, items): unrated items of a preferred genre, else all unrated ones
        none = ~left.any(axis=1)
        left[none] = ~seen[u[none]]
        rank = np.floor(rng.random(len(todo)) * left.sum(axis=1)).astype(np.int64)  # uniformly among them
        out[todo] = np.argmax(np.cumsum(left, axis=1, dtype=np.int32) > rank[:, None], axis=1)
        return out

    def ratings(self, rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
        """About ``rows`` ratings (fewer only when every user reaches the cap): flat ``user``, ``item`` (0-based),
        ``rating``, ``timestamp`` arrays in (user, time) order."""
        counts = self.counts(rng, rows)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        item = np.empty(int(counts.sum()), dtype=np.int64)
        seen = np.zeros((self.users, self.items), dtype=bool)
        previous = np.full(self.users, -1, dtype=np.int64)
        for step in range(int(counts.max(initial=0))):
            users = np.flatnonzero(counts > step)
            chosen = self._next(rng, users, previous[users], seen)
            item[starts[users] + step] = chosen
            seen[users, chosen] = True
            previous[users] = chosen
        user = np.repeat(np.arange(self.users), counts)
        liked = self.liked[user, item]
        rating = np.where(liked, draw(rng, np.cumsum(MOVIELENS_RATING_LAWS[0]), len(item)),
                          draw(rng, np.cumsum(MOVIELENS_RATING_LAWS[1]), len(item))) + 1
        session = rng.random(len(item)) < 0.9
        gap = np.where(session, 1 + rng.geometric(1 / 40, len(item)), 1 + rng.exponential(3 * 86_400, len(item)))
        gap = gap.astype(np.int64)
        first = starts[counts > 0]  # each user's first rating: a start time in ML-1M's first 200 days
        gap[first] = MOVIELENS_START + rng.integers(0, 200 * 86_400, len(first))
        total = np.cumsum(gap)
        timestamp = total - np.repeat(total[first] - gap[first], counts[counts > 0])
        return {"user": user, "item": item, "rating": rating, "timestamp": timestamp}

    def files(self, ratings: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, str]:
        """The text of ``ratings.dat`` (grouped by user, each user's lines in random order, like ML-1M's file),
        ``users.dat`` and ``movies.dat``."""
        order = np.lexsort((rng.random(len(ratings["user"])), ratings["user"]))
        columns = [(ratings["user"][order] + 1).tolist(), (ratings["item"][order] + 1).tolist(),
                   ratings["rating"][order].tolist(), ratings["timestamp"][order].tolist()]
        ages, genders = np.array(MOVIELENS_AGES), np.array(["M", "F"])
        users = [list(map(str, range(1, self.users + 1))), genders[self.gender].tolist(),
                 ages[self.age].astype(str).tolist(), self.occupation.astype(str).tolist(), self.zip_code]
        decorations = ("", ", The", ": Café")
        titles = [f"Movie {i + 1}{decorations[d]} ({y})" for i, (d, y) in enumerate(zip(self.decoration.tolist(),
                                                                                        self.year.tolist()))]
        names = np.array(MOVIELENS_GENRES)
        genres = ["|".join(names[row]) for row in self.member]
        movies = [list(map(str, range(1, self.items + 1))), titles, genres]
        return {"ratings.dat": join_rows([list(map(str, c)) for c in columns], "::"),
                "users.dat": join_rows(users, "::"), "movies.dat": join_rows(movies, "::")}


def generate_movielens(rows: int, seed: int, output: Path, world_seed: int = 0) -> Path:
    """Write ``ratings.dat``, ``users.dat`` and ``movies.dat`` (GroupLens's ML-1M layout: ``::``-separated,
    latin-1) of about ``rows`` ratings into the folder ``output`` (see :class:`MovieLensWorld`; the sizes come
    from :func:`movielens_sizes`); return ``output``."""
    if output.suffix in (".txt", ".dat"):
        raise ValueError(f"movielens writes ratings.dat, users.dat and movies.dat: --output must be a folder, got "
                         f"{output}")
    world = MovieLensWorld(world_seed, *movielens_sizes(rows))
    rng = np.random.default_rng(seed)
    texts = world.files(world.ratings(rng, rows), rng)
    output.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        with atomic_path(output / name) as tmp, open(tmp, "w", encoding="latin-1", newline="\n") as out:
            out.write(text)
    return output


# ----------------------------------------------------------------------------- driver
#: Output layouts: every data set's own format ("slot"), and Criteo's raw TSV layout for ``criteo``.
LAYOUTS = ("slot", "tsv", "libsvm")


#: Output file formats: text (the layout's own lines) or Parquet (``--format parquet``, see :func:`parquet_config`).
FORMATS = ("text", "parquet")


def output_file(output: Path, fmt: str = "text") -> Path:
    """``output`` itself if it ends with ``.txt`` (``.parquet`` for Parquet), else ``output/part-0.txt``
    (``output/part-0.parquet``)."""
    suffix = ".parquet" if fmt == "parquet" else ".txt"
    return output if output.suffix == suffix else output / f"part-0{suffix}"


def parquet_config(dataset: str, layout: str, config: Path | None):
    """The config and the Parquet layout (:mod:`recstack.data.to_parquet`) that convert a world's text.

    ``criteo`` (slot layout, no ``config``): the slot reader's Parquet layout (``click``, ``dense_feature``
    ``list<float>``, ``1`` .. ``26`` int64; the ``slot_parquet`` reader). Any world with ``config``: that
    config's text reader decides (a feature config, CSVInput: every input field a column, tag and sequence
    fields as list columns; read with ``input_type: ParquetInput``).
    """
    from recstack.config import from_dict, load_config
    from recstack.data.factory import resolve_reader
    from recstack.data.to_parquet import converter_for

    if config is None:
        if dataset != "criteo" or layout != "slot":
            raise ValueError(f"--format parquet for {dataset} (layout {layout}) needs --config: a config whose "
                             "data_config describes the columns (e.g. the model config that reads this world)")
        return from_dict({"hyper_parameters": {"sparse_inputs_slots": 27, "dense_input_dim": 13}}), "slot"
    loaded = load_config(config)
    return loaded, converter_for(loaded, resolve_reader(loaded, "runner.train_reader_path"))


def generate(
    dataset: str,
    rows: int,
    seed: int,
    output: Path,
    world_seed: int = 0,
    proba: Path | None = None,
    hash_dim: int = CRITEO_HASH_DIM,
    layout: str = "slot",
    fmt: str = "text",
    config: Path | None = None,
) -> Path:
    """Write ``rows`` rows of ``dataset`` (see the module docstring); return the data file.

    Args:
        dataset: a name of :data:`WORLDS`, ``"e2e_mm"`` (``rows`` item visits; see :func:`generate_e2e_mm`) or
            ``"movielens"`` (about ``rows`` ratings in three files; see :func:`generate_movielens`).
        rows: number of rows.
        seed: seed of the rows (different files of one world use different seeds).
        output: a ``.txt`` file, or a folder that receives ``part-0.txt`` (``movielens``: the folder of its files).
        world_seed: seed of the ground truth.
        proba: optional file for the true probabilities (one line per row).
        hash_dim: id space of the criteo formats (ids in ``[0, hash_dim)``).
        layout: ``"slot"`` (the data set's own format) or, for ``criteo`` only, ``"tsv"`` (Criteo's raw
            TSV layout, :class:`CriteoTSVWorld`) or ``"libsvm"`` (:class:`CriteoLibSVMWorld`).
        fmt: ``"text"`` or ``"parquet"``: the same rows converted by the readers' parsing (:func:`parquet_config`;
            fixed row groups and compression: byte-identical files for identical arguments).
        config: for ``"parquet"``: the config whose reader describes the columns (not needed for ``criteo``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout != "slot" and dataset != "criteo":
        raise ValueError(f"layout {layout!r} is for the criteo data set only, got {dataset!r}")
    if dataset == "movielens":  # three GroupLens files in a folder, no probabilities
        if proba is not None:
            raise ValueError("movielens has no --emit-proba (its files hold no label)")
        return generate_movielens(rows, seed, output, world_seed)
    if dataset == "e2e_mm":  # grouped lines + images (defaults of generate_e2e_mm; images/ beside the output's folder)
        return generate_e2e_mm(rows, seed, output, output_file(output).parent.parent / "images", world_seed)
    if layout == "tsv":
        world: World = CriteoTSVWorld(world_seed, hash_dim)
    elif layout == "libsvm":
        world = CriteoLibSVMWorld(world_seed, hash_dim)
    else:
        world = WORLDS[dataset](world_seed, hash_dim) if dataset != "census" else CensusWorld(world_seed)
    rng = np.random.default_rng(seed)
    path = output_file(output, fmt)
    proba_file = atomic_open(proba) if proba else contextlib.nullcontext()

    def texts(proba_out) -> Iterator[str]:
        for start in range(0, rows, CHUNK_ROWS):
            features = world.sample(rng, min(CHUNK_ROWS, rows - start))
            p = sigmoid(world.logits(features))
            labels = rng.random(p.shape) < p
            yield world.render(features, labels)
            if proba_out is not None:
                tasks = p.reshape(len(p), -1).T.tolist()
                proba_out.write(join_rows([[format(v, ".6g") for v in t] for t in tasks], ","))

    if fmt == "parquet":
        from recstack.data.parquet import write_parquet
        from recstack.data.to_parquet import parquet_parts

        parsed, kind = parquet_config(dataset, layout, config)
        with proba_file as proba_out:
            def chunks() -> Iterator[tuple[bytes, int]]:
                line = 1
                for text in texts(proba_out):
                    data = text.encode("utf-8")
                    yield data, line
                    line += data.count(b"\n")

            schema, parts = parquet_parts(parsed, kind, chunks(), f"{dataset} rows")
            write_parquet(path, parts, schema)
        return path
    with atomic_open(path) as out, proba_file as proba_out:
        for text in texts(proba_out):
            out.write(text)
    return path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted([*WORLDS, "e2e_mm", "movielens"]))
    parser.add_argument("--rows", type=int, required=True,
                        help="number of rows (e2e_mm: item visits = groups; movielens: about this many ratings)")
    parser.add_argument("--seed", type=int, required=True, help="seed of the rows")
    parser.add_argument(
        "--output", type=Path, required=True,
        help="a .txt file, or a folder (-> part-0.txt); movielens: a folder (-> ratings.dat, users.dat, movies.dat)"
    )
    parser.add_argument("--world-seed", type=int, default=0, help="ground-truth seed (default 0)")
    parser.add_argument("--emit-proba", type=Path, help="also write the true probabilities here (not for movielens)")
    parser.add_argument("--hash-dim", type=int, default=CRITEO_HASH_DIM,
                        help=f"criteo formats: ids in [0, hash-dim) (default {CRITEO_HASH_DIM})")
    parser.add_argument("--layout", choices=LAYOUTS, default="slot",
                        help="criteo only: 'tsv' writes Criteo's raw layout, label \\t I1..I13 \\t C1..C26, with "
                             "the categorical values as raw strings (EasyRec's Criteo configs); 'libsvm' writes "
                             "'<-1/1> <id>:<value> x 39' lines (the libsvm reader; default 'slot')")
    parser.add_argument("--format", choices=FORMATS, default="text", dest="fmt",
                        help="'parquet' writes the same rows as Parquet (part-0.parquet): criteo's slot layout as the "
                             "slot_parquet reader reads it; other worlds with --config, every input field of its "
                             "data_config a column, tag / sequence fields as list columns (input_type: ParquetInput)")
    parser.add_argument("--config", type=Path,
                        help="--format parquet: the config whose reader describes the columns (e.g. "
                             "models/multitask/mmoe/config_taobao.yaml for taobao); not needed for criteo")
    e2e = parser.add_argument_group("e2e_mm (grouped lines + item images)")
    e2e.add_argument("--image-dir", type=Path,
                     help="folder of the item PNGs (default: images/ beside the output's folder)")
    e2e.add_argument("--mean-group-size", type=float, default=4.0, help="mean samples per item visit (>= 1; default 4)")
    e2e.add_argument("--max-group-size", type=int, default=0, help="split larger groups into lines (0: no limit)")
    e2e.add_argument("--ungrouped", action="store_true", help="the same samples one per line (group size 1)")
    e2e.add_argument("--items", type=int, default=E2E_MM_ITEMS, help=f"items / images (default {E2E_MM_ITEMS})")
    e2e.add_argument("--cate-label", action="store_true",
                     help="add a third label column cate_label (the item's quality class 0..15, for the image loss)")
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must be >= 0")
    if args.seed < 0 or args.world_seed < 0:
        parser.error("--seed and --world-seed must be >= 0")
    if args.layout != "slot" and args.dataset != "criteo":
        parser.error(f"--layout {args.layout} is for the criteo data set only")
    if args.dataset == "movielens" and args.emit_proba:
        parser.error("movielens has no --emit-proba (its files hold no label)")
    start = time.perf_counter()
    if args.dataset == "movielens":
        try:
            generate_movielens(args.rows, args.seed, args.output, args.world_seed)
        except ValueError as e:
            parser.error(str(e))
        users, items = movielens_sizes(args.rows)
        print(f"wrote about {args.rows} movielens ratings of {users} users and {items} movies to {args.output} in "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
        return 0
    if args.dataset == "e2e_mm":
        path = output_file(args.output)
        image_dir = args.image_dir or path.parent.parent / "images"
        generate_e2e_mm(args.rows, args.seed, args.output, image_dir, args.world_seed, args.mean_group_size,
                        args.max_group_size, args.ungrouped, args.items, args.emit_proba, args.cate_label)
        print(f"wrote {args.rows} e2e_mm item visits to {path} (images in {image_dir}) in "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
        return 0
    if args.fmt == "parquet" and args.dataset in ("e2e_mm", "movielens"):
        parser.error(f"--format parquet is not available for {args.dataset}")
    try:
        path = generate(args.dataset, args.rows, args.seed, args.output, args.world_seed, args.emit_proba,
                        args.hash_dim, args.layout, args.fmt, args.config)
    except ValueError as e:
        parser.error(str(e))
    seconds = time.perf_counter() - start
    print(f"wrote {args.rows} {args.dataset} rows to {path} in {seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
