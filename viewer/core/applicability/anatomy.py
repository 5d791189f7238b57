"""Applicability from the pixels: a skull ring of bone around brain-density tissue, head-sized in mm,
and no vessel signature (contrast) inside it.

Cheap by design: a few slices from the middle of the stack, subsampled to at most ``MAX_GRID`` pixels a
side, read along ``N_RAYS`` rays cast from the centre of the body. Chest CT (lungs at -800 HU inside
the ribs), abdomen and body CT (no closed bone ring, fat and gas inside) fail the ring test; a ring
that is far smaller or larger than a head fails the size test.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from viewer.core.applicability.codes import Scope, ScopeCode, ScopeReason
from viewer.core.applicability.noise import residual_noise_hu

SAMPLE_FRACTIONS: tuple[float, ...] = (0.35, 0.45, 0.55, 0.65, 0.75)  # along the stack (skull base excluded)
MAX_GRID = 160  # pixels a side after subsampling
N_RAYS = 64
BODY_HU = -400.0  # above: tissue (body mask)
BONE_HU = 450.0  # above: bone (skull); CTA vessels (280-300 HU) stay below
BRAIN_HU = (-30.0, 120.0)  # CSF, brain, blood
AIR_HU = -300.0  # below: air or lung
VESSEL_HU = (150.0, 450.0)  # iodinated vessels; no non-contrast brain tissue is this dense
MARGIN_MM = 6.0  # interior samples keep this far from the inner table (partial volume with bone)
MIN_RING_COVERAGE = 0.8  # share of rays that meet bone
MIN_BRAIN_FRACTION = 0.75  # share of the interior at brain density
MAX_AIR_FRACTION = 0.1
HEAD_DIAMETER_MM = (100.0, 260.0)  # inner-table diameter range accepted as a head
VESSEL_FRACTION = 0.003  # share of the interior at contrast density that signals contrast
MIN_JUDGEABLE_MATRIX = 64
HEAD_SLICE_SHARE = 0.6  # share of the sampled slices that must look like a head


@dataclass(frozen=True)
class SliceMeasures:
    coverage: float  # share of rays that meet bone
    brain: float  # share of the interior samples at brain density
    air: float  # share of the interior samples below AIR_HU
    vessel: float  # share of the interior pixels at contrast density
    diameter_mm: float | None  # twice the median ray length to the inner table (None: no PixelSpacing)
    noise_hu: float | None = None  # image noise inside the skull (None: too little brain to measure)

    @property
    def head_like(self) -> bool:
        return (
            self.coverage >= MIN_RING_COVERAGE
            and self.brain >= MIN_BRAIN_FRACTION
            and self.air <= MAX_AIR_FRACTION
        )


def sample_indices(n: int, bad: Collection[int] = ()) -> list[int]:
    """Up to five decoded slices from the middle of the stack."""
    picked: list[int] = []
    for f in SAMPLE_FRACTIONS:
        i = min(n - 1, max(0, round(f * (n - 1))))
        if i not in bad and i not in picked:
            picked.append(i)
    if not picked:
        picked = [i for i in range(n) if i not in bad][:1]
    return picked


def measure_slice(img: np.ndarray, pixel_mm: float | None) -> SliceMeasures | None:
    """Ring, interior and vessel measures of one HU slice; None when it holds (almost) no tissue."""
    stride = max(1, math.ceil(max(img.shape) / MAX_GRID))
    a = np.asarray(img[::stride, ::stride], dtype=np.float32)
    body = a > BODY_HU
    if body.sum() < 0.02 * a.size:
        return None
    ys, xs = np.nonzero(body)
    cy, cx = float(ys.mean()), float(xs.mean())
    h, w = a.shape
    theta = np.linspace(0.0, 2.0 * np.pi, N_RAYS, endpoint=False)
    radii = np.arange(1, int(math.hypot(h, w)) + 1, dtype=np.float32)
    ry = np.rint(cy + np.sin(theta)[:, None] * radii[None, :]).astype(np.int64)
    rx = np.rint(cx + np.cos(theta)[:, None] * radii[None, :]).astype(np.int64)
    inside_image = (ry >= 0) & (ry < h) & (rx >= 0) & (rx < w)
    vals = np.where(inside_image, a[ry.clip(0, h - 1), rx.clip(0, w - 1)], np.float32(-1000.0))
    bone = vals >= BONE_HU
    hit: np.ndarray = np.any(bone, axis=1)
    first = np.argmax(bone, axis=1).astype(np.float32)  # index into radii of the first bone sample
    step_mm = pixel_mm * stride if pixel_mm else None
    margin = max(2.0, MARGIN_MM / step_mm) if step_mm else 4.0
    inner: np.ndarray = (radii[None, :] < (first[:, None] + 1.0 - margin)) & hit[:, None]
    samples = vals[inner]
    if samples.size == 0:
        return SliceMeasures(float(hit.mean()), 0.0, 1.0, 0.0, None)
    brain = float(np.mean((samples >= BRAIN_HU[0]) & (samples <= BRAIN_HU[1])))
    air = float(np.mean(samples < AIR_HU))
    # interior pixel mask from the ray lengths (polar polygon), for the vessel signature
    gy, gx = np.mgrid[0:h, 0:w]
    dist = np.hypot(gy - cy, gx - cx)
    ray_of = (
        np.rint(np.arctan2(gy - cy, gx - cx) % (2 * np.pi) / (2 * np.pi) * N_RAYS).astype(np.int64)
    ) % N_RAYS
    limit = np.where(hit, first + 1.0 - margin, -1.0)[ray_of]
    inside = dist < limit
    interior = a[inside]
    vessel = float(np.mean((interior >= VESSEL_HU[0]) & (interior <= VESSEL_HU[1]))) if interior.size else 0.0
    diameter = 2.0 * float(np.median(first[hit] + 1.0)) * step_mm if step_mm and hit.any() else None
    noise = residual_noise_hu(a, inside, step_mm)
    return SliceMeasures(float(hit.mean()), brain, air, vessel, diameter, noise)


def check_pixels(
    hu: np.ndarray, pixel_mm: float | None, bad: Collection[int] = ()
) -> tuple[list[ScopeReason], dict[str, float]]:
    """Reasons from the pixels of a (S, rows, cols) HU stack, and the measures behind them."""
    n, rows, cols = hu.shape
    if min(rows, cols) < MIN_JUDGEABLE_MATRIX:
        return (
            [
                ScopeReason(
                    ScopeCode.MATRIX,
                    Scope.OUT_OF_SCOPE,
                    f"{rows}×{cols} images are too small to check the anatomy "
                    f"(at least {MIN_JUDGEABLE_MATRIX})",
                )
            ],
            {},
        )
    picked = sample_indices(n, bad)
    measured = [m for m in (measure_slice(hu[i], pixel_mm) for i in picked) if m is not None]
    heads = [m for m in measured if m.head_like]
    measures: dict[str, float] = {"slices_checked": float(len(picked)), "head_like_slices": float(len(heads))}
    if measured:
        measures.update(
            ring_coverage=float(np.median([m.coverage for m in measured])),
            brain_fraction=float(np.median([m.brain for m in measured])),
            air_fraction=float(np.median([m.air for m in measured])),
        )
    reasons: list[ScopeReason] = []
    if len(heads) < HEAD_SLICE_SHARE * max(1, len(picked)):
        what = (
            "air or lung inside the bone"
            if measures.get("air_fraction", 0.0) > MAX_AIR_FRACTION
            else "no closed skull ring"
            if measures.get("ring_coverage", 0.0) < MIN_RING_COVERAGE
            else "tissue inside the bone is not brain density"
        )
        reasons.append(
            ScopeReason(
                ScopeCode.NOT_HEAD,
                Scope.OUT_OF_SCOPE,
                f"the pixels do not show a head ({what}: {len(heads)} of {len(picked)} checked slices "
                "look like a skull around brain)",
            )
        )
        return reasons, measures
    diameters = [m.diameter_mm for m in heads if m.diameter_mm is not None]
    if diameters:
        diameter = float(np.median(diameters))
        measures["head_diameter_mm"] = diameter
        lo, hi = HEAD_DIAMETER_MM
        if not lo <= diameter <= hi:
            reasons.append(
                ScopeReason(
                    ScopeCode.HEAD_SIZE,
                    Scope.OUT_OF_SCOPE,
                    f"the skull ring measures {diameter:.0f} mm across; a head is {lo:g}–{hi:g} mm",
                )
            )
    noises = [m.noise_hu for m in heads if m.noise_hu is not None]
    if noises:
        measures["noise_hu"] = float(np.median(noises))
    vessel = float(np.max([m.vessel for m in heads]))
    measures["vessel_fraction"] = vessel
    if vessel >= VESSEL_FRACTION:
        reasons.append(
            ScopeReason(
                ScopeCode.CONTRAST_PIXELS,
                Scope.CAUTION,
                f"{100 * vessel:.1f} % of the brain is at contrast-vessel density "
                f"({VESSEL_HU[0]:g}–{VESSEL_HU[1]:g} HU): "
                "contrast-enhanced CT?",
            )
        )
    return reasons, measures
