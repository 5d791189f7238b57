"""Image noise in HU from the pixels, against the noise the model was trained on.

Noise is the usual cause of over-confident errors on CT (MODEL.md section 7): the first bundled model,
trained on 3-6 HU white noise, fell from `any` AUC 0.989 to 0.780 under 25 HU correlated noise while
nothing warned. The estimate is robust and cheap: inside the skull (the anatomy check's interior mask,
on its subsampled grid), at brain density, the high-pass residual ``x - mean(4 neighbours at
NOISE_LAG_MM)``, whose spread is ``sqrt(1.25)`` x the pixel noise when the neighbours' noise is
independent of the centre's. The lag of a few millimetres puts the neighbours beyond the correlation
length of CT noise (reconstruction kernels correlate it over about a millimetre), so correlated noise is
not underestimated as a 1-pixel residual would (by ~50 % at 1.2 mm correlation). The median absolute
deviation ignores the few residuals that straddle anatomy (grey/white matter, sulci, ventricles).

Validated on the training generator (``tests/core/test_applicability_noise.py``): within
``NOISE_TOLERANCE_HU + NOISE_TOLERANCE_FRACTION`` x the true noise across 0-25 HU, white or correlated
(0-1.2 mm), 256 and 512 matrices.
"""

from __future__ import annotations

import math

import numpy as np

from viewer.core.applicability.codes import Range, Scope, ScopeCode, ScopeReason

NOISE_LAG_MM = 3.0  # neighbour distance of the high-pass residual (beyond the noise correlation)
NOISE_TISSUE_HU = (0.0, 90.0)  # local mean at brain / blood density (CSF, fat, bone excluded)
MIN_NOISE_SAMPLES = 200  # residuals needed on one slice for an estimate
WHITE_RESIDUAL_GAIN = math.sqrt(1.25)  # sd of x - mean(4 independent neighbours) / sd of x
MAD_TO_SD = 1.4826  # median absolute deviation -> standard deviation for a Gaussian
NOISE_TOLERANCE_HU = 1.0  # |estimate - true noise| <= this + NOISE_TOLERANCE_FRACTION x true noise
NOISE_TOLERANCE_FRACTION = 0.15


def residual_noise_hu(a: np.ndarray, interior: np.ndarray, step_mm: float | None) -> float | None:
    """Noise standard deviation (HU) of the slice ``a`` inside ``interior`` (same shape, bool);
    ``step_mm`` is the pixel size of ``a`` (None: unknown, a 2-pixel lag). None when too few pixels
    of brain density lie inside."""
    lag = max(1, round(NOISE_LAG_MM / step_mm)) if step_mm else 2
    h, w = a.shape
    if min(h, w) <= 2 * lag + 1:
        return None
    inner = (slice(lag, h - lag), slice(lag, w - lag))
    neighbours = (
        (slice(0, h - 2 * lag), slice(lag, w - lag)),
        (slice(2 * lag, h), slice(lag, w - lag)),
        (slice(lag, h - lag), slice(0, w - 2 * lag)),
        (slice(lag, h - lag), slice(2 * lag, w)),
    )
    centre = a[inner]
    around = sum((a[n] for n in neighbours), start=np.zeros_like(centre)) / 4.0
    keep = interior[inner].copy()
    for n in neighbours:
        keep &= interior[n]
    local = (centre + 4.0 * around) / 5.0
    keep &= (local >= NOISE_TISSUE_HU[0]) & (local <= NOISE_TISSUE_HU[1])
    if int(keep.sum()) < MIN_NOISE_SAMPLES:
        return None
    residual = (centre - around)[keep]
    mad = float(np.median(np.abs(residual - np.median(residual))))
    return MAD_TO_SD * mad / WHITE_RESIDUAL_GAIN


def noise_limit_hu(trained: Range) -> float:
    """The estimate above which a stack is noisier than the trained range (the estimate's tolerance
    above the trained maximum, so that a stack at the maximum is never cautioned)."""
    return trained[1] * (1.0 + NOISE_TOLERANCE_FRACTION) + NOISE_TOLERANCE_HU


def noise_reason(noise_hu: float, trained: Range | None) -> ScopeReason | None:
    """A caution when the estimated noise is above what the model was trained on; None otherwise (or
    when the model's metadata does not record its trained noise)."""
    if trained is None or noise_hu <= noise_limit_hu(trained):
        return None
    return ScopeReason(
        ScopeCode.NOISE,
        Scope.CAUTION,
        f"image noise ≈ {noise_hu:.0f} HU, above the {trained[1]:g} HU the model was trained on: "
        "expect less reliable probabilities",
    )
