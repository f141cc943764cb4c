"""MMoE configured the EasyRec way (models/multitask/mmoe/config_easyrec.yaml): structure, config errors,
weighted task losses, regularisation, and the PaddleRec-mode wrapper left as it was.

config_easyrec.yaml is trained to its AUC / MSE thresholds by tests/test_train.py (id mmoe_easyrec).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from recstack.config import ConfigError, load_config
from recstack.data import create_loader
from recstack.evaluator import infer
from recstack.layers import MLPExperts
from recstack.trainer import train
from recstack.wrapper import build_model

REPO = Path(__file__).resolve().parents[1]
MMOE = REPO / "models" / "multitask" / "mmoe"
FILES = ("net.py", "dygraph_model.py", "tabular_reader.py", "census_reader.py")


def easyrec_config(tmp_path: Path | None = None, edit=None, overrides=(), name: str = "config_easyrec.yaml"):
    """The folder's config, or an edited copy of it (``edit(hyper_parameters)``) in a copy of the folder."""
    if edit is None:
        return load_config(MMOE / name, list(overrides))
    data = yaml.safe_load((MMOE / name).read_text())
    edit(data["hyper_parameters"])
    for file in FILES:
        (tmp_path / file).write_text((MMOE / file).read_text())
    (tmp_path / "data").symlink_to(MMOE / "data")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path, list(overrides))


def mmoe_section(hp: dict) -> dict:
    return hp["model_config"]["mmoe"]


def test_config_easyrec_builds_experts_gates_and_towers():
    wrapper, model = build_model(easyrec_config(), torch.device("cpu"))
    assert wrapper.create_metrics()[1] == ["auc_is_valid_play", "mse_play_time"]
    assert wrapper.label_names == ("is_valid_play", "play_time")
    assert wrapper.feed_names == ("all.ids", "all.values")
    width = model.embedding.output_dims["all"]  # 12 id features x 8 + level, video_duration
    assert width == 12 * 8 + 2
    assert isinstance(model.experts, MLPExperts) and model.experts.num_experts == 4
    assert [tuple(k.shape) for k in model.experts.kernels()] == [(4 * 64, width), (4, 64, 32)]
    assert model.gates.linear.weight.shape == (2 * 4, width)  # one softmax gate over 4 experts per tower
    assert torch.equal(model.gates.linear.bias, torch.zeros(8))  # tf.layers.dense: zero bias
    assert [dnn[0].in_features for dnn in model.towers.dnns] == [32, 32]  # each tower reads its 32-wide mixture
    assert model.towers.related == [[], []]
    batch = next(iter(create_loader(easyrec_config(), "infer")))
    probability, value = model(batch["all.ids"][:16], batch["all.values"][:16])
    assert probability.shape == value.shape == (16, 1)
    assert ((probability > 0) & (probability < 1)).all()
    # tower t reads gate t's mixture of the experts
    features = model.embedding(batch["all.ids"][:16], batch["all.values"][:16])[0]
    gates, experts = model.gates(features), model.experts(features)
    mixture = (gates[:, 1].unsqueeze(-1) * experts).sum(1)
    torch.testing.assert_close(value, model.towers.outputs[1](model.towers.dnns[1](mixture)))


