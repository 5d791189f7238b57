"""SR content trees (TID 1500 measurement reports, AI vendors' result SRs, Basic Text SRs, key object
selections) as a flat list of entries: measurements, findings, regions and images, each with the
images it refers to and its measurement group.

The tree is walked generically rather than through one template's API, so that reports which follow
TID 1500 loosely (or another template) still show what they say; measurement groups (TID 1501/1410/1411,
container "Measurement Group") name their entries by tracking identifier, else by finding type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from viewer.core.errors import ResultObjectError
from viewer.core.foreign.codes import code_key, first_item, meaning
from viewer.core.foreign.kinds import ResultKind
from viewer.core.foreign.model import EntryKind, Graphic, GraphicType, ImageRef, ReportEntry, ReportObject

MAX_ITEMS = 100_000  # content items walked per SR (a hostile tree cannot run forever)
MAX_DEPTH = 64
TRACKING_ID = ("DCM", "112039")
TRACKING_UID = ("DCM", "112040")
FINDING = ("DCM", "121071")
IMAGE_LIBRARY = ("DCM", "111028")
MEASUREMENT_GROUP = ("DCM", "125007")
SOURCE_IMAGES = {("SCT", "260753009"), ("SRT", "R-10217"), ("DCM", "121112")}  # Source, Source of Measurement
IMAGE_TYPES = frozenset({"IMAGE", "COMPOSITE"})  # a key object selection may reference images as COMPOSITE
_NAMING = {TRACKING_ID, TRACKING_UID, FINDING}  # name the group, not listed as entries
SCOORD_TYPES = {t.value: t for t in GraphicType if t is not GraphicType.POLYGON}


@dataclass(frozen=True)
class _Group:
    label: str = ""
    tracking_uid: str = ""
    images: tuple[ImageRef, ...] = ()


def image_refs(item: Any) -> list[ImageRef]:
    """The images of an IMAGE content item (or an evidence item): one per referenced frame."""
    out: list[ImageRef] = []
    for ref in getattr(item, "ReferencedSOPSequence", None) or ():
        uid = str(getattr(ref, "ReferencedSOPInstanceUID", "") or "")
        if not uid:
            continue
        frames = getattr(ref, "ReferencedFrameNumber", None)
        if frames is None or frames == "":
            out.append(ImageRef(uid, 0))
            continue
        values = (
            frames if isinstance(frames, list | tuple) or type(frames).__name__ == "MultiValue" else [frames]
        )
        for f in values:
            try:
                number = int(f)
            except (TypeError, ValueError) as exc:
                raise ResultObjectError(f"ReferencedFrameNumber {f!r} is not a number") from exc
            out.append(ImageRef(uid, max(number - 1, 0)))
    return out


def scoord_graphic(item: Any) -> Graphic:
    """A SCOORD item's graphic (column, row pairs in image pixels)."""
    kind = str(getattr(item, "GraphicType", "") or "").upper()
    gtype: GraphicType | None = SCOORD_TYPES.get(kind)
    if gtype is None:
        raise ResultObjectError(f"SCOORD GraphicType {kind!r} is not one of {', '.join(SCOORD_TYPES)}")
    data = getattr(item, "GraphicData", None)
    try:
        values = [float(v) for v in (data or ())]
    except (TypeError, ValueError) as exc:
        raise ResultObjectError("SCOORD GraphicData is not numeric") from exc
    if not values or len(values) % 2:
        raise ResultObjectError(f"SCOORD GraphicData holds {len(values)} values (pairs expected)")
    points = tuple(zip(values[0::2], values[1::2], strict=True))
    needed = {GraphicType.CIRCLE: 2, GraphicType.ELLIPSE: 4, GraphicType.POINT: 1}.get(gtype)
    if needed is not None and len(points) != needed:
        raise ResultObjectError(f"SCOORD {gtype.value} with {len(points)} points ({needed} expected)")
    if gtype is GraphicType.POLYLINE and len(points) > 2 and points[0] == points[-1]:
        gtype = GraphicType.POLYGON
    return Graphic(gtype, points)


def _unit(item: Any) -> str:
    units = first_item(item, "MeasurementUnitsCodeSequence")
    if units is None:
        return ""
    value = str(getattr(units, "CodeValue", "") or "")
    if value in ("1", "{ratio}", "no units") or value.startswith("{"):
        return ""
    if "[" in value or not value:
        return str(getattr(units, "CodeMeaning", "") or value)
    return value


