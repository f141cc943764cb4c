"""Share-Bottom and PLE / CGC (models/multitask): structure, and CGC's planted-signal run.

Every config.yaml / config_video.yaml is trained by tests/test_train.py; CGC is PLE's
``level_number: 1`` and is trained here.
"""

from pathlib import Path

import pytest
import torch

from recstack.config import ConfigError, load_config
from recstack.evaluator import infer
from recstack.layers import ExtractionLayer
from recstack.trainer import train
from recstack.wrapper import build_model

REPO = Path(__file__).resolve().parents[1]
PLE_CONFIG = REPO / "models/multitask/ple/config.yaml"


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_ple_stacks_extraction_levels_with_a_shared_gate_below_the_last(levels):
    config = load_config(PLE_CONFIG, [f"hyper_parameters.level_number={levels}"])
    torch.manual_seed(0)
    _, model = build_model(config, torch.device("cpu"))
    assert [type(m) for m in model.levels] == [ExtractionLayer] * levels
    assert [m.shared_gate is not None for m in model.levels] == [True] * (levels - 1) + [False]
    assert model.levels[0].experts.linear.in_features == 499  # later levels read the 16-wide expert mixtures
    assert all(m.experts.linear.in_features == 16 for m in model.levels[1:])
    assert model.levels[-1].experts.num_experts == 2 * 3 + 2  # task_num * exp_per_task + shared_num
    outputs = model(torch.randn(5, 499))
    assert len(outputs) == 2 and all(o.shape == (5, 1) and ((o > 0) & (o < 1)).all() for o in outputs)


def test_share_bottom_shares_one_bottom_under_one_tower_per_task():
    config = load_config(REPO / "models/multitask/share_bottom/config.yaml")
    torch.manual_seed(0)
    _, model = build_model(config, torch.device("cpu"))
    bottom = model.bottom[0]
    assert (bottom.in_features, bottom.out_features) == (499, 117)
    assert torch.equal(bottom.bias, torch.zeros(117))
    assert len(model.towers.towers) == 2
    x = torch.randn(4, 499)
    hidden = torch.relu(bottom(x))
    for tower, out in zip(model.towers.towers, model(x)):
        torch.testing.assert_close(out, torch.sigmoid(tower(hidden)))
    # towers start with distinct hidden units (PaddleRec's constant 0.1 weights would make them identical)
    first = model.towers.towers[0][0].weight
    assert len({tuple(row.tolist()) for row in first}) == first.shape[0]


@pytest.mark.parametrize("key, value, message", [
    ("exp_per_task", 0, "exp_per_task.*expected a positive int \\(model ple\\), got 0"),
    ("shared_num", -1, "shared_num.*expected an int >= 0 \\(model ple\\), got -1"),
    ("level_number", 0, "level_number.*expected a positive int \\(model ple\\), got 0"),
    ("task_num", 3, "task_num.*must be 2 \\(one per task: income, marital\\), got 3"),
])
def test_ple_rejects_bad_sizes(key, value, message):
    config = load_config(PLE_CONFIG, [f"hyper_parameters.{key}={value}"])
    with pytest.raises(ConfigError, match=message):
        build_model(config, torch.device("cpu"))


def test_cgc_learns_each_task_planted_signal(tmp_path):
    """``-o hyper_parameters.level_number=1`` (CGC): measured 0.749 / 0.794 on the sample data (ple/README.md)."""
    overrides = ["hyper_parameters.level_number=1", f"runner.model_save_path={tmp_path}"]
    train(load_config(PLE_CONFIG, overrides))
    last = infer(load_config(PLE_CONFIG, overrides + [f"runner.infer_load_path={tmp_path}"]))[3]
    assert last["auc_income"] > 0.70 and last["auc_marital"] > 0.74, last
