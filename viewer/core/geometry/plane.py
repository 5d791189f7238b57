"""Image planes in patient space: axial / coronal / sagittal / oblique planes through a stack, the line two
planes share (reference lines) and its segment inside a viewport's image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from viewer.core.errors import GeometryError
from viewer.core.geometry.orientation import STANDARD_DIRECTIONS, Orientation, classify_normal, edge_labels
from viewer.core.geometry.stack import StackGeometry

Vec3 = tuple[float, float, float]
PARALLEL_TOLERANCE = 1e-6  # |n_a x n_b| below this: the planes are parallel, no common line


def cross3(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors (np.cross costs ~20x more for one pair)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]], float)


def _vec(v: Sequence[float] | np.ndarray) -> Vec3:
    a = np.asarray(v, dtype=float).reshape(3)
    return (float(a[0]), float(a[1]), float(a[2]))


@dataclass(frozen=True)
class Plane:
    """A sampled image plane: pixel (row, col) is at ``origin + col*sp[1]*row_dir + row*sp[0]*col_dir``.

    The same convention as ImagePositionPatient / ImageOrientationPatient / PixelSpacing (``row_dir`` runs
    towards the right edge, ``col_dir`` towards the bottom edge), so ``spacing`` is the output's pixel
    spacing and the aspect ratio to display it with.
    """

    origin: Vec3  # patient position (mm) of the centre of pixel (0, 0)
    row_dir: Vec3  # unit, towards increasing column
    col_dir: Vec3  # unit, towards increasing row
    spacing: tuple[float, float]  # (row spacing, column spacing) mm
    size: tuple[int, int]  # (rows, columns)
    orientation: Orientation = Orientation.OBLIQUE

    def __post_init__(self) -> None:
        r, c = np.asarray(self.row_dir, float), np.asarray(self.col_dir, float)
        if abs(float(np.linalg.norm(r)) - 1) > 1e-6 or abs(float(np.linalg.norm(c)) - 1) > 1e-6:
            raise GeometryError("Plane directions must be unit vectors")
        if abs(float(np.dot(r, c))) > 1e-6:
            raise GeometryError("Plane directions must be orthogonal")
        if not (self.spacing[0] > 0 and self.spacing[1] > 0):
            raise GeometryError(f"Plane spacing {self.spacing} is not positive")
        if self.size[0] < 1 or self.size[1] < 1:
            raise GeometryError(f"Plane size {self.size} is empty")

    @cached_property
    def normal(self) -> np.ndarray:
        return cross3(self.row_dir, self.col_dir)

    @property
    def iop(self) -> tuple[float, float, float, float, float, float]:
        return (*self.row_dir, *self.col_dir)

    @property
    def position_mm(self) -> float:
        """Where the plane lies along its normal (mm): ``origin . normal``."""
        return float(np.dot(self.origin, self.normal))

    @property
    def center(self) -> np.ndarray:
        rows, cols = self.size
        return self.pixel_to_patient(np.array([(rows - 1) / 2]), np.array([(cols - 1) / 2]))[0]

    def edge_labels(self) -> dict[str, str]:
        return edge_labels(self.row_dir, self.col_dir)

    def pixel_to_patient(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Patient points (..., 3) of pixel coordinates (fractional allowed)."""
        r = np.asarray(rows, dtype=float)[..., None]
        c = np.asarray(cols, dtype=float)[..., None]
        return (
            np.asarray(self.origin)
            + c * self.spacing[1] * np.asarray(self.row_dir)
            + r * self.spacing[0] * np.asarray(self.col_dir)
        )

    def patient_to_pixel(self, points: np.ndarray | Sequence[float]) -> np.ndarray:
        """(..., 3) of ``(row, col, distance)``: fractional pixel of the projection, signed distance (mm)."""
        d = np.asarray(points, dtype=float) - np.asarray(self.origin)
        return np.stack(
            [
                d @ np.asarray(self.col_dir) / self.spacing[0],
                d @ np.asarray(self.row_dir) / self.spacing[1],
                d @ self.normal,
            ],
            axis=-1,
        )

    def shifted(self, mm: float) -> Plane:
        """The same plane moved ``mm`` along its normal."""
        return replace(self, origin=_vec(np.asarray(self.origin) + mm * self.normal))

    def through(self, point: Sequence[float] | np.ndarray) -> Plane:
        """The parallel plane through ``point`` (same sampling grid, moved along the normal only)."""
        d = float(np.dot(np.asarray(point, float) - np.asarray(self.origin), self.normal))
        return self.shifted(d)


