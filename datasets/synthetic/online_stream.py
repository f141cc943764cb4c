"""Hourly partitions of click data whose planted signal drifts, for the online trainer (doc/online_training.md).

Writes ``<output>/<YYYYMMDD>/<HH>/part-0.txt`` in DeepFM's Criteo slot format (``click:<0/1>``, 13
``dense_feature:<v>``, ``1:<id>`` .. ``26:<id>``), then the done-file (``_SUCCESS``) once the data file is in
place (the data file is written under a temporary name and renamed: a reader never sees half of it)::

    python datasets/synthetic/online_stream.py --output /tmp/stream --start 20260101/00 --hours 12 --rows 2000
    python datasets/synthetic/online_stream.py --output /tmp/stream --start 20260101/12 --hours 4 --delay 5

The world: slot ``s`` has ids ``s * 1000 + v`` (``v < --vocab``), so ``sparse_feature_number: 27000`` holds them.
The click logit is a bias, plus a weight per id of every slot, plus dense weights. The weights of the first
``--drifting`` slots rotate with time: at hour ``t`` they are ``cos(a t) A + sin(a t) B`` (``a = --drift``
radians per hour; ``A``, ``B`` independent), so what those slots say about a click changes hour by hour; the other
slots keep theirs. A model trained once and frozen loses what the drifting slots told it; one that keeps
training follows them. The world depends on ``--world-seed`` only; rows of hour ``t`` on ``--seed`` and ``t``.
``--delay S`` sleeps S seconds before each partition (partitions arriving while a trainer runs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np

SLOTS, DENSE = 26, 13


class DriftWorld:
    """The drifting ground truth (see the module docstring)."""

    def __init__(self, world_seed: int = 0, vocab: int = 50, drifting: int = 6, drift: float = 0.3,
                 strength: float = 1.2) -> None:
        rng = np.random.default_rng(world_seed)
        self.vocab, self.drifting, self.drift = vocab, drifting, drift
        self.fixed = rng.normal(0, 0.35, (SLOTS, vocab))
        self.a = rng.normal(0, strength, (drifting, vocab))
        self.b = rng.normal(0, strength, (drifting, vocab))
        self.dense = rng.normal(0, 0.8, DENSE)
        self.bias = -1.0

    def weights(self, hour: int) -> np.ndarray:
        """``(SLOTS, vocab)`` id weights at ``hour`` (hours since the first partition)."""
        w = self.fixed.copy()
        angle = self.drift * hour
        w[:self.drifting] = np.cos(angle) * self.a + np.sin(angle) * self.b
        return w

    def rows(self, hour: int, n: int, seed: int) -> list[str]:
        rng = np.random.default_rng([seed, hour])
        ids = rng.integers(0, self.vocab, (n, SLOTS))
        dense = np.round(rng.random((n, DENSE)), 4)
        logit = self.bias + self.weights(hour)[np.arange(SLOTS), ids].sum(1) + (dense - 0.5) @ self.dense
        clicks = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
        out = []
        for i in range(n):
            parts = [f"click:{clicks[i]}"] + [f"dense_feature:{v:g}" for v in dense[i]]
            parts += [f"{s + 1}:{s * 1000 + ids[i, s]}" for s in range(SLOTS)]
            out.append(" ".join(parts))
        return out


def write_partition(folder: Path, lines: list[str], done_file: str | None) -> None:
    """``folder/part-0.txt`` (renamed into place), then ``folder/<done_file>``."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".part-0.txt.{os.getpid()}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, folder / "part-0.txt")
    if done_file:
        (folder / done_file).touch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="the partitions' root (runner.train_data_dir)")
    parser.add_argument("--start", default="20260101/00", help="the first partition written (YYYYMMDD/HH)")
    parser.add_argument("--hours", type=int, default=12, help="partitions written, one per hour")
    parser.add_argument("--origin", default=None, help="hour 0 of the drift (default: --start); give the first "
                        "partition's time when a second call continues a stream")
    parser.add_argument("--rows", type=int, default=2000, help="rows per partition")
    parser.add_argument("--seed", type=int, default=1, help="seed of the rows")
    parser.add_argument("--world-seed", type=int, default=0, help="seed of the ground truth")
    parser.add_argument("--vocab", type=int, default=50, help="ids per slot")
    parser.add_argument("--drifting", type=int, default=6, help="slots whose weights rotate")
    parser.add_argument("--drift", type=float, default=0.3, help="radians per hour of the rotation")
    parser.add_argument("--done-file", default="_SUCCESS", help="written after the data ('' for none)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to sleep before each partition")
    args = parser.parse_args(argv)
    pattern = "%Y%m%d/%H"
    try:
        start = dt.datetime.strptime(args.start, pattern)
        origin = dt.datetime.strptime(args.origin, pattern) if args.origin else start
    except ValueError as err:
        print(f"error: --start/--origin: expected YYYYMMDD/HH ({err})", file=sys.stderr)
        return 2
    world = DriftWorld(args.world_seed, args.vocab, args.drifting, args.drift)
    for k in range(args.hours):
        when = start + dt.timedelta(hours=k)
        if args.delay:
            time.sleep(args.delay)
        hour = int((when - origin).total_seconds() // 3600)
        write_partition(Path(args.output) / when.strftime(pattern), world.rows(hour, args.rows, args.seed),
                        args.done_file or None)
        print(f"wrote partition {when.strftime(pattern)} ({args.rows} rows, hour {hour})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
