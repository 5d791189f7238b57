"""Measurements (distance ruler, ellipse, rectangle and freehand ROIs, angle, Cobb angle) and arrow
annotations: what they are, which image they belong to, and their numbers. Qt-free.

Coordinates are the image's own pixel coordinates ``(x, y)`` = (column, row), continuous: pixel
``(c, r)`` covers ``[c, c+1) x [r, r+1)`` and its centre is ``(c + 0.5, r + 0.5)``. A pixel is inside an
ROI when its centre is. Lengths, areas and angles use the PixelSpacing (row, column) in mm (so angles
keep their true aspect on non-square pixels), or pixels without it.
Statistics are computed from the slice's modality values (HU for CT: the volume's int16/float32 data),
never from display-windowed values.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from viewer.core.errors import MeasurementError
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.plane import Plane

NATIVE_PLANE = "native"  # the stack's own slices (MPR planes use the Orientation value)
OBLIQUE_PLANE = Orientation.OBLIQUE.value
# an oblique-plane measurement saved before planes were keyed by geometry (version 1-2 stores): its plane
# is unknown, so it is kept in the store but drawn on no plane
UNPLACED_GEOMETRY = "unplaced"
PLANE_POSITION_DECIMALS = 2  # mm: oblique planes whose origins agree to 0.01 mm are one image
PLANE_DIRECTION_DECIMALS = 5  # unit directions agreeing to 1e-5 (0.0006°, 0.005 mm across 500 mm)

Point = tuple[float, float]  # (x, y) = (column, row), image pixel coordinates
Spacing = tuple[float, float] | None  # (row, column) mm, None without a usable PixelSpacing


class Shape(str, Enum):
    RULER = "ruler"
    ELLIPSE = "ellipse"
    RECTANGLE = "rectangle"
    FREEHAND = "freehand"  # a closed polygon drawn by dragging
    ANGLE = "angle"  # three points: arm end, vertex, arm end
    COBB = "cobb"  # two lines (four points): the angle between them
    ARROW = "arrow"  # tip, tail (where its text is written)


ROI_SHAPES = (Shape.ELLIPSE, Shape.RECTANGLE, Shape.FREEHAND)
ANGLE_SHAPES = (Shape.ANGLE, Shape.COBB)
# how many points each shape has (a freehand polygon: at least MIN_POLYGON_POINTS, at most MAX_POLYGON_POINTS)
POINT_COUNTS: dict[Shape, int] = {
    Shape.RULER: 2, Shape.ELLIPSE: 2, Shape.RECTANGLE: 2, Shape.ANGLE: 3, Shape.COBB: 4, Shape.ARROW: 2,
}
MIN_POLYGON_POINTS = 3
MAX_POLYGON_POINTS = 5000
MAX_TEXT = 200  # an arrow's text, characters


@dataclass(frozen=True)
class ImageRef:
    """The one image a measurement belongs to.

    Native slices: the SOP Instance UID and frame (0-based) of the displayed frame, whatever file it came
    from. Axial / coronal / sagittal MPR planes: ``plane`` is the orientation (``"coronal"`` ...),
    ``sop_uid`` is empty and ``frame`` the plane's index in the series' reslice grid (fixed per series).
    Oblique planes: ``plane`` is ``"oblique"``, ``frame`` 0 and ``geometry`` the plane's own pixel grid in
    patient space (:func:`plane_geometry_key`), as an oblique plane's number says nothing about where it
    lies once the plane is turned.
    """

    study_uid: str
    series_uid: str
    plane: str
    sop_uid: str
    frame: int
    geometry: str = ""  # oblique planes only


def _fixed(values: Sequence[float], decimals: int) -> str:
    # + 0.0 turns a rounded -0.0 into 0.0, so a plane has one key
    return ",".join(f"{round(float(v), decimals) + 0.0:.{decimals}f}" for v in values)


def plane_geometry_key(plane: Plane) -> str:
    """A resliced plane's pixel grid as text: the patient position (mm) of pixel (0, 0) and the row and
    column directions, rounded (``PLANE_POSITION_DECIMALS``, ``PLANE_DIRECTION_DECIMALS``), and the pixel
    spacing. Measurement points are pixel coordinates, so the in-plane directions belong to the key, not
    just the normal: the same plane turned within itself is another image."""
    return (
        f"o={_fixed(plane.origin, PLANE_POSITION_DECIMALS)};"
        f"r={_fixed(plane.row_dir, PLANE_DIRECTION_DECIMALS)};"
        f"c={_fixed(plane.col_dir, PLANE_DIRECTION_DECIMALS)};"
        f"s={_fixed(plane.spacing, 4)}"
    )


def mpr_image_ref(
    study_uid: str, series_uid: str, orientation: Orientation, plane: Plane, index: int
) -> ImageRef:
    """The image a measurement on MPR plane ``index`` (``plane``) of a series belongs to: oblique planes by
    their geometry, the others by their orientation and index (see :class:`ImageRef`)."""
    if orientation is Orientation.OBLIQUE:
        return ImageRef(study_uid, series_uid, OBLIQUE_PLANE, "", 0, plane_geometry_key(plane))
    return ImageRef(study_uid, series_uid, orientation.value, "", index)


@dataclass(frozen=True)
class Measurement:
    """One measurement or annotation: its shape, image and points (image pixel coordinates, see the
    module docstring): a ruler's two ends, an ellipse's or rectangle's two opposite corners (the ellipse
    is inscribed), a freehand ROI's polygon (closed implicitly), an angle's arm end / vertex / arm end,
    a Cobb angle's two lines (p0-p1, p2-p3), an arrow's tip and tail. ``text``: an arrow's text."""

    shape: Shape
    ref: ImageRef
    points: tuple[Point, ...]
    text: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        shape = Shape(self.shape)
        pts = tuple((float(p[0]), float(p[1])) for p in self.points)
        if not all(math.isfinite(v) for p in pts for v in p):
            raise MeasurementError(f"The {shape.value} {self.id[:8]} has a point that is not a finite number")
        want = POINT_COUNTS.get(shape)
        if want is not None and len(pts) != want:
            raise MeasurementError(f"A {shape.value} has {want} points, not {len(pts)}")
        if want is None and not MIN_POLYGON_POINTS <= len(pts) <= MAX_POLYGON_POINTS:
            raise MeasurementError(
                f"A freehand ROI has {MIN_POLYGON_POINTS} to {MAX_POLYGON_POINTS} points, not {len(pts)}"
            )
        if len(self.text) > MAX_TEXT:
            raise MeasurementError(f"An arrow's text has at most {MAX_TEXT} characters, not {len(self.text)}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "points", pts)

    @property
    def start(self) -> Point:
        return self.points[0]

    @property
    def end(self) -> Point:
        return self.points[-1]

    def moved(self, dx: float, dy: float) -> Measurement:
        """The same measurement (same id) moved by ``(dx, dy)`` pixels."""
        return replace(self, points=tuple((x + dx, y + dy) for x, y in self.points))

    def with_point(self, index: int, point: Point) -> Measurement:
        """The same measurement with point ``index`` (a handle) at ``point``."""
        pts = list(self.points)
        pts[index] = (float(point[0]), float(point[1]))
        return replace(self, points=tuple(pts))

    def without_point(self, index: int) -> Measurement:
        """The same freehand ROI without vertex ``index``; MeasurementError for other shapes or when
        fewer than MIN_POLYGON_POINTS would be left."""
        self._editable_outline("remove a point from")
        if not 0 <= index < len(self.points):
            raise MeasurementError(f"The freehand ROI has no point {index} (it has {len(self.points)})")
        if len(self.points) <= MIN_POLYGON_POINTS:
            raise MeasurementError(f"A freehand ROI keeps at least {MIN_POLYGON_POINTS} points")
        return replace(self, points=self.points[:index] + self.points[index + 1:])

    def with_point_inserted(self, index: int, point: Point) -> Measurement:
        """The same freehand ROI with ``point`` as its vertex ``index`` (before the point now there)."""
        self._editable_outline("add a point to")
        if not 0 <= index <= len(self.points):
            raise MeasurementError(f"The freehand ROI has no place {index} for a point")
        pt = (float(point[0]), float(point[1]))
        return replace(self, points=(*self.points[:index], pt, *self.points[index:]))

    def _editable_outline(self, what: str) -> None:
        if self.shape is not Shape.FREEHAND:
            raise MeasurementError(f"Cannot {what} a {self.shape.value}: only a freehand ROI's outline has "
                                   "points to add or remove")

    def with_text(self, text: str) -> Measurement:
        return replace(self, text=text.strip()[:MAX_TEXT])


def two_point(shape: Shape, ref: ImageRef, start: Point, end: Point) -> Measurement:
    """A ruler, ellipse, rectangle or arrow from its two points."""
    return Measurement(shape, ref, (start, end))


@dataclass(frozen=True)
class RoiStats:
    """Statistics of the modality values inside an ROI; ``pixels`` is 0 when no pixel centre is inside
    (then mean, sd, minimum and maximum are NaN). ``area``: an ellipse's or rectangle's pixel count times
    the pixel area; a freehand polygon's own area (shoelace formula in mm)."""

    mean: float
    sd: float
    minimum: float
    maximum: float
    pixels: int
    area: float
    area_unit: str  # "mm²" or "px²"


def _span(start: Point, end: Point) -> tuple[float, float, float, float]:
    x0, x1 = sorted((float(start[0]), float(end[0])))
    y0, y1 = sorted((float(start[1]), float(end[1])))
    return x0, x1, y0, y1


def polygon_mask(points: Sequence[Point], image_shape: tuple[int, int]) -> np.ndarray:
    """Boolean (rows, columns) mask of the pixels whose centres lie inside the closed polygon (even-odd
    rule, a scanline fill): on each row's centre line ``y = r + 0.5`` the crossings of the edges (each
    edge half-open in y, so a vertex on the line counts once) are sorted, and the centres between the
    first and second, third and fourth ... crossing (``x0 <= x < x1``) are inside."""
    rows, cols = image_shape
    mask = np.zeros((rows, cols), dtype=bool)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < MIN_POLYGON_POINTS or rows <= 0 or cols <= 0:
        return mask
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    r_lo = max(0, math.floor(float(pts[:, 1].min()) - 0.5))
    r_hi = min(rows - 1, math.ceil(float(pts[:, 1].max()) - 0.5))
    if r_hi < r_lo:
        return mask
    ys = np.arange(r_lo, r_hi + 1, dtype=np.float64) + 0.5  # (R,)
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    crosses = (ys[:, None] >= lo[None, :]) & (ys[:, None] < hi[None, :])  # (R, E), horizontal edges never
    dy = np.where(y1 != y0, y1 - y0, 1.0)  # horizontal edges never cross (see ``crosses``)
    t = (ys[:, None] - y0[None, :]) / dy[None, :]
    xs = np.where(crosses, x0[None, :] + t * (x1 - x0)[None, :], np.inf)
    xs.sort(axis=1)
    counts = crosses.sum(axis=1)
    # a pixel centre c + 0.5 is in [xa, xb) when ceil(xa - 0.5) <= c < ceil(xb - 0.5)
    for k, row in enumerate(range(r_lo, r_hi + 1)):
        n = int(counts[k]) // 2 * 2
        if n == 0:
            continue
        pairs = xs[k, :n].reshape(-1, 2)
        c0 = np.clip(np.ceil(pairs[:, 0] - 0.5), 0, cols).astype(np.int64)
        c1 = np.clip(np.ceil(pairs[:, 1] - 0.5), 0, cols).astype(np.int64)
        for a, b in zip(c0, c1, strict=True):
            if b > a:
                mask[row, a:b] = True
    return mask


def roi_mask(shape: Shape, points: Sequence[Point], image_shape: tuple[int, int]) -> np.ndarray:
    """Boolean (rows, columns) mask of the pixels whose centres lie inside the ROI: the rectangle or
    inscribed ellipse spanned by the corners ``points[0]`` and ``points[-1]``, or the freehand polygon."""
    if shape not in ROI_SHAPES:
        raise MeasurementError(f"{shape.value!r} is not an area ROI (ellipse, rectangle or freehand)")
    if shape is Shape.FREEHAND:
        return polygon_mask(points, image_shape)
    start, end = points[0], points[-1]
    rows, cols = image_shape
    x0, x1, y0, y1 = _span(start, end)
    xs = np.arange(cols, dtype=np.float64) + 0.5
    ys = np.arange(rows, dtype=np.float64) + 0.5
    if shape is Shape.RECTANGLE:
        return ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    a, b = (x1 - x0) / 2, (y1 - y0) / 2
    if a <= 0 or b <= 0:
        return np.zeros((rows, cols), dtype=bool)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    u = ((xs - cx) / a) ** 2
    v = ((ys - cy) / b) ** 2
    return (v[:, None] + u[None, :]) <= 1.0


def pixel_area(spacing: Spacing) -> tuple[float, str]:
    """The area of one pixel and its unit: mm² with a PixelSpacing, else 1 px²."""
    if spacing is None:
        return 1.0, "px²"
    return float(spacing[0]) * float(spacing[1]), "mm²"


def to_mm(points: Sequence[Point], spacing: Spacing) -> np.ndarray:
    """(n, 2) points scaled to the patient's mm in the image plane (x by the column spacing, y by the row
    spacing): what lengths, areas and angles are measured in; unscaled pixels without a spacing."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if spacing is None:
        return pts
    return pts * np.array([float(spacing[1]), float(spacing[0])])


def polygon_area(points: Sequence[Point], spacing: Spacing) -> tuple[float, str]:
    """The area of the closed polygon (shoelace formula on the points in mm): mm², or px² without a
    spacing."""
    pts = to_mm(points, spacing)
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    return area, pixel_area(spacing)[1]


def roi_stats(values: np.ndarray, shape: Shape, points: Sequence[Point], spacing: Spacing) -> RoiStats:
    """Mean, SD (population), min, max of ``values`` (a 2D array of modality values) inside the ROI,
    and its area (see :class:`RoiStats`)."""
    if values.ndim != 2 or values.dtype.kind not in "iuf":
        raise MeasurementError(
            f"ROI statistics need a 2D array of modality values, got shape {values.shape} "
            f"dtype {values.dtype}"
        )
    mask = roi_mask(shape, points, (values.shape[0], values.shape[1]))
    inside = values[mask].astype(np.float64)
    unit_area, unit = pixel_area(spacing)
    n = int(inside.size)
    area = polygon_area(points, spacing)[0] if shape is Shape.FREEHAND else n * unit_area
    if n == 0:
        nan = float("nan")
        return RoiStats(nan, nan, nan, nan, 0, area, unit)
    return RoiStats(
        mean=float(inside.mean()),
        sd=float(inside.std()),
        minimum=float(inside.min()),
        maximum=float(inside.max()),
        pixels=n,
        area=area,
        area_unit=unit,
    )


def ruler_length(start: Point, end: Point, spacing: Spacing) -> tuple[float, str]:
    """The distance between two points: mm with a PixelSpacing, else pixels."""
    (x0, y0), (x1, y1) = to_mm([start, end], spacing)
    return math.hypot(float(x1 - x0), float(y1 - y0)), "px" if spacing is None else "mm"


def _direction_angle(u: np.ndarray, v: np.ndarray) -> float:
    """The angle between two vectors in degrees, 0-180 (NaN when one has no length)."""
    nu, nv = float(np.hypot(*u)), float(np.hypot(*v))
    if nu == 0 or nv == 0:
        return float("nan")
    cross = float(u[0] * v[1] - u[1] * v[0])
    dot = float(u[0] * v[0] + u[1] * v[1])
    return math.degrees(math.atan2(abs(cross), dot))


def angle_degrees(m: Measurement, spacing: Spacing) -> float:
    """An angle's size (0-180°, at the vertex ``points[1]``) or a Cobb angle's (the angle between the
    lines p0-p1 and p2-p3, 0-90°), measured in mm so that non-square pixels keep their true aspect; NaN
    when an arm has no length."""
    pts = to_mm(m.points, spacing)
    if m.shape is Shape.ANGLE:
        return _direction_angle(pts[0] - pts[1], pts[2] - pts[1])
    if m.shape is Shape.COBB:
        a = _direction_angle(pts[1] - pts[0], pts[3] - pts[2])
        return min(a, 180.0 - a)
    raise MeasurementError(f"{m.shape.value!r} is not an angle")


def value_unit(modality: str) -> str:
    """The modality values' unit as shown: HU for CT, none otherwise."""
    return "HU" if modality == "CT" else ""


def _num(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 1e5 else f"{value:.4g}"


def stats_text(stats: RoiStats, unit: str) -> str:
    """Three label lines, e.g. ``Mean 40.2 HU  SD 3.1`` / ``Min 12  Max 80`` / ``Area 123.4 mm²``."""
    if stats.pixels == 0:
        return "No pixel inside"
    u = f" {unit}" if unit else ""
    return (
        f"Mean {_num(stats.mean)}{u}  SD {_num(stats.sd)}\n"
        f"Min {_num(stats.minimum)}  Max {_num(stats.maximum)}\n"
        f"Area {stats.area:.1f} {stats.area_unit}"
    )


def angle_text(m: Measurement, spacing: Spacing) -> str:
    """``37.2°`` (``Cobb 12.0°``); ``(pixels)`` is added without a PixelSpacing (square pixels assumed)."""
    deg = angle_degrees(m, spacing)
    prefix = "Cobb " if m.shape is Shape.COBB else ""
    number = "–" if math.isnan(deg) else f"{deg:.1f}°"
    return f"{prefix}{number}" + (" (pixels)" if spacing is None else "")


def measurement_text(m: Measurement, values: np.ndarray | None, spacing: Spacing, unit: str) -> str:
    """The label of a measurement on an image with these modality ``values`` (None: not decoded, or
    colour: no statistics)."""
    if m.shape is Shape.RULER:
        length, length_unit = ruler_length(m.start, m.end, spacing)
        return f"{length:.1f} {length_unit}"
    if m.shape in ANGLE_SHAPES:
        return angle_text(m, spacing)
    if m.shape is Shape.ARROW:
        return m.text
    if values is None or values.ndim != 2:
        if m.shape is Shape.FREEHAND:
            area, area_unit = polygon_area(m.points, spacing)
        else:
            unit_area, area_unit = pixel_area(spacing)
            x0, x1, y0, y1 = _span(m.start, m.end)
            area = (x1 - x0) * (y1 - y0) * unit_area * (math.pi / 4 if m.shape is Shape.ELLIPSE else 1.0)
        return f"Area {area:.1f} {area_unit} (no statistics on this image)"
    return stats_text(roi_stats(values, m.shape, m.points, spacing), unit)
