"""recstack.backends / recstack.benchmark / recstack.inference / recstack.autolog / tools/infer_benchmark.py:
backends, settings, the report."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.metrics import roc_auc_score

from recstack import backends
from recstack.autolog import format_report, timing_stats
from recstack.backends import InferenceSettings, UnavailableError, create_backend
from recstack.benchmark import compute_metrics, run_benchmark
from recstack.config import load_config
from recstack.export import export_model
from recstack.export_spec import ExportedModel
from recstack.inference import load_batches
from recstack.trainer import train
from recstack.utils import seed_everything
from recstack.wrapper import build_model

REPO = Path(__file__).resolve().parents[1]
DEEPFM = REPO / "models/rank/deepfm/config.yaml"
PROVIDERS = ort.get_available_providers()
HAS_CUDA_EP = "CUDAExecutionProvider" in PROVIDERS and torch.cuda.is_available()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """DeepFM trained one epoch on its sample data (so the AUC means something), then exported."""
    folder = tmp_path_factory.mktemp("deepfm_infer")
    train(load_config(DEEPFM, ["runner.epochs=1", f"runner.model_save_path={folder}"]))
    export_model(load_config(DEEPFM, [f"runner.model_save_path={folder}"]))
    return ExportedModel.locate(folder)


@pytest.fixture(scope="module")
def batches(exported):
    return load_batches(exported, 128)[0]


def settings(backend="onnxruntime", **kw) -> InferenceSettings:
    return InferenceSettings(backend, cpu_threads=kw.pop("cpu_threads", 2), **kw)


def test_backends_predict_alike_and_metrics_match_sklearn(exported, batches):
    runs = {b: run_benchmark(create_backend(exported, settings(b)), batches, warmup=2, runs=2)
            for b in ("onnxruntime", "torchscript", "eager")}
    reference = runs["eager"].predictions[0]
    assert reference.shape == (1000, 1)
    for name, run in runs.items():
        np.testing.assert_allclose(run.predictions[0], reference, atol=1e-5, rtol=0, err_msg=name)
        assert len(run.inference) == 2 * len(batches) == 16 and len(run.pass_seconds) == 2
        assert run.samples_per_pass == 1000 and run.warmup == 2
    labels = runs["onnxruntime"].labels
    assert list(labels) == ["label"]
    metrics = compute_metrics(exported.spec["outputs"], runs["onnxruntime"].predictions, labels)
    expected = roc_auc_score(labels["label"].reshape(-1), runs["onnxruntime"].predictions[0].reshape(-1))
    assert list(metrics) == ["auc"] and abs(metrics["auc"] - expected) < 1e-4
    assert metrics["auc"] > 0.55  # one epoch on the planted-signal sample data


def test_int8_quantizes_once_and_stays_close(exported, batches):
    backend = create_backend(exported, settings(precision="int8"))
    quantized = exported.directory / "tostatic.int8.onnx"
    assert backend.path == quantized and quantized.stat().st_size < exported.onnx.stat().st_size / 3
    stamp = quantized.stat().st_mtime_ns
    create_backend(exported, settings(precision="int8"))
    assert quantized.stat().st_mtime_ns == stamp  # reused, not re-quantized
    fp32 = run_benchmark(create_backend(exported, settings()), batches).predictions[0]
    int8 = run_benchmark(backend, batches).predictions[0]
    assert 0 < np.abs(int8 - fp32).max() < 0.05


@pytest.mark.parametrize("kwargs, message", [
    ({"enable_tensorrt": True}, r"--enable_tensorRT True needs --use_gpu True"),
    ({"precision": "fp16"}, r"--precision fp16 needs a GPU"),
    ({"use_gpu": True, "precision": "fp16"}, r"add --enable_tensorRT True"),
    ({"use_gpu": True, "precision": "int8"}, r"runs on CPU only"),
    ({"use_gpu": True, "enable_mkldnn": True}, r"--enable_mkldnn True is a CPU setting"),
    ({"backend": "torchscript", "precision": "int8"}, r"use --backend onnxruntime"),
    ({"backend": "torchscript", "use_gpu": True, "enable_tensorrt": True}, r"onnxruntime's TensorRT provider"),
    ({"backend": "eager", "enable_mkldnn": True}, r"the eager backend runs fp32"),
    ({"cpu_threads": 0}, r"--cpu_threads must be at least 1"),
])
def test_meaningless_settings_are_refused(exported, kwargs, message):
    with pytest.raises(UnavailableError, match=message):
        create_backend(exported, settings(**kwargs))


@pytest.mark.skipif("DnnlExecutionProvider" in PROVIDERS, reason="this onnxruntime has the oneDNN provider")
def test_mkldnn_without_the_onednn_provider_says_so(exported):
    with pytest.raises(UnavailableError,
                       match=r"--enable_mkldnn True: this onnxruntime .* has no DnnlExecutionProvider"):
        create_backend(exported, settings(enable_mkldnn=True))


@pytest.mark.skipif("CUDAExecutionProvider" in PROVIDERS, reason="this onnxruntime has the CUDA provider")
def test_gpu_without_the_cuda_provider_says_so(exported):
    with pytest.raises(UnavailableError, match=r"--use_gpu True: this onnxruntime .* has no CUDAExecutionProvider.*"
                                               r"onnxruntime-gpu"):
        create_backend(exported, settings(use_gpu=True))
    with pytest.raises(UnavailableError, match=r"no TensorrtExecutionProvider"):
        create_backend(exported, settings(use_gpu=True, enable_tensorrt=True, precision="fp16"))


def test_a_provider_onnxruntime_drops_is_an_error_not_a_silent_cpu_run(exported, monkeypatch):
    """onnxruntime starts a session on CPU, logging a warning only, when CUDA fails to load."""
    real = ort.InferenceSession

    class DroppingSession(real):
        def __init__(self, path, options, providers):
            super().__init__(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: [*PROVIDERS, "CUDAExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", DroppingSession)
    with pytest.raises(UnavailableError, match=r"could not start CUDAExecutionProvider \(active providers: "
                                               r"CPUExecutionProvider\)"):
        create_backend(exported, settings(use_gpu=True))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA_EP, reason="needs onnxruntime-gpu and a CUDA device")
def test_gpu_backends_match_cpu(exported, batches):
    cpu = run_benchmark(create_backend(exported, settings()), batches).predictions[0]
    for kw, atol in [({"use_gpu": True}, 1e-4), ({"backend": "torchscript", "use_gpu": True}, 1e-4)]:
        got = run_benchmark(create_backend(exported, settings(**kw)), batches).predictions[0]
        np.testing.assert_allclose(got, cpu, atol=atol, rtol=0)
    if "TensorrtExecutionProvider" in PROVIDERS:
        got = run_benchmark(create_backend(exported, settings(use_gpu=True, enable_tensorrt=True, precision="fp16")),
                            batches).predictions[0]
        np.testing.assert_allclose(got, cpu, atol=1e-2, rtol=0)


def test_timing_stats_and_report_layout():
    stats = timing_stats([0.001] * 98 + [0.002, 0.1])
    assert stats["p50"] == pytest.approx(1.0) and stats["mean"] == pytest.approx(2.0)
    assert 1.9 < stats["p99"] < 3.0
    text = format_report([("Model info", [("model_name", "deepfm")]), ("Perf info", [("samples/s", 10)])])
    assert text == ("----------------------- Model info -----------------------\nmodel_name: deepfm\n"
                    "----------------------- Perf info -----------------------\nsamples/s: 10\n")


def run_tool(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "tools/infer_benchmark.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_report_log_file_and_predictions(exported, tmp_path):
    done = run_tool("--model_dir", str(exported.directory), "--data_dir",
                    str(REPO / "models/rank/deepfm/data/sample_data/test"), "--reader_file",
                    str(REPO / "models/rank/deepfm/criteo_reader.py"), "--batchsize", "256", "--cpu_threads", "2",
                    "--use_gpu", "False", "--enable_mkldnn", "False",
                    "--enable_tensorRT", "False", "--precision", "fp32",
                    "--benchmark", "True", "--save_log_path", "logs", "--save_predictions", "pred.tsv",
                    "--params_file", "ignored.pdiparams", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = (tmp_path / "logs" / "deepfm.log").read_text()
    assert report in done.stdout
    for title in ("Environment", "Model info", "Data info", "Conf info", "Perf info", "Metrics"):
        assert f"----------------------- {title} -----------------------" in report
    for pattern in (r"python: 3\.\d+", r"torch: 2\.\d+", r"onnxruntime: 1\.\d+", r"model_name: deepfm",
                    r"batch_size: 256\nsamples: 1000 in 4 batch\(es\), the last of 232",
                    r"execution providers: requested CPUExecutionProvider; active CPUExecutionProvider",
                    r"cpu_threads: 2 intra-op", r"precision: fp32", r"warmup batches: 4",
                    r"(pre|post)?process_time\(ms/batch\): mean \d+\.\d{4}, p50 \d+\.\d{4}, p99 \d+\.\d{4}",
                    r"inference_time\(ms/batch\): mean", r"samples/s: \d+\.\d", r"cpu_rss\(MB\): peak \d+\.\d",
                    r"auc: 0\.\d{6}", r"predictions: saved to .*pred\.tsv"):
        assert re.search(pattern, report), pattern
    assert "accepted for PaddleRec compatibility" in done.stdout
    table = np.loadtxt(tmp_path / "pred.tsv", delimiter="\t", skiprows=1)
    assert (tmp_path / "pred.tsv").read_text().startswith("prob\tlabel:label\n") and table.shape == (1000, 2)
    auc = float(re.search(r"auc: (0\.\d+)", report).group(1))
    assert abs(auc - roc_auc_score(table[:, 1], table[:, 0])) < 1e-4


def test_cli_unavailable_setting_is_one_clear_line(exported, tmp_path):
    done = run_tool("--model_file", str(exported.torchscript), "--backend", "onnxruntime", cwd=tmp_path)
    assert done.returncode == 2
    assert "unavailable: --model_file" in done.stdout and "runs with --backend torchscript" in done.stdout
    done = run_tool("--model_dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "holds no tostatic.json" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_locate_by_model_file_and_eager_rebuild(exported):
    by_file = ExportedModel.locate(model_file=exported.onnx)
    assert by_file.spec == exported.spec and by_file.torchscript == exported.torchscript
    # --reader_file may be the model's YAML (PaddleRec passes the reader module)
    batches, info = load_batches(exported, 300, reader_file=DEEPFM, max_batches=2)
    assert [b.size for b in batches] == [300, 300] and info["reader"] == "criteo_reader"
    assert list(batches[0].inputs) == ["sparse", "dense"] and list(batches[0].labels) == ["label"]
    config = load_config(DEEPFM)
    seed_everything(0)
    assert backends.EagerBackend(exported, settings("eager")).model.state_dict().keys() == \
        build_model(config, torch.device("cpu"))[1].state_dict().keys()
