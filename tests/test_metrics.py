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


def test_logloss_mse_accuracy_match_sklearn():
    rng = np.random.default_rng(11)
    preds = rng.uniform(0.01, 0.99, 1000)
    labels = rng.integers(0, 2, 1000).astype(np.float64)
    assert streamed(LogLoss(), preds, labels) == pytest.approx(log_loss(labels, preds), rel=1e-9)
    assert streamed(MSE(), preds, labels) == pytest.approx(mean_squared_error(labels, preds), rel=1e-9)
    assert streamed(Accuracy(), preds, labels) == pytest.approx(np.mean((preds > 0.5) == labels), rel=1e-12)
    assert math.isnan(LogLoss().compute())