@pytest.mark.parametrize("edit, message", [
    # PaddleRec's keys and EasyRec's model_config are exclusive
    (lambda hp: hp.update(expert_num=8),
     r"'hyper_parameters\.expert_num' in .*PaddleRec's MMoE key 'expert_num' cannot be mixed with EasyRec's "
     r"model_config.*model_config\.mmoe\.num_expert"),
    (lambda hp: hp.update(task_names=["a", "b"]), r"'task_names' cannot be mixed.*task_towers\[\]\.tower_name"),
    (lambda hp: hp.pop("model_config"), r"'hyper_parameters\.data_config' in .*EasyRec's data_config needs "
                                        r"hyper_parameters\.model_config"),
    # unknown keys at every depth, with the closest one
    (lambda hp: mmoe_section(hp).update(num_experts=4),
     r"unknown key 'hyper_parameters\.model_config\.mmoe\.num_experts'.*did you mean "
     r"'hyper_parameters\.model_config\.mmoe\.num_expert'\?"),
    (lambda hp: mmoe_section(hp)["expert_dnn"].update(hidden_unit=[8]),
     r"mmoe\.expert_dnn\.hidden_unit'.*did you mean .*hidden_units"),
    (lambda hp: mmoe_section(hp).update(experts=[{"expert_name": "e1"}]), r"deprecated per-expert list"),
    (lambda hp: hp["model_config"].update(model_class="DBMTL"), r"this folder is MMoE, got 'DBMTL'"),
    (lambda hp: hp["model_config"]["feature_groups"][0].update(group_name="deep"), r"one feature group named 'all'"),
    # experts
    (lambda hp: mmoe_section(hp).update(num_expert=0), r"mmoe\.num_expert'.*at least 1 expert, got 0"),
    (lambda hp: mmoe_section(hp).pop("num_expert"), r"mmoe' in .*missing key 'num_expert'"),
    (lambda hp: mmoe_section(hp)["expert_dnn"].update(hidden_units=[]), r"an expert needs at least one hidden layer"),
    (lambda hp: mmoe_section(hp).update(l2_regularization=-1.0), r"l2_regularization'.*must be >= 0"),
    # bad task towers
    (lambda hp: mmoe_section(hp)["task_towers"][1].update(relation_tower_names=["is_valid_play"]),
     r"task_towers\[1\]\.relation_tower_names'.*relations between towers are DBMTL's"),
    (lambda hp: mmoe_section(hp)["task_towers"][1].update(label_name="play_tim"),
     r"'play_tim' is not a label field; did you mean 'play_time'\?"),
    (lambda hp: mmoe_section(hp)["task_towers"][1].update(loss_type="L1_LOSS"), r"unsupported loss_type 'L1_LOSS'"),
    (lambda hp: mmoe_section(hp)["task_towers"][1].update(metrics_set=["auc"]), r"auc needs a CLASSIFICATION tower"),
    (lambda hp: mmoe_section(hp)["task_towers"][1].update(weight=-0.5), r"weight'.*expected a weight >= 0"),
    (lambda hp: mmoe_section(hp).update(task_towers=[]), r"expected at least one task tower"),
])
def test_easyrec_config_errors(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        build_model(easyrec_config(tmp_path, edit), torch.device("cpu"))


def test_paddlerec_config_with_easyrec_sections_is_an_error(tmp_path):
    def edit(hp):
        hp["feature_config"] = {"features": []}
    message = r"'hyper_parameters\.feature_config' in .*needs hyper_parameters\.model_config"
    with pytest.raises(ConfigError, match=message):
        build_model(easyrec_config(tmp_path, edit, name="config.yaml"), torch.device("cpu"))


def tower_weights(weights):
    def edit(hp):
        for tower, weight in zip(mmoe_section(hp)["task_towers"], weights):
            tower["weight"] = weight
    return edit


def test_tower_weights_scale_each_task_loss_and_regularisation_is_added(tmp_path):
    config = easyrec_config(tmp_path, tower_weights((2.0, 0.25)))
    torch.manual_seed(0)
    wrapper, model = build_model(config, torch.device("cpu"))
    batch = next(iter(create_loader(config, "train")))
    metrics, _ = wrapper.create_metrics()
    loss, _, logged = wrapper.train_forward(model, metrics, batch, config)
    ids, values = batch["all.ids"], batch["all.values"]
    probability, value = model(ids, values)  # no dropout in this config: the same outputs as in train_forward
    bce = F.binary_cross_entropy(probability, batch["is_valid_play"].view(-1, 1))
    mse = F.mse_loss(value, batch["play_time"].view(-1, 1))
    assert list(logged) == ["cross_entropy_loss_is_valid_play", "l2_loss_play_time"]
    torch.testing.assert_close(logged["cross_entropy_loss_is_valid_play"], 2.0 * bce)
    torch.testing.assert_close(logged["l2_loss_play_time"], 0.25 * mse)
    # l2_regularization (1e-6) over every Linear weight: experts' layers, gates, towers, outputs; not biases
    # or embeddings
    kernels = [p for name, p in model.named_parameters()
               if name.endswith("weight") and p.dim() >= 2 and not name.startswith("embedding.")]
    assert len(kernels) == 2 + 1 + 2 * 3  # expert layers, the fused gates, per tower two DNN layers + output
    l2 = 1e-6 * sum(0.5 * w.pow(2).sum() for w in kernels)
    # embedding_regularization (5e-6) over the batch's id embeddings: the group tensor's first 12 x 8 columns
    embedding = 5e-6 * 0.5 * model.embedding(ids, values)[0][:, :96].pow(2).sum()
    assert float(l2.detach()) > 0 and float(embedding.detach()) > 0
    torch.testing.assert_close(model.regularization_loss(ids, values), l2 + embedding)
    torch.testing.assert_close(loss, 2.0 * bce + 0.25 * mse + l2 + embedding)
    model.l2_regularization = 0.0
    torch.testing.assert_close(model.regularization_loss(ids, values), embedding)
    model.embedding_regularization = 0.0
    assert float(model.regularization_loss(ids, values)) == 0.0


def test_weight_zero_leaves_a_task_untrained(tmp_path):
    """weight 0 on play_time: its tower gets no gradient, the other task still trains the shared experts."""
    config = easyrec_config(tmp_path, tower_weights((1.0, 0.0)))
    wrapper, model = build_model(config, torch.device("cpu"))
    model.l2_regularization = 0.0  # the l2 term alone would move every weight
    batch = next(iter(create_loader(config, "train")))
    loss, _, _ = wrapper.train_forward(model, wrapper.create_metrics()[0], batch, config)
    loss.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.towers.dnns[1].parameters())
    assert model.towers.outputs[1].weight.grad is None or float(model.towers.outputs[1].weight.grad.abs().sum()) == 0
    assert float(model.experts.first.weight.grad.abs().sum()) > 0