def _number(item: Any) -> tuple[float | None, str, str]:
    """(value, text, unit) of a NUM item."""
    mv = first_item(item, "MeasuredValueSequence")
    if mv is None:
        reason = meaning(item, "NumericValueQualifierCodeSequence")
        return None, reason or "no value", ""
    raw: Any = getattr(mv, "NumericValue", None)
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise ResultObjectError(f"NUM value {raw!r} is not a number") from exc
    unit = _unit(mv)
    text = f"{value:.4g}" + (f" {unit}" if unit else "")
    return value, text, unit


def _children(item: Any) -> list[Any]:
    return list(getattr(item, "ContentSequence", None) or ())


class _Walker:
    def __init__(self) -> None:
        self.entries: list[ReportEntry] = []
        self.referenced: set[ImageRef] = set()
        self.count = 0
        self.skipped_3d = 0

    def walk(self, items: Iterable[Any], group: _Group, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ResultObjectError(f"Content tree deeper than {MAX_DEPTH} levels")
        items = list(items)
        group = self._group_facts(items, group)
        for item in items:
            self.count += 1
            if self.count > MAX_ITEMS:
                raise ResultObjectError(f"More than {MAX_ITEMS} content items")
            self._item(item, group, depth)

    def _group_facts(self, items: list[Any], group: _Group) -> _Group:
        """A container's tracking identifier, finding type and source images name its entries."""
        label, uid, images = "", "", []
        finding = ""
        for item in items:
            name = code_key(item, "ConceptNameCodeSequence")
            vtype = str(getattr(item, "ValueType", "") or "").upper()
            if name == TRACKING_ID and vtype == "TEXT":
                label = str(getattr(item, "TextValue", "") or "")
            elif name == TRACKING_UID and vtype == "UIDREF":
                uid = str(getattr(item, "UID", "") or "")
            elif name == FINDING and vtype == "CODE":
                finding = meaning(item, "ConceptCodeSequence")
            elif vtype in IMAGE_TYPES and name in SOURCE_IMAGES:
                images.extend(image_refs(item))
            elif vtype == "SCOORD":  # a planar ROI group's region: its image is the group's
                images.extend(r for c in _children(item) for r in image_refs(c))
        if not (label or uid or finding or images):
            return group
        return _Group(
            label=label or finding or group.label,
            tracking_uid=uid or group.tracking_uid,
            images=tuple(images) or group.images,
        )

    def _item(self, item: Any, group: _Group, depth: int) -> None:
        vtype = str(getattr(item, "ValueType", "") or "").upper()
        relationship = str(getattr(item, "RelationshipType", "") or "").upper()
        if relationship == "HAS OBS CONTEXT" or (relationship == "HAS CONCEPT MOD" and depth == 0):
            return  # who observed, the language, the procedure: about the report, not findings
        name_key = code_key(item, "ConceptNameCodeSequence")
        name = meaning(item, "ConceptNameCodeSequence")
        children = _children(item)
        own_images = [
            r
            for c in children
            if str(getattr(c, "ValueType", "")).upper() in IMAGE_TYPES
            for r in image_refs(c)
        ]
        base = ReportEntry(
            EntryKind.TEXT, name, group=group.label, tracking_uid=group.tracking_uid, code=name_key
        )
        if vtype == "CONTAINER":
            if name_key == IMAGE_LIBRARY:  # every image the report used: referenced, not listed
                self._collect(children, depth + 1)
                return
            inner = _Group() if name_key == MEASUREMENT_GROUP else group
            self.walk(children, inner, depth + 1)
            return
        if vtype in IMAGE_TYPES:
            refs = image_refs(item)
            self.referenced.update(refs)
            in_group = bool(group.label or group.tracking_uid)
            if name_key not in SOURCE_IMAGES or not in_group:  # a group's source images are on its entries
                self.entries.append(replace(base, kind=EntryKind.IMAGE, value="image", images=tuple(refs)))
            return
        if vtype == "SCOORD":
            graphic = scoord_graphic(item)
            refs = own_images or list(group.images[:1])
            self.referenced.update(refs)
            self.entries.append(
                replace(
                    base,
                    kind=EntryKind.REGION,
                    value=graphic.type.value.lower(),
                    images=tuple(refs),
                    graphic=graphic,
                )
            )
            return
        if vtype == "SCOORD3D":
            self.skipped_3d += 1
            return
        if name_key in _NAMING:
            if name_key == FINDING and vtype == "CODE":  # the group's finding: a row of its own
                self.entries.append(
                    replace(
                        base,
                        kind=EntryKind.FINDING,
                        value=meaning(item, "ConceptCodeSequence"),
                        images=group.images,
                    )
                )
            return
        region = None
        for child in children:  # a measurement's own region (TID 300 "inferred from" a SCOORD)
            if str(getattr(child, "ValueType", "")).upper() == "SCOORD":
                region = scoord_graphic(child)
                own_images.extend(r for c in _children(child) for r in image_refs(c))
        images = tuple(own_images) or group.images
        self.referenced.update(images)
        if vtype == "NUM":
            value, text, unit = _number(item)
            self.entries.append(
                replace(
                    base,
                    kind=EntryKind.MEASUREMENT,
                    value=text,
                    numeric=value,
                    unit=unit,
                    images=images,
                    graphic=region,
                )
            )
        elif vtype == "CODE":
            self.entries.append(
                replace(
                    base,
                    kind=EntryKind.FINDING,
                    value=meaning(item, "ConceptCodeSequence"),
                    images=images,
                    graphic=region,
                )
            )
        elif vtype in ("TEXT", "DATETIME", "DATE", "TIME", "PNAME", "UIDREF"):
            text = str(
                getattr(item, "TextValue", None)
                or getattr(item, "DateTime", None)
                or getattr(item, "Date", None)
                or getattr(item, "Time", None)
                or getattr(item, "PersonName", None)
                or getattr(item, "UID", "")
                or ""
            )
            if vtype == "TEXT" and text:
                self.entries.append(replace(base, value=text, images=images))
        for child in children:  # e.g. a finding's own qualitative evaluations, a NUM's derivation
            cvt = str(getattr(child, "ValueType", "")).upper()
            if cvt in ("NUM", "CODE", "TEXT", "CONTAINER"):
                self.walk([child], replace(group, images=images or group.images), depth + 1)

    def _collect(self, items: Iterable[Any], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ResultObjectError(f"Content tree deeper than {MAX_DEPTH} levels")
        for item in items:
            self.count += 1
            if self.count > MAX_ITEMS:
                raise ResultObjectError(f"More than {MAX_ITEMS} content items")
            if str(getattr(item, "ValueType", "")).upper() in IMAGE_TYPES:
                self.referenced.update(image_refs(item))
            self._collect(_children(item), depth + 1)


def evidence_refs(ds: Any) -> set[ImageRef]:
    """The images of the SR's evidence sequences (Current Requested Procedure / Pertinent Other)."""
    out: set[ImageRef] = set()
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in getattr(ds, keyword, None) or ():
            for series in getattr(study, "ReferencedSeriesSequence", None) or ():
                for ref in getattr(series, "ReferencedSOPSequence", None) or ():
                    uid = str(getattr(ref, "ReferencedSOPInstanceUID", "") or "")
                    if uid:
                        out.add(ImageRef(uid, 0))
    return out


def read_sr(ds: Any) -> ReportObject:
    """The entries of an SR dataset's content tree."""
    if str(getattr(ds, "ValueType", "") or "").upper() != "CONTAINER":
        raise ResultObjectError("SR root is not a CONTAINER content item (ValueType missing or wrong)")
    if "ContentSequence" not in ds:
        raise ResultObjectError("SR without a ContentSequence (an empty report)")
    walker = _Walker()
    walker.walk(_children(ds), _Group(), 0)
    notes = []
    if walker.skipped_3d:
        notes.append(f"{walker.skipped_3d} 3D region(s) (SCOORD3D) not drawn")
    referenced = walker.referenced | evidence_refs(ds)
    return ReportObject(
        kind=ResultKind.SR,
        sop_instance_uid=str(getattr(ds, "SOPInstanceUID", "") or ""),
        title=meaning(ds, "ConceptNameCodeSequence") or "Structured report",
        description=str(getattr(ds, "SeriesDescription", "") or ""),
        entries=tuple(walker.entries),
        referenced=frozenset(referenced),
        manufacturer=str(getattr(ds, "Manufacturer", "") or ""),
        notes=tuple(notes),
    )
