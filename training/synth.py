"""Synthetic, anatomically plausible head-CT studies with the five RSNA haemorrhage subtypes.

Everything is numpy: a 3D head model (scalp, skull with diploe, grey/white matter, sulci,
interhemispheric fissure, basal ganglia, ventricles; with ``anatomy`` also the skull base with petrous
ridges, clivus and mastoid air, orbits with globes and lenses, ethmoid, sphenoid and frontal sinuses,
and physiological calcifications: choroid plexus, pineal, falx) is sampled on a slice grid with
several sub-samples per slice (partial volume along z), blurred in-plane, given (correlated) CT noise
and a reconstruction kernel (smooth, standard, sharp), optionally with beam-hardening streaks and
motion ghosts. :class:`SynthConfig` sets the acquisition ranges (matrix, field of view, slice
thickness 1-5 mm, head rotation and off-centre shift, noise): its defaults are a standard
acquisition, :data:`WIDE` the training distribution, :data:`SHIFTS` the named shifts used by
``slicewise-train evaluate --shift``. Haemorrhages are 3D fields with a blood fraction in [0, 1]:

- epidural: biconvex lens against the inner table, 60-90 HU;
- subdural: wide, thin crescent along the convexity, 45-80 HU;
- intraparenchymal: irregular blob deep in the parenchyma with an oedema rim, 55-85 HU;
- intraventricular: blood layering in the dependent (posterior) part of a lateral ventricle;
- subarachnoid: blood replacing CSF in the sulci of one region and in the fissure, thin.

Each spans several slices and fades at its ends; a slice is labelled positive when its blood
(summed fraction) covers at least ``MIN_LABEL_AREA_MM2``, so the faint end slices are positive but
subtle, and neighbouring slices help. Studies are written as real DICOM series (CT Image Storage,
HU via RescaleSlope/Intercept) and labels in the RSNA 2019 format (``ID,Label`` with rows
``ID_<hex>_<subtype>``, 16 hex digits derived from the study's pixels, index and slice).
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom import config as pydicom_config
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

from viewer.core.constants import RSNA_CLASSES

log = logging.getLogger(__name__)

SUBTYPES: tuple[str, ...] = RSNA_CLASSES[1:]  # epidural, intraparenchymal, ...
LABEL_ORDER: tuple[str, ...] = (*SUBTYPES, "any")  # the row order of the RSNA label file
SLICE_THICKNESS_MM = 5.0
SUB_SAMPLES = 3  # z sub-samples per slice (partial volume along z)
MIN_LABEL_AREA_MM2 = 10.0
AIR_HU = -1000.0


@dataclass(frozen=True)
class SynthConfig:
    """What a study may look like. Ranges are sampled uniformly per study; tuples of choices uniformly.

    The defaults are a *standard* acquisition (5 mm, 230-260 mm field, low white noise, standard kernel,
    head near the centre); :data:`WIDE` is the training distribution and :data:`SHIFTS` the named
    acquisition shifts of ``slicewise-train evaluate --shift``.
    """

    size: int = 256  # rows = columns (used when ``sizes`` is empty)
    min_slices: int = 24
    max_slices: int = 40
    p_negative: float = 0.4  # share of studies without haemorrhage
    fov_mm: tuple[float, float] = (230.0, 260.0)
    noise_hu: tuple[float, float] = (3.0, 6.0)  # standard deviation of the noise before the kernel
    noise_corr_mm: tuple[float, float] = (0.0, 0.0)  # Gaussian correlation length of the noise (mm)
    blur_mm: tuple[float, float] = (0.45, 0.85)  # system blur (Gaussian sigma, mm)
    subtle_fraction: float = 0.3  # share of lesions made faint (low density, small)
    sizes: tuple[int, ...] = ()  # matrix choices (e.g. (256, 512)); empty -> ``size``
    thickness_mm: tuple[float, ...] = (5.0,)  # slice thickness choices (spacing = thickness)
    rot_deg: tuple[float, float] = (0.0, 8.0)  # |in-plane rotation| range, random sign
    shift_mm: tuple[float, float] = (0.0, 8.5)  # |off-centre shift| range, random direction
    kernels: tuple[str, ...] = ("standard",)  # reconstruction kernels: smooth, standard, sharp
    anatomy: bool = True  # skull base, orbits, sinuses, physiological calcifications
    p_streaks: float = 0.0  # share of studies with beam-hardening streaks (skull base, dense bone)
    p_motion: float = 0.0  # share of studies with motion on some slices


KERNELS: tuple[str, ...] = ("smooth", "standard", "sharp")

#: The training distribution: every acquisition variation of issue 10, item 4.
WIDE = SynthConfig(
    fov_mm=(180.0, 400.0),
    noise_hu=(2.0, 25.0),
    noise_corr_mm=(0.0, 1.2),
    sizes=(256, 512),
    thickness_mm=(1.0, 1.25, 2.5, 3.0, 5.0, 5.0),
    rot_deg=(0.0, 20.0),
    shift_mm=(0.0, 30.0),
    kernels=KERNELS,
    p_streaks=0.3,
    p_motion=0.15,
)

#: Named acquisition shifts at their strongest (applied over the standard default config).
SHIFTS: dict[str, dict[str, object]] = {
    "none": {},
    "noise": {"noise_hu": (25.0, 25.0), "noise_corr_mm": (0.8, 0.8)},
    "noise10": {"noise_hu": (10.0, 10.0), "noise_corr_mm": (0.8, 0.8)},  # moderate: between standard and 25
    "rotation": {"rot_deg": (20.0, 20.0)},
    "offcentre": {"shift_mm": (30.0, 30.0)},
    "fov180": {"fov_mm": (180.0, 180.0)},
    "fov400": {"fov_mm": (400.0, 400.0)},
    "matrix512": {"sizes": (512,)},
    "thin": {"thickness_mm": (1.0,)},
    "sharp": {"kernels": ("sharp",)},
    "smooth": {"kernels": ("smooth",)},
    "artefacts": {"p_streaks": 1.0, "p_motion": 1.0},
}


def shifted_config(name: str, base: SynthConfig = SynthConfig()) -> SynthConfig:
    """``base`` with the named shift of :data:`SHIFTS` applied; ValueError for an unknown name."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; known: {', '.join(SHIFTS)}")
    return replace(base, **SHIFTS[name])  # type: ignore[arg-type]