def test_paddlerec_mode_keeps_its_loss_metrics_and_log_fields():
    """config.yaml: the base wrapper's summed BCE, auc_<task> metrics and no per-task loss fields in the logs."""
    config = load_config(MMOE / "config.yaml")
    torch.manual_seed(0)
    wrapper, model = build_model(config, torch.device("cpu"))
    assert wrapper.towers == () and wrapper.feed_names == ("features",)
    assert wrapper.create_metrics()[1] == ["auc_income", "auc_marital"]
    batch = next(iter(create_loader(config, "train")))
    metrics, _ = wrapper.create_metrics()
    loss, _, logged = wrapper.train_forward(model, metrics, batch, config)
    income, marital = model(batch["features"])
    expected = (F.binary_cross_entropy(income, batch["income"].to(income.dtype))
                + F.binary_cross_entropy(marital, batch["marital"].to(marital.dtype)))
    assert logged is None
    torch.testing.assert_close(loss, expected)


def test_video_play_run_sh_then_config_easyrec_bigdata(tmp_path):
    """datasets/video_play/run.sh (small) then config_easyrec_bigdata.yaml, as a user runs them."""
    folder = tmp_path / "datasets" / "video_play"
    folder.mkdir(parents=True)
    (folder / "run.sh").write_text((REPO / "datasets" / "video_play" / "run.sh").read_text())
    (tmp_path / "datasets" / "synthetic").symlink_to(REPO / "datasets" / "synthetic")
    env = {**os.environ, "PYTHON": sys.executable, "TRAIN_ROWS": "3000", "TEST_ROWS": "500"}
    done = subprocess.run(["bash", str(folder / "run.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    model = tmp_path / "models" / "multitask" / "mmoe"
    model.mkdir(parents=True)
    for name in (*FILES, "config_easyrec_bigdata.yaml"):
        (model / name).write_text((MMOE / name).read_text())
    out = tmp_path / "out"
    overrides = ["runner.epochs=1", f"runner.model_save_path={out}", f"runner.infer_load_path={out}",
                 "runner.infer_end_epoch=1", "runner.print_interval=1000"]
    train(load_config(model / "config_easyrec_bigdata.yaml", overrides))
    metrics = infer(load_config(model / "config_easyrec_bigdata.yaml", overrides))[0]
    assert 0.5 < metrics["auc_is_valid_play"] < 1 and 0 < metrics["mse_play_time"] < 10
