"""ESCM² (models/multitask/escm2): exact parse of PaddleRec's ESCM² sample file, the IPS weights and the DR
risk against their formulas by hand (clipping, floor, detaching included), the wrapper's loss, both
counterfactual modes training, PaddleRec's MMoE bottom and its keys.

config.yaml (IPS) is trained, exported and served by tests/test_train.py.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_aliccp import reference  # the plain per-token parse of ESMM's files, which ESCM²'s are

from recstack.config import ConfigError, load_config
from recstack.data.aliccp import FIELDS
from recstack.evaluator import infer
from recstack.losses import dr_cvr_loss, ips_cvr_loss, ips_weights
from recstack.modules import load_module
from recstack.trainer import train
from recstack.wrapper import build_model

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "models/multitask/escm2"
CONFIG = FOLDER / "config.yaml"
SAMPLE = "paddlerec/models/multitask/escm2/data"


def bce(q, r):
    return -(r * math.log(q) + (1 - r) * math.log(1 - q))


# ------------------------------------------------------------------ data
@pytest.mark.parametrize("split", ["train", "test"])
def test_parses_paddlerec_escm2_sample_exactly(shared_data, split):
    path = shared_data / SAMPLE / split / "small.txt"
    config = load_config(CONFIG)
    reader = load_module(FOLDER, "escm_reader").RecDataset([str(path)], config)
    blocks = list(reader.iter_blocks())
    data = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    assert set(data) == {"ctr", "ctcvr", "sparse"}
    assert data["sparse"].shape == (10, 23 * 3) and data["sparse"].dtype == np.int64
    clicks, conversions, ids = reference(path.read_text().splitlines(), 3)
    np.testing.assert_array_equal(data["ctr"][:, 0], clicks)
    np.testing.assert_array_equal(data["ctcvr"][:, 0], conversions)
    np.testing.assert_array_equal(data["sparse"], ids)
    if split == "train":  # "1,1,1,210:1,210:2,210:3,216:4,301:5,...,150_14:18,150_14:19,150_14:20,..."
        first = data["sparse"][0].reshape(23, 3)
        col = {f: i for i, f in enumerate(FIELDS)}
        assert first[col["210"]].tolist() == [1, 2, 3]
        assert first[col["216"]].tolist() == [4, 0, 0]
        assert first[col["150_14"]].tolist() == [18, 19, 20]
        assert data["ctr"][:, 0].tolist() == [1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        assert data["ctcvr"][:, 0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]


# ------------------------------------------------------------------ IPS
CTR = [0.5, 0.02, 0.3, 0.9, 0.0]
CLICK = [1, 1, 0, 1, 1]
CVR = [0.4, 0.7, 0.2, 0.1, 0.6]
CONV = [1, 0, 0, 0, 1]


def col(values):
    return torch.tensor(values, dtype=torch.float64).reshape(-1, 1)


def test_ips_weights_follow_the_formula_with_clip_and_floor():
    # N_c = 4 clicks; w_i = o_i * min(1 / max(p_i * N_c, 1e-6), 15)
    w = ips_weights(col(CTR), col(CLICK)).flatten().tolist()
    # 1 / (0.02 * 4) = 12.5 stays under the clip; p = 0 is floored at 1e-6, 1e6 is clipped to 15
    expected = [1 / (0.5 * 4), 12.5, 0.0, 1 / (0.9 * 4), 15.0]
    assert w == pytest.approx(expected, rel=1e-12)
    # a tighter clip binds on the small propensity; p = 0 is floored at 1e-6 before the clip
    assert ips_weights(col(CTR), col(CLICK), clip=10.0).flatten().tolist() == pytest.approx(
        [0.5, 10.0, 0.0, 1 / 3.6, 10.0])
    assert ips_weights(col(CTR), col(CLICK), clip=1e9).flatten()[4].item() == pytest.approx(1e6)
    # no clicks: all weights 0 (not NaN)
    assert ips_weights(col(CTR), col([0] * 5)).abs().sum().item() == 0.0


def test_ips_loss_is_paddlerecs_formula_and_detaches_the_propensity():
    loss = ips_cvr_loss(col(CVR), col(CTR), col(CLICK), col(CONV))
    by_hand = sum(o * min(1 / max(p * 4, 1e-6), 15) * bce(q, r) for p, o, q, r in zip(CTR, CLICK, CVR, CONV))
    assert loss.item() == pytest.approx(by_hand, rel=1e-12)
    # PaddleRec's writing of it: mean(delta * B * clip(1 / max(p N_c, eps), -15, 15) * o)
    B = len(CTR)
    paddle = np.mean([bce(q, r) * B * np.clip(1 / max(p * 4, 1e-6), -15, 15) * o
                      for p, o, q, r in zip(CTR, CLICK, CVR, CONV)])
    assert loss.item() == pytest.approx(paddle, rel=1e-12)

    ctr = col(CTR).requires_grad_()
    cvr = col(CVR).requires_grad_()
    ips_cvr_loss(cvr, ctr, col(CLICK), col(CONV)).backward()
    assert ctr.grad is None  # PaddleRec's stop_gradient on the weights
    # d/dq of w * BCE(q, r): w * (q - r) / (q (1 - q)); zero for the unclicked exposure
    w = [0.5, 12.5, 0.0, 1 / 3.6, 15.0]
    grad = [wi * (q - r) / (q * (1 - q)) for wi, q, r in zip(w, CVR, CONV)]
    assert cvr.grad.flatten().tolist() == pytest.approx(grad, rel=1e-10)

    ctr = col([0.5, 0.2, 0.3, 0.9, 0.4]).requires_grad_()
    ips_cvr_loss(col(CVR), ctr, col(CLICK), col(CONV), detach=False).backward()
    # d/dp of (1 / (p N_c)) delta = -delta / (p^2 N_c) on clicked exposures (no clip binds here)
    expected = [-o * bce(q, r) / (p * p * 4) for p, o, q, r in zip([0.5, 0.2, 0.3, 0.9, 0.4], CLICK, CVR, CONV)]
    assert ctr.grad.flatten().tolist() == pytest.approx(expected, rel=1e-10)


# ------------------------------------------------------------------ DR
IMP = [0.3, 0.8, 0.5, 0.05, 0.9]


def test_dr_loss_by_hand_on_a_tiny_batch():
    loss = dr_cvr_loss(col(CVR), col(CTR), col(IMP), col(CLICK), col(CONV))
    terms = []
    for p, o, q, r, imp in zip(CTR, CLICK, CVR, CONV, IMP):
        v = min(o / max(p, 1e-6), 15.0)  # not scaled by the click count; p = 0 -> floor -> clip 15
        e = bce(q, r) - imp
        terms.append(imp + v * e + v * e * e)
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)
    # the clip binds on p = 0.02 (1 / 0.02 = 50 -> 15) and p = 0 (floor 1e-6 -> 1e6 -> 15)

    # gradients: to the imputation 1 - v - 2 v e; to the CVR through delta (1 + 2 e) v delta'(q)
    cvr, imp, ctr = col(CVR).requires_grad_(), col(IMP).requires_grad_(), col(CTR).requires_grad_()
    dr_cvr_loss(cvr, ctr, imp, col(CLICK), col(CONV)).backward()
    assert ctr.grad is None
    n = len(CTR)
    d_imp, d_cvr = [], []
    for p, o, q, r, i in zip(CTR, CLICK, CVR, CONV, IMP):
        v = min(o / max(p, 1e-6), 15.0)
        e = bce(q, r) - i
        d_imp.append((1 - v - 2 * v * e) / n)
        d_cvr.append(v * (1 + 2 * e) * (q - r) / (q * (1 - q)) / n)
    assert imp.grad.flatten().tolist() == pytest.approx(d_imp, rel=1e-10)
    assert cvr.grad.flatten().tolist() == pytest.approx(d_cvr, rel=1e-10)


def test_dr_with_a_perfect_imputation_is_the_mean_imputed_error():
    """When every clicked exposure's imputed error equals its true error, the IPS corrections vanish."""
    errors = [bce(q, r) for q, r in zip(CVR, CONV)]
    loss = dr_cvr_loss(col(CVR), col(CTR), col(errors), col(CLICK), col(CONV))
    assert loss.item() == pytest.approx(sum(errors) / len(errors), rel=1e-12)


