"""AITM (models/multitask/aitm): exact parse of PaddleRec's AITM sample files, the AIT module and the behavioural
expectation calibrator against their formulas by hand, the network's wiring, the wrapper's loss and options, bad
input named by file and line, and the generated sample data.

config.yaml is trained, exported and served by tests/test_train.py.
"""

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recstack.config import ConfigError, from_dict, load_config
from recstack.data.aitm import ALICCP_AITM_VOCABULARY, AITMReader
from recstack.data.base import DataFormatError
from recstack.layers import AdaptiveInformationTransfer
from recstack.modules import load_module
from recstack.wrapper import build_model, load_wrapper

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "models/multitask/aitm"
CONFIG = FOLDER / "config.yaml"
SAMPLE = "paddlerec/models/multitask/aitm/data/sample_data"
HEADER = "click,purchase," + ",".join(name for name, _ in ALICCP_AITM_VOCABULARY)


def reader_for(files, **hyper):
    vocabulary = hyper.pop("feature_vocabulary", [list(p) for p in ALICCP_AITM_VOCABULARY])
    config = from_dict({"hyper_parameters": {"feature_vocabulary": vocabulary, **hyper}})
    return AITMReader([str(f) for f in files], config)


def read_all(reader):
    blocks = list(reader.iter_blocks())
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


# ------------------------------------------------------------------ data
@pytest.mark.parametrize("split,rows", [("train/train.csv", 48), ("test/test.csv", 50)])
def test_parses_paddlerec_aitm_sample_exactly(shared_data, split, rows):
    """A plain csv-module parse: the header line (when the first line holds names), then integers by position."""
    path = shared_data / SAMPLE / split
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if lines[0][0] == "click":  # train.csv has the header; PaddleRec's test.csv has none (its reader drops a sample)
        assert ",".join(lines[0]) == HEADER
        lines = lines[1:]
    reference = np.array([[int(v) for v in line] for line in lines], dtype=np.int64)
    data = read_all(load_module(FOLDER, "aitm_reader").RecDataset([str(path)], load_config(CONFIG)))
    assert set(data) == {"click", "purchase", "features"}
    assert data["features"].dtype == np.int64 and data["click"].dtype == np.float32
    assert len(reference) == rows and data["features"].shape == (rows, 18)
    np.testing.assert_array_equal(data["click"][:, 0], reference[:, 0])
    np.testing.assert_array_equal(data["purchase"][:, 0], reference[:, 1])
    np.testing.assert_array_equal(data["features"], reference[:, 2:])


@pytest.mark.parametrize("split", ["train/train.csv", "test/test.csv"])
def test_per_line_path_parses_the_same(shared_data, tmp_path, split):
    path = shared_data / SAMPLE / split
    text = path.read_text()
    spaced = tmp_path / "spaced.csv"
    spaced.write_text(text.replace("\n", " \n"))  # trailing spaces: the per-line path
    fast, slow = read_all(reader_for([path])), read_all(reader_for([spaced]))
    for key in fast:
        np.testing.assert_array_equal(fast[key], slow[key])


