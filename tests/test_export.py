"""recstack.export / tools/to_static.py: TorchScript + ONNX + JSON for any model, checked against eager."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from recstack.checkpoint import save_checkpoint
from recstack.config import load_config
from recstack.data import create_loader
from recstack.export import ExportError, describe_inputs, export_model, resolve_checkpoint
from recstack.export_spec import load_spec, torchscript_apis
from recstack.utils import seed_everything
from recstack.wrapper import build_model

REPO = Path(__file__).resolve().parents[1]
DEEPFM = REPO / "models/rank/deepfm/config.yaml"
MMOE = REPO / "models/multitask/mmoe/config.yaml"
DBMTL = REPO / "models/multitask/dbmtl/config.yaml"
DIN = REPO / "models/rank/din/config.yaml"


def checkpoint(config_path: Path, folder: Path) -> Path:
    """A seeded, untrained checkpoint ``folder/0`` of the config's model (parity needs no training)."""
    config = load_config(config_path)
    seed_everything(0)
    _, model = build_model(config, torch.device("cpu"))
    return save_checkpoint(folder / "0", model)


def export(config_path: Path, folder: Path, *overrides: str):
    return export_model(load_config(config_path, [f"runner.model_save_path={folder}", *overrides]))


@pytest.fixture(scope="module")
def deepfm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deepfm_export")
    checkpoint(DEEPFM, folder)
    return export(DEEPFM, folder), folder


