"""Export a trained model: ``python tools/to_static.py -m models/rank/deepfm/config.yaml [-o key=value ...]``.

Loads the checkpoint ``runner.model_init_path`` (default: the newest ``<model_save_path>/<epoch>/``)
and writes ``<model_save_path>/tostatic.pt`` (TorchScript), ``tostatic.onnx`` (ONNX, dynamic batch)
and ``tostatic.json`` (inputs, outputs, their meaning), after checking eager, TorchScript and ONNX
Runtime agree within 1e-5 on real batches of the model's reader (recstack/export.py,
doc/inference.md). Exit status: 0 done, 1 the checks failed (nothing written), 2 a bad config,
checkpoint or data.
"""

import os
import sys

# Before torch loads: see tools/trainer.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recstack.cli import EPILOGS, parse_args, report_user_errors  # noqa: E402
from recstack.export import ExportError  # noqa: E402


@report_user_errors(failures=[(ExportError, 1, "export failed: ")])
def main(argv=None) -> int:
    import logging

    from recstack.config import load_config
    from recstack.export import export_model
    from recstack.utils import setup_logging

    args = parse_args("Export a trained model to TorchScript and ONNX (PaddleRec's tools/to_static.py).", argv,
                      EPILOGS["to_static"])
    setup_logging()
    result = export_model(load_config(args.config_yaml, args.opt))
    logging.getLogger("recstack").info("done: %s, %s, %s", result.torchscript, result.onnx, result.spec_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
