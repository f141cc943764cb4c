"""Build DIN's Amazon Electronics data (PaddleRec's DIN format) from the raw McAuley/SNAP files.

Inputs: ``reviews_Electronics_5.json`` (one JSON review a line: ``reviewerID``, ``asin``,
``unixReviewTime``, ...) and ``meta_Electronics.json`` (one product a line, written as
Python literals: ``asin``, ``categories`` = list of category paths), plain or ``.gz``.

The pipeline of the DIN paper's code and of PaddleRec's ``datasets/amazonElec_Din``
(``convert_pd.py``, ``remap_id.py``, ``build_dataset.py``):

1. keep the metadata of reviewed products; an item's category is the last level of its
   last category path (``categories[-1][-1]``);
2. remap ids in sorted order: items (``asin``), categories and users (``reviewerID``)
   each become ``0 .. count - 1`` in the sorted order of their raw strings;
3. order each user's reviews by time (``unixReviewTime``; equal times keep file order);
4. for a user with reviews ``i_0 .. i_{n-1}``: each next item ``i_k`` (``1 <= k <= n-2``)
   gives a training positive (history ``i_0 .. i_{k-1}``) and a negative with the same
   history and a sampled item (uniform over all items the user never reviewed, one per
   position, from a generator seeded by ``--seed``); the last item ``i_{n-1}`` gives the
   user's test pair (positive and negative);
5. shuffle the training and the test examples (seeded) and write them.

Output lines: ``hist_items;hist_cats;target_item;target_cat;label;user_id``. The sixth
field (the remapped user id, for GAUC) is recstack's extension of PaddleRec's five
fields, which ``recstack.data.din`` reads either way; ``--no-user-id`` writes PaddleRec's
five. Differences from PaddleRec's scripts: the raw files are parsed safely
(``json`` / ``ast.literal_eval``, not ``eval``); reviews of a product without metadata are
dropped (and counted) instead of failing; equal review times keep file order (pandas'
default sort does not promise that); numpy's generator replaces Python's ``random``, so
the sampled negatives differ from PaddleRec's files while following the same rule.

Usage::

    python datasets/amazon_electronics/preprocess.py --reviews raw/reviews_Electronics_5.json.gz \\
        --meta raw/meta_Electronics.json.gz --output datasets/amazon_electronics/data
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from recstack.fileio import atomic_open

logger = logging.getLogger(__name__)


def read_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of a file of JSON or Python-literal dicts, one a line (``.gz`` allowed).

    Raises:
        ValueError: a line that is neither, naming the file and line.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                try:  # meta_Electronics.json is written with Python's repr (single quotes)
                    record = ast.literal_eval(line)
                except (ValueError, SyntaxError):
                    raise ValueError(f"{path}:{number}: not a JSON or Python dict: {line[:120]!r}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a dict, got {type(record).__name__}")
            yield number, record


def load_reviews(path: str | Path) -> list[tuple[str, str, int]]:
    """``(reviewerID, asin, unixReviewTime)`` of every review, in file order."""
    reviews = []
    for number, r in read_records(path):
        try:
            reviews.append((str(r["reviewerID"]), str(r["asin"]), int(r["unixReviewTime"])))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}:{number}: a review needs reviewerID, asin and an integer "
                             f"unixReviewTime ({err!r})") from None
    return reviews


def load_categories(path: str | Path, wanted: set[str]) -> dict[str, str]:
    """``asin -> category`` (the last level of the last category path) for the products in ``wanted``."""
    categories = {}
    for number, m in read_records(path):
        asin = m.get("asin")
        if asin not in wanted:
            continue
        paths = m.get("categories")
        if not paths or not isinstance(paths, list) or not paths[-1]:
            raise ValueError(f"{path}:{number}: product {asin} has no category path: {paths!r}")
        categories[asin] = str(paths[-1][-1])
    return categories


def build(reviews: list[tuple[str, str, int]], categories: dict[str, str], seed: int = 1234):
    """Remap ids and build the examples.

    Returns:
        ``(train, test, counts)``: examples ``(user, history items, target, label)`` (the
        training ones shuffled, then the test ones shuffled), the item → category array
        and the counts ``{"users", "items", "categories", "reviews", "dropped_reviews"}``.
    """
    kept = [r for r in reviews if r[1] in categories]
    dropped = len(reviews) - len(kept)
    if dropped:
        logger.warning("dropped %d review(s) of products without metadata", dropped)
    item_keys = sorted(categories)
    item_id = {k: i for i, k in enumerate(item_keys)}
    cat_keys = sorted(set(categories.values()))
    cat_id = {k: i for i, k in enumerate(cat_keys)}
    user_keys = sorted({r[0] for r in kept})
    user_id = {k: i for i, k in enumerate(user_keys)}
    item_cat = np.array([cat_id[categories[k]] for k in item_keys], dtype=np.int64)
    item_count = len(item_keys)

    users = np.array([user_id[r[0]] for r in kept], dtype=np.int64)
    items = np.array([item_id[r[1]] for r in kept], dtype=np.int64)
    times = np.array([r[2] for r in kept], dtype=np.int64)
    order = np.lexsort((np.arange(len(kept)), times, users))  # user, then time, then file order
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(users)]

    rng = np.random.default_rng(seed)
    train, test = [], []
    for start, end in zip(starts.tolist(), ends.tolist()):
        user = int(users[start])
        positives = items[start:end].tolist()
        seen = set(positives)
        if len(seen) >= item_count:
            continue  # no item left to sample as a negative
        negatives = []
        for _ in positives:
            neg = int(rng.integers(0, item_count))
            while neg in seen:
                neg = int(rng.integers(0, item_count))
            negatives.append(neg)
        for k in range(1, len(positives)):
            history = positives[:k]
            pair = [(user, history, positives[k], 1), (user, history, negatives[k], 0)]
            (test if k == len(positives) - 1 else train).extend(pair)
    for examples in (train, test):
        order = rng.permutation(len(examples))
        examples[:] = [examples[i] for i in order]
    counts = {"users": len(user_keys), "items": item_count, "categories": len(cat_keys), "reviews": len(kept),
              "dropped_reviews": dropped}
    return train, test, item_cat, counts


def format_line(example: tuple[int, list[int], int, int], item_cat: np.ndarray, user_id: bool = True) -> str:
    """One DIN-format line (with or without the user id field)."""
    user, history, target, label = example
    cats = item_cat[history].tolist()
    line = (f"{' '.join(map(str, history))};{' '.join(map(str, cats))};{target};{int(item_cat[target])};{label}")
    return f"{line};{user}\n" if user_id else line + "\n"


def write(examples, item_cat: np.ndarray, path: Path, user_id: bool = True) -> None:
    with atomic_open(path) as f:
        for example in examples:
            f.write(format_line(example, item_cat, user_id))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reviews", required=True, help="reviews_Electronics_5.json[.gz]")
    parser.add_argument("--meta", required=True, help="meta_Electronics.json[.gz]")
    parser.add_argument("--output", required=True, type=Path, help="folder for train/, test/ and meta.json")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the negatives and shuffles (default 1234)")
    parser.add_argument("--no-user-id", action="store_true",
                        help="write PaddleRec's 5 fields (no user id: no GAUC)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(message)s", level=logging.INFO)
    reviews = load_reviews(args.reviews)
    logger.info("%d reviews", len(reviews))
    categories = load_categories(args.meta, {r[1] for r in reviews})
    train, test, item_cat, counts = build(reviews, categories, args.seed)
    user_id = not args.no_user_id
    write(train, item_cat, args.output / "train" / "part-0.txt", user_id)
    write(test, item_cat, args.output / "test" / "part-0.txt", user_id)
    counts.update(train_lines=len(train), test_lines=len(test), seed=args.seed, user_id_field=user_id)
    with atomic_open(args.output / "meta.json") as f:
        json.dump(counts, f, indent=2)
    logger.info("wrote %s: %s", args.output, counts)
    print(f"item_count: {counts['items']}, cat_count: {counts['categories']} (hyper_parameters of DIN)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