def write(tmp_path, text, name="part-0.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


SMALL = [["a", 3], ["b", 5]]


@pytest.mark.parametrize("text,line,message", [
    ("click,purchase,a\n0,0,1\n", 1, "expected the header 'click,purchase,a,b'"),
    ("click,purchase,b,a\n0,0,1,2\n", 1, "another order"),
    ("click,purchase,a,b\n0,0,1,2\n0,0,1\n", 3, "expected 4 comma-separated integers"),
    ("click,purchase,a,b\n0,0,1,2\n0,0,x,2\n", 3, "column 3 (a) is not an integer"),
    ("click,purchase,a,b\n0,0,1,2\n0,0,0x1,2\n", 3, "column 3 (a) is not an integer"),
    ("click,purchase,a,b\n0,0,1,2\n\n2,0,1,2\n", 4, "label 'click' (column 1) must be 0 or 1"),
    ("click,purchase,a,b\n0,0,1,2\n1,0,1,5\n", 3, "id 5 of feature 'b' (column 4) is outside [0, 5)"),
    ("0,0,1,2\n0,0,-1,2\n", 2, "id -1 of feature 'a' (column 3) is outside [0, 3)"),
    ("click,purchase,a,b\n0,0,1,99999999999999999999\n", 2, "outside the int64 range"),
])
def test_bad_input_names_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(DataFormatError) as err:
        read_all(reader_for([path], feature_vocabulary=SMALL))
    assert f"{path}:{line}:" in str(err.value) and message in str(err.value)


def test_header_optional_blank_lines_crlf_and_header_only(tmp_path):
    with_header = write(tmp_path, "click,purchase,a,b\r\n0,1,2,4\r\n\r\n1,1,0,0\r\n", "a.csv")
    without = write(tmp_path, "0,1,2,4\n\n1,1,0,0\n", "b.csv")
    for path in (with_header, without):
        data = read_all(reader_for([path], feature_vocabulary=SMALL))
        np.testing.assert_array_equal(data["features"], [[2, 4], [0, 0]])
        np.testing.assert_array_equal(data["click"][:, 0], [0, 1])
        np.testing.assert_array_equal(data["purchase"][:, 0], [1, 1])  # a purchase without a click is read as is
    empty = write(tmp_path, "click,purchase,a,b\n", "c.csv")
    with pytest.raises(DataFormatError, match="holds no samples"):
        read_all(reader_for([empty], feature_vocabulary=SMALL))
    assert AITMReader.is_header(HEADER) and not AITMReader.is_header("0,0,1,2\n")


def test_three_task_names_and_int_feature_names(tmp_path):
    path = write(tmp_path, "show,click,buy,101,102\n1,1,0,3,4\n1,0,0,0,1\n")
    reader = reader_for([path], task_names=["show", "click", "buy"], feature_vocabulary=[[101, 5], [102, 5]])
    data = read_all(reader)
    assert set(data) == {"show", "click", "buy", "features"}
    np.testing.assert_array_equal(data["click"][:, 0], [1, 0])
    assert [u.name for u in reader.feature_units()] == ["show", "click", "buy", "101", "102"]


@pytest.mark.parametrize("vocabulary,message", [
    ([["a", 0]], "vocabulary size"), ([["a", 3], "b"], "vocabulary size"), ([["a", 3], ["a", 4]], "distinct"),
    ([], "distinct"), ([[" a", 3]], "vocabulary size"),
])
def test_feature_vocabulary_is_checked(vocabulary, message):
    with pytest.raises(ConfigError, match=message):
        reader_for([], feature_vocabulary=vocabulary)


def test_task_names_must_differ_from_features():
    with pytest.raises(ConfigError, match="must differ"):
        reader_for([], feature_vocabulary=SMALL, task_names=["click", "a"])


# ------------------------------------------------------------------ the AIT module
def test_ait_module_matches_its_formula_by_hand():
    torch.manual_seed(0)
    ait = AdaptiveInformationTransfer(2, dropout=0.3).eval()
    with torch.no_grad():
        ait.transfer[0].weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
        ait.transfer[0].bias.copy_(torch.tensor([0.1, -0.2]))
        ait.h1.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        ait.h2.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        ait.h3.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, -1.0]]))
    previous = torch.tensor([[1.0, 0.5], [-1.0, 2.0]])
    current = torch.tensor([[0.3, -0.4], [1.5, 0.2]])

    def linear(w, x, b=(0.0, 0.0)):
        return [sum(w[i][j] * x[j] for j in range(2)) + b[i] for i in range(2)]

    expected, expected_w = [], []
    for prev, cur in zip(previous.tolist(), current.tolist()):
        p = [max(v, 0.0) for v in linear([[1.0, -1.0], [0.5, 2.0]], prev, (0.1, -0.2))]  # p_t = ReLU(W z + b)
        scores = []
        for u in (p, cur):
            h2 = linear([[2.0, 0.0], [0.0, 1.0]], u)
            h3 = linear([[1.0, 1.0], [0.0, -1.0]], u)
            scores.append((h2[0] * h3[0] + h2[1] * h3[1]) / math.sqrt(2))
        w = [math.exp(s) / sum(math.exp(x) for x in scores) for s in scores]
        h1 = [linear([[1.0, 0.0], [1.0, 1.0]], u) for u in (p, cur)]
        expected.append([w[0] * h1[0][i] + w[1] * h1[1][i] for i in range(2)])
        expected_w.append(w)
    torch.testing.assert_close(ait(previous, current), torch.tensor(expected), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ait.weights(previous, current), torch.tensor(expected_w), rtol=1e-6, atol=1e-6)
    assert torch.allclose(ait.weights(previous, current).sum(dim=1), torch.ones(2))


