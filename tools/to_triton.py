"""Write a Triton Inference Server model repository for an exported model (ONNX Runtime backend).

    python tools/to_triton.py --model_dir output_model_deepfm --repository triton_models \\
        [--name deepfm] [--version 1] [--max_batch_size 256] [--max_queue_delay_us 2000] \\
        [--preferred_batch_sizes 64,128,256] [--instance_kind gpu|cpu] [--instance_count 1]

writes ``<repository>/<name>/<version>/model.onnx`` (a copy of the export's ``tostatic.onnx``) and
``<repository>/<name>/config.pbtxt``: ``platform: "onnxruntime_onnx"``, ``max_batch_size``,
``dynamic_batching`` (preferred sizes, queue delay), the inputs and outputs with the names, data
types and per-row dims of the export's JSON (``-1`` for a dynamic axis, e.g. DIN's history length),
and an ``instance_group``. Only the inputs the ONNX graph has are listed (an input that reaches no
output is not an ONNX input). Launch it with ``tritonserver --model-repository <repository>``
(doc/serving.md).
"""

import argparse
import sys
from pathlib import Path

from recstack.cli import report_user_errors

#: numpy dtype name → Triton data type
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
                "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="the folder tools/to_static.py wrote")
    parser.add_argument("--repository", required=True, help="the Triton model repository folder to write into")
    parser.add_argument("--name", help="model name in the repository (default: the export's model name)")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--max_batch_size", type=int, default=256)
    parser.add_argument("--max_queue_delay_us", type=int, default=2000,
                        help="dynamic batching: longest wait to fill a preferred batch size (microseconds)")
    parser.add_argument("--preferred_batch_sizes", default="64,128,256", help="comma-separated")
    parser.add_argument("--instance_kind", choices=["gpu", "cpu"], default="gpu")
    parser.add_argument("--instance_count", type=int, default=1)
    return parser.parse_args(argv)


def tensor_block(specs, names=None) -> str:
    """``input [...]`` / ``output [...]`` entries: name, data_type, dims without the batch axis."""
    entries = []
    for s in specs:
        if names is not None and s["name"] not in names:
            continue
        if s["dtype"] not in TRITON_TYPES:
            raise ValueError(f"{s['name']}: dtype {s['dtype']} has no Triton data type here")
        dims = ", ".join("-1" if isinstance(d, str) else str(d) for d in s["shape"][1:]) or "1"
        entries.append(f'  {{\n    name: "{s["name"]}"\n    data_type: {TRITON_TYPES[s["dtype"]]}\n'
                       f'    dims: [ {dims} ]\n  }}')
    return ",\n".join(entries)


def model_config(spec: dict, name: str, max_batch_size: int, max_queue_delay_us: int,
                 preferred: list[int], instance_kind: str, instance_count: int) -> str:
    """The ``config.pbtxt`` text of an export description."""
    onnx_inputs = spec.get("onnx_inputs") or [s["name"] for s in spec["inputs"]]
    preferred = sorted(p for p in preferred if 0 < p <= max_batch_size) or [max_batch_size]
    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{tensor_block(spec['inputs'], onnx_inputs)}\n]\n"
        f"output [\n{tensor_block(spec['outputs'])}\n]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(str(p) for p in preferred)} ]\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n"
        "}\n"
        "instance_group [\n"
        f"  {{\n    count: {instance_count}\n    kind: KIND_{instance_kind.upper()}\n  }}\n"
        "]\n"
    )


def write_repository(model_dir, repository, name=None, version: int = 1, max_batch_size: int = 256,
                     max_queue_delay_us: int = 2000, preferred=(64, 128, 256), instance_kind: str = "gpu",
                     instance_count: int = 1) -> Path:
    """Write ``<repository>/<name>/{config.pbtxt, <version>/model.onnx}``; returns the model folder."""
    from recstack.export_spec import ExportedModel
    from recstack.fileio import atomic_open, atomic_path

    if max_batch_size < 1 or instance_count < 1 or version < 1 or max_queue_delay_us < 0:
        raise ValueError("--max_batch_size, --instance_count and --version must be positive, "
                         "--max_queue_delay_us >= 0")
    model = ExportedModel.locate(model_dir)
    name = name or model.model_name
    folder = Path(repository) / name
    text = model_config(model.spec, name, max_batch_size, max_queue_delay_us, list(preferred), instance_kind,
                        instance_count)
    data = model.read("onnx")  # checked against the export's JSON (refuses a mixed or interrupted export)
    with atomic_path(folder / str(version) / "model.onnx") as tmp:
        tmp.write_bytes(data)
    with atomic_open(folder / "config.pbtxt") as f:
        f.write(text)
    return folder


@report_user_errors(failures=[((FileNotFoundError, ValueError), 2, "error: ")], plain=True)
def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        preferred = [int(p) for p in args.preferred_batch_sizes.split(",") if p.strip()]
    except ValueError:
        print(f"--preferred_batch_sizes: expected comma-separated integers, got {args.preferred_batch_sizes!r}",
              file=sys.stderr)
        return 2
    folder = write_repository(args.model_dir, args.repository, args.name, args.version, args.max_batch_size,
                              args.max_queue_delay_us, preferred, args.instance_kind, args.instance_count)
    print(f"wrote {folder}/config.pbtxt and {folder}/{args.version}/model.onnx; run: "
          f"tritonserver --model-repository {Path(args.repository).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
