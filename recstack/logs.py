"""The PaddleRec-style log lines that users and scripts grep, in one place.

``epoch: 0, batch_id: 100, auc: 0.712345, loss: 0.452300, avg_reader_cost: ... sec, avg_batch_cost: ... sec,
avg_samples: 512.00000, ips: 88539.5 ins/s`` (:func:`format_metrics`, :func:`format_print_dict`,
:class:`IntervalStats`) and ``memory (RSS): training peak ... MiB, peak ... MiB, now ... MiB``
(:func:`memory_mib`, :func:`memory_line`). Light: no model, data or distributed code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from recstack.metrics import Metric


def format_metrics(names: Sequence[str], metrics: Sequence[Metric]) -> str:
    """``"auc: 0.712345, "`` for each metric (PaddleRec's log layout)."""
    return "".join(f"{name}: {metric.compute():.6f}, " for name, metric in zip(names, metrics))


def format_print_dict(print_dict: dict[str, Any] | None) -> str:
    """``"name: 0.123456, "`` for each value a wrapper's ``train_forward`` returned to print."""
    if not print_dict:
        return ""
    return "".join(f"{k}: {float(v):.6f}, " for k, v in print_dict.items())


class IntervalStats:
    """Reader/batch cost and throughput since the last batch log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.batches = 0
        self.samples = 0
        self.reader_cost = 0.0
        self.batch_cost = 0.0

    def add(self, reader_cost: float, batch_cost: float, samples: int) -> None:
        self.batches += 1
        self.samples += samples
        self.reader_cost += reader_cost
        self.batch_cost += batch_cost

    def line(self) -> str:
        """``avg_reader_cost: ... sec, avg_batch_cost: ... sec, avg_samples: ..., ips: ... ins/s``."""
        n = max(1, self.batches)
        return (f"avg_reader_cost: {self.reader_cost / n:.5f} sec, avg_batch_cost: {self.batch_cost / n:.5f} sec, "
                f"avg_samples: {self.samples / n:.5f}, ips: {self.samples / max(self.batch_cost, 1e-9):.1f} ins/s")


def memory_mib() -> tuple[float, float]:
    """This process's (peak, current) resident memory in MiB (Linux: ``ru_maxrss`` and ``/proc/self/statm``)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    try:
        with open("/proc/self/statm") as f:
            now = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        now = float("nan")
    return peak, now


def memory_line(values: Sequence[Sequence[float]], per_rank: bool) -> str:
    """``memory (RSS): training peak T MiB, peak P MiB, now N MiB`` from ``[(T, P, N)]``, or with
    ``per_rank`` ``memory (RSS) per rank: rank 0: training peak ...; rank 1: ...`` (one triple per rank)."""
    text = "; ".join(f"{f'rank {r}: ' if per_rank else ''}training peak {t:.0f} MiB, peak {p:.0f} MiB, "
                     f"now {n:.0f} MiB" for r, (t, p, n) in enumerate(values))
    return f"memory (RSS){' per rank' if per_rank else ''}: {text}"
