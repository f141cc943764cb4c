"""Fit the vocabularies of a feature config: ``python tools/build_vocab.py -m <config.yaml> [-o key=value ...]``.

Reads ``runner.train_data_dir`` with the config's own train reader and, for every id feature with
``vocab: {min_count, max_size}``, keeps the values seen at least ``min_count`` times, the most frequent first (ties
in the values' order), at most ``max_size``; writes them to ``<runner.model_save_path>/vocab/<feature>.txt`` with
``manifest.json`` (recstack/easyrec/build_vocab.py, doc/vocabulary.md). Training, ``tools/infer.py``,
``tools/to_static.py`` and the service then map values through them. Exit status: 0 done, 2 a bad config or data
(one ERROR line).
"""

import os
import sys

# Before torch loads: see tools/trainer.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recstack.cli import argument_parser, report_user_errors  # noqa: E402

EPILOG = """\
examples:
  python tools/build_vocab.py -m models/rank/deepfm/config_vocab.yaml
  python tools/build_vocab.py -m models/rank/deepfm/config_vocab.yaml -o runner.model_save_path=output_vocab_run

Writes <runner.model_save_path>/vocab/<feature>.txt and manifest.json (the same -o runner.model_save_path as the
training run that uses them). A vocabulary that changes while checkpoints trained with the old one lie beside it is
refused (--force replaces it). Keys: doc/vocabulary.md. Exit status: 0 done, 2 a bad config or data (one ERROR line)."""


@report_user_errors
def main(argv=None) -> int:
    import logging

    from recstack.config import load_config
    from recstack.easyrec.build_vocab import MANIFEST, build_vocabularies
    from recstack.easyrec.vocab import vocab_dir
    from recstack.utils import setup_logging

    parser = argument_parser("Fit the vocabularies of a feature config from its training data.", EPILOG)
    parser.add_argument("--force", action="store_true",
                        help="replace vocabularies that change even when checkpoints trained with them lie beside them")
    args = parser.parse_args(argv)
    setup_logging()
    config = load_config(args.config_yaml, args.opt)
    manifest = build_vocabularies(config, force=args.force)
    sizes = ", ".join(f"{name} {entry['entries']}" for name, entry in manifest["features"].items())
    logging.getLogger("recstack").info("done: %s (%s)", vocab_dir(config) / MANIFEST, sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
