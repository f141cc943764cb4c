"""Train a model from its YAML: ``python tools/trainer.py -m models/rank/deepfm/config.yaml [-o key=value ...]``."""

import os
import sys

# Before torch loads: OpenMP threads sleep instead of spinning while waiting, so a
# busy reader thread or another process cannot collapse throughput (doc/yaml.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from torch.distributed.elastic.multiprocessing.errors import record  # noqa: E402

from recstack.cli import train_main  # noqa: E402

if __name__ == "__main__":
    # under torchrun, an uncaught error is written to the job's error file: torchrun then names the
    # failed rank and prints its traceback (doc/distributed.md)
    sys.exit(record(train_main)())
