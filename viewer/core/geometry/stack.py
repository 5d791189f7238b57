"""A stack's patient geometry: pixel <-> patient (mm) <-> voxel, exact for gantry tilt and uneven spacing.

DICOM PS3.3 C.7.6.2.1.1: the centre of pixel (row, col) of a slice is
``IPP + col * PixelSpacing[1] * IOP[:3] + row * PixelSpacing[0] * IOP[3:]``. A stack adds the slice index
``k`` along the sorted positions. When the slices are evenly spaced and stacked along the normal this is one
affine; with gantry tilt the step between slices leaves the normal (a sheared affine), and with uneven
spacing no single affine fits, so the exact maps here interpolate the slice positions piecewise linearly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from viewer.core.dicom.model import Stack
from viewer.core.errors import GeometryError

ORTHOGONALITY_TOLERANCE = 1e-3  # |row . col| and | |v| - 1 | allowed in ImageOrientationPatient
SPACING_RTOL = 0.01  # slice steps within 1 % of the median count as even (highdicom's default rtol)
SHEAR_TOLERANCE_MM = 1e-3  # in-plane drift of the slice origins below this is not a tilt
POSITION_EPS = 1e-3  # mm


def patient_position(
    ipp: Sequence[float] | None,
    iop: Sequence[float] | None,
    spacing: Sequence[float] | None,
    row: float,
    col: float,
) -> tuple[float, float, float] | None:
    """Patient (LPS, mm) coordinates of pixel (row, col) of one slice, DICOM PS3.3 C.7.6.2.1.1.

    ``None`` when the slice lacks IPP, IOP or PixelSpacing (nothing to compute from).
    """
    if ipp is None or iop is None or spacing is None:
        return None
    r = np.asarray(iop[:3], dtype=float)
    c = np.asarray(iop[3:6], dtype=float)
    p = np.asarray(ipp, dtype=float) + col * spacing[1] * r + row * spacing[0] * c
    return (float(p[0]), float(p[1]), float(p[2]))


def slice_position_mm(stack: Stack, index: int) -> float | None:
    """Slice location along the stack normal (mm): ``SliceInfo.location``, else IPP . normal, else z."""
    info = stack.slices[index]
    if info.location is not None:
        return float(info.location)
    if info.position is None:
        return None
    if info.orientation is not None:
        normal = np.cross(np.asarray(info.orientation[:3]), np.asarray(info.orientation[3:]))
        return float(np.dot(np.asarray(info.position), normal))
    return float(info.position[2])


def matching_slice(old: Stack, index: int, new: Stack) -> int:
    """The index in ``new`` of the slice at slice ``index`` of ``old`` (the same series, sorted again with
    more slices): the nearest by position along the normal (:func:`slice_position_mm`); without
    positions the same instance and frame; else ``index`` within ``new``'s bounds."""
    if not new.slices:
        return 0
    last = len(new.slices) - 1
    if not old.slices:
        return min(max(index, 0), last)
    index = min(max(index, 0), len(old.slices) - 1)
    here = slice_position_mm(old, index)
    if here is not None:
        locations = [slice_position_mm(new, k) for k in range(len(new.slices))]
        known = [(abs(loc - here), k) for k, loc in enumerate(locations) if loc is not None]
        if known:
            return min(known)[1]
    info = old.slices[index]
    for k, other in enumerate(new.slices):
        if other.sop_instance_uid == info.sop_instance_uid and other.source.frame == info.source.frame:
            return k
    return min(index, last)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class StackGeometry:
    """Geometry of a sorted stack of parallel slices (``positions`` ascending along ``normal``).

    Voxel coordinates are ``(k, j, i)``: slice, row, column, as the axes of a ``(slices, rows, cols)`` array.
    """

    positions: np.ndarray  # (N, 3) ImagePositionPatient of each slice, in stack order (mm)
    row_dir: np.ndarray  # (3,) unit: IOP[:3], towards increasing column
    col_dir: np.ndarray  # (3,) unit: IOP[3:], towards increasing row
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) mm, as PixelSpacing
    rows: int
    columns: int
    default_spacing: float = 1.0  # slice spacing used when the stack has a single slice (mm)
    normal: np.ndarray = field(init=False)
    locations: np.ndarray = field(init=False)  # (N,) positions projected on the normal (mm)

    def __post_init__(self) -> None:
        pos = np.array(self.positions, dtype=float).reshape(-1, 3)
        if pos.shape[0] == 0:
            raise GeometryError("A stack without slices has no geometry")
        if not np.all(np.isfinite(pos)):
            raise GeometryError("ImagePositionPatient holds a non-finite value")
        r = np.array(self.row_dir, dtype=float).reshape(3)
        c = np.array(self.col_dir, dtype=float).reshape(3)
        for v, what in (
            (r, "ImageOrientationPatient row cosines"),
            (c, "ImageOrientationPatient column cosines"),
        ):
            norm = float(np.linalg.norm(v))
            if not math.isfinite(norm) or norm < 1e-6:
                raise GeometryError(f"{what} are not a direction (length {norm:g})")
        r, c = r / np.linalg.norm(r), c / np.linalg.norm(c)
        if abs(float(np.dot(r, c))) > ORTHOGONALITY_TOLERANCE * 10:
            raise GeometryError(
                f"ImageOrientationPatient is not orthogonal (row . column = {float(np.dot(r, c)):.3f})"
            )
        dr, dc = (float(self.pixel_spacing[0]), float(self.pixel_spacing[1]))
        if not (dr > 0 and dc > 0 and math.isfinite(dr) and math.isfinite(dc)):
            raise GeometryError(f"PixelSpacing {dr:g}\\{dc:g} is not positive: no geometry to measure with")
        if self.rows < 1 or self.columns < 1:
            raise GeometryError(f"A {self.rows}x{self.columns} image has no geometry")
        n = np.cross(r, c)
        n = n / np.linalg.norm(n)
        locs = pos @ n
        if pos.shape[0] > 1 and np.any(np.diff(locs) < POSITION_EPS):
            raise GeometryError(
                "Slice positions are not strictly increasing along the normal "
                "(duplicates, a 4D series or unsorted slices): cannot reslice"
            )
        object.__setattr__(self, "positions", _readonly(pos))
        object.__setattr__(self, "row_dir", _readonly(r))
        object.__setattr__(self, "col_dir", _readonly(c))
        object.__setattr__(self, "normal", _readonly(n))
        object.__setattr__(self, "locations", _readonly(locs))
        object.__setattr__(self, "pixel_spacing", (dr, dc))

    # --- construction ----------------------------------------------------------------------------
    @classmethod
    def from_stack(cls, stack: Stack) -> StackGeometry:
        """Geometry of a sorted :class:`Stack`; :class:`GeometryError` says what is missing."""
        if not stack.slices:
            raise GeometryError("The stack has no slices")
        first = stack.slices[0]
        if first.orientation is None:
            raise GeometryError("The stack has no ImageOrientationPatient")
        if first.pixel_spacing is None:
            raise GeometryError("The stack has no PixelSpacing")
        if any(s.position is None for s in stack.slices):
            raise GeometryError("A slice of the stack has no ImagePositionPatient")
        if stack.sort_method != "position":
            raise GeometryError(f"The stack is sorted by {stack.sort_method}, not by position")
        iop = first.orientation
        return cls(
            positions=np.array([s.position for s in stack.slices], dtype=float),
            row_dir=np.array(iop[:3], dtype=float),
            col_dir=np.array(iop[3:], dtype=float),
            pixel_spacing=first.pixel_spacing,
            rows=first.rows,
            columns=first.columns,
            default_spacing=stack.slice_spacing or first.slice_thickness or 1.0,
        )

    # --- facts -----------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.positions), self.rows, self.columns)

    @property
    def iop(self) -> tuple[float, float, float, float, float, float]:
        r, c = self.row_dir, self.col_dir
        return (float(r[0]), float(r[1]), float(r[2]), float(c[0]), float(c[1]), float(c[2]))

    @cached_property
    def slice_spacing(self) -> float:
        """Median distance between neighbouring slices along the normal (mm)."""
        if len(self.locations) < 2:
            return float(self.default_spacing)
        return float(np.median(np.diff(self.locations)))

    @cached_property
    def is_evenly_spaced(self) -> bool:
        if len(self.locations) < 3:
            return True
        steps = np.diff(self.locations)
        return bool(np.ptp(steps) <= SPACING_RTOL * float(np.median(steps)))

    @cached_property
    def spacing_range(self) -> tuple[float, float]:
        if len(self.locations) < 2:
            return (self.slice_spacing, self.slice_spacing)
        steps = np.diff(self.locations)
        return (float(steps.min()), float(steps.max()))

    @property
    def in_plane_offsets(self) -> np.ndarray:
        """(N, 2) slice origins in the (row_dir, col_dir) frame: constant unless the stack is sheared."""
        return np.stack([self.positions @ self.row_dir, self.positions @ self.col_dir], axis=1)

    @cached_property
    def is_sheared(self) -> bool:
        """True for gantry tilt: slice origins drift within the slice plane as k grows."""
        off = self.in_plane_offsets
        return bool(np.any(np.ptp(off, axis=0) > SHEAR_TOLERANCE_MM))

    @cached_property
    def tilt_deg(self) -> float:
        """Angle between the stacking direction (first -> last slice) and the normal."""
        if len(self.positions) < 2:
            return 0.0
        d = self.positions[-1] - self.positions[0]
        cos = abs(float(np.dot(d, self.normal))) / float(np.linalg.norm(d))
        return math.degrees(math.acos(min(1.0, cos)))

    @cached_property
    def is_affine(self) -> bool:
        """True when one affine maps voxels to patient exactly (slice origins on a line at equal steps,
        within 1e-3 mm): evenly spaced stacks, tilted or not."""
        n = len(self.positions)
        if n < 3:
            return True
        k = np.arange(n, dtype=float)[:, None]
        line = self.positions[0] + k * (self.positions[-1] - self.positions[0]) / (n - 1)
        return bool(np.max(np.abs(self.positions - line)) < POSITION_EPS)

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping ``(k, j, i, 1)`` to patient ``(x, y, z, 1)``.

        Exact for evenly spaced stacks (sheared when tilted: the k column is the step between slice
        origins, not the normal); for uneven spacing it uses the mean step, and the exact maps
        (:meth:`voxel_to_patient`, :meth:`patient_to_voxel`) should be used instead.
        """
        dr, dc = self.pixel_spacing
        n = len(self.positions)
        step = (
            (self.positions[-1] - self.positions[0]) / (n - 1) if n > 1 else self.normal * self.slice_spacing
        )
        a = np.eye(4)
        a[:3, 0] = step
        a[:3, 1] = self.col_dir * dr
        a[:3, 2] = self.row_dir * dc
        a[:3, 3] = self.positions[0]
        return a

    # --- maps ------------------------------------------------------------------------------------
    def _origin_at(self, k: np.ndarray) -> np.ndarray:
        """Slice origin (IPP) at fractional slice index ``k``, linear between slices, extrapolated outside."""
        n = len(self.positions)
        if n == 1:
            return self.positions[0] + np.multiply.outer(k, self.normal * self.slice_spacing)
        k0 = np.clip(np.floor(k), 0, n - 2).astype(np.intp)
        f = (k - k0)[..., None]
        return self.positions[k0] * (1.0 - f) + self.positions[k0 + 1] * f

    def location_to_index(self, location: np.ndarray | float) -> np.ndarray:
        """Fractional slice index of locations along the normal (mm), extrapolated linearly outside."""
        w = np.asarray(location, dtype=float)
        locs = self.locations
        n = len(locs)
        if n == 1:
            return (w - locs[0]) / self.slice_spacing
        k0 = np.clip(np.searchsorted(locs, w, side="right") - 1, 0, n - 2)
        return k0 + (w - locs[k0]) / (locs[k0 + 1] - locs[k0])

    def voxel_to_patient(self, kji: np.ndarray | Sequence[float]) -> np.ndarray:
        """Patient coordinates (..., 3) of voxel coordinates ``(k, j, i)`` (..., 3), exact per slice."""
        v = np.asarray(kji, dtype=float)
        dr, dc = self.pixel_spacing
        origin = self._origin_at(v[..., 0])
        return origin + v[..., 1:2] * dr * self.col_dir + v[..., 2:3] * dc * self.row_dir

    def patient_to_voxel(self, points: np.ndarray | Sequence[float]) -> np.ndarray:
        """Fractional voxel coordinates ``(k, j, i)`` (..., 3) of patient points (..., 3)."""
        p = np.asarray(points, dtype=float)
        k = self.location_to_index(p @ self.normal)
        d = p - self._origin_at(k)
        dr, dc = self.pixel_spacing
        return np.stack([k, (d @ self.col_dir) / dr, (d @ self.row_dir) / dc], axis=-1)

    def pixel_to_patient(self, k: int, row: float, col: float) -> tuple[float, float, float]:
        """Patient coordinates of pixel (row, col) of slice ``k``."""
        p = self.voxel_to_patient((float(k), row, col))
        return (float(p[0]), float(p[1]), float(p[2]))

    def nearest_slice(self, point_or_location: Sequence[float] | np.ndarray | float) -> int:
        """Index of the slice nearest a patient point (projected on the normal) or a location (mm)."""
        a = np.asarray(point_or_location, dtype=float)
        w = float(a @ self.normal) if a.shape == (3,) else float(a)
        return int(np.argmin(np.abs(self.locations - w)))

    def corners(self) -> np.ndarray:
        """(8, 3) patient positions of the corner voxel centres (first and last slice)."""
        return self._corners

    @cached_property
    def _corners(self) -> np.ndarray:
        n, rows, cols = self.shape
        kji = np.array([(k, j, i) for k in (0, n - 1) for j in (0, rows - 1) for i in (0, cols - 1)], float)
        return _readonly(self.voxel_to_patient(kji))
