"""DICOM SEG (binary, fractional, label map) and Parametric Map objects as masks per source image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from viewer.core.errors import ResultObjectError
from viewer.core.foreign.codes import DEFAULT_COLORS, cielab_to_rgb, code_key, first_item, meaning
from viewer.core.foreign.kinds import PARAMETRIC_MAP_CLASS, ResultKind
from viewer.core.foreign.model import ImageRef, MaskFrame, Segment, SegObject

LABELMAP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
MAP_COLOR = (255, 64, 32)  # a Parametric Map's one "segment"


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ResultObjectError(f"{what} is not an integer: {value!r}") from exc


def _segments(ds: Any) -> tuple[Segment, ...]:
    items = getattr(ds, "SegmentSequence", None)
    if not items:
        raise ResultObjectError("SEG without a SegmentSequence (no segment is described)")
    out = []
    for k, item in enumerate(items):
        number = _int(getattr(item, "SegmentNumber", None), "SegmentNumber")
        fallback = DEFAULT_COLORS[k % len(DEFAULT_COLORS)]
        out.append(
            Segment(
                number=number,
                label=str(getattr(item, "SegmentLabel", "") or "") or f"Segment {number}",
                category=meaning(item, "SegmentedPropertyCategoryCodeSequence"),
                type=meaning(item, "SegmentedPropertyTypeCodeSequence"),
                color=cielab_to_rgb(getattr(item, "RecommendedDisplayCIELabValue", None), fallback),
                algorithm=str(getattr(item, "SegmentAlgorithmName", "") or "")
                or str(getattr(item, "SegmentAlgorithmType", "") or ""),
            )
        )
    if len({s.number for s in out}) != len(out):
        raise ResultObjectError("SEG with two segments of the same SegmentNumber")
    return tuple(out)


NO_UNITS = {"", "1", "no units", "unity", "{ratio}"}  # UCUM "1" and its meanings: a plain number


def _mapping(ds: Any) -> Any:
    """A Parametric Map's (first) Real World Value Mapping item, or None."""
    mapping = first_item(ds, "RealWorldValueMappingSequence")
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if mapping is None:  # where highdicom and most writers put it: a functional group
            mapping = first_item(first_item(ds, groups), "RealWorldValueMappingSequence")
    return mapping


def _map_segment(ds: Any) -> Segment:
    mapping = _mapping(ds)
    quantity = first_item(mapping, "QuantityDefinitionSequence") if mapping is not None else None
    label = (
        (str(getattr(mapping, "LUTLabel", "") or "") if mapping is not None else "")
        or (meaning(quantity, "ConceptCodeSequence") if quantity is not None else "")
        or str(getattr(ds, "ContentLabel", "") or "")
        or "Parametric map"
    )
    unit = meaning(mapping, "MeasurementUnitsCodeSequence") if mapping is not None else ""
    return Segment(1, label, category="Parametric map", type=unit, color=MAP_COLOR)


def _unit(ds: Any) -> str:
    """A Parametric Map's measurement unit (UCUM code value, e.g. ``mL/min``), "" for none or "1"."""
    mapping = _mapping(ds)
    _, value = code_key(mapping, "MeasurementUnitsCodeSequence") if mapping is not None else ("", "")
    return "" if value.strip().lower() in NO_UNITS else value.strip()


def _real_range(ds: Any, lo: float, hi: float) -> tuple[float, float]:
    """The stored value range ``lo``..``hi`` of a Parametric Map in real-world values: through its
    mapping's slope and intercept (a LUT mapping, or none, leaves the stored values)."""
    mapping = _mapping(ds)
    if mapping is None:
        return (lo, hi)
    try:
        slope = float(getattr(mapping, "RealWorldValueSlope", 1.0) or 0.0)
        intercept = float(getattr(mapping, "RealWorldValueIntercept", 0.0) or 0.0)
    except (TypeError, ValueError):
        return (lo, hi)
    if slope == 0.0 or not (np.isfinite(slope) and np.isfinite(intercept)):
        return (lo, hi)
    a, b = lo * slope + intercept, hi * slope + intercept
    return (min(a, b), max(a, b))


def _source(group: Any) -> ImageRef | None:
    """The source image of a frame's Derivation Image Sequence (first one), if any."""
    derivation = first_item(group, "DerivationImageSequence")
    src = first_item(derivation, "SourceImageSequence") if derivation is not None else None
    uid = str(getattr(src, "ReferencedSOPInstanceUID", "") or "") if src is not None else ""
    if not uid:
        return None
    frames = getattr(src, "ReferencedFrameNumber", None)
    if frames is None or frames == "":
        return ImageRef(uid, 0)
    first = frames[0] if isinstance(frames, Sequence) and not isinstance(frames, str) else frames
    number = _int(first, "ReferencedFrameNumber")
    if number < 1:
        raise ResultObjectError(f"ReferencedFrameNumber {number} (frames are numbered from 1)")
    return ImageRef(uid, number - 1)