@pytest.mark.parametrize("stop", [False, True])
def test_ait_gradient_into_the_previous_task(stop):
    torch.manual_seed(1)
    ait = AdaptiveInformationTransfer(4, stop_gradient=stop)
    previous = torch.randn(3, 4, requires_grad=True)
    ait(previous, torch.randn(3, 4)).sum().backward()
    if stop:
        assert previous.grad is None
    else:
        assert previous.grad.abs().sum() > 0


def test_ait_module_traces_and_rejects_zero_width():
    ait = AdaptiveInformationTransfer(3).eval()
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    traced = torch.jit.trace(ait, (x, y))
    torch.testing.assert_close(traced(x, y), ait(x, y))
    with pytest.raises(ValueError):
        AdaptiveInformationTransfer(0)


# ------------------------------------------------------------------ the calibrator and the loss
def wrapper_module():
    return load_module(FOLDER, "dygraph_model")


def test_calibrator_loss_by_hand():
    calibrator = wrapper_module().calibrator_loss
    click = torch.tensor([[0.2], [0.5], [0.9], [0.4]])
    purchase = torch.tensor([[0.3], [0.1], [0.9], [0.7]])
    # max(p_t - p_{t-1}, 0) per sample: 0.1, 0, 0, 0.3
    torch.testing.assert_close(calibrator([click, purchase]), torch.tensor(0.4 / 4))
    torch.testing.assert_close(calibrator([click, purchase], "sum"), torch.tensor(0.4))
    # zero whenever each step is no likelier than the one before it (equality included)
    assert calibrator([click, click * 0.5]).item() == 0.0 and calibrator([click, click]).item() == 0.0
    # three steps: both consecutive pairs count, never the (first, third) pair
    third = torch.tensor([[0.5], [0.05], [0.95], [0.1]])
    # pairs (click, purchase): 0.1, 0, 0, 0.3; (purchase, third): 0.2, 0, 0.05, 0
    torch.testing.assert_close(calibrator([click, purchase, third], "sum"), torch.tensor(0.65))


def test_wrapper_loss_is_bce_plus_alpha_calibrator():
    wrapper = load_wrapper(load_config(CONFIG))
    build_model(load_config(CONFIG), torch.device("cpu"))
    click, purchase = torch.tensor([[0.2], [0.6]]), torch.tensor([[0.3], [0.1]])
    labels = [torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [0.0]])]

    def bce(q, y):
        return -(y * math.log(q) + (1 - y) * math.log(1 - q))

    by_hand = (bce(0.2, 0) + bce(0.6, 1)) / 2 + (bce(0.3, 1) + bce(0.1, 0)) / 2
    wrapper.alpha, wrapper.reduction = 0.6, "mean"
    torch.testing.assert_close(wrapper.create_loss([click, purchase], labels),
                               torch.tensor(by_hand + 0.6 * 0.1 / 2), rtol=1e-6, atol=1e-6)
    wrapper.alpha = 0.0
    torch.testing.assert_close(wrapper.create_loss([click, purchase], labels), torch.tensor(by_hand),
                               rtol=1e-6, atol=1e-6)


def test_config_options_reach_the_wrapper_and_net():
    wrapper, net = build_model(load_config(CONFIG, ["hyper_parameters.calibrator_alpha=0.25",
                                                    "hyper_parameters.calibrator_reduction=sum"]),
                               torch.device("cpu"))
    assert (wrapper.alpha, wrapper.reduction) == (0.25, "sum")
    assert wrapper.task_names == ("click", "purchase") and wrapper.create_metrics()[1] == ["auc_click",
                                                                                            "auc_purchase"]
    assert len(net.towers) == 2 and len(net.transfers) == 1
    assert net.embedding.embedding.num_embeddings == sum(size for _, size in ALICCP_AITM_VOCABULARY)


