"""AutoInt's interacting layer against the paper's equations computed by hand, the net's options, and PaddleRec's
AutoInt id/value layout (reader, fields, its config verbatim)."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from models.rank.autoint.net import AutoInt
from recstack.config import ConfigError, from_dict
from recstack.data import DataFormatError
from recstack.data.slot import CriteoReader, IndexValueReader
from recstack.evaluator import infer
from recstack.export import export_model
from recstack.layers import IndexValueFields, InteractingLayer
from recstack.layers.field_inputs import SlotFields
from recstack.rank_inputs import field_inputs
from recstack.trainer import train

FOLDER = Path(__file__).resolve().parents[1] / "models" / "rank" / "autoint"


def test_interacting_layer_matches_the_equations():
    torch.manual_seed(0)
    layer = InteractingLayer(4, 6, num_heads=2)
    e = torch.randn(3, 5, 4)
    wq, wk, wv = (m.weight.T for m in (layer.attention.query, layer.attention.key, layer.attention.value))
    heads = []
    for h in range(2):
        cols = slice(3 * h, 3 * h + 3)
        q, k, v = e @ wq[:, cols], e @ wk[:, cols], e @ wv[:, cols]
        heads.append(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(3), dim=-1) @ v)
    want = torch.relu(torch.cat(heads, dim=-1) + e @ layer.residual.weight.T)
    torch.testing.assert_close(layer(e), want)
    assert layer.attention.query.bias is None and isinstance(layer.attention.output, torch.nn.Identity)


def test_interacting_layer_without_scaling_or_residual():
    torch.manual_seed(0)
    layer = InteractingLayer(4, 4, num_heads=1, use_residual=False, scaling=False)
    e = torch.randn(2, 3, 4)
    q, k, v = (e @ m.weight.T for m in (layer.attention.query, layer.attention.key, layer.attention.value))
    torch.testing.assert_close(layer(e), torch.relu(torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v))
    assert layer.residual is None


def test_autoint_options_build_and_predict():
    sparse, dense = torch.randint(0, 50, (4, 3)), torch.rand(4, 2)
    for use_wide in (True, False):
        for fc_sizes in ((), (8,)):
            inputs = SlotFields(50, 8, 3, 2, first_order=use_wide, dense_fields=True)
            net = AutoInt(inputs, [8, 4], head_num=2, use_wide=use_wide, fc_sizes=fc_sizes)
            prob = net(sparse, dense)
            assert prob.shape == (4, 1) and bool(((prob > 0) & (prob < 1)).all())


# ---------------------------------------------------------------------------- PaddleRec's id/value layout
PADDLEREC_SAMPLE = "paddlerec/models/rank/autoint/data/sample_data/train/sample_train.txt"
#: PaddleRec's models/rank/autoint/config.yaml hyper_parameters, verbatim (its keys and values)
PADDLEREC_HP = {"optimizer": {"class": "Adam", "learning_rate": 0.001, "strategy": "async"},
                "feature_number": 1000001, "embedding_dim": 16, "fc_sizes": [], "use_residual": True,
                "scaling": True, "use_wide": True, "use_sparse": True, "head_num": 2, "num_field": 39,
                "attn_layer_sizes": [64, 64, 64], "distributed_embedding": 0}


def index_value_config(data_dir, out, **hp):
    runner = {"train_data_dir": str(data_dir), "test_data_dir": str(data_dir), "train_reader_path": "criteo_reader",
              "infer_reader_path": "criteo_reader", "train_batch_size": 32, "infer_batch_size": 64, "epochs": 2,
              "model_save_path": str(out), "infer_load_path": str(out), "infer_start_epoch": 0, "infer_end_epoch": 2,
              "use_gpu": False, "use_auc": True, "seed": 2024, "print_interval": 1000}
    return from_dict({"runner": runner, "hyper_parameters": {**PADDLEREC_HP, **hp}}, config_dir=FOLDER)


def reference_parse(text):
    rows = []
    for line in text.splitlines():
        t = line.split(" ")
        rows.append((float(t[0]), [int(x) for x in t[1:40]], [float(x) for x in t[40:79]]))
    return rows


def test_paddlerec_autoint_sample_parses_exactly(shared_data):
    path = shared_data / PADDLEREC_SAMPLE
    reader = CriteoReader([str(path)], from_dict({"hyper_parameters": {"num_field": 39, "feature_number": 1000001}}))
    assert isinstance(reader, IndexValueReader)
    blocks = list(reader.iter_blocks())
    got = [(float(b["label"][i, 0]), b["feat_idx"][i].tolist(), b["feat_value"][i].tolist())
           for b in blocks for i in range(len(b["label"]))]
    want = reference_parse(path.read_text())
    assert len(got) == 100 and [g[:2] for g in got] == [w[:2] for w in want]
    assert all(np.allclose(g[2], w[2]) for g, w in zip(got, want))
    # the first line by hand: label 0, ids 1..13 for the numeric fields, values 2 0 1 6 44 ...
    assert got[0][0] == 0.0 and got[0][1][:14] == [*range(1, 14), 41] and got[0][1][-1] == 955606
    assert got[0][2][:5] == [2.0, 0.0, 1.0, 6.0, 44.0]


def test_paddlerec_autoint_config_trains_infers_and_exports_on_its_sample(shared_data, tmp_path):
    """PaddleRec's AutoInt config (its keys verbatim) on its own sample file: train, infer, export with parity."""
    data = (shared_data / PADDLEREC_SAMPLE).parent
    result = train(index_value_config(data, tmp_path / "out"))
    assert len(result.epochs) == 2
    metrics = infer(index_value_config(data, tmp_path / "out"))
    assert set(metrics) == {0, 1} and all(0.0 <= m["auc"] <= 1.0 for m in metrics.values())
    export_model(index_value_config(data, tmp_path / "out"))
    assert (tmp_path / "out" / "tostatic.onnx").exists()