# ------------------------------------------------------------------ wrapper
@pytest.mark.parametrize("mode", ["IPS", "DR"])
def test_wrapper_loss_combines_the_three_terms(mode):
    config = load_config(CONFIG, [f"hyper_parameters.counterfact_mode={mode}", "hyper_parameters.global_w=0.3",
                                  "hyper_parameters.counterfactual_w=0.2"])
    torch.manual_seed(0)
    wrapper, model = build_model(config, torch.device("cpu"))
    assert wrapper.extra_output_names == (("imputation",) if mode == "DR" else ())
    ctr, cvr, click, conv, imp = col(CTR).clamp(min=0.01), col(CVR), col(CLICK), col(CONV), col(IMP)
    loss = wrapper.create_loss([ctr, ctr * cvr, cvr], [click, conv], imp if mode == "DR" else None)
    risk = (dr_cvr_loss(cvr, ctr, imp, click, conv) if mode == "DR" else ips_cvr_loss(cvr, ctr, click, conv))
    bce_ctr = np.mean([bce(p, o) for p, o in zip(ctr.flatten().tolist(), CLICK)])
    bce_ctcvr = np.mean([bce(p * q, r) for p, q, r in zip(ctr.flatten().tolist(), CVR, CONV)])
    assert loss.item() == pytest.approx(bce_ctr + 0.2 * risk.item() + 0.3 * bce_ctcvr, rel=1e-10)

    sparse = torch.randint(0, 1000, (4, 69))
    pred = model(sparse)  # inference / export: the three probabilities, no imputation
    assert len(pred) == 3 and all(p.shape == (4, 1) for p in pred)
    torch.testing.assert_close(pred[1], pred[0] * pred[2])
    _, extras = model(sparse, return_extras=True)
    assert set(extras) == set(wrapper.extra_output_names)