@pytest.mark.parametrize("override,message", [
    ("hyper_parameters.drop_prob=[0.1,0.1]", "one rate per tower layer"),
    ("hyper_parameters.task_names=[click]", "at least two tasks"),
    ("hyper_parameters.calibrator_reduction=max", "calibrator_reduction"),
    ("hyper_parameters.calibrator_alpha=-1", "calibrator_alpha"),
    ("hyper_parameters.drop_prob=[0.1,0.3,1.0]", "drop_prob"),
])
def test_bad_options_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        build_model(load_config(CONFIG, [override]), torch.device("cpu"))


# ------------------------------------------------------------------ the network
def test_network_wiring_by_hand():
    net_module = load_module(FOLDER, "net")
    torch.manual_seed(0)
    net = net_module.AITM([3, 4, 5], 2, [6, 4], [0.0, 0.0], num_tasks=3).eval()
    features = torch.tensor([[0, 3, 4], [2, 0, 1]])
    rows = features + torch.tensor([0, 3, 7])  # field f's id i is row offset_f + i of the one table
    shared = net.embedding.embedding.weight[rows].flatten(1)
    z1 = net.towers[0](shared)
    z2 = net.transfers[0](z1, net.towers[1](shared))
    z3 = net.transfers[1](z2, net.towers[2](shared))
    expected = [torch.sigmoid(head(z)) for head, z in zip(net.heads, (z1, z2, z3))]
    out = net(features)
    assert len(out) == 3 and all(o.shape == (2, 1) for o in out)
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError):
        net_module.AITM([3], 2, [4], [0.0], num_tasks=1)


def test_one_training_step_of_three_tasks(tmp_path):
    """Three funnel steps, end to end through the reader, the wrapper and the optimizer."""
    rng = np.random.default_rng(0)
    show = rng.integers(0, 2, 64)
    click = show & rng.integers(0, 2, 64)
    buy = click & rng.integers(0, 2, 64)
    lines = ["show,click,buy,a,b"] + [f"{s},{c},{b},{rng.integers(0, 3)},{rng.integers(0, 5)}"
                                      for s, c, b in zip(show, click, buy)]
    (tmp_path / "train").mkdir()
    write(tmp_path / "train", "\n".join(lines) + "\n")
    from recstack.trainer import train

    config = load_config(CONFIG, [f"runner.train_data_dir={tmp_path / 'train'}", "runner.epochs=1",
                                  f"runner.model_save_path={tmp_path / 'out'}", "runner.train_batch_size=16",
                                  "hyper_parameters.task_names=[show,click,buy]",
                                  "hyper_parameters.feature_vocabulary=[[a,3],[b,5]]", "hyper_parameters.dims=[8,4]",
                                  "hyper_parameters.drop_prob=[0.0,0.0]"])
    result = train(config)
    assert set(result.epochs[0].metrics) == {"auc_show", "auc_click", "auc_buy"}
    assert math.isfinite(result.epochs[0].loss)


# ------------------------------------------------------------------ generated sample data
@pytest.mark.parametrize("split,rows,seed", [("train", 8000, 1), ("test", 3000, 2)])
def test_bundled_sample_regenerates_byte_identical(tmp_path, split, rows, seed):
    out = tmp_path / "part-0.txt"
    subprocess.run([sys.executable, str(REPO / "datasets/synthetic/generate.py"), "aitm", "--rows", str(rows),
                    "--seed", str(seed), "--output", str(out)], check=True, capture_output=True)
    bundled = FOLDER / "data/sample_data" / split / "part-0.txt"
    assert out.read_bytes() == bundled.read_bytes()
    lines = bundled.read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == rows + 1
    labels = np.array([[int(v) for v in line.split(",")[:2]] for line in lines[1:]])
    assert (labels[:, 1] <= labels[:, 0]).all()  # the planted funnel: a purchase only after a click
    assert 0.2 < labels[:, 0].mean() < 0.3 and 0.06 < labels[:, 1].mean() < 0.12


def test_core_reader_name_and_folder_module_are_the_same_reader():
    from recstack.data.factory import resolve_reader

    assert resolve_reader(load_config(CONFIG), "runner.train_reader_path") is AITMReader
    assert resolve_reader(load_config(CONFIG, ["runner.train_reader_path=aitm"]), "runner.train_reader_path") \
        is AITMReader
    assert resolve_reader(load_config(CONFIG), "runner.infer_reader_path", trust_code=False) is AITMReader
