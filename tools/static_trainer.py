"""Train with the step compiled (PaddleRec's static-graph trainer): ``python tools/static_trainer.py -m <config.yaml>``.

``tools/trainer.py`` with ``runner.compile: True``: the network's forward and backward run as a graph compiled by
``torch.compile`` (recstack/compile.py, doc/static.md); checkpoints, log lines and ``-o`` are ``tools/trainer.py``'s.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see tools/trainer.py

from torch.distributed.elastic.multiprocessing.errors import record  # noqa: E402

from recstack.cli import train_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(record(train_main)(static=True))