@pytest.mark.parametrize("mode", ["IPS", "DR"])
def test_both_modes_train_on_the_sample_data(mode, tmp_path):
    """One epoch; test AUCs after it with seed 2024: IPS ctr 0.691, ctcvr 0.716, cvr 0.719; DR 0.704, 0.705, 0.714
    (seeds 1 / 7: IPS cvr 0.694 / 0.674, DR 0.679 / 0.659; README)."""
    overrides = [f"hyper_parameters.counterfact_mode={mode}", "runner.epochs=1", "runner.infer_end_epoch=1",
                 f"runner.model_save_path={tmp_path}", f"runner.infer_load_path={tmp_path}"]
    result = train(load_config(CONFIG, overrides))
    assert all(math.isfinite(e.loss) for e in result.epochs)
    first = infer(load_config(CONFIG, overrides))[0]
    assert first["auc_ctr"] > 0.64 and first["auc_ctcvr"] > 0.64 and first["auc_cvr"] > 0.62, first


def test_paddlerecs_mmoe_bottom_and_keys():
    mmoe = ["hyper_parameters.expert_num=8", "hyper_parameters.expert_size=16", "hyper_parameters.tower_size=8",
            "hyper_parameters.feature_size=276", "hyper_parameters.gate_num=3"]
    for mode, outputs in (("IPS", 2), ("DR", 3)):
        config = load_config(CONFIG, mmoe + [f"hyper_parameters.counterfact_mode={mode}"])
        torch.manual_seed(0)
        wrapper, model = build_model(config, torch.device("cpu"))
        assert model.gates.num_tasks == outputs and model.experts.num_experts == 8
        pred, extras = model(torch.randint(0, 1000, (3, 69)), return_extras=True)
        assert len(pred) == 3 and set(extras) == set(wrapper.extra_output_names)
    with pytest.raises(ConfigError, match="feature_size"):
        build_model(load_config(CONFIG, mmoe[:3] + ["hyper_parameters.feature_size=100"]), torch.device("cpu"))


def test_bad_counterfact_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="counterfact_mode"):
        build_model(load_config(CONFIG, ["hyper_parameters.counterfact_mode=IPW"]), torch.device("cpu"))
