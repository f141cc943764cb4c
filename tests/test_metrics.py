"""Streaming metrics against scikit-learn."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score

from recstack.metrics import AUC, MSE, Accuracy, LogLoss


def streamed(metric, preds, labels, chunk=97):
    for start in range(0, len(preds), chunk):
        metric.update(torch.as_tensor(preds[start:start + chunk]), torch.as_tensor(labels[start:start + chunk]))
    return metric.compute()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    preds = rng.random(5000).astype(np.float32)
    labels = (rng.random(5000) < preds).astype(np.float32)
    assert streamed(AUC(), preds, labels) == pytest.approx(roc_auc_score(labels, preds), abs=1e-3)


@pytest.mark.parametrize("case", ["ties", "extremes", "two_samples", "perfect", "inverted", "imbalanced", "column"])
def test_auc_matches_sklearn_on_degenerate_inputs(case):
    rng = np.random.default_rng(7)
    if case == "ties":
        preds = np.full(100, 0.3, np.float32)
        labels = rng.integers(0, 2, 100).astype(np.float32)
    elif case == "extremes":
        preds = rng.choice([0.0, 1.0], 200).astype(np.float32)
        labels = rng.integers(0, 2, 200).astype(np.float32)
    elif case == "two_samples":
        preds, labels = np.array([0.2, 0.8], np.float32), np.array([0, 1], np.float32)
    elif case == "perfect":
        labels = rng.integers(0, 2, 300).astype(np.float32)
        preds = (labels * 0.5 + rng.random(300) * 0.4).astype(np.float32)
    elif case == "inverted":
        labels = rng.integers(0, 2, 300).astype(np.float32)
        preds = ((1 - labels) * 0.5 + rng.random(300) * 0.4).astype(np.float32)
    elif case == "imbalanced":
        labels = (rng.random(3000) < 0.01).astype(np.float32)
        preds = (rng.random(3000) * 0.1 + labels * 0.02).astype(np.float32)
    else:  # (B, 1) tensors, as models return
        labels = rng.integers(0, 2, (400, 1)).astype(np.float32)
        preds = rng.random((400, 1)).astype(np.float32)
    expected = roc_auc_score(labels.reshape(-1), preds.reshape(-1))
    assert streamed(AUC(), preds, labels) == pytest.approx(expected, abs=1e-3)


def test_auc_with_one_class_is_nan_not_a_crash():
    auc = AUC()
    assert math.isnan(auc.compute())  # nothing seen
    auc.update(torch.rand(50), torch.ones(50))
    assert math.isnan(auc.compute())  # positives only
    auc.reset()
    auc.update(torch.rand(50), torch.zeros(50))
    assert math.isnan(auc.compute())


def test_auc_states_add_up_across_parts():
    rng = np.random.default_rng(3)
    preds, labels = rng.random(2000), rng.integers(0, 2, 2000)
    whole, a, b = AUC(), AUC(), AUC()
    whole.update(torch.as_tensor(preds), torch.as_tensor(labels))
    a.update(torch.as_tensor(preds[:700]), torch.as_tensor(labels[:700]))
    b.update(torch.as_tensor(preds[700:]), torch.as_tensor(labels[700:]))
    a.counts += b.counts
    assert a.compute() == whole.compute()


def test_auc_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        AUC().update(torch.rand(3), torch.ones(2))


def test_masked_auc_matches_sklearn_on_the_selected_samples():
    """ESMM's CVR AUC: only clicked samples count (mask given as float 0/1 or bool, in (B, 1) batches)."""
    rng = np.random.default_rng(4)
    preds, labels, clicked = rng.random(3000), rng.integers(0, 2, 3000), rng.random(3000) < 0.3
    auc, auc_bool = AUC(), AUC()
    for start in range(0, 3000, 128):
        part = slice(start, start + 128)
        p, y = torch.as_tensor(preds[part]).view(-1, 1), torch.as_tensor(labels[part], dtype=torch.float32).view(-1, 1)
        auc.update(p, y, mask=torch.as_tensor(clicked[part], dtype=torch.float32).view(-1, 1))
        auc_bool.update(p, y, mask=torch.as_tensor(clicked[part]))
    expected = roc_auc_score(labels[clicked], preds[clicked])
    assert auc.compute() == pytest.approx(expected, abs=1e-4)
    assert auc_bool.compute() == auc.compute()
    assert int(auc.counts.sum()) == int(clicked.sum())
    assert auc.compute() != pytest.approx(roc_auc_score(labels, preds), abs=1e-4)  # the mask did something
    with pytest.raises(ValueError, match="a mask of 2 values for 3 predictions"):
        AUC().update(torch.rand(3), torch.ones(3), mask=torch.ones(2))