def write_index_value(path, rows, seed):
    """``rows`` lines of the id/value layout over 6 fields (2 numeric, 4 categorical of 50 ids each) with a planted
    signal: field 2's id and numeric field 0's value set the click probability."""
    rng = np.random.default_rng(seed)
    cats = rng.integers(0, 50, (rows, 4))
    nums = rng.random((rows, 2)).round(3)
    logit = 2.5 * (cats[:, 0] % 2 == 0) - 1.25 + 2.0 * (nums[:, 0] - 0.5)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    ids = np.column_stack([np.zeros(rows, int), np.ones(rows, int), 2 + cats + 50 * np.arange(4)])
    values = np.column_stack([nums, np.ones((rows, 4))])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{y} {' '.join(map(str, i))} {' '.join(f'{v:g}' for v in x)}\n"
                            for y, i, x in zip(labels, ids, values)))


def test_autoint_learns_the_id_value_layout(tmp_path):
    write_index_value(tmp_path / "train" / "part-0.txt", 3000, 1)
    write_index_value(tmp_path / "test" / "part-0.txt", 1000, 2)
    hp = dict(num_field=6, feature_number=202, embedding_dim=8, attn_layer_sizes=[8], fc_sizes=[16])
    config = index_value_config(tmp_path / "train", tmp_path / "out", **hp)
    config._data["runner"]["test_data_dir"] = str(tmp_path / "test")
    train(config)
    config = index_value_config(tmp_path / "train", tmp_path / "out", **hp)
    config._data["runner"]["test_data_dir"] = str(tmp_path / "test")
    assert infer(config)[1]["auc"] > 0.70  # Bayes AUC of the planted signal: about 0.79


def test_index_value_fields_are_value_times_embedding():
    torch.manual_seed(0)
    fields = IndexValueFields(20, 3, 4, first_order=True)
    idx, val = torch.randint(0, 20, (5, 4)), torch.rand(5, 4)
    got, dense = fields(idx, val)
    torch.testing.assert_close(got, fields.embedding.weight[idx] * val[..., None])
    assert got.shape == (5, 4, 4) and dense.shape == (5, 0) and fields.field_dim == 4


def test_index_value_reader_names_the_bad_line(tmp_path):
    config = from_dict({"hyper_parameters": {"num_field": 2, "feature_number": 10}})
    good = "1 3 4 0.5 1\n"
    for bad, problem in (("1 3 4 0.5\n", "expected 5 numbers"), ("1 3 x 0.5 1\n", "feature id of field 1 is 'x'"),
                         ("2 3 4 0.5 1\n", "label"), ("1 3 12 0.5 1\n", "feature id outside [0, feature_number=10)"),
                         ("1 3 4 nan 1\n", "not finite")):
        path = tmp_path / "part-0.txt"
        path.write_text(good + bad)
        with pytest.raises(DataFormatError, match=re.escape(f"{path}:2: ") + ".*" + re.escape(problem)):
            list(IndexValueReader([str(path)], config).iter_blocks())


def test_slot_and_id_value_keys_do_not_mix():
    config = from_dict({"hyper_parameters": {**PADDLEREC_HP, "sparse_feature_dim": 9}}, config_dir=FOLDER)
    with pytest.raises(ConfigError, match="sparse_feature_dim.*cannot be mixed with num_field"):
        field_inputs(config, "AutoInt", first_order=True, dense_fields=True)
