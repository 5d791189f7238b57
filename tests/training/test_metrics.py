from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

pytest.importorskip("torch")

from training.metrics import (
    THRESHOLD_POLICIES,
    choose_thresholds,
    roc_auc,
    threshold_for_sensitivity,
    threshold_policy_text,
    threshold_youden,
    weighted_log_loss,
)
from viewer.core.constants import RSNA_CLASSES


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


def _sens_spec(y: np.ndarray, s: np.ndarray, t: float) -> tuple[float, float]:
    pred = s >= t
    return float(pred[y == 1].mean()), float((~pred[y == 0]).mean())


# 10 positives, 20 negatives: one positive scores low (0.05), among the negatives; the rest separate well
_Y = np.array([1] * 10 + [0] * 20)
_S = np.concatenate(
    [
        [0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.05],
        [0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.12, 0.1, 0.09],
        [0.08, 0.07, 0.06, 0.04, 0.03, 0.02, 0.02, 0.01, 0.01, 0.0],
    ]
)


def test_youden_differs_from_the_sensitivity_rule() -> None:
    t_sens = threshold_for_sensitivity(_Y, _S, 0.95)
    t_j = threshold_youden(_Y, _S)
    # 95 % of 10 positives needs all 10 -> down to the stray positive at 0.05: 13 false positives
    assert t_sens == pytest.approx(0.05)
    assert _sens_spec(_Y, _S, t_sens) == pytest.approx((1.0, 7 / 20))
    # Youden: 0.5 keeps 9/10 positives and every negative out (J = 0.9 vs 0.35 at 0.05)
    assert t_j == pytest.approx(0.5)
    assert _sens_spec(_Y, _S, t_j) == pytest.approx((0.9, 1.0))
    # brute force over every observed score agrees on the maximum J
    best = max(sum(_sens_spec(_Y, _S, float(t))) - 1 for t in _S)
    assert sum(_sens_spec(_Y, _S, t_j)) - 1 == pytest.approx(best)


def test_youden_ties_take_the_higher_threshold_and_degenerate_cases() -> None:
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    # t=0.9: J = 0.5 - 0 ; t=0.7: J = 1.0 - 0.5 = 0.5 -> tie -> the higher threshold
    assert threshold_youden(y, s) == pytest.approx(0.9)
    # tied scores are one candidate (score >= t flags both)
    assert threshold_youden(np.array([1, 0, 1, 0]), np.array([0.6, 0.6, 0.6, 0.1])) == pytest.approx(0.6)
    assert threshold_youden(np.zeros(4), np.linspace(0, 1, 4)) == 0.5
    assert threshold_youden(np.ones(4), np.linspace(0, 1, 4)) == 0.5


def test_choose_thresholds_policies() -> None:
    k = len(RSNA_CLASSES)
    y = np.tile(_Y[:, None], (1, k)).astype(np.float32)
    p = np.tile(_S[:, None], (1, k))
    labels, probs = [y[:13], y[13:]], [p[:13], p[13:]]  # two studies
    triage = choose_thresholds(labels, probs, 0.95, "triage")
    assert triage["any"] == pytest.approx(0.05)
    assert all(triage[c] == pytest.approx(0.5) for c in RSNA_CLASSES[1:])
    sens = choose_thresholds(labels, probs, 0.95, "sensitivity")
    assert all(v == pytest.approx(0.05) for v in sens.values())
    assert all(v == pytest.approx(0.5) for v in choose_thresholds(labels, probs, 0.95, "youden").values())
    # thresholds are rounded down to 6 decimals, so the slice that sets them stays flagged
    odd = [np.full((2, k), 0.123456789, dtype=np.float32) * np.array([[1.0], [0.5]], dtype=np.float32)]
    lab = [np.array([[1] * k, [0] * k], dtype=np.float32)]
    t = choose_thresholds(lab, odd, 0.95, "youden")
    assert all(float(odd[0][0, 0]) >= t[c] for c in RSNA_CLASSES)
    with pytest.raises(ValueError, match="unknown threshold policy"):
        choose_thresholds(labels, probs, 0.95, "f1")
    for pol in THRESHOLD_POLICIES:
        assert "validation" in threshold_policy_text(pol, 0.95)
    text = threshold_policy_text("triage", 0.95)
    assert "Youden" in text and ">= 0.95" in text