def test_logloss_mse_accuracy_match_sklearn():
    rng = np.random.default_rng(11)
    preds = rng.uniform(0.01, 0.99, 1000)
    labels = rng.integers(0, 2, 1000).astype(np.float64)
    assert streamed(LogLoss(), preds, labels) == pytest.approx(log_loss(labels, preds), rel=1e-9)
    assert streamed(MSE(), preds, labels) == pytest.approx(mean_squared_error(labels, preds), rel=1e-9)
    assert streamed(Accuracy(), preds, labels) == pytest.approx(np.mean((preds > 0.5) == labels), rel=1e-12)
    assert math.isnan(LogLoss().compute())


# ---------------------------------------------------------------------------- GAUC
def brute_force_gauc(groups, preds, labels):
    """Per-user scikit-learn AUC weighted by the user's impressions; users with one class (and key < 0) skipped."""
    total = weight = 0.0
    for g in np.unique(groups):
        sel = groups == g
        if g < 0 or len(np.unique(labels[sel])) < 2:
            continue
        total += sel.sum() * roc_auc_score(labels[sel], preds[sel])
        weight += sel.sum()
    return total / weight


@pytest.mark.parametrize("seed", [0, 1])
def test_gauc_matches_brute_force_per_user_sklearn(seed):
    from recstack.metrics import GAUC

    rng = np.random.default_rng(seed)
    n = 4000
    groups = rng.integers(0, 300, n)  # ~13 impressions a user, some with one class only
    bias = rng.normal(0, 1, 300)[groups]  # users differ in their base rate: AUC != GAUC
    preds = (1 / (1 + np.exp(-(bias + rng.normal(0, 1, n))))).astype(np.float32)
    labels = (rng.random(n) < preds).astype(np.float32)
    preds[rng.random(n) < 0.2] = 0.5  # ties, within and across users
    groups[rng.random(n) < 0.05] = -1  # unknown users are skipped
    gauc = GAUC()
    for start in range(0, n, 97):  # users' impressions spread over batches, (B, 1) shaped
        part = slice(start, start + 97)
        gauc.update(torch.as_tensor(preds[part]).view(-1, 1), torch.as_tensor(labels[part]).view(-1, 1),
                    groups=torch.as_tensor(groups[part]).view(-1, 1))
    expected = brute_force_gauc(groups, preds, labels)
    assert gauc.compute() == pytest.approx(expected, abs=1e-12)
    assert gauc.compute() == pytest.approx(expected, abs=1e-12)  # computing twice changes nothing
    assert abs(expected - roc_auc_score(labels, preds)) > 0.01


def test_gauc_edge_cases():
    from recstack.metrics import GAUC

    gauc = GAUC()
    assert math.isnan(gauc.compute())  # nothing seen
    gauc.update(torch.tensor([0.1, 0.9, 0.4]), torch.tensor([0.0, 0.0, 0.0]), groups=torch.tensor([1, 1, 2]))
    assert math.isnan(gauc.compute())  # no user with both classes
    # user 3: perfect (weight 2); user 4: inverted (weight 3, ties count half); user 5: one class, skipped
    gauc.update(torch.tensor([0.2, 0.8, 0.7, 0.3, 0.3, 0.6]), torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 1.0]),
                groups=torch.tensor([3, 3, 4, 4, 4, 5]))
    assert gauc.compute() == pytest.approx((2 * 1.0 + 3 * 0.0) / 5)
    gauc.reset()
    assert math.isnan(gauc.compute())
    with pytest.raises(ValueError, match="group_name"):
        gauc.update(torch.rand(3), torch.ones(3))
    with pytest.raises(ValueError, match="integers"):
        gauc.update(torch.rand(3), torch.ones(3), groups=torch.rand(3))
    with pytest.raises(ValueError, match="3 predictions, 3 labels and 2 group keys"):
        gauc.update(torch.rand(3), torch.ones(3), groups=torch.ones(2, dtype=torch.long))


def test_wrapper_feeds_the_batch_group_column_to_grouped_metrics_only():
    from recstack.metrics import GAUC
    from recstack.wrapper import DygraphModel

    class Wrapper(DygraphModel):
        feed_names = ("x",)
        group_name = "user"

        def create_metrics(self):
            return [AUC(), GAUC()], ["auc", "gauc"]

        def update_metrics(self, metrics_list, pred, labels, groups=None):
            for metric in metrics_list:
                super().update_metrics([metric], pred, labels, groups=groups)

    batch = {"x": torch.tensor([[0.2], [0.8], [0.3], [0.6]]), "label": torch.tensor([[0.0], [1.0], [1.0], [0.0]]),
             "user": torch.tensor([[7], [7], [8], [8]])}
    wrapper = Wrapper()
    metrics, _ = wrapper.create_metrics()
    wrapper.infer_forward(lambda x: x, metrics, batch, None)
    assert metrics[1].compute() == pytest.approx(0.5)  # user 7: 1.0, user 8: 0.0
    assert metrics[0].compute() == pytest.approx(roc_auc_score([0, 1, 1, 0], [0.2, 0.8, 0.3, 0.6]))
    with pytest.raises(KeyError, match="no group column 'user'"):
        wrapper.infer_forward(lambda x: x, metrics, {k: v for k, v in batch.items() if k != "user"}, None)
