"""Grayscale Softcopy Presentation States: their graphic and text annotations per referenced image.

Only the annotations are shown; the state's window, spatial transform, shutters and displayed area are
not applied (listed as a note). DISPLAY-unit coordinates (0-1) are kept relative and drawn relative to
the whole image (the displayed area is not applied)."""

from __future__ import annotations

from typing import Any

from viewer.core.errors import ResultObjectError
from viewer.core.foreign.kinds import ResultKind
from viewer.core.foreign.model import (
    EntryKind,
    Graphic,
    GraphicType,
    ImageRef,
    Point,
    ReportEntry,
    ReportObject,
)
from viewer.core.foreign.sr import image_refs

GSPS_TYPES = {
    "POINT": GraphicType.MULTIPOINT,
    "POLYLINE": GraphicType.POLYLINE,
    "INTERPOLATED": GraphicType.POLYLINE,
    "CIRCLE": GraphicType.CIRCLE,
    "ELLIPSE": GraphicType.ELLIPSE,
}
NOT_APPLIED = ("SoftcopyVOILUTSequence", "DisplayedAreaSelectionSequence", "ShutterShape", "ImageRotation")


def _series_images(ds: Any) -> list[ImageRef]:
    out: list[ImageRef] = []
    for series in getattr(ds, "ReferencedSeriesSequence", None) or ():
        for image in getattr(series, "ReferencedImageSequence", None) or ():
            out.extend(image_refs(_as_item(image)))
    return out


class _as_item:
    def __init__(self, ref: Any) -> None:
        self.ReferencedSOPSequence = [ref]


def _graphic(gtype: GraphicType, values: Any, units: str) -> Graphic:
    try:
        flat = [float(v) for v in (values or ())]
    except (TypeError, ValueError) as exc:
        raise ResultObjectError("GraphicData is not numeric") from exc
    if not flat or len(flat) % 2:
        raise ResultObjectError(f"GraphicData holds {len(flat)} values (pairs expected)")
    points: tuple[Point, ...] = tuple(zip(flat[0::2], flat[1::2], strict=True))
    if gtype is GraphicType.POLYLINE and len(points) > 2 and points[0] == points[-1]:
        gtype = GraphicType.POLYGON
    return Graphic(gtype, points, relative=units.strip().upper() == "DISPLAY")


def read_gsps(ds: Any) -> ReportObject:
    """The graphic and text annotations of a GSPS dataset (DISPLAY units kept relative: the viewer
    scales them by the image's size)."""
    all_images = _series_images(ds)
    entries: list[ReportEntry] = []
    referenced: set[ImageRef] = set(all_images)
    for k, annotation in enumerate(getattr(ds, "GraphicAnnotationSequence", None) or (), start=1):
        refs = [
            r
            for image in getattr(annotation, "ReferencedImageSequence", None) or ()
            for r in image_refs(_as_item(image))
        ] or all_images
        referenced.update(refs)
        layer = str(getattr(annotation, "GraphicLayer", "") or "") or f"Annotation {k}"
        for obj in getattr(annotation, "GraphicObjectSequence", None) or ():
            kind = str(getattr(obj, "GraphicType", "") or "").upper()
            gtype = GSPS_TYPES.get(kind)
            if gtype is None:
                raise ResultObjectError(f"GSPS GraphicType {kind!r} is not one of {', '.join(GSPS_TYPES)}")
            graphic = _graphic(
                gtype, getattr(obj, "GraphicData", None), str(getattr(obj, "GraphicAnnotationUnits", ""))
            )
            entries.append(
                ReportEntry(
                    EntryKind.REGION,
                    kind.lower(),
                    graphic.type.value.lower(),
                    group=layer,
                    images=tuple(refs),
                    graphic=graphic,
                )
            )
        for text in getattr(annotation, "TextObjectSequence", None) or ():
            value = str(getattr(text, "UnformattedTextValue", "") or "")
            anchor = getattr(text, "AnchorPoint", None)
            units = str(getattr(text, "AnchorPointAnnotationUnits", "") or "")
            if anchor is None:
                anchor = getattr(text, "BoundingBoxTopLeftHandCorner", None)
                units = str(getattr(text, "BoundingBoxAnnotationUnits", "") or "")
            anchor_point = _graphic(GraphicType.POINT, anchor, units) if anchor is not None else None
            entries.append(
                ReportEntry(
                    EntryKind.TEXT, "text", value, group=layer, images=tuple(refs), graphic=anchor_point
                )
            )
    notes = []
    if any(k in ds for k in NOT_APPLIED):
        notes.append("The state's window, rotation, shutters and displayed area are not applied")
    return ReportObject(
        kind=ResultKind.PRESENTATION_STATE,
        sop_instance_uid=str(getattr(ds, "SOPInstanceUID", "") or ""),
        title=str(getattr(ds, "ContentLabel", "") or "") or "Presentation state",
        description=str(getattr(ds, "ContentDescription", "") or "")
        or str(getattr(ds, "SeriesDescription", "") or ""),
        entries=tuple(entries),
        referenced=frozenset(referenced),
        manufacturer=str(getattr(ds, "Manufacturer", "") or ""),
        notes=tuple(notes),
    )
