"""Temperature scaling and calibration error."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from training.calibration import T_MAX, T_MIN, fit_temperature, fit_temperature_detail
from training.metrics import expected_calibration_error, sensitivity_at_specificity


def test_fit_temperature_recovers_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0.0, 2.0, size=20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-true_logit))).astype(float)
    t = fit_temperature(true_logit * 3.0, y)  # 3x over-confident logits
    assert t == pytest.approx(3.0, rel=0.08)
    before = expected_calibration_error(y, 1 / (1 + np.exp(-true_logit * 3.0)))
    after = expected_calibration_error(y, 1 / (1 + np.exp(-true_logit * 3.0 / t)))
    assert after < 0.02 < before
    assert fit_temperature(true_logit, np.zeros_like(y)) == 1.0  # one class: nothing to fit


def test_ece_and_sensitivity_at_specificity_exact_values() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(y, p) == pytest.approx(0.1)
    assert expected_calibration_error(np.array([1, 1]), np.array([1.0, 1.0])) == 0.0
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.9])
    truth = np.array([0, 0, 0, 0, 1, 1])
    assert sensitivity_at_specificity(truth, score, 0.75) == 1.0  # threshold 0.3 keeps 0.35 and 0.9
    assert sensitivity_at_specificity(truth, score, 1.0) == 0.5  # above 0.4: only 0.9


def _separable_study_logits() -> tuple[np.ndarray, np.ndarray]:
    """48 validation studies of one class that the raw logits separate perfectly (the v2b case)."""
    rng = np.random.default_rng(3)
    pos = rng.uniform(0.5, 3.0, 12)
    neg = rng.uniform(-4.0, 0.3, 36)
    return np.concatenate([pos, neg]), np.concatenate([np.ones(12), np.zeros(36)])


def test_separable_class_gets_a_finite_temperature_not_the_search_bound() -> None:
    # issue 10: with no finite maximum-likelihood temperature the fit used to stop at its lower bound
    # (0.2: logits x5) and saturate the probabilities at 1; Platt's smoothed targets keep it finite
    logits, y = _separable_study_logits()
    fit = fit_temperature_detail(logits, y)
    assert not fit.at_bound and T_MIN * 1.5 < fit.temperature < T_MAX / 1.5
    assert fit.temperature > 0.25  # not the old floor's sharpening
    p = 1 / (1 + np.exp(-logits / fit.temperature))
    assert p.max() < 0.999  # no float32 saturation at 1
    assert p[y > 0].min() > p[y == 0].max()  # ranking kept


def test_fit_at_a_bound_keeps_temperature_one_and_says_so() -> None:
    # logits that point the wrong way: the loss keeps falling as T grows (towards p = base rate) up to
    # T_MAX; that is no fit, so the class keeps T = 1 and reports it
    rng = np.random.default_rng(4)
    y = (rng.random(400) < 0.3).astype(float)
    logits = np.where(y > 0, -1.0, 1.0) + rng.normal(0, 0.5, 400)
    fit = fit_temperature_detail(logits, y)
    assert fit.at_bound and fit.temperature == 1.0
