from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

pytest.importorskip("torch")

from training.metrics import roc_auc, threshold_for_sensitivity, weighted_log_loss


def _auc_pairs(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        s = rng.integers(0, 5, 40).astype(float)  # many ties
        if y.min() == y.max():
            continue
        assert roc_auc(y, s) == pytest.approx(_auc_pairs(y, s))


def test_auc_edge_cases() -> None:
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_weighted_log_loss_weights_any_twice() -> None:
    y = np.zeros((1, 6))
    p = np.full((1, 6), 0.5)
    assert weighted_log_loss(y, p) == pytest.approx(math.log(2))
    p2 = p.copy()
    p2[0, 0] = 0.9  # wrong on 'any' only
    expected = (2 * -math.log(0.1) + 5 * math.log(2)) / 7
    assert weighted_log_loss(y, p2) == pytest.approx(expected, rel=1e-6)


def test_threshold_reaches_requested_sensitivity() -> None:
    y = np.array([1] * 20 + [0] * 20)
    s = np.linspace(0, 1, 40)[::-1]
    t = threshold_for_sensitivity(y, s, 0.95)
    assert (s[y == 1] >= t).mean() >= 0.95
    assert threshold_for_sensitivity(np.zeros(5), np.ones(5)) == 0.5
