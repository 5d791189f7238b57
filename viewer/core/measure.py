"""Measurements (distance ruler, ellipse and rectangle ROIs): what they are, which image they belong to,
and their numbers. Qt-free.

Coordinates are the image's own pixel coordinates ``(x, y)`` = (column, row), continuous: pixel
``(c, r)`` covers ``[c, c+1) x [r, r+1)`` and its centre is ``(c + 0.5, r + 0.5)``. A pixel is inside an
ROI when its centre is. Lengths and areas use the PixelSpacing (row, column) in mm, or pixels without it.
Statistics are computed from the slice's modality values (HU for CT: the volume's int16/float32 data),
never from display-windowed values.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from viewer.core.errors import MeasurementError

NATIVE_PLANE = "native"  # the stack's own slices (MPR planes use the Orientation value)

Point = tuple[float, float]  # (x, y) = (column, row), image pixel coordinates
Spacing = tuple[float, float] | None  # (row, column) mm, None without a usable PixelSpacing


class Shape(str, Enum):
    RULER = "ruler"
    ELLIPSE = "ellipse"
    RECTANGLE = "rectangle"


ROI_SHAPES = (Shape.ELLIPSE, Shape.RECTANGLE)


@dataclass(frozen=True)
class ImageRef:
    """The one image a measurement belongs to.

    Native slices: the SOP Instance UID and frame (0-based) of the displayed frame, whatever file it came
    from. MPR planes: ``plane`` is the orientation (``"coronal"`` ...), ``sop_uid`` is empty and ``frame``
    the plane's index in the series' reslice grid.
    """

    study_uid: str
    series_uid: str
    plane: str
    sop_uid: str
    frame: int


@dataclass(frozen=True)
class Measurement:
    shape: Shape
    ref: ImageRef
    start: Point
    end: Point
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class RoiStats:
    """Statistics of the modality values inside an ROI; ``pixels`` is 0 when no pixel centre is inside
    (then mean, sd, minimum and maximum are NaN)."""

    mean: float
    sd: float
    minimum: float
    maximum: float
    pixels: int
    area: float
    area_unit: str  # "mm²" or "px"


def _span(start: Point, end: Point) -> tuple[float, float, float, float]:
    x0, x1 = sorted((float(start[0]), float(end[0])))
    y0, y1 = sorted((float(start[1]), float(end[1])))
    return x0, x1, y0, y1


def roi_mask(shape: Shape, start: Point, end: Point, image_shape: tuple[int, int]) -> np.ndarray:
    """Boolean (rows, columns) mask of the pixels whose centres lie inside the ROI spanned by the
    corners ``start`` and ``end`` (the ellipse is inscribed in that rectangle)."""
    if shape not in ROI_SHAPES:
        raise MeasurementError(f"{shape.value!r} is not an area ROI (ellipse or rectangle)")
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
    """The area of one pixel and its unit: mm² with a PixelSpacing, else 1 px."""
    if spacing is None:
        return 1.0, "px"
    return float(spacing[0]) * float(spacing[1]), "mm²"


def roi_stats(values: np.ndarray, shape: Shape, start: Point, end: Point, spacing: Spacing) -> RoiStats:
    """Mean, SD (population), min, max of ``values`` (a 2D array of modality values) inside the ROI,
    and its area (pixel count × pixel area)."""
    if values.ndim != 2 or values.dtype.kind not in "iuf":
        raise MeasurementError(
            f"ROI statistics need a 2D array of modality values, got shape {values.shape} "
            f"dtype {values.dtype}"
        )
    mask = roi_mask(shape, start, end, (values.shape[0], values.shape[1]))
    inside = values[mask].astype(np.float64)
    unit_area, unit = pixel_area(spacing)
    n = int(inside.size)
    if n == 0:
        nan = float("nan")
        return RoiStats(nan, nan, nan, nan, 0, 0.0, unit)
    return RoiStats(
        mean=float(inside.mean()),
        sd=float(inside.std()),
        minimum=float(inside.min()),
        maximum=float(inside.max()),
        pixels=n,
        area=n * unit_area,
        area_unit=unit,
    )


def ruler_length(start: Point, end: Point, spacing: Spacing) -> tuple[float, str]:
    """The distance between two points: mm with a PixelSpacing, else pixels."""
    dx, dy = float(end[0]) - float(start[0]), float(end[1]) - float(start[1])
    if spacing is None:
        return math.hypot(dx, dy), "px"
    return math.hypot(dx * float(spacing[1]), dy * float(spacing[0])), "mm"


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


def measurement_text(m: Measurement, values: np.ndarray | None, spacing: Spacing, unit: str) -> str:
    """The label of a measurement on an image with these modality ``values`` (None: not decoded, or
    colour: no statistics)."""
    if m.shape is Shape.RULER:
        length, length_unit = ruler_length(m.start, m.end, spacing)
        return f"{length:.1f} {length_unit}"
    if values is None or values.ndim != 2:
        unit_area, area_unit = pixel_area(spacing)
        x0, x1, y0, y1 = _span(m.start, m.end)
        area = (x1 - x0) * (y1 - y0) * unit_area * (math.pi / 4 if m.shape is Shape.ELLIPSE else 1.0)
        return f"Area {area:.1f} {area_unit} (no statistics on this image)"
    return stats_text(roi_stats(values, m.shape, m.start, m.end, spacing), unit)
