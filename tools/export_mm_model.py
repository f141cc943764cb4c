"""Export E2E_MM_DBMTL's three models from one checkpoint (EasyRec's ``export_mm_model.py`` flags).

    python tools/export_mm_model.py -m models/multitask/e2e_mm_dbmtl/config.yaml \\
        --img_model_export_dir output_model_e2e_mm_dbmtl/img_model \\
        --rec_model_export_dir output_model_e2e_mm_dbmtl/rec_model \\
        --total_model_export_dir output_model_e2e_mm_dbmtl/total_model [-o runner.model_init_path=...]

* image model: images ``img`` float32 ``(B, H, W, 3)`` (BGR, 0-255) -> ``img_emb`` ``(B, D)``
  (precompute item embeddings for a vector store);
* rec model: the ``all`` features + ``img_emb`` ``(B, D)`` -> the towers' outputs (no CNN inside);
* total model: the ``all`` features + ``img`` ``(B, H, W, 3)``, one image per row -> the towers' outputs.

Each folder gets ``tostatic.pt`` (TorchScript), ``tostatic.onnx`` and ``tostatic.json``, written only after
eager, TorchScript and ONNX Runtime agree within 1e-5, and after total(x, img) = rec(x, img_model(img)) and
total on ungrouped rows = the grouped training graph (1e-5; through EasyRec's 6-decimal text form of
``img_emb``, 1e-4). The checkpoint is ``runner.model_init_path``, else the newest
``<model_save_path>/<epoch>/`` (as tools/to_static.py). A flag left out skips that model; with none given,
all three go to ``<model_save_path>/{img,rec,total}_model``. Exit status: 0 done, 1 a check failed,
2 a bad config, checkpoint or data.
"""

import os
import sys

# Before torch loads: see tools/trainer.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402

from recstack.cli import argument_parser, report_user_errors  # noqa: E402
from recstack.export import ExportError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--img_model_export_dir", help="folder of the image model (images -> img_emb)")
    parser.add_argument("--rec_model_export_dir", help="folder of the rec model (features + img_emb -> predictions)")
    parser.add_argument("--total_model_export_dir", help="folder of the total model (features + image -> predictions)")
    return parser.parse_args(argv)


@report_user_errors(failures=[(ExportError, 1, "export failed: ")])
def main(argv=None) -> int:
    import logging
    from pathlib import Path

    from recstack.config import load_config
    from recstack.export import export_parts
    from recstack.utils import setup_logging

    args = parse_args(argv)
    setup_logging()
    logger = logging.getLogger("recstack")
    config = load_config(args.config_yaml, args.opt)
    # EasyRec's flags name the parts of E2E_MM_DBMTL (the wrapper's export_parts)
    dirs = {kind: path for kind, path in (("img", args.img_model_export_dir), ("rec", args.rec_model_export_dir),
                                          ("total", args.total_model_export_dir)) if path}
    if not dirs:
        root = Path(config.get("runner.model_save_path"))
        dirs = {kind: root / f"{kind}_model" for kind in ("img", "rec", "total")}
    results = export_parts(config, dirs)
    for kind, result in results.items():
        logger.info("%s model: %s, %s, %s (parity, relative above 1: %s)", kind, result.torchscript, result.onnx,
                    result.spec_file, ", ".join(f"{k} {v:.2g}" for k, v in result.max_abs_diff.items()))
    checks = next(iter(results.values())).spec["part_checks"]
    logger.info("cross checks (difference, relative above 1): %s", ", ".join(f"{k} {v:.2g}" for k, v in checks.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