@dataclass(frozen=True)
class Line:
    """A line in patient space: ``point + t * direction`` (unit direction)."""

    point: Vec3
    direction: Vec3


def intersection_line(a: Plane, b: Plane) -> Line | None:
    """The line both planes contain, or ``None`` when they are parallel."""
    na, nb = a.normal, b.normal
    d = cross3(na, nb)
    norm = float(np.linalg.norm(d))
    if norm < PARALLEL_TOLERANCE:
        return None
    d = d / norm
    # the point on the line closest to the origin: solves na.p = ha, nb.p = hb, d.p = 0
    m = np.stack([na, nb, d])
    p = np.linalg.solve(m, np.array([a.position_mm, b.position_mm, 0.0]))
    return Line(point=_vec(p), direction=_vec(d))


def reference_line(target: Plane, other: Plane) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Segment of ``other``'s plane drawn on ``target``'s image: ((row, col), (row, col)) pixel coordinates
    at the image border, or ``None`` when the planes are parallel or the line misses the image."""
    line = intersection_line(target, other)
    if line is None:
        return None
    p = target.patient_to_pixel(np.asarray(line.point))
    q = target.patient_to_pixel(np.asarray(line.point) + np.asarray(line.direction))
    start, direction = p[:2], q[:2] - p[:2]
    rows, cols = target.size
    lo = np.array([-0.5, -0.5])
    hi = np.array([rows - 0.5, cols - 0.5])
    t0, t1 = -math.inf, math.inf
    for axis in range(2):  # Liang-Barsky clip against the image rectangle (pixel edges)
        if abs(direction[axis]) < 1e-12:
            if not lo[axis] <= start[axis] <= hi[axis]:
                return None
            continue
        ta = (lo[axis] - start[axis]) / direction[axis]
        tb = (hi[axis] - start[axis]) / direction[axis]
        t0, t1 = max(t0, min(ta, tb)), min(t1, max(ta, tb))
    if t0 > t1:
        return None
    a_pt, b_pt = start + t0 * direction, start + t1 * direction
    return ((float(a_pt[0]), float(a_pt[1])), (float(b_pt[0]), float(b_pt[1])))


# --- planes through a stack --------------------------------------------------------------------------
def _axes(geom: StackGeometry) -> list[tuple[np.ndarray, float]]:
    """The stack's orthonormal axes with their sampling steps: (row_dir, dc), (col_dir, dr), (normal, dz)."""
    dr, dc = geom.pixel_spacing
    return [(geom.row_dir, dc), (geom.col_dir, dr), (geom.normal, geom.slice_spacing)]


def native_plane(geom: StackGeometry, k: int) -> Plane:
    """Slice ``k`` as a plane (its own IPP/IOP/PixelSpacing)."""
    if not 0 <= k < geom.shape[0]:
        raise GeometryError(f"Slice {k} is outside the stack (0..{geom.shape[0] - 1})")
    return Plane(
        origin=_vec(geom.positions[k]),
        row_dir=_vec(geom.row_dir),
        col_dir=_vec(geom.col_dir),
        spacing=geom.pixel_spacing,
        size=(geom.rows, geom.columns),
        orientation=classify_normal(geom.normal),
    )


def _extent(corners: np.ndarray, direction: np.ndarray, step: float) -> tuple[float, int]:
    """Start coordinate (along ``direction``) and sample count covering the corners' projections."""
    proj = corners @ direction
    lo, hi = float(proj.min()), float(proj.max())
    return lo, math.floor((hi - lo) / step + 1e-6) + 1


