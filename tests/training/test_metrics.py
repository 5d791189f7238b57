from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

pytest.importorskip("torch")

from training.metrics import (
    THRESHOLD_POLICIES,
    canonical_policy,
    checkpoint_policy_name,
    choose_thresholds,
    roc_auc,
    threshold_f1,
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
    for pol in ("triage", "triage-f1", "triage-youden"):  # on _S, F1 and Youden agree (0.5)
        triage = choose_thresholds(labels, probs, 0.95, pol)
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
        choose_thresholds(labels, probs, 0.95, "f2")
    for pol in THRESHOLD_POLICIES:
        assert "validation" in threshold_policy_text(pol, 0.95)
    text = threshold_policy_text("triage", 0.95)
    assert "F1" in text and "Youden" not in text and ">= 0.95" in text
    assert "Youden" in threshold_policy_text("triage-youden", 0.95)


# A rare class the model confuses with a common one: 4 positives (0.9, 0.8, 0.7 and a weak 0.45), 6
# negatives of the confused class interleaved with them (0.85 ... 0.5), 84 clean negatives <= 0.1.
_Y_RARE = np.array([1] * 4 + [0] * 6 + [0] * 84)
_S_RARE = np.concatenate(
    [[0.9, 0.8, 0.7, 0.45], [0.85, 0.75, 0.65, 0.6, 0.55, 0.5], np.linspace(0.0, 0.1, 84)]
)


def _f1(y: np.ndarray, s: np.ndarray, t: float) -> float:
    pred = s >= t
    tp = int((pred & (y == 1)).sum())
    return 2 * tp / (int(pred.sum()) + int((y == 1).sum()))


def test_f1_differs_from_youden_on_a_rare_confused_class() -> None:
    t_j, t_f1 = threshold_youden(_Y_RARE, _S_RARE), threshold_f1(_Y_RARE, _S_RARE)
    # Youden: 0.45 keeps every positive for 6 false positives out of 90 (J = 1 - 6/90 = 0.933 vs
    # 0.75 - 2/90 at 0.7), i.e. 6 false flags for 4 true ones: prevalence is ignored
    assert t_j == pytest.approx(0.45)
    assert _sens_spec(_Y_RARE, _S_RARE, t_j) == pytest.approx((1.0, 84 / 90))
    # F1: 0.9 -> 2/5, 0.8 -> 4/7, 0.7 -> 6/9 (max), 0.45 -> 8/14
    assert t_f1 == pytest.approx(0.7)
    assert _f1(_Y_RARE, _S_RARE, t_f1) == pytest.approx(2 / 3)
    assert _f1(_Y_RARE, _S_RARE, t_f1) == pytest.approx(max(_f1(_Y_RARE, _S_RARE, float(t)) for t in _S_RARE))
    assert _sens_spec(_Y_RARE, _S_RARE, t_f1) == pytest.approx((0.75, 88 / 90))
    # the triage policy uses F1 for subtypes, triage-youden Youden; `any` stays at sensitivity >= 0.95
    k = len(RSNA_CLASSES)
    y = [np.tile(_Y_RARE[:, None], (1, k)).astype(np.float32)]
    p = [np.tile(_S_RARE[:, None], (1, k))]
    new, old = choose_thresholds(y, p, 0.95, "triage"), choose_thresholds(y, p, 0.95, "triage-youden")
    assert new["any"] == old["any"] == pytest.approx(0.45)
    assert all(new[c] == pytest.approx(0.7) and old[c] == pytest.approx(0.45) for c in RSNA_CLASSES[1:])


def test_f1_ties_take_the_higher_threshold_and_degenerate_cases() -> None:
    # t=0.9: TP 1, FP 0 -> 2/(1+2) = 2/3; t=0.7: TP 2, FP 1 -> 4/(3+2) = 4/5; t=0.6: TP 2, FP 2 -> 4/6
    y = np.array([1, 0, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.1])
    assert threshold_f1(y, s) == pytest.approx(0.7)
    # exact tie: t=0.9 -> 2*1/(1+0+2) = 2/3 ; t=0.5 -> 2*2/(2+2+2) = 2/3 -> the higher threshold
    y2 = np.array([1, 0, 0, 1, 0])
    s2 = np.array([0.9, 0.8, 0.7, 0.5, 0.1])
    assert threshold_f1(y2, s2) == pytest.approx(0.9)
    assert threshold_f1(np.zeros(4), np.linspace(0, 1, 4)) == 0.5
    assert threshold_f1(np.ones(4), np.linspace(0, 1, 4)) == 0.5


def test_policy_names_and_legacy_checkpoints() -> None:
    assert canonical_policy("triage") == "triage-f1"
    assert all(canonical_policy(p) == p for p in THRESHOLD_POLICIES)
    with pytest.raises(ValueError, match="unknown threshold policy"):
        canonical_policy("f1")
    # checkpoints written before 0.1.2 recorded the Youden-subtype rule as "triage"
    assert checkpoint_policy_name("triage") == "triage-youden"
    assert checkpoint_policy_name("triage-f1") == "triage-f1"
    assert checkpoint_policy_name("sensitivity") == "sensitivity"
