"""tools/to_triton.py: the Triton model repository's layout, and config.pbtxt against the ONNX graph."""

import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from recstack.config import load_config
from recstack.export import export_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_export import checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ONNX_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT64: "TYPE_INT64"}


def parse_pbtxt(text: str) -> dict:
    """A small protobuf text-format reader: ``key: value``, ``key { ... }``, ``key [ {...}, ... ]``, ``[1, 2]``.
    Repeated keys become lists."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]|[^\s{}\[\],:]+', text)
    pos = 0

    def value():
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token == "{":
            return message("}")
        if token == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return items
        if token.startswith('"'):
            return token[1:-1]
        return int(token) if re.fullmatch(r"-?\d+", token) else token

    def message(end):
        nonlocal pos
        fields = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            fields.setdefault(key, []).append(value())
        pos += 1
        return {k: v[0] if len(v) == 1 else v for k, v in fields.items()}

    return message(None)


@pytest.fixture(scope="module")
def din_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("din_triton")
    config = REPO / "models/rank/din/config.yaml"
    checkpoint(config, folder)
    export_model(load_config(config, [f"runner.model_save_path={folder}"]))
    return folder


def test_repository_layout_and_config_match_the_onnx_graph(din_export, tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "tools/to_triton.py"), "--model_dir", str(din_export),
                          "--repository", str(tmp_path / "repo"), "--max_batch_size", "128",
                          "--preferred_batch_sizes", "32,64,512", "--max_queue_delay_us", "500",
                          "--instance_kind", "cpu", "--instance_count", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "tritonserver --model-repository" in out.stdout
    files = sorted(str(p.relative_to(tmp_path / "repo")) for p in (tmp_path / "repo").rglob("*") if p.is_file())
    assert files == ["din/1/model.onnx", "din/config.pbtxt"]
    assert (tmp_path / "repo/din/1/model.onnx").read_bytes() == (din_export / "tostatic.onnx").read_bytes()

    config = parse_pbtxt((tmp_path / "repo/din/config.pbtxt").read_text())
    assert config["name"] == "din" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 128
    assert config["dynamic_batching"] == {"preferred_batch_size": [32, 64], "max_queue_delay_microseconds": 500}
    assert config["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]

    graph = onnx.load(str(tmp_path / "repo/din/1/model.onnx")).graph

    def graph_tensors(values):
        # Triton's dims leave out the batch axis (max_batch_size > 0); a named (dynamic) axis is -1
        return [{"name": v.name, "data_type": ONNX_TYPES[v.type.tensor_type.elem_type],
                 "dims": [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim[1:]]}
                for v in values]

    inputs = config["input"] if isinstance(config["input"], list) else [config["input"]]
    outputs = config["output"] if isinstance(config["output"], list) else [config["output"]]
    assert inputs == graph_tensors(graph.input)
    assert outputs == graph_tensors(graph.output)
    assert [i["name"] for i in inputs] == ["hist_item", "hist_cat", "hist_len", "target_item", "target_cat"]
    assert inputs[0]["dims"] == [-1] and inputs[2]["dims"] == [1]  # the history length is dynamic
    assert outputs == [{"name": "prob", "data_type": "TYPE_FP32", "dims": [1]}]


def test_bad_arguments_are_errors(din_export, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("to_triton", REPO / "tools/to_triton.py")
    to_triton = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(to_triton)
    assert to_triton.main(["--model_dir", str(tmp_path / "none"), "--repository", str(tmp_path / "repo")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert to_triton.main(["--model_dir", str(din_export), "--repository", str(tmp_path / "repo"),
                           "--preferred_batch_sizes", "a,b"]) == 2
    assert "--preferred_batch_sizes" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()
