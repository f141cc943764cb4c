"""Evaluate the exported graph (PaddleRec's static-graph inference): ``python tools/static_infer.py -m <config.yaml>``.

Runs ``tools/to_static.py``'s export (ONNX Runtime or TorchScript) over ``runner.test_data_dir`` with the same metric
lines as ``tools/infer.py`` (recstack/evaluator.py ``evaluate_export``; doc/static.md).
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see tools/trainer.py

from recstack.cli import static_infer_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(static_infer_main())
