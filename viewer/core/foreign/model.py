"""Plain values parsed from others' result objects (pickled back from the helper process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from viewer.core.foreign.kinds import ResultKind

RGB = tuple[int, int, int]
Point = tuple[float, float]  # (column, row) in image pixel units, (0, 0) the top-left corner of the image


@dataclass(frozen=True)
class ImageRef:
    """One referenced image: SOP Instance UID and 0-based frame (``SliceSource.frame``)."""

    sop_instance_uid: str
    frame: int = 0


@dataclass(frozen=True)
class Segment:
    """One segment of a SEG (or the one quantity of a Parametric Map)."""

    number: int
    label: str
    category: str = ""  # SegmentedPropertyCategory meaning, e.g. "Tissue"
    type: str = ""  # SegmentedPropertyType meaning, e.g. "Liver"
    color: RGB = (255, 80, 80)  # from RecommendedDisplayCIELabValue, else a default per segment
    algorithm: str = ""  # SegmentAlgorithmName (or type when unnamed)


@dataclass(frozen=True, eq=False)
class MaskFrame:
    """One frame of a SEG: one segment's mask on one source image.

    ``mask`` is bool (BINARY) or float32 in 0..1 (FRACTIONAL, probability maps); ``image`` is the
    source image the frame says it was derived from, else None (placed by ``position``)."""

    segment: int
    mask: np.ndarray
    image: ImageRef | None = None
    position: tuple[float, float, float] | None = None  # ImagePositionPatient of the frame


@dataclass(frozen=True, eq=False)
class SegObject:
    """A SEG or Parametric Map: its segments and per-frame masks."""

    kind: ResultKind
    sop_instance_uid: str
    description: str  # SeriesDescription (or ContentLabel)
    segments: tuple[Segment, ...]
    frames: tuple[MaskFrame, ...]
    fractional: bool = False
    frame_of_reference_uid: str = ""
    referenced_series: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what is not shown and why
    # what a mask value of 0 and 1 stand for: (0, 1) for a fractional SEG (a probability or fraction),
    # a Parametric Map's own range of real values (``unit``: its measurement unit, "" for none)
    value_range: tuple[float, float] = (0.0, 1.0)
    unit: str = ""


class GraphicType(str, Enum):
    POINT = "POINT"
    MULTIPOINT = "MULTIPOINT"
    POLYLINE = "POLYLINE"
    POLYGON = "POLYGON"  # a closed polyline (first point repeated)
    CIRCLE = "CIRCLE"  # centre, a point on the circle
    ELLIPSE = "ELLIPSE"  # major axis ends, minor axis ends


@dataclass(frozen=True)
class Graphic:
    """A 2D region or point on one image, in image pixel units (SCOORD or GSPS PIXEL convention)."""

    type: GraphicType
    points: tuple[Point, ...]
    relative: bool = False  # GSPS DISPLAY units: fractions of the image's width and height

    def in_pixels(self, rows: int, columns: int) -> Graphic:
        """The graphic in image pixels (relative points scaled by the image's size)."""
        if not self.relative:
            return self
        return Graphic(self.type, tuple((x * columns, y * rows) for x, y in self.points))


class EntryKind(str, Enum):
    MEASUREMENT = "measurement"  # NUM
    FINDING = "finding"  # CODE (qualitative evaluation, finding type of a group)
    TEXT = "text"
    REGION = "region"  # SCOORD / GSPS graphic
    IMAGE = "image"  # a referenced (key) image


@dataclass(frozen=True)
class ReportEntry:
    """One row of an SR or presentation state: what, its value, where (images) and its outline."""

    kind: EntryKind
    name: str
    value: str = ""
    group: str = ""  # the measurement group: tracking identifier, else finding type
    numeric: float | None = None
    unit: str = ""
    tracking_uid: str = ""
    images: tuple[ImageRef, ...] = ()
    graphic: Graphic | None = None
    code: tuple[str, str] = ("", "")  # (scheme, value) of the concept name


@dataclass(frozen=True)
class ReportObject:
    """An SR (any content tree: TID 1500, an AI vendor's, a Basic Text SR) or a presentation state."""

    kind: ResultKind
    sop_instance_uid: str
    title: str  # the root concept (e.g. "Imaging Measurement Report") or the presentation label
    description: str  # SeriesDescription
    entries: tuple[ReportEntry, ...]
    referenced: frozenset[ImageRef] = field(default_factory=frozenset)  # every image it names
    manufacturer: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResultFailure:
    """A result object that could not be read: where (shown on screen only), the code and why."""

    display_name: str
    kind: ResultKind
    code: str
    reason: str


ForeignObject = SegObject | ReportObject