@dataclass
class Lesion:
    kind: str  # one of SUBTYPES
    hu: float
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class SynthStudy:
    hu: np.ndarray  # (S, H, W) float32, ascending z (inferior -> superior)
    labels: np.ndarray  # (S, 6) uint8 in RSNA_CLASSES order (any first)
    lesions: list[Lesion]
    pixel_spacing: float
    z_mm: np.ndarray  # (S,) slice centres
    thickness: float = SLICE_THICKNESS_MM
    kernel: str = "standard"
    # per subtype present: (S, H, W) float32 blood fraction in [0, 1] on the written pixel grid (mean
    # over the slice's z sub-samples, like the label areas; before blur, noise and motion)
    fractions: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def field_of_view_mm(self) -> float:
        return self.pixel_spacing * self.hu.shape[-1]


# --------------------------------------------------------------------------------------------- helpers
def _gauss_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(2.5 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / max(sigma, 1e-3)) ** 2)
    return (k / k.sum()).astype(np.float32)


def blur_inplane(vol: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the last two axes of (S, H, W), edges replicated."""
    if sigma <= 0.05:
        return vol
    k = _gauss_kernel(sigma)
    r = len(k) // 2
    out = vol
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, w in enumerate(k):
            sl = [slice(None)] * 3
            sl[axis] = slice(i, i + n)
            acc += w * padded[tuple(sl)]
        out = acc
    return out


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _angle_diff(a: np.ndarray, b: float) -> np.ndarray:
    return np.abs((a - b + np.pi) % (2 * np.pi) - np.pi)


def _signed(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi) * rng.choice([-1.0, 1.0]))


# ------------------------------------------------------------------------------------------- the head
@dataclass
class _Head:
    A: float  # semi-axes of the outer skull surface (mm): left-right, antero-posterior, cranio-caudal
    B: float
    C: float
    skull: float
    scalp: float
    gm: float
    vent_scale: float
    sulcus_phase: tuple[float, float]
    rot: float
    shift: tuple[float, float]
    calcifications: list[tuple[float, float, float, float, float]] = field(default_factory=list)


def _random_head(rng: np.random.Generator, cfg: SynthConfig = SynthConfig()) -> _Head:
    head = _Head(
        A=rng.uniform(68, 78),
        B=rng.uniform(86, 98),
        C=rng.uniform(82, 96),
        skull=rng.uniform(5.0, 8.0),
        scalp=rng.uniform(4.0, 7.0),
        gm=rng.uniform(2.5, 3.5),
        vent_scale=rng.uniform(0.8, 1.35),
        sulcus_phase=(rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)),
        rot=np.deg2rad(_signed(rng, cfg.rot_deg)),
        shift=(0.0, 0.0),
    )
    ang, mag = rng.uniform(0, 2 * np.pi), rng.uniform(*cfg.shift_mm)
    head.shift = (float(mag * np.cos(ang)), float(mag * np.sin(ang)))
    if cfg.anatomy:
        vs = head.vent_scale
        # (x, y, z, radius mm, HU): choroid plexus in both atria, the pineal gland, sometimes the falx
        if rng.random() < 0.7:
            for sx in (-1.0, 1.0):
                head.calcifications.append(
                    (sx * (8.0 * vs + 1.0), 18.0, 0.2 * head.C, rng.uniform(1.5, 3.5), rng.uniform(120, 450))
                )
        if rng.random() < 0.6:
            head.calcifications.append(
                (0.0, 14.0, 0.04 * head.C, rng.uniform(1.5, 3.0), rng.uniform(120, 350))
            )
        if rng.random() < 0.2:
            head.calcifications.append((0.0, -0.45 * head.B, 0.55 * head.C, rng.uniform(1.0, 2.0), 300.0))
    return head


def _random_lesion(rng: np.random.Generator, kind: str, head: _Head, subtle: bool) -> Lesion:
    side = rng.choice([0.0, np.pi])  # right or left convexity (x axis)
    z0 = rng.uniform(-0.1, 0.55) * head.C
    if kind == "epidural":
        theta = side + rng.uniform(-0.7, 0.7)
        return Lesion(
            kind,
            rng.uniform(55, 65) if subtle else rng.uniform(65, 90),
            {
                "theta": float(theta),
                "z0": float(z0),
                "T": rng.uniform(4, 7) if subtle else rng.uniform(8, 18),
                "w": rng.uniform(0.3, 0.55),
                "h": rng.uniform(12, 24),
            },
        )
    if kind == "subdural":
        theta = side + rng.uniform(-0.5, 0.5)
        return Lesion(
            kind,
            rng.uniform(45, 55) if subtle else rng.uniform(58, 80),
            {
                "theta": float(theta),
                "z0": float(z0),
                "T": rng.uniform(2.5, 4.5) if subtle else rng.uniform(5, 11),
                "w": rng.uniform(0.7, 1.3),
                "h": rng.uniform(22, 45),
            },
        )
    if kind == "intraparenchymal":
        ang = rng.uniform(0, 2 * np.pi)
        rad = rng.uniform(0.15, 0.45)
        r = rng.uniform(4, 7) if subtle else rng.uniform(7, 18)
        return Lesion(
            kind,
            rng.uniform(50, 62) if subtle else rng.uniform(62, 85),
            {
                "cx": float(rad * head.A * np.cos(ang)),
                "cy": float(rad * head.B * np.sin(ang)),
                "cz": float(rng.uniform(-0.05, 0.45) * head.C),
                "r": float(r),
                "rz": float(r * rng.uniform(0.8, 1.5)),
                "phase": float(rng.uniform(0, 2 * np.pi)),
            },
        )
    if kind == "intraventricular":
        return Lesion(
            kind,
            rng.uniform(48, 58) if subtle else rng.uniform(58, 78),
            {
                "side": float(rng.choice([-1.0, 1.0])),
                "both": float(rng.random() < 0.4),
                "level": float(rng.uniform(0.1, 0.5) if subtle else rng.uniform(-0.4, 0.3)),
            },
        )
    if kind == "subarachnoid":
        return Lesion(
            kind,
            rng.uniform(45, 58) if subtle else rng.uniform(55, 75),
            {
                "theta": float(rng.uniform(0, 2 * np.pi)),
                "w": float(rng.uniform(0.4, 1.0)),
                "z0": float(z0),
                "h": float(rng.uniform(12, 30)),
                "fissure": float(rng.random() < 0.5),
            },
        )
    raise ValueError(f"unknown haemorrhage subtype {kind!r}")


def _ellipsoid(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, c: tuple[float, float, float], r: tuple[float, float, float]
) -> np.ndarray:
    return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2


def _render_planes(
    head: _Head, lesions: list[Lesion], x: np.ndarray, y: np.ndarray, z: np.ndarray, anatomy: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Tissue HU and per-subtype blood fractions on planes ``z`` (N, 1, 1) of head coordinates x, y."""
    # depth below the outer skull surface along the ray from the centre (mm)
    r3 = np.sqrt(x * x + y * y + z * z) + 1e-3
    rho = np.sqrt((x / head.A) ** 2 + (y / head.B) ** 2 + (z / head.C) ** 2) + 1e-6
    depth = (1.0 - rho) * (r3 / rho)
    bd = depth - head.skull  # depth below the inner table (brain depth)
    theta = np.arctan2(y, x)  # (1, H, W)
    shape = depth.shape

    tissue = np.full(shape, AIR_HU, dtype=np.float32)
    scalp = (depth > -head.scalp) & (depth <= 0)
    tissue[scalp] = 25.0
    bone = (depth > 0) & (bd <= 0)
    u = np.clip(depth / head.skull, 0, 1)
    tissue[bone] = (1450.0 - 700.0 * np.sin(np.pi * u) ** 2)[bone]
    brain = bd > 0

    if anatomy:
        # skull base: the floor of the middle and posterior fossae thickens towards the bottom, petrous
        # ridges run obliquely backwards-inwards, the clivus and sphenoid sit in the midline.
        low = _smoothstep((-z - 0.25 * head.C) / (0.35 * head.C))  # 0 above, 1 deep in the base
        base = brain & (bd < 2.0 + 9.0 * low) & (low > 0)
        for sx in (-1.0, 1.0):
            # petrous ridge: a bar from the lateral wall towards the clivus, posterior half
            t = (x * sx * 0.64 + (y - 0.05 * head.B) * 0.77) / 1.0
            dist = np.abs(-x * sx * 0.77 + (y - 0.05 * head.B) * 0.64)
            ridge = brain & (dist < 5.0) & (t > 8.0) & (t < 0.8 * head.A) & (low > 0.25)
            tissue[ridge] = 1100.0
            mastoid = _ellipsoid(
                x, y, z, (sx * 0.8 * head.A, 0.35 * head.B, -0.55 * head.C), (9.0, 9.0, 12.0)
            )
            tissue[(mastoid < 1.0) & (bone | brain)] = -600.0
        clivus = brain & (
            _ellipsoid(x, y, z, (0.0, -0.12 * head.B, -0.75 * head.C), (8.0, 7.0, 0.3 * head.C)) < 1.0
        )
        tissue[base] = 1250.0
        tissue[clivus] = 1150.0
        brain = brain & ~base & ~clivus
        # orbits (fat, globe, lens) and sinuses (air) in the anterior-inferior head
        face = np.zeros(shape, dtype=bool)
        for sx in (-1.0, 1.0):
            orbit = _ellipsoid(
                x, y, z, (sx * 0.42 * head.A, -0.86 * head.B, -0.42 * head.C), (17.0, 22.0, 16.0)
            )
            globe = _ellipsoid(
                x, y, z, (sx * 0.42 * head.A, -0.93 * head.B, -0.42 * head.C), (11.5, 11.5, 11.5)
            )
            lens = _ellipsoid(x, y, z, (sx * 0.42 * head.A, -1.04 * head.B, -0.42 * head.C), (4.0, 2.0, 4.0))
            tissue[orbit < 1.0] = -90.0
            tissue[globe < 1.0] = 12.0
            tissue[lens < 1.0] = 95.0
            face |= orbit < 1.4
            wall = (orbit >= 1.0) & (orbit < 1.4) & (depth > -head.scalp)
            tissue[wall] = 900.0
        ethmoid = (np.abs(x) < 10.0) & (np.abs(y + 0.8 * head.B) < 14.0) & (np.abs(z + 0.42 * head.C) < 14.0)
        cells = ethmoid & (np.sin(x * 1.1 + 2.0 * np.sin(y * 0.35)) * np.sin(y * 0.9 + z * 0.4) > -0.3)
        tissue[ethmoid] = 700.0
        tissue[cells] = -850.0
        sphenoid = _ellipsoid(x, y, z, (0.0, -0.42 * head.B, -0.6 * head.C), (13.0, 10.0, 10.0)) < 1.0
        frontal = _ellipsoid(x, y, z, (0.0, -0.97 * head.B, -0.05 * head.C), (16.0, 5.0, 12.0)) < 1.0
        tissue[sphenoid | frontal] = -950.0
        face |= ethmoid | sphenoid | frontal
        brain = brain & ~face

    # parenchyma: grey cortex and sulci, white matter deeper, deep grey nuclei
    # sin(a + b) = sin a cos b + cos a sin b keeps the trigonometry on 2D and 1D arrays
    a1, b1 = 9.0 * theta + head.sulcus_phase[0], z * 0.11
    a2, b2 = 14.0 * theta + head.sulcus_phase[1], -z * 0.07
    s = (
        np.sin(a1) * np.cos(b1)
        + np.cos(a1) * np.sin(b1)
        + 0.6 * (np.sin(a2) * np.cos(b2) + np.cos(a2) * np.sin(b2))
    )
    sulcus_depth = 6.0 + 6.0 * _smoothstep((z + 0.3 * head.C) / (0.8 * head.C))
    in_sulcal_band = bd < sulcus_depth
    sulcus = brain & (((np.abs(s) < 0.09) & in_sulcal_band) | (bd < 0.8))
    grey = brain & ((bd < head.gm) | ((np.abs(s) < 0.35) & (bd < sulcus_depth + head.gm)))
    par = np.where(grey, 37.0, 27.0).astype(np.float32)
    for sx in (-1.0, 1.0):
        bg = _ellipsoid(x, y, z, (sx * 17.0, 2.0, 0.12 * head.C), (8.0, 15.0, 11.0)) < 1.0
        par[bg] = 35.0
    fissure = (np.abs(x) < 1.1) & ((np.abs(y) > 0.38 * head.B) | (z > 0.5 * head.C)) & brain
    vs = head.vent_scale
    vent_l = _ellipsoid(x, y, z, (-7.0 * vs, 0.0, 0.22 * head.C), (5.0 * vs, 26.0, 15.0 * vs)) < 1.0
    vent_r = _ellipsoid(x, y, z, (7.0 * vs, 0.0, 0.22 * head.C), (5.0 * vs, 26.0, 15.0 * vs)) < 1.0
    third = (np.abs(x) < 1.5 * vs) & (np.abs(y - 2.0) < 10.0) & (z > -0.15 * head.C) & (z < 0.1 * head.C)
    ventricle = brain & (vent_l | vent_r | third)
    csf = brain & (sulcus | fissure | ventricle)
    tissue[brain] = par[brain]
    tissue[csf] = 6.0
    for cx, cy, cz, rad, hu in head.calcifications:  # physiological: dense, but never haemorrhage
        calc = brain & (_ellipsoid(x, y, z, (cx, cy, cz), (rad, rad, rad)) < 1.0)
        tissue[calc] = hu

    # haemorrhages: blood fraction fields blended over the tissue
    fracs: dict[str, np.ndarray] = {}
    for les in lesions:
        p = les.params
        frac: np.ndarray
        if les.kind in ("epidural", "subdural"):
            a = _angle_diff(theta, p["theta"]) / p["w"]
            e = 1.0 - a * a - ((z - p["z0"]) / p["h"]) ** 2
            e = np.clip(e, 0.0, None)
            thick = p["T"] * (np.sqrt(e) if les.kind == "epidural" else e**0.25)
            frac = brain * _smoothstep((thick - bd) / 1.5) * (thick > 0.3)
            # the collection displaces the brain: no sulcal CSF under it
        elif les.kind == "intraparenchymal":
            wob = 1.0 + 0.22 * np.sin(3.0 * theta + p["phase"]) + 0.12 * np.sin(5.0 * theta - p["phase"])
            d = np.sqrt(_ellipsoid(x, y, z, (p["cx"], p["cy"], p["cz"]), (p["r"], p["r"], p["rz"])))
            frac = brain * _smoothstep((wob - d) / 0.25)
            oedema = brain & (d < 1.5 * wob) & (d >= wob)
            tissue[oedema] -= 9.0
        elif les.kind == "intraventricular":
            sides = [vent_l, vent_r] if p["both"] > 0.5 else [vent_l if p["side"] < 0 else vent_r]
            vmask = np.zeros(shape, dtype=bool)
            for vm in sides:
                vmask |= vm
            frac = (brain & vmask) * _smoothstep((y - p["level"] * 26.0) / 4.0)
        else:  # subarachnoid
            a = _angle_diff(theta, p["theta"]) / p["w"]
            e = np.clip(1.0 - a * a - ((z - p["z0"]) / p["h"]) ** 2, 0.0, None)
            sah = (brain & sulcus & ~ventricle) * _smoothstep(e / 0.15)
            if p["fissure"] > 0.5:
                ez = np.clip(1.0 - ((z - p["z0"]) / p["h"]) ** 2, 0.0, None)
                sah = np.maximum(sah, (fissure & ~ventricle) * _smoothstep(ez / 0.15))
            frac = sah
        frac = frac.astype(np.float32)
        fracs[les.kind] = np.maximum(fracs.get(les.kind, 0.0), frac)
        tissue = tissue * (1.0 - frac) + np.float32(les.hu) * frac
    return tissue.astype(np.float32), fracs


def _streaks(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, n: int, amplitude: tuple[float, float]
) -> np.ndarray:
    """(H, W) beam-hardening-like pattern: ``n`` thin dark/bright lines through the head."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape)[-2:], dtype=np.float32)
    for _ in range(n):
        ang = rng.uniform(0, np.pi)
        off = rng.uniform(-25, 25)
        dist = np.abs(-np.sin(ang) * x[0] + np.cos(ang) * y[0] - off)
        amp = rng.uniform(*amplitude) * rng.choice([-1.0, -1.0, 1.0])
        out += (amp * np.exp(-0.5 * (dist / rng.uniform(0.8, 2.0)) ** 2)).astype(np.float32)
    return out


def render_study(
    rng: np.random.Generator,
    n_slices: int,
    cfg: SynthConfig = SynthConfig(),
    lesion_kinds: list[str] | None = None,
    overrides: dict[str, float] | None = None,
) -> SynthStudy:
    """Sample one study: (S, H, W) HU, per-slice labels and the lesions drawn.

    ``overrides`` replaces lesion parameters (e.g. ``{"T": 14, "hu": 75}``) in every lesion drawn.
    Rendering runs a few slices at a time, so 512 px studies stay within a few hundred MB.
    """
    head = _random_head(rng, cfg)
    size = int(rng.choice(cfg.sizes or (cfg.size,)))  # always one draw: shifts stay paired
    fov = rng.uniform(*cfg.fov_mm)
    ps = fov / size
    thickness = float(rng.choice(cfg.thickness_mm))
    kernel = str(rng.choice(cfg.kernels))
    if lesion_kinds is None:
        if rng.random() < cfg.p_negative:
            lesion_kinds = []
        else:
            n = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
            lesion_kinds = [str(k) for k in rng.choice(SUBTYPES, size=n, replace=False)]
    lesions = [_random_lesion(rng, k, head, rng.random() < cfg.subtle_fraction) for k in lesion_kinds]
    for les in lesions:
        for key, value in (overrides or {}).items():
            if key == "hu":
                les.hu = float(value)
            else:
                les.params[key] = float(value)

    # slice centres: top slice near the vertex, going down n_slices * thickness
    z_top = head.C + rng.uniform(-6.0, 4.0)
    if n_slices * thickness < 100.0:  # short coverage: centred on the lesion-bearing levels
        z_top = min(z_top, 0.25 * head.C + n_slices * thickness / 2.0)
    z_mm = (z_top - thickness * np.arange(n_slices)[::-1]).astype(np.float32)
    offs = (np.arange(SUB_SAMPLES, dtype=np.float32) + 0.5) / SUB_SAMPLES - 0.5

    # scanner coordinates -> head coordinates (in-plane rotation, shift)
    coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) * ps
    xg, yg = coords[None, :] - head.shift[0], coords[:, None] - head.shift[1]
    cr, sr = np.cos(head.rot), np.sin(head.rot)
    x = (cr * xg + sr * yg).astype(np.float32)[None]  # (1, H, W)
    y = (-sr * xg + cr * yg).astype(np.float32)[None]

    n, k = n_slices, SUB_SAMPLES
    hu = np.empty((n, size, size), dtype=np.float32)
    areas: dict[str, np.ndarray] = {}
    fractions: dict[str, np.ndarray] = {}
    chunk = max(1, 2_000_000 // (size * size * k))
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        zs = (z_mm[lo:hi, None] + offs[None, :] * thickness).reshape(-1)[:, None, None]
        tissue, fracs = _render_planes(head, lesions, x, y, zs.astype(np.float32), cfg.anatomy)
        hu[lo:hi] = tissue.reshape(hi - lo, k, size, size).mean(axis=1)  # partial volume along z
        for kind, frac in fracs.items():
            mean = frac.reshape(hi - lo, k, size, size).mean(axis=1)
            fractions.setdefault(kind, np.zeros((n, size, size), dtype=np.float32))[lo:hi] = mean
            areas.setdefault(kind, np.zeros(n, dtype=np.float32))[lo:hi] = mean.sum(axis=(1, 2)) * ps * ps

    # artefacts on the object: beam hardening near the skull base, motion (ghosting) on a few slices
    if rng.random() < cfg.p_streaks:
        head_mask = hu > -200.0
        for i in range(n):
            near_base = z_mm[i] < -0.15 * head.C
            if near_base or rng.random() < 0.1:
                hu[i] += _streaks(rng, x, y, int(rng.integers(1, 4)), (8.0, 30.0)) * head_mask[i]
    if rng.random() < cfg.p_motion and n > 1:
        start = int(rng.integers(0, n))
        for i in range(start, min(n, start + int(rng.integers(1, 5)))):
            dy, dx = (int(v) for v in rng.integers(-4, 5, size=2) * max(1, round(0.9 / ps)))
            ghost = np.roll(hu[i], (dy, dx), axis=(0, 1))
            a = rng.uniform(0.25, 0.5)
            hu[i] = (1 - a) * hu[i] + a * ghost + _streaks(rng, x, y, 3, (10.0, 30.0)) * (hu[i] > -200)

    # acquisition: system blur, (correlated) noise, then the reconstruction kernel
    hu = blur_inplane(hu, rng.uniform(*cfg.blur_mm) / ps)
    noise_sd = rng.uniform(*cfg.noise_hu)
    if noise_sd > 0:
        noise = rng.normal(0.0, 1.0, size=hu.shape).astype(np.float32)
        corr = rng.uniform(*cfg.noise_corr_mm) / ps
        if corr > 0.05:
            noise = blur_inplane(noise, corr)
            noise /= max(float(noise.std()), 1e-6)
        hu += np.float32(noise_sd) * noise
    if kernel == "smooth":
        hu = blur_inplane(hu, 0.7 / ps)
    elif kernel == "sharp":
        hu = hu + 0.8 * (hu - blur_inplane(hu, 0.9 / ps))
    hu = np.clip(hu, -1024.0, 3071.0).astype(np.float32)

    labels = np.zeros((n, len(RSNA_CLASSES)), dtype=np.uint8)
    for kind, area in areas.items():
        labels[:, RSNA_CLASSES.index(kind)] |= (area >= MIN_LABEL_AREA_MM2).astype(np.uint8)
    labels[:, 0] = labels[:, 1:].max(axis=1)
    return SynthStudy(
        hu=hu,
        labels=labels,
        lesions=lesions,
        pixel_spacing=ps,
        z_mm=z_mm,
        thickness=thickness,
        kernel=kernel,
        fractions=fractions,
    )


# ---------------------------------------------------------------------------------------------- DICOM
RSNA_ID_HEX = 16  # 64 bits: 1e7 slices share one with odds of ~3e-6 (RSNA's own 9 digits: 36 bits)


def rsna_id(*parts: object) -> str:
    """An RSNA-style identifier, ``ID_`` + :data:`RSNA_ID_HEX` hex digits, derived from ``parts`` (the
    study's pixel digest, its index and the slice's): one seed always writes the same IDs, and datasets
    made with different seeds (or studies of one) do not share them. Nine random digits, as before, made
    two datasets of different seeds share an ID (``train`` stopped with "conflicting duplicate label")."""
    text = "\x1f".join(map(str, parts))
    return "ID_" + hashlib.sha256(text.encode()).hexdigest()[:RSNA_ID_HEX]


@contextmanager
def _lenient_uids() -> Iterator[None]:
    """RSNA-style ``ID_<hex>`` values are not valid UIDs; let pydicom write them without complaint."""
    settings = pydicom_config.settings
    old = settings.writing_validation_mode, settings.reading_validation_mode
    settings.writing_validation_mode = pydicom_config.IGNORE
    settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        settings.writing_validation_mode, settings.reading_validation_mode = old


def write_study(
    study: SynthStudy,
    folder: Path,
    *,
    index: int,
    rng: np.random.Generator,
    rle: bool = False,
    rsna_ids: bool = True,
) -> list[str]:
    """Write one study as a CT series in ``folder``; returns the SOPInstanceUIDs in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    n, rows, cols = study.hu.shape
    ps = study.pixel_spacing
    stored = np.clip(np.rint(study.hu + 1024.0), 0, 4095).astype(np.uint16)
    # UIDs derived from the pixels (which the seed fixes), so one seed always writes the same files.
    digest = hashlib.sha256(stored.tobytes()).hexdigest()

    def uid(*parts: object) -> UID:
        return generate_uid(entropy_srcs=[digest, str(index), *map(str, parts)])

    study_uid, series_uid, for_uid = uid("study"), uid("series"), uid("frame-of-reference")
    descending = bool(rng.random() < 0.5)  # scanners number from the top or from the bottom
    sops: list[str] = []
    sop: str
    with _lenient_uids():
        for i in range(n):
            sop = rsna_id(digest, index, i) if rsna_ids else str(uid("instance", i))
            sops.append(sop)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = UID(sop)
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = sop
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = for_uid
            ds.PatientName = f"SYNTH^{index:04d}"
            ds.PatientID = f"SYNTH-{index:04d}"
            ds.PatientBirthDate = ""
            ds.PatientSex = "O"
            ds.StudyDate = "20260101"
            ds.StudyTime = "120000"
            ds.StudyID = f"{index}"
            ds.AccessionNumber = ""
            ds.ReferringPhysicianName = ""
            ds.StudyDescription = "CT HEAD (synthetic)"
            ds.SeriesDescription = f"Head {study.thickness:g}mm (synthetic)"
            ds.SeriesNumber = 2
            ds.Modality = "CT"
            ds.Manufacturer = "Slicewise synthetic"
            ds.BodyPartExamined = "HEAD"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.InstanceNumber = (n - i) if descending else (i + 1)
            ds.ImagePositionPatient = [
                -(cols - 1) / 2.0 * ps,
                -(rows - 1) / 2.0 * ps,
                round(float(study.z_mm[i]), 3),
            ]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.SliceLocation = round(float(study.z_mm[i]), 3)
            ds.PixelSpacing = [round(ps, 6), round(ps, 6)]
            ds.SliceThickness = study.thickness
            ds.ConvolutionKernel = study.kernel.upper()
            ds.KVP = 120
            ds.Rows, ds.Columns = rows, cols
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = 16
            ds.BitsStored = 12
            ds.HighBit = 11
            ds.PixelRepresentation = 0
            ds.RescaleSlope = 1
            ds.RescaleIntercept = -1024
            ds.RescaleType = "HU"
            ds.WindowCenter = 40
            ds.WindowWidth = 80
            ds.PixelData = stored[i].tobytes()
            if rle:
                ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
            name = sop if rsna_ids else f"IM{i + 1:04d}"
            ds.save_as(folder / f"{name}.dcm", enforce_file_format=True)
    return sops


def write_masks(study: SynthStudy, path: Path, sops: list[str]) -> Path:
    """Write the study's per-subtype blood fractions beside its DICOM: a compressed ``.npz`` with one
    (S, rows, columns) uint8 array per subtype (fraction x 255, rounded; all five, zeros when absent),
    in the slice order of ``sops`` (the written files' SOPInstanceUIDs, ascending z) on their pixel
    grid, plus ``classes``, ``sop_instance_uids``, ``pixel_spacing``, ``z_mm`` and ``thickness``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = study.hu.shape
    arrays: dict[str, np.ndarray] = {}
    for kind in SUBTYPES:
        frac = study.fractions.get(kind)
        arrays[kind] = (
            np.zeros(shape, dtype=np.uint8)
            if frac is None
            else np.rint(np.clip(frac, 0.0, 1.0) * 255.0).astype(np.uint8)
        )
    arrays.update(
        classes=np.array(SUBTYPES),
        sop_instance_uids=np.array(sops),
        pixel_spacing=np.array(study.pixel_spacing, dtype=np.float64),
        z_mm=study.z_mm,
        thickness=np.array(study.thickness, dtype=np.float64),
    )
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds meet allow_pickle
    return path


def read_masks(path: Path) -> dict[str, np.ndarray]:
    """The per-subtype blood fractions written by :func:`write_masks`, as float32 in [0, 1]."""
    with np.load(path) as data:
        return {str(k): data[str(k)].astype(np.float32) / np.float32(255.0) for k in data["classes"]}


def label_rows(sops: list[str], labels: np.ndarray) -> Iterator[tuple[str, int]]:
    """RSNA 2019 rows ``(ID_<sop>_<subtype>, 0/1)`` for each slice, subtypes first, then ``any``."""
    for sop, lab in zip(sops, labels):
        for name in LABEL_ORDER:
            yield f"{sop}_{name}", int(lab[RSNA_CLASSES.index(name)])


def generate_dataset(
    out: Path,
    n_studies: int,
    *,
    seed: int = 0,
    cfg: SynthConfig = SynthConfig(),
    rle: bool = False,
    progress: bool = False,
    masks: bool = False,
) -> Path:
    """Write ``n_studies`` studies under ``out/study_XXXX`` and ``out/labels.csv``; returns the CSV path.

    ``masks``: also the per-subtype blood fractions, ``out/masks/study_XXXX.npz`` (:func:`write_masks`).
    """
    out.mkdir(parents=True, exist_ok=True)
    ss = np.random.SeedSequence(seed)
    labels_path = out / "labels.csv"
    iterator: Iterable[int] = range(n_studies)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(range(n_studies), desc="synth", unit="study")
    with labels_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ID", "Label"])
        for i, child in zip(iterator, ss.spawn(n_studies)):
            rng = np.random.default_rng(child)
            n = int(rng.integers(cfg.min_slices, cfg.max_slices + 1))
            study = render_study(rng, n, cfg)
            sops = write_study(study, out / f"study_{i:04d}", index=i, rng=rng, rle=rle)
            if masks:
                write_masks(study, out / "masks" / f"study_{i:04d}.npz", sops)
            writer.writerows(label_rows(sops, study.labels))
    log.info("wrote %d synthetic studies", n_studies)
    return labels_path


def write_demo_study(out: Path, *, seed: int = 7, size: int = 512, n_slices: int = 32) -> Path:
    """A single RLE-compressed head CT with a clear subdural haematoma, plus its labels.csv."""
    rng = np.random.default_rng(seed)
    cfg = SynthConfig(size=size, subtle_fraction=0.0, noise_hu=(3.0, 3.5))
    overrides = {"T": 13.0, "hu": 72.0, "w": 1.1, "h": 38.0, "z0": 35.0}
    study = render_study(rng, n_slices, cfg, lesion_kinds=["subdural"], overrides=overrides)
    out.mkdir(parents=True, exist_ok=True)
    sops = write_study(study, out, index=1, rng=rng, rle=True, rsna_ids=False)
    with (out / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ID", "Label"])
        writer.writerows(label_rows(sops, study.labels))
    return out


__all__ = [
    "KERNELS",
    "RSNA_ID_HEX",
    "SHIFTS",
    "SUBTYPES",
    "WIDE",
    "SynthConfig",
    "SynthStudy",
    "blur_inplane",
    "generate_dataset",
    "read_masks",
    "render_study",
    "rsna_id",
    "shifted_config",
    "write_demo_study",
    "write_masks",
    "write_study",
]
