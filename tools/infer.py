"""Evaluate saved checkpoints: ``python tools/infer.py -m models/rank/deepfm/config.yaml [-o key=value ...]``."""

import os
import sys

# Before torch loads: see tools/trainer.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recstack.cli import infer_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(infer_main())
