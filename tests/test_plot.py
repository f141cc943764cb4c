"""tools/plot.py and recstack/plots.py: pictures of runs from their TensorBoard scalars, and the test metrics that
tools/infer.py adds to a run's TensorBoard folder (``runner.use_visual``)."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from recstack.config import load_config
from recstack.evaluator import infer
from recstack.plots import PlotError, ema, find_runs, load_scalars, plot_runs, select_tags
from recstack.trainer import train

REPO = Path(__file__).resolve().parents[1]
DEEPFM = REPO / "models/rank/deepfm/config.yaml"
MMOE = REPO / "models/multitask/mmoe/config.yaml"
TOOL = REPO / "tools" / "plot.py"

_spec = importlib.util.spec_from_file_location("tools_plot", TOOL)
plot_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plot_tool)

DEEPFM_TAGS = ["train/loss", "train/auc", "train/ips", "epoch/loss", "epoch/auc", "test/auc"]
MMOE_TAGS = ["train/loss", "train/auc_income", "train/auc_marital", "train/ips", "epoch/loss", "epoch/auc_income",
             "epoch/auc_marital", "test/auc_income", "test/auc_marital"]


def _train_and_infer(config_path: Path, out: Path, *overrides: str):
    """Two epochs with TensorBoard scalars, then the test metrics of both checkpoints; (train result, infer result)."""
    options = ["runner.epochs=2", "runner.use_visual=True", f"runner.model_save_path={out}",
               f"runner.infer_load_path={out}", "runner.infer_end_epoch=2", *overrides]
    result = train(load_config(config_path, options))
    return result, infer(load_config(config_path, options))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two DeepFM runs (learning rates 1e-3 and 5e-3) as the trials of a search, and an MMoE run."""
    root = tmp_path_factory.mktemp("plot")
    made = {}
    log = logging.getLogger("recstack")
    level = log.level
    log.setLevel(logging.INFO)  # train.log gets the batch lines (as tools/trainer.py sets it)
    for name, rate in (("lr_0.001", 0.001), ("lr_0.005", 0.005)):
        made[name] = (root / "trials" / name, *_train_and_infer(DEEPFM, root / "trials" / name,
                                                                f"hyper_parameters.optimizer.learning_rate={rate}"))
    made["mmoe"] = (root / "mmoe", *_train_and_infer(MMOE, root / "mmoe"))
    made["root"] = root
    log.setLevel(level)
    return made


def _logged_batch_lines(out: Path) -> list[dict[str, float]]:
    """The ``epoch: E, batch_id: B, auc: ..., loss: ...`` lines of the run's train.log, as numbers."""
    lines = []
    for line in (out / "train.log").read_text().splitlines():
        match = re.search(r"epoch: \d+, batch_id: \d+, (.*?), avg_reader_cost", line)
        if match:
            lines.append({k: float(v) for k, v in (item.split(": ") for item in match.group(1).split(", "))})
    return lines


def _line(axes, label):
    (line,) = [ln for ln in axes.get_lines() if ln.get_label() == label]
    return [float(x) for x in line.get_xdata()], [float(y) for y in line.get_ydata()]


def test_one_run_draws_a_panel_per_scalar_with_the_logged_values(runs):
    out, result, tested = runs["lr_0.001"]
    (run,) = find_runs([out])
    assert run.label == "lr_0.001" and run.model == "deepfm"
    assert run.folder == out / "visual_log" / json.loads((out / "run.json").read_text())["run_id"]
    figure = plot_runs([run])
    assert [a.get_title() for a in figure.axes] == DEEPFM_TAGS
    for axes in figure.axes:
        assert [ln.get_label() for ln in axes.get_lines()] == ["lr_0.001"]
    # train/*: the values of the log's batch lines (6 decimals there), at steps 1, 6, 11, ... (batches counted from 1)
    logged = _logged_batch_lines(out)
    steps, losses = _line(figure.axes[0], "lr_0.001")
    assert len(logged) == 8 and losses == pytest.approx([line["loss"] for line in logged], abs=2e-6)
    assert steps[:3] == [1, 6, 11]
    assert _line(figure.axes[1], "lr_0.001")[1] == pytest.approx([line["auc"] for line in logged], abs=2e-6)
    # epoch/* and test/*: the trainer's and infer's results, per epoch
    assert _line(figure.axes[3], "lr_0.001") == ([0, 1], pytest.approx([e.loss for e in result.epochs], rel=1e-6))
    assert _line(figure.axes[4], "lr_0.001") == ([0, 1], pytest.approx([e.metrics["auc"] for e in result.epochs],
                                                                       rel=1e-6))
    assert _line(figure.axes[5], "lr_0.001") == ([0, 1], pytest.approx([tested[e]["auc"] for e in (0, 1)], rel=1e-6))
    assert figure.legends and [t.get_text() for t in figure.legends[0].get_texts()] == ["lr_0.001"]