def standard_plane(
    geom: StackGeometry, orientation: Orientation, through: Sequence[float] | np.ndarray | None = None
) -> Plane:
    """An axial, coronal or sagittal plane through ``through`` (default: the volume centre).

    The plane follows the stack's own axes (the one closest to the requested plane's normal), so for
    an untilted, evenly spaced stack every output pixel is a voxel centre and reslicing needs no
    interpolation; a tilted or oblique stack is covered by the bounding box of its voxels. Row and
    column directions are signed for radiological display (see ``STANDARD_DIRECTIONS``).
    """
    if orientation not in STANDARD_DIRECTIONS:
        raise GeometryError(f"{orientation.value} is not a standard plane (use oblique_plane)")
    want_row, want_col = (np.asarray(v, float) for v in STANDARD_DIRECTIONS[orientation])
    want_normal = cross3(want_row, want_col)
    axes = _axes(geom)
    ni = int(np.argmax([abs(float(np.dot(a, want_normal))) for a, _ in axes]))
    rest = [i for i in range(3) if i != ni]
    ri = max(rest, key=lambda i: abs(float(np.dot(axes[i][0], want_row))))
    ci = rest[0] if rest[1] == ri else rest[1]
    row_dir, row_step = axes[ri]
    col_dir, col_step = axes[ci]
    row_dir = row_dir if np.dot(row_dir, want_row) >= 0 else -row_dir
    col_dir = col_dir if np.dot(col_dir, want_col) >= 0 else -col_dir
    corners = geom.corners()
    u0, ncols = _extent(corners, row_dir, row_step)
    v0, nrows = _extent(corners, col_dir, col_step)
    centre = np.asarray(through, float) if through is not None else corners.mean(axis=0)
    normal = cross3(row_dir, col_dir)
    origin = u0 * row_dir + v0 * col_dir + float(np.dot(centre, normal)) * normal
    return Plane(
        origin=_vec(origin),
        row_dir=_vec(row_dir),
        col_dir=_vec(col_dir),
        spacing=(col_step, row_step),
        size=(nrows, ncols),
        orientation=orientation,
    )


