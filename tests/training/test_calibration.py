"""Temperature scaling and calibration error."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from training.calibration import fit_temperature
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
