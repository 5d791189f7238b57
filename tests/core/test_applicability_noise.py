"""The noise caution of the applicability check: the pixel noise estimate tracks the training generator's
known noise (written as DICOM, read back through the viewer's loader), and stacks noisier than the model's
trained noise are cautioned with the estimate and the trained maximum in the reason."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests import scope_cases as sc
from viewer.core.applicability import (
    Applicability,
    Scope,
    ScopeCode,
    TrainedRange,
    assess_applicability,
    noise_limit_hu,
    parse_trained_range,
)
from viewer.core.applicability.noise import NOISE_TOLERANCE_FRACTION, NOISE_TOLERANCE_HU
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.volume import StackVolume

TRAINED = parse_trained_range(json.dumps(sc.TRAINED_RANGE))


def _write_noisy_head(
    folder: Path, noise_hu: float, corr_mm: float, *, seed: int = 5, size: int = 256, n: int = 12
) -> Path:
    """A generator head whose added noise is exactly ``noise_hu`` (sd) with correlation ``corr_mm``."""
    from training.synth import SynthConfig, render_study, write_study

    cfg = SynthConfig(size=size, noise_hu=(noise_hu, noise_hu), noise_corr_mm=(corr_mm, corr_mm))
    rng = np.random.default_rng(seed)
    study = render_study(rng, n, cfg)
    write_study(study, folder, index=seed, rng=rng)
    return folder


def _assess(folder: Path, trained: TrainedRange | None = TRAINED) -> Applicability:
    stacks = load_paths([folder]).all_stacks()
    assert len(stacks) == 1
    with StackVolume(stacks[0]) as volume:
        hu = volume.load_all()
    return assess_applicability(stacks[0], hu, modality="CT", min_slices=3, trained_range=trained)


def _tolerance(true_hu: float) -> float:
    return NOISE_TOLERANCE_HU + NOISE_TOLERANCE_FRACTION * true_hu


@pytest.mark.parametrize("corr_mm", [0.0, 0.8, 1.2])
def test_noise_estimate_tracks_the_generators_noise(tmp_path: Path, corr_mm: float) -> None:
    estimates = []
    for noise in (0.0, 5.0, 10.0, 15.0, 20.0, 25.0):
        result = _assess(_write_noisy_head(tmp_path / f"n{noise:g}", noise, corr_mm))
        est = result.measures["noise_hu"]
        assert abs(est - noise) <= _tolerance(noise), (noise, corr_mm, est)
        estimates.append(est)
    assert estimates == sorted(estimates)  # monotone in the true noise


def test_noise_estimate_on_a_512_matrix(tmp_path: Path) -> None:
    # 512 px (the demo's matrix): the anatomy check samples every 4th pixel; the lag is in millimetres
    for noise, corr in ((4.0, 0.0), (25.0, 0.8)):
        est = _assess(_write_noisy_head(tmp_path / f"m{noise:g}", noise, corr, size=512, n=8)).measures[
            "noise_hu"
        ]
        assert abs(est - noise) <= _tolerance(noise), (noise, corr, est)


def test_a_stack_noisier_than_the_trained_noise_is_cautioned(tmp_path: Path) -> None:
    assert TRAINED is not None and TRAINED.noise_hu == (3.0, 6.0)
    noisy = _assess(_write_noisy_head(tmp_path / "noisy", 25.0, 0.8))
    assert noisy.scope is Scope.CAUTION
    (reason,) = [r for r in noisy.reasons if r.code is ScopeCode.NOISE]
    assert reason.scope is Scope.CAUTION
    est = noisy.measures["noise_hu"]
    assert f"image noise ≈ {est:.0f} HU, above the 6 HU the model was trained on" in reason.message
    assert "S-NOISE" in noisy.codes and "image noise" in noisy.summary()
    # the same pixels under a model trained on noise up to 25 HU: in scope, no caution
    wide = replace(TRAINED, noise_hu=(0.0, 25.0))
    assert _assess(tmp_path / "noisy", wide).scope is Scope.IN_SCOPE
    # and a model whose metadata does not record its trained noise is not cautioned for noise
    unrecorded = _assess(tmp_path / "noisy", replace(TRAINED, noise_hu=None))
    assert ScopeCode.NOISE not in {r.code for r in unrecorded.reasons}


def test_standard_noise_is_not_cautioned(tmp_path: Path) -> None:
    assert TRAINED is not None and TRAINED.noise_hu is not None
    limit = noise_limit_hu(TRAINED.noise_hu)
    # the trained maximum itself (6 HU) stays in scope (the demo study: test_applicability.py)
    at_max = _assess(_write_noisy_head(tmp_path / "max", 6.0, 0.0))
    assert at_max.scope is Scope.IN_SCOPE and at_max.measures["noise_hu"] < limit, at_max
    # just past the limit (10 HU white noise) is cautioned
    assert _assess(_write_noisy_head(tmp_path / "ten", 10.0, 0.0)).scope is Scope.CAUTION


def test_the_bundled_model_records_its_trained_noise(tmp_path: Path) -> None:
    from viewer.core.inference.engine import InferenceEngine
    from viewer.core.paths import bundled_model_path

    if not bundled_model_path().is_file():
        pytest.skip("bundled model not present")
    info = InferenceEngine(bundled_model_path(), provider="cpu", cache=None).info
    assert info.trained_range is not None and info.trained_range.noise_hu is not None
    lo, hi = info.trained_range.noise_hu
    assert 0.0 <= lo <= 3.0 and 6.0 <= hi <= 25.0  # at least the standard acquisition's 3-6 HU
    trained = info.trained_range
    normal = _assess(_write_noisy_head(tmp_path / "normal", 5.0, 0.0), trained)
    assert ScopeCode.NOISE not in {r.code for r in normal.reasons}, normal
    beyond = hi * 1.5 + 5.0  # well above what it was trained on
    noisy = _assess(_write_noisy_head(tmp_path / "noisy", beyond, 0.0), trained)
    assert ScopeCode.NOISE in {r.code for r in noisy.reasons}, noisy