def test_deepfm_export_writes_described_files_that_match_eager(deepfm):
    result, folder = deepfm
    assert sorted(p.name for p in folder.iterdir()) == ["0", "tostatic.json", "tostatic.onnx", "tostatic.pt"]
    spec = load_spec(folder / "tostatic.json")
    assert spec == result.spec
    assert spec["model_name"] == "deepfm" and spec["checkpoint"] == str((folder / "0").resolve())
    assert spec["inputs"] == [
        {"name": "sparse", "dtype": "int64", "shape": ["batch", 26], "column": "sparse"},
        {"name": "dense", "dtype": "float32", "shape": ["batch", 13], "column": "dense"},
    ]
    (output,) = spec["outputs"]
    assert output["name"] == "prob" and output["kind"] == "probability" and output["column"] == "label"
    assert output["shape"] == ["batch", 1] and output["dtype"] == "float32"
    assert spec["parity"]["tolerance"] == 1e-5
    assert max(spec["parity"]["max_abs_diff"].values()) <= 1e-5
    assert [c["batch"] for c in spec["parity"]["checked"]] == ["batch of 1000", "first row alone"]
    for name in ("tostatic.pt", "tostatic.onnx"):
        assert spec["sizes_bytes"][name] == (folder / name).stat().st_size > 36e6  # the 1,000,001 x 9 table
    # the files, as a user loads them, on a batch size the trace never saw
    config = load_config(DEEPFM)
    batch = next(iter(create_loader(config, "infer")))
    sparse, dense = batch["sparse"][:7], batch["dense"][:7]
    _, model = build_model(config, torch.device("cpu"))
    model.load_state_dict(torch.load(folder / "0" / "model.pt"))
    with torch.no_grad():
        eager = model.eval()(sparse, dense).numpy()
        with torchscript_apis():
            scripted = torch.jit.load(str(folder / "tostatic.pt"))
        (ts,) = scripted(sparse, dense)
    session = ort.InferenceSession(str(folder / "tostatic.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("sparse", ["batch", 26]), ("dense", ["batch", 13])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("prob", ["batch", 1])]
    (onnx_out,) = session.run(None, {"sparse": sparse.numpy(), "dense": dense.numpy()})
    assert eager.shape == (7, 1)
    np.testing.assert_allclose(ts.numpy(), eager, atol=1e-5, rtol=0)
    np.testing.assert_allclose(onnx_out, eager, atol=1e-5, rtol=0)


def test_multitask_models_export_one_named_output_per_task(tmp_path):
    checkpoint(MMOE, tmp_path / "mmoe")
    spec = export(MMOE, tmp_path / "mmoe").spec
    assert [(o["name"], o["task"], o["kind"], o["column"]) for o in spec["outputs"]] == [
        ("prob_income", "income", "probability", "income"), ("prob_marital", "marital", "probability", "marital")]
    assert spec["inputs"] == [{"name": "features", "dtype": "float32", "shape": ["batch", 499], "column": "features"}]
    # an EasyRec model with a regression tower: the L2_LOSS output is a value, named so
    checkpoint(DBMTL, tmp_path / "dbmtl")
    spec = export(DBMTL, tmp_path / "dbmtl").spec
    assert [(o["name"], o["kind"]) for o in spec["outputs"]] == [("prob_is_valid_play", "probability"),
                                                                 ("value_play_time", "value")]
    assert "regression value" in spec["outputs"][1]["meaning"]
    session = ort.InferenceSession(str(tmp_path / "dbmtl" / "tostatic.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["prob_is_valid_play", "value_play_time"]


def test_variable_length_inputs_get_a_dynamic_axis_and_are_checked_at_other_lengths(tmp_path):
    checkpoint(DIN, tmp_path)
    spec = export(DIN, tmp_path).spec
    shapes = {i["name"]: i["shape"] for i in spec["inputs"]}
    assert shapes == {"hist_item": ["batch", "hist_item_length"], "hist_cat": ["batch", "hist_cat_length"],
                      "hist_len": ["batch", 1], "target_item": ["batch", 1], "target_cat": ["batch", 1]}
    checked = spec["parity"]["checked"]
    lengths = {c["input_shapes"]["hist_item"][1] for c in checked}
    assert len(checked) == 3 and len(lengths) == 2, checked  # a batch whose padded history length differs
    session = ort.InferenceSession(str(tmp_path / "tostatic.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", "hist_item_length"]


def test_failed_parity_writes_nothing_and_keeps_the_previous_export(deepfm, tmp_path):
    result, folder = deepfm
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    with pytest.raises(ExportError, match=r"deepfm: torchscript differs from eager by 0 \(> -1\) on the batch of "
                                          r"1000; nothing was written"):
        export_model(load_config(DEEPFM, [f"runner.model_save_path={folder}"]), tolerance=-1.0)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # no temporary files either


def test_checkpoint_resolution(tmp_path):
    config = load_config(MMOE, [f"runner.model_save_path={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="no checkpoint to export: runner.model_init_path is not set"):
        resolve_checkpoint(config)
    for epoch in (0, 2, 10):
        (tmp_path / str(epoch)).mkdir()
        (tmp_path / str(epoch) / "model.pt").write_bytes(b"")
    (tmp_path / "11").mkdir()  # no model.pt: not a checkpoint
    assert resolve_checkpoint(config) == tmp_path / "10"
    assert resolve_checkpoint(load_config(MMOE, ["runner.model_init_path=/x/3"])) == Path("/x/3")


class _Wrapper:
    feed_names = ("ids", "seq")
    export_dynamic_axes = {"ids": {1: "fields"}}

    def create_feeds(self, batch, config):
        return [batch["ids"], batch["seq"]], []


def test_describe_inputs_uses_reader_columns_and_declared_axes():
    batch = {"ids": torch.zeros(4, 3, dtype=torch.int64), "seq": torch.zeros(4, 5), "label": torch.zeros(4, 1)}
    specs, tensors = describe_inputs(_Wrapper(), None, batch, {"seq": (np.float32, 0), "ids": (np.int64, 3)})
    assert [(s.name, s.dtype, s.shape, s.column) for s in specs] == [
        ("ids", "int64", ["batch", "fields"], "ids"), ("seq", "float32", ["batch", "seq_length"], "seq")]
    assert tensors[0] is batch["ids"]
    bad = _Wrapper()
    bad.export_dynamic_axes = {"seq": {2: "x"}}
    with pytest.raises(ExportError,
                       match=r"export_dynamic_axes\['seq'\] names axis 2, but the input has shape \(4, 5\)"):
        describe_inputs(bad, None, batch)


def test_to_static_cli_errors_are_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "tools/to_static.py"), "-m", str(MMOE), "-o",
                           f"runner.model_save_path={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "ERROR - no checkpoint to export" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert not any(tmp_path.iterdir())
