"""Convert a model's text data to Parquet through its reader's own parsing.

    python tools/to_parquet.py -m models/multitask/mmoe/config_taobao.yaml \\
        --src models/multitask/mmoe/data/taobao_sample_data/train --dst /data/taobao_parquet/train
    python tools/to_parquet.py -m models/rank/deepfm/config.yaml --src /data/criteo/train --dst /data/criteo_pq/train

Each data file of ``--src`` (a folder, a file or a glob; default: the config's ``runner.train_data_dir``)
becomes ``<dst>/<file name without suffix>.parquet``, written atomically, streamed (fixed row groups of
100,000 rows, zstd: the same text gives byte-identical files). The config's text reader decides the layout
(:mod:`recstack.data.to_parquet`): a feature config (the ``tabular`` reader, CSVInput) keeps every input field
as a column of its type, tag and sequence fields as list columns, read back with ``-o
hyper_parameters.data_config.input_type=ParquetInput``; the slot format (``slot`` / ``criteo`` readers) becomes
the ``slot_parquet`` layout (doc/custom_reader.md#parquet). A malformed line stops the conversion with the
reader's error (file, line, field). Exit status: 0 done, 2 a bad config or data (one ERROR line).
"""

import sys

from recstack.cli import argument_parser, report_user_errors


@report_user_errors
def main(argv=None) -> int:
    import logging

    from recstack.config import ConfigError, load_config
    from recstack.data.factory import resolve_reader
    from recstack.data.to_parquet import convert, converter_for
    from recstack.utils import setup_logging

    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--src", help="text data: a folder, a file or a glob (default: runner.train_data_dir)")
    parser.add_argument("--dst", required=True, help="output folder of the .parquet files")
    parser.add_argument("--mode", choices=("train", "infer"), default="train",
                        help="whose reader parses the text: runner.train_reader_path or infer_reader_path")
    args = parser.parse_args(argv)
    setup_logging()
    config = load_config(args.config_yaml, args.opt)
    key = "runner.train_reader_path" if args.mode == "train" else "runner.infer_reader_path"
    layout = converter_for(config, resolve_reader(config, key))
    src = args.src or config.get("runner.train_data_dir" if args.mode == "train" else "runner.test_data_dir")
    if not src:
        raise ConfigError("no text data: give --src (the config sets no data folder)")
    written = convert(config, layout, src, args.dst)
    logging.getLogger("recstack").info("done: %d file(s), %d rows, %s layout, in %s", len(written),
                                       sum(rows for _, rows in written), layout, args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