def test_tool_writes_png_and_svg(runs, tmp_path):
    out = runs["lr_0.001"][0]
    assert plot_tool.main([str(out), "--output", str(tmp_path / "pictures")]) == 0
    png, svg = tmp_path / "pictures" / "metrics.png", tmp_path / "pictures" / "metrics.svg"
    assert png.stat().st_size > 10_000 and svg.stat().st_size > 10_000
    import matplotlib.image

    pixels = matplotlib.image.imread(png)  # decodes: 3 columns x 2 rows of 4.0 x 2.8 in (+0.6 in legend) at 100 dpi
    assert pixels.shape[:2] == (620, 1200)
    assert ET.parse(svg).getroot().tag.endswith("svg")
    assert not [p for p in (tmp_path / "pictures").iterdir() if p.name.startswith(".")]  # no temporaries left
    # default output: <first folder>/plots; one format
    assert plot_tool.main([str(out), "--format", "png"]) == 0
    assert (out / "plots" / "metrics.png").stat().st_size > 0 and not (out / "plots" / "metrics.svg").exists()


def test_two_runs_overlaid_in_every_panel(runs, tmp_path):
    first, second = runs["lr_0.001"][0], runs["lr_0.005"][0]
    found = find_runs([first, second])
    figure = plot_runs(found)
    assert [a.get_title() for a in figure.axes] == DEEPFM_TAGS
    for axes in figure.axes:
        assert [ln.get_label() for ln in axes.get_lines()] == ["lr_0.001", "lr_0.005"]
        colours = [ln.get_color() for ln in axes.get_lines()]
        assert colours == ["C0", "C1"]  # a run keeps its colour in every panel
    assert _line(figure.axes[5], "lr_0.005")[1] == pytest.approx([runs["lr_0.005"][2][e]["auc"] for e in (0, 1)],
                                                                 rel=1e-6)
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["lr_0.001", "lr_0.005"]
    assert plot_tool.main([str(first), str(second), "--output", str(tmp_path), "--format", "svg"]) == 0
    assert (tmp_path / "metrics.svg").stat().st_size > 10_000


def test_a_parent_folder_plots_every_run_in_it(runs):
    trials = runs["root"] / "trials"
    found = find_runs([trials])
    assert [r.label for r in found] == ["lr_0.001", "lr_0.005"]
    # a TensorBoard root with one subfolder per run: labelled by run id
    visual_log = runs["lr_0.001"][0] / "visual_log"
    (run,) = find_runs([visual_log])
    assert run.label == json.loads((runs["lr_0.001"][0] / "run.json").read_text())["run_id"]
    # the run's own TensorBoard folder
    assert find_runs([run.folder])[0].scalars.keys() == run.scalars.keys()


def test_multitask_model_has_a_panel_per_task(runs):
    out, result, tested = runs["mmoe"]
    figure = plot_runs(find_runs([out]))
    assert [a.get_title() for a in figure.axes] == MMOE_TAGS
    for task in ("income", "marital"):
        axes = figure.axes[MMOE_TAGS.index(f"test/auc_{task}")]
        assert _line(axes, "mmoe") == ([0, 1], pytest.approx([tested[e][f"auc_{task}"] for e in (0, 1)], rel=1e-6))
        axes = figure.axes[MMOE_TAGS.index(f"epoch/auc_{task}")]
        assert _line(axes, "mmoe")[1] == pytest.approx([e.metrics[f"auc_{task}"] for e in result.epochs], rel=1e-6)