def _position(group: Any) -> tuple[float, float, float] | None:
    plane = first_item(group, "PlanePositionSequence")
    ipp = getattr(plane, "ImagePositionPatient", None) if plane is not None else None
    if ipp is None or len(ipp) != 3:
        return None
    try:
        x, y, z = (float(v) for v in ipp)
    except (TypeError, ValueError):
        return None
    return (x, y, z)


def _segment_number(group: Any, shared: Any) -> int | None:
    for g in (group, shared):
        ident = first_item(g, "SegmentIdentificationSequence") if g is not None else None
        if ident is not None and getattr(ident, "ReferencedSegmentNumber", None) is not None:
            return _int(ident.ReferencedSegmentNumber, "ReferencedSegmentNumber")
    return None


def _pixels(ds: Any, frames: int, rows: int, columns: int) -> np.ndarray:
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises many types for bad pixel data
        raise ResultObjectError(f"The pixel data cannot be decoded ({type(exc).__name__})") from exc
    if arr.size != frames * rows * columns:
        raise ResultObjectError(
            f"The pixel data holds {arr.size} values, not {frames} frames of {rows}x{columns}"
        )
    return arr.reshape(frames, rows, columns)


def read_seg(ds: Any) -> SegObject:
    """The segments and per-source-image masks of a SEG or Parametric Map dataset (with pixel data)."""
    sop_class = str(getattr(ds, "SOPClassUID", "") or "")
    is_map = sop_class == PARAMETRIC_MAP_CLASS
    rows = _int(getattr(ds, "Rows", None), "Rows")
    columns = _int(getattr(ds, "Columns", None), "Columns")
    if rows <= 0 or columns <= 0:
        raise ResultObjectError(f"Rows/Columns {rows}x{columns}")
    frames = _int(getattr(ds, "NumberOfFrames", 1) or 1, "NumberOfFrames")
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if per_frame is None or len(per_frame) != frames:
        got = 0 if per_frame is None else len(per_frame)
        raise ResultObjectError(f"{frames} frames but {got} Per-frame Functional Groups items")
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    segmentation_type = str(getattr(ds, "SegmentationType", "") or "").upper()
    labelmap = sop_class == LABELMAP_CLASS or segmentation_type == "LABELMAP"
    segments = (_map_segment(ds),) if is_map else _segments(ds)
    known = {s.number for s in segments}
    pixels = _pixels(ds, frames, rows, columns)
    fractional = is_map or segmentation_type == "FRACTIONAL"
    scale, lo, hi = 1.0, 0.0, 1.0
    notes: list[str] = []
    if is_map:
        finite = pixels[np.isfinite(pixels)] if pixels.dtype.kind == "f" else pixels
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        real_lo, real_hi = _real_range(ds, lo, hi)
        notes.append(f"Values shown on the map's own range {real_lo:.3g} to {real_hi:.3g}")
    elif fractional:
        scale = float(_int(getattr(ds, "MaximumFractionalValue", 255) or 255, "MaximumFractionalValue"))
        if scale <= 0:
            raise ResultObjectError(f"MaximumFractionalValue {scale:g}")
    out: list[MaskFrame] = []
    for i, group in enumerate(per_frame):
        image = _source(group) or (_source(shared) if shared is not None else None)
        position = _position(group) or (_position(shared) if shared is not None else None)
        plane = pixels[i]
        if labelmap:
            for value in np.unique(plane):
                if value and int(value) in known:
                    out.append(MaskFrame(int(value), plane == value, image, position))
            continue
        number = 1 if is_map else _segment_number(group, shared)
        if number is None:
            raise ResultObjectError(f"Frame {i + 1} names no segment (Segment Identification Sequence)")
        if number not in known:
            raise ResultObjectError(f"Frame {i + 1} references segment {number}, which is not described")
        if is_map:
            span = hi - lo if hi > lo else 1.0
            mask = np.clip((np.nan_to_num(plane.astype(np.float32), nan=lo) - lo) / span, 0.0, 1.0)
        elif fractional:
            mask = np.clip(plane.astype(np.float32) / scale, 0.0, 1.0)
        else:
            mask = plane != 0
        if not mask.any():
            continue  # an empty frame: nothing to draw
        out.append(MaskFrame(number, np.ascontiguousarray(mask), image, position))
    referenced = tuple(
        str(getattr(item, "SeriesInstanceUID", "") or "")
        for item in getattr(ds, "ReferencedSeriesSequence", None) or ()
    )
    description = str(getattr(ds, "SeriesDescription", "") or "") or str(
        getattr(ds, "ContentLabel", "") or ""
    )
    return SegObject(
        kind=ResultKind.PARAMETRIC_MAP if is_map else ResultKind.SEG,
        sop_instance_uid=str(getattr(ds, "SOPInstanceUID", "") or ""),
        description=description,
        segments=segments,
        frames=tuple(out),
        fractional=fractional,
        frame_of_reference_uid=str(getattr(ds, "FrameOfReferenceUID", "") or ""),
        referenced_series=tuple(r for r in referenced if r),
        notes=tuple(notes),
        value_range=_real_range(ds, lo, hi) if is_map else (lo, hi),
        unit=_unit(ds) if is_map else "",
    )
