"""Evaluate saved checkpoints: ``python tools/infer.py -m models/rank/deepfm/config.yaml [-o key=value ...]``."""

import os
import sys

# Before torch loads: see tools/trainer.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from torch.distributed.elastic.multiprocessing.errors import record  # noqa: E402

from recstack.cli import infer_main  # noqa: E402

if __name__ == "__main__":
    # under torchrun, an uncaught error is written to the job's error file: torchrun then names the
    # failed rank and prints its traceback (doc/distributed.md)
    sys.exit(record(infer_main)())
