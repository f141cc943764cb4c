"""test_tipc/: PaddleRec's train -> export -> inference chain, run as CI runs it (lite_train_lite_infer,
every model), plus the config parsing by key and the failure lines."""

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnxruntime as ort
import pytest

from recstack.export_spec import ExportedModel, load_spec

REPO = Path(__file__).resolve().parents[1]
TIPC = REPO / "test_tipc"
MODEL_FOLDERS = sorted(p.parent for p in REPO.glob("models/*/*/config.yaml"))
CONFIGS = sorted(TIPC.glob("configs/*/train_infer_python.txt"))
MODE = "lite_train_lite_infer"


def read_config(path: Path) -> dict[str, str]:
    """``key:value`` lines of a train_infer_python.txt (what test_tipc/common_func.sh's func_get reads)."""
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith("=") and key not in out:
            out[key] = value.strip()
    return out


def chain(config: Path, work: Path) -> subprocess.CompletedProcess:
    """prepare.sh then test_train_inference_python.sh for one model, with this interpreter."""
    env = {**os.environ, "PYTHON": sys.executable, "TIPC_WORK": str(work)}
    script = (f"bash test_tipc/prepare.sh {config} {MODE} && "
              f"bash test_tipc/test_train_inference_python.sh {config} {MODE}")
    return subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_every_model_folder_has_a_tipc_config():
    names = {p.parent.name for p in CONFIGS}
    assert names == {f.name for f in MODEL_FOLDERS}, "each models/*/<model>/ needs test_tipc/configs/<model>/"
    for path in CONFIGS:
        config = read_config(path)
        assert config["model_name"] == path.parent.name
        for part in config["config"].split("|"):
            mode, _, yaml = part.partition("=")
            assert mode in ("lite_train_lite_infer", "lite_train_whole_infer", "whole_infer", "whole_train_whole_infer")
            assert (REPO / yaml).is_file(), f"{path}: {yaml}"
        reader = re.search(r"--reader_file=(\S+)", config["inference"])
        assert reader is None or (REPO / reader.group(1)).is_file(), f"{path}: {reader.group(1)}"
        assert (REPO / config["whole_data_prepare"].split()[-1]).is_file(), f"{path}: whole_data_prepare"


@pytest.fixture(scope="module")
def lite_runs(tmp_path_factory):
    """Every model's lite chain, two at a time (each step is a fresh Python process)."""
    work = tmp_path_factory.mktemp("tipc")
    with ThreadPoolExecutor(max_workers=max(2, min(4, (os.cpu_count() or 2)))) as pool:
        done = dict(zip(CONFIGS, pool.map(lambda c: chain(c, work), CONFIGS)))
    return work, done


def lite_samples(folder: Path, tipc_config: Path) -> int:
    """Samples in the lite test split: one per line (lite_lines) but a file's header line (a reader with
    ``is_header``: AITM's CSV), or, for grouped lines (GroupRTPInput: the last column is the group size), the sum
    of the group sizes."""
    from recstack.config import load_config
    from recstack.data.factory import resolve_reader

    model_config = load_config(REPO / read_config(tipc_config)["config"].split("|")[0].split("=", 1)[1])
    key = "runner.infer_reader_path" if model_config.get("runner.infer_reader_path", None) else \
        "runner.train_reader_path"
    is_header = getattr(resolve_reader(model_config, key), "is_header", None)
    lines = [line for f in sorted(folder.iterdir()) for i, line in enumerate(f.read_text().splitlines())
             if line and not (i == 0 and is_header is not None and is_header(line))]
    if model_config.get("hyper_parameters.data_config.input_type", None) == "GroupRTPInput":
        separator = model_config.get("hyper_parameters.data_config.rtp_separator", ";")
        return sum(int(line.rsplit(separator, 1)[1]) for line in lines)
    return len(lines)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.parent.name)