def test_metrics_patterns_choose_the_panels(runs):
    found = find_runs([runs["mmoe"][0]])
    figure = plot_runs(found, metrics=["train/loss", "test/*"])
    assert [a.get_title() for a in figure.axes] == ["train/loss", "test/auc_income", "test/auc_marital"]
    # a pattern without '/' matches the name after the group
    assert select_tags(MMOE_TAGS, ["auc_income"]) == ["train/auc_income", "epoch/auc_income", "test/auc_income"]
    with pytest.raises(PlotError, match=r"--metrics nope\*: matches none of the runs' scalars \(train/loss, "):
        plot_runs(found, metrics=["nope*"])


def test_smoothing_draws_the_average_over_the_faint_raw_values(runs):
    (run,) = find_runs([runs["lr_0.001"][0]])
    figure = plot_runs([run], metrics=["train/loss", "epoch/loss"], smooth=0.6)
    train_axes, epoch_axes = figure.axes
    raw = [ln for ln in train_axes.get_lines() if ln.get_label().startswith("_")]
    assert len(raw) == 1 and list(raw[0].get_ydata()) == run.scalars["train/loss"].values
    assert _line(train_axes, "lr_0.001")[1] == pytest.approx(ema(run.scalars["train/loss"].values, 0.6))
    assert _line(epoch_axes, "lr_0.001")[1] == run.scalars["epoch/loss"].values  # per-epoch curves stay raw
    assert ema([1.0, 3.0], 0.5) == [1.0, pytest.approx((0.25 + 0.5 * 3.0 * 1.0) / 0.75)]
    assert math.isnan(ema([1.0, float("nan"), 2.0], 0.5)[1])
    with pytest.raises(PlotError, match=r"--smooth: expected a weight in \[0, 1\)"):
        plot_runs([run], smooth=1.0)


def test_infer_again_keeps_one_test_point_per_epoch(runs, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(runs["lr_0.001"][0], out)
    options = ["runner.use_visual=True", f"runner.infer_load_path={out}", "runner.infer_start_epoch=1",
               "runner.infer_end_epoch=2"]
    again = infer(load_config(DEEPFM, options))
    (folder,) = (out / "visual_log").iterdir()
    assert len(list(folder.glob("events.out.tfevents.*"))) == 3  # training's, the first infer's, this one's
    series = load_scalars(folder)["test/auc"]
    assert series.steps == [0, 1] and series.values[1] == pytest.approx(again[1]["auc"], rel=1e-6)


def test_infer_without_use_visual_writes_no_scalars(runs, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(runs["lr_0.001"][0], out)
    (folder,) = (out / "visual_log").iterdir()
    before = sorted(folder.iterdir())
    infer(load_config(DEEPFM, [f"runner.infer_load_path={out}", "runner.infer_end_epoch=2"]))
    assert sorted(folder.iterdir()) == before


def test_folders_without_scalars_are_named_with_how_to_get_them(runs, tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PlotError) as err:
        find_runs([empty])
    assert str(err.value).startswith(f"{empty}: no TensorBoard event files") and "runner.use_visual: True" in str(
        err.value)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'missing'}: no such folder"):
        find_runs([tmp_path / "missing"])
    # a model_save_path trained without use_visual
    plain = tmp_path / "plain"
    train(load_config(DEEPFM, ["runner.epochs=1", f"runner.model_save_path={plain}"]))
    with pytest.raises(PlotError, match=r"plain: .*wrote no TensorBoard scalars \(run.json: visual_log null"):
        find_runs([plain])
    # the tool: one ERROR line, exit status 2
    with caplog.at_level(logging.ERROR):
        assert plot_tool.main([str(empty)]) == 2
    assert f"{empty}: no TensorBoard event files" in caplog.text


def test_tool_help_and_error_from_the_command_line(tmp_path):
    shown = subprocess.run([sys.executable, str(TOOL), "-h"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "examples:" in shown.stdout and "python tools/plot.py" in shown.stdout
    failed = subprocess.run([sys.executable, str(TOOL), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2
    assert re.search(rf"ERROR - {re.escape(str(tmp_path))}: no TensorBoard event files", failed.stdout + failed.stderr)
