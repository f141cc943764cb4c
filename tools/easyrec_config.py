"""Convert an EasyRec pipeline config to recstack's YAML.

``python tools/easyrec_config.py pipeline.config -o config.yaml``

Reads the protobuf text (recstack/easyrec/pbtxt.py), maps it (recstack/easyrec/convert.py, doc/easyrec_config.md)
and writes the YAML, whose first lines list every field not carried over and every change; the same list is
printed. Without ``-o`` the YAML goes to stdout and the list to stderr. Exit status: 0 done, 2 an unreadable
file (one line: ``file:line:column: ...`` for a syntax error) or not an EasyRec pipeline config.
"""

import argparse
import os
import sys

from recstack.cli import report_user_errors

EPILOG = """\
examples:
  python tools/easyrec_config.py samples/model_config/mmoe_backbone_on_taobao.config -o models/multitask/mmoe/mm.yaml
  python tools/easyrec_config.py dcn_backbone.config > config.yaml
  python tools/trainer.py -m models/multitask/mmoe/mm.yaml

Relative data paths (EasyRec: relative to the working directory) are written relative to the YAML's folder,
where recstack resolves them; a data file becomes its folder (recstack reads every file of a folder). The
YAML runs from a model folder whose wrapper reads it (doc/backbone.md). Exit status: 0 done, 2 an
unreadable file or not an EasyRec pipeline config (one line naming file:line:column)."""


@report_user_errors(plain=True)
def main(argv=None) -> int:
    from recstack.easyrec.convert import convert_file
    from recstack.fileio import atomic_open

    parser = argparse.ArgumentParser(description="Convert an EasyRec pipeline config (protobuf text) to recstack's "
                                                 "YAML.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline_config", help="the EasyRec pipeline config (protobuf text format)")
    parser.add_argument("-o", "--output", help="the YAML file to write (default: stdout)")
    args = parser.parse_args(argv)

    folder = os.path.dirname(os.path.abspath(args.output)) if args.output else None
    if folder is not None and not os.path.isdir(folder):
        raise FileNotFoundError(f"-o {args.output}: folder '{folder}' does not exist")
    result = convert_file(args.pipeline_config, args.output)
    text = result.to_yaml()
    if args.output is None:
        sys.stdout.write(text)
        print("\n".join(result.report_lines()), file=sys.stderr)
        return 0
    with atomic_open(args.output) as f:
        f.write(text)
    print("\n".join(result.report_lines()))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