def test_lite_train_lite_infer(lite_runs, config):
    work, done = lite_runs
    run = done[config]
    name = config.parent.name
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = work / "output" / name / MODE
    lines = (out / "results.log").read_text().splitlines()
    settings = read_config(config)
    threads, sizes = settings["--cpu_threads"].split("|"), settings["--batchsize"].split("|")
    steps = ["tools/trainer.py"] + (["tools/infer.py"] if settings["eval"] != "null" else []) + ["tools/to_static.py"]
    assert len(lines) == len(steps) + len(threads) * len(sizes)  # train, [evaluate,] export, the inference sweep
    assert all(line.startswith(f"Run successfully with command - {name} - ") for line in lines), lines
    assert all(step in line for step, line in zip(steps, lines)), lines
    swept = {(re.search(r"--cpu_threads=(\d+)", line).group(1), re.search(r"--batchsize=(\d+)", line).group(1))
             for line in lines[len(steps):]}
    assert swept == {(t, b) for t in threads for b in sizes}
    export = out / "norm_train_gpus_-1"
    retrieval = (export / "model.json").is_file()  # a retrieval export: its user tower is what is benchmarked
    spec = load_spec(ExportedModel.locate(export).spec_file)
    assert max(spec["parity"]["max_abs_diff"].values()) <= 1e-5
    report = (out / f"{name}.log").read_text()
    assert re.search(r"inference_time\(ms/batch\): mean \d+\.\d+", report)
    assert re.search(rf"samples: {lite_samples(work / 'data' / name / 'infer', config)} in \d+ batch", report)
    if retrieval:  # user vectors have no label to score (tools/infer.py measures the ranking)
        assert spec["export_part"] == "user_tower" and "metrics: none" in report
    else:
        assert re.search(r"(auc|mse)\w*: (\d\.\d{6}|nan)", report)


def test_config_is_read_by_key_and_failures_are_recorded(tmp_path):
    """The MMoE config with its lines shuffled still runs; an unavailable setting in the sweep is recorded
    as 'Run failed' (and the script exits 1) while the other settings run."""
    lines = (TIPC / "configs/mmoe/train_infer_python.txt").read_text().splitlines()
    keyed = [line for line in lines if ":" in line and not line.startswith("=")]
    shuffled = keyed[::-1]
    unavailable = "DnnlExecutionProvider" not in ort.get_available_providers()
    shuffled = [line.replace("--enable_mkldnn:False", "--enable_mkldnn:True|False") if unavailable else line
                for line in shuffled]
    shuffled = [line.replace("--cpu_threads:1|2", "--cpu_threads:1") for line in shuffled]
    config = tmp_path / "mmoe.txt"
    config.write_text("\n".join(shuffled) + "\n")
    run = chain(config, tmp_path / "work")
    results = (tmp_path / "work/output/mmoe" / MODE / "results.log").read_text().splitlines()
    assert results[0].startswith("Run successfully with command - mmoe - ") and "tools/trainer.py" in results[0]
    assert results[1].startswith("Run successfully with command - mmoe - ") and "tools/to_static.py" in results[1]
    if unavailable:
        assert run.returncode == 1
        assert len(results) == 4
        assert results[2].startswith("Run failed with command - mmoe - ") and "--enable_mkldnn=True" in results[2]
        log = results[2].rsplit(" - ", 1)[1]
        assert "unavailable: --enable_mkldnn True" in Path(log).read_text()
        assert results[3].startswith("Run successfully") and "--enable_mkldnn=False" in results[3]
    else:
        assert run.returncode == 0 and len(results) == 3


def test_common_func_parsing(tmp_path):
    script = """
source test_tipc/common_func.sh
printf 'x\\nkey.a:1|2\\n--b:  v w \\nkey:null\\n--b:second\\nmodes:lite_train_lite_infer=3|whole_infer=null\\n' > "$1"
echo "[$(func_get "$1" key.a)] [$(func_get "$1" --b)] [$(func_get "$1" key dflt)] [$(func_get "$1" missing)]"
echo "[$(func_mode_value "$(func_get "$1" modes)" lite_train_lite_infer)] \
[$(func_mode_value "$(func_get "$1" modes)" whole_infer)] [$(func_mode_value "a=b" whole_infer)]"
"""
    done = subprocess.run(["bash", "-c", script, "bash", str(tmp_path / "c.txt")], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[1|2] [v w] [dflt] []", "[3] [] [a=b]"]