def orthonormal_directions(
    row_dir: Sequence[float] | np.ndarray, col_dir: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """An oblique plane's (row, column) unit directions: ``row_dir`` normalised, ``col_dir`` made
    orthogonal to it (Gram-Schmidt); a GeometryError for a zero or parallel pair."""
    r = np.asarray(row_dir, float)
    c = np.asarray(col_dir, float)
    if np.linalg.norm(r) < 1e-9 or np.linalg.norm(cross3(r, c)) < 1e-9:
        raise GeometryError("An oblique plane needs two non-parallel directions")
    r = r / np.linalg.norm(r)
    c = c - np.dot(c, r) * r
    return r, c / np.linalg.norm(c)


def oblique_plane(
    geom: StackGeometry,
    center: Sequence[float] | np.ndarray,
    row_dir: Sequence[float] | np.ndarray,
    col_dir: Sequence[float] | np.ndarray,
    spacing: float | None = None,
) -> Plane:
    """A plane through ``center`` spanned by ``row_dir`` and ``col_dir`` (orthogonalised), sized to show
    the whole volume, with square pixels of ``spacing`` mm (default: the finest in-plane spacing)."""
    r, c = orthonormal_directions(row_dir, col_dir)
    step = float(spacing) if spacing is not None else min(geom.pixel_spacing)
    if not step > 0:
        raise GeometryError(f"Spacing {step:g} is not positive")
    corners = geom.corners()
    centre = np.asarray(center, float)
    # symmetric about the centre so the crosshair stays in the middle of the image
    half_u = float(np.max(np.abs((corners - centre) @ r)))
    half_v = float(np.max(np.abs((corners - centre) @ c)))
    ncols = 2 * math.ceil(half_u / step) + 1
    nrows = 2 * math.ceil(half_v / step) + 1
    origin = centre - (ncols - 1) / 2 * step * r - (nrows - 1) / 2 * step * c
    return Plane(
        origin=_vec(origin),
        row_dir=_vec(r),
        col_dir=_vec(c),
        spacing=(step, step),
        size=(nrows, ncols),
        orientation=Orientation.OBLIQUE,
    )


# --- crosshair: rotating planes about a point, the point planes share ----------------------------------
def rotate_vector(v: Sequence[float] | np.ndarray, axis: Sequence[float] | np.ndarray, angle: float) -> Vec3:
    """``v`` rotated by ``angle`` radians about the unit ``axis`` (right-handed, Rodrigues' formula)."""
    a = np.asarray(axis, float)
    norm = float(np.linalg.norm(a))
    if norm < 1e-12:
        raise GeometryError("A rotation needs a non-zero axis")
    a = a / norm
    x = np.asarray(v, float)
    cos, sin = math.cos(angle), math.sin(angle)
    return _vec(x * cos + cross3(a, x) * sin + a * float(np.dot(a, x)) * (1 - cos))


def signed_angle(u: Sequence[float] | np.ndarray, v: Sequence[float] | np.ndarray, axis: Sequence[float]
                 | np.ndarray) -> float:
    """The angle (radians, -pi..pi) turning ``u`` towards ``v`` about ``axis`` (both projected onto the
    plane perpendicular to it): what a drag from ``u`` to ``v`` around a point means."""
    a = np.asarray(axis, float) / float(np.linalg.norm(axis))
    pu = np.asarray(u, float) - float(np.dot(u, a)) * a
    pv = np.asarray(v, float) - float(np.dot(v, a)) * a
    if np.linalg.norm(pu) < 1e-9 or np.linalg.norm(pv) < 1e-9:
        return 0.0
    return math.atan2(float(np.dot(a, cross3(pu, pv))), float(np.dot(pu, pv)))


def common_point(planes: Sequence[Plane], near: Sequence[float] | np.ndarray) -> Vec3:
    """The point on every plane closest to ``near`` (three crossing planes: their one common point; two:
    the point of their line nearest ``near``; parallel planes: least squares)."""
    p0 = np.asarray(near, float)
    if not planes:
        return _vec(p0)
    normals = np.stack([p.normal for p in planes])
    heights = np.array([p.position_mm for p in planes]) - normals @ p0
    step, *_ = np.linalg.lstsq(normals, heights, rcond=None)  # minimum-norm move onto every plane
    return _vec(p0 + step)


def axis_step(geom: StackGeometry, direction: Sequence[float] | np.ndarray) -> float | None:
    """The voxel step (mm) of the stack axis ``direction`` runs along (rows, columns or slices), or None
    when it runs along none."""
    d = np.asarray(direction, float)
    for axis, step in _axes(geom):
        if abs(abs(float(np.dot(axis, d))) - 1.0) < 1e-6:
            return float(step)
    return None


def crosshair_plane(
    geom: StackGeometry, row_dir: Sequence[float] | np.ndarray, col_dir: Sequence[float] | np.ndarray
) -> Plane:
    """An MPR plane of any direction for rotating the crosshair: through the volume centre, the image grid
    kept steady while it turns about a stack axis it contains.

    A direction along a stack axis samples at that axis's voxel step (so each image line is a voxel line
    and reslicing blends whole lines instead of interpolating every pixel) and spans the volume's extent
    along it; the other direction samples at the finest in-plane spacing and spans the volume's radius
    about that axis, so the image size does not change with the angle (no refit, no jumping pixels while
    dragging). A plane along no stack axis (double oblique) is ``oblique_plane``'s, fitted to the volume.
    """
    r, c = orthonormal_directions(row_dir, col_dir)
    r_step, c_step = axis_step(geom, r), axis_step(geom, c)
    if r_step is None and c_step is None:
        return oblique_plane(geom, geom.corners().mean(axis=0), r, c)
    if r_step is not None and c_step is not None:  # at 0° or 90°: the grid is the turned one's
        if r_step > c_step:
            c_step = None
        else:
            r_step = None
    fine = min(geom.pixel_spacing)
    corners = geom.corners()
    centre = corners.mean(axis=0)
    rel = corners - centre

    def span(
        d: np.ndarray, step: float, aligned: bool, other: np.ndarray, other_aligned: bool
    ) -> tuple[float, int]:
        """Start (mm from the centre along ``d``) and sample count."""
        if aligned:  # from the first voxel centre to the last: every sample is a voxel centre
            lo, count = _extent(rel, d, step)
            return lo, count
        if other_aligned:  # the radius about the other (axis) direction: the same at every angle
            half = float(np.max(np.linalg.norm(rel - np.outer(rel @ other, other), axis=1)))
        else:
            half = float(np.max(np.abs(rel @ d)))
        n = math.ceil(half / step - 1e-6)
        return -n * step, 2 * n + 1

    sr = r_step if r_step is not None else fine
    sc = c_step if c_step is not None else fine
    u0, ncols = span(r, sr, r_step is not None, c, c_step is not None)
    v0, nrows = span(c, sc, c_step is not None, r, r_step is not None)
    origin = centre + u0 * r + v0 * c
    return Plane(
        origin=_vec(origin),
        row_dir=_vec(r),
        col_dir=_vec(c),
        spacing=(sc, sr),
        size=(nrows, ncols),
        orientation=Orientation.OBLIQUE,
    )
