"""The reader's measurements of one series as a TID 1500 Measurement Report (Comprehensive 3D SR).

Each ellipse, rectangle or freehand ROI is a TID 1410 planar ROI group (the ROI as an image region in
the source slice's pixel coordinates, DICOM's convention: (0, 0) is the top-left corner of the top-left
pixel; a freehand ROI as a closed POLYLINE) with its mean, standard deviation, minimum and maximum (for
CT: Attenuation Coefficient in HU with the statistic as derivation) and its area (SCT 42798000 *Area*,
UCUM ``mm2``, or ``{pixels}`` without PixelSpacing); each ruler is a TID 1501 group with a Length (SCT
410668003, ``mm``) and its two end points; each angle a TID 1501 group with an Angle (SCT 1483009, UCUM
``deg``) and its three points, each Cobb angle one with a Cobb angle (SCT 285285000, ``deg``) and its two
lines. An arrow is a TID 1410 group whose region is the POINT at its tip; its text (the reader's free
text, which may name the patient) is its tracking identifier only when identifiers are included, else
it is ``arrow``. Only measurements on the series' own slices are written (an MPR plane is no stored image
to reference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

from viewer.core.airesults.identity import SourceSeries, evidence_item, mark_deidentified, stable_uid
from viewer.core.dicom.model import Stack
from viewer.core.errors import MeasurementError
from viewer.core.measure import (
    NATIVE_PLANE,
    ROI_SHAPES,
    Measurement,
    RoiStats,
    Shape,
    Spacing,
    angle_degrees,
    roi_stats,
    ruler_length,
)

MANUFACTURER: Final = "Slicewise"
MEASUREMENT_SR_SERIES_NUMBER: Final = 9903
SERIES_DESCRIPTION: Final = "Slicewise measurements (research use only)"
IMAGING_PROCEDURE: Final = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")
PIXELS_UNIT: Final = hd.sr.CodedConcept("{pixels}", "UCUM", "pixels")
HU: Final = hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit")
ANGLE_CONCEPTS: Final = {Shape.ANGLE: codes.SCT.Angle, Shape.COBB: codes.SCT.CobbAngle}
TRACKING_TEXT_MAX: Final = 64  # the Tracking Identifier is a TEXT item; keep it to an LO's length
STATISTICS: Final = (
    (codes.SCT.Mean, "mean"),
    (codes.SCT.StandardDeviation, "sd"),
    (codes.SCT.Minimum, "minimum"),
    (codes.SCT.Maximum, "maximum"),
)


@dataclass(frozen=True)
class MeasuredItem:
    """One measurement with its slice's place in the series and its numbers (stats for an ROI)."""

    measurement: Measurement
    slice_index: int
    spacing: Spacing
    stats: RoiStats | None = None


def _source_image(source: SourceSeries, index: int) -> hd.sr.SourceImageForRegion:
    frame = source.frame(index)
    return hd.sr.SourceImageForRegion(
        source.sop_class_uid, source.slice_uids[index], [frame] if frame is not None else None
    )


def _graphic(m: Measurement) -> tuple[hd.sr.GraphicTypeValues, np.ndarray]:
    (x0, y0), (x1, y1) = m.start, m.end
    if m.shape is Shape.FREEHAND:  # a closed polyline: the first point again at the end
        return hd.sr.GraphicTypeValues.POLYLINE, np.array([*m.points, m.points[0]], dtype=float)
    if m.shape is Shape.ARROW:
        return hd.sr.GraphicTypeValues.POINT, np.array([m.start], dtype=float)
    if m.shape is Shape.ANGLE:
        return hd.sr.GraphicTypeValues.POLYLINE, np.array(m.points, dtype=float)
    if m.shape is Shape.RULER:
        return hd.sr.GraphicTypeValues.POLYLINE, np.array([[x0, y0], [x1, y1]], dtype=float)
    if m.shape is Shape.RECTANGLE:
        pts = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        return hd.sr.GraphicTypeValues.POLYLINE, np.array(pts, dtype=float)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    a, b = abs(x1 - x0) / 2, abs(y1 - y0) / 2
    major = [[cx - a, cy], [cx + a, cy]]
    minor = [[cx, cy - b], [cx, cy + b]]
    if b > a:
        major, minor = minor, major
    return hd.sr.GraphicTypeValues.ELLIPSE, np.array(major + minor, dtype=float)


def _tracking(m: Measurement, kind: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(
        uid=stable_uid(f"slicewise/measurement/{m.id}"), identifier=f"{kind} {m.id[:8]}"
    )


def _roi_group(
    item: MeasuredItem, source: SourceSeries, ct: bool
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    m, stats = item.measurement, item.stats
    if stats is None or stats.pixels == 0:
        raise MeasurementError(f"The {m.shape.value} ROI {m.id[:8]} has no statistics (no pixel inside)")
    graphic_type, data = _graphic(m)
    region = hd.sr.ImageRegion(graphic_type, data, _source_image(source, item.slice_index))
    values = []
    for code, attr in STATISTICS:
        if ct:
            values.append(
                hd.sr.Measurement(
                    codes.DCM.AttenuationCoefficient, float(getattr(stats, attr)), HU, derivation=code
                )
            )
        else:
            values.append(hd.sr.Measurement(code, float(getattr(stats, attr)), codes.UCUM.NoUnits))
    area_unit = codes.UCUM.SquareMillimeter if stats.area_unit == "mm²" else PIXELS_UNIT
    values.append(hd.sr.Measurement(codes.SCT.Area, float(stats.area), area_unit))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(m, f"{m.shape.value} ROI"),
        referenced_region=region,
        measurements=values,
    )


def _arrow_group(
    item: MeasuredItem, source: SourceSeries, include_identity: bool
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    m = item.measurement
    graphic_type, data = _graphic(m)
    region = hd.sr.ImageRegion(graphic_type, data, _source_image(source, item.slice_index))
    text = " ".join(m.text.split()) if include_identity else ""
    label = f"arrow: {text}" if text else "arrow"
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=stable_uid(f"slicewise/measurement/{m.id}"), identifier=label[:TRACKING_TEXT_MAX]
        ),
        referenced_region=region,
    )


def _angle_group(item: MeasuredItem, source: SourceSeries) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    m = item.measurement
    degrees = angle_degrees(m, item.spacing)
    if math.isnan(degrees):  # an arm without length
        raise MeasurementError(f"The {m.shape.value} {m.id[:8]} has an arm of no length")
    image = _source_image(source, item.slice_index)
    if m.shape is Shape.COBB:
        coords = [
            hd.sr.CoordinatesForMeasurement(
                hd.sr.GraphicTypeValues.POLYLINE, np.array(m.points[k : k + 2], dtype=float), image
            )
            for k in (0, 2)
        ]
    else:
        graphic_type, data = _graphic(m)
        coords = [hd.sr.CoordinatesForMeasurement(graphic_type, data, image)]
    value = hd.sr.Measurement(
        ANGLE_CONCEPTS[m.shape], float(degrees), codes.UCUM.Degree, referenced_coordinates=coords
    )
    name = "Cobb angle" if m.shape is Shape.COBB else "angle"
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(m, name), measurements=[value]
    )


def _ruler_group(item: MeasuredItem, source: SourceSeries) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    m = item.measurement
    length, unit = ruler_length(m.start, m.end, item.spacing)
    graphic_type, data = _graphic(m)
    coords = hd.sr.CoordinatesForMeasurement(graphic_type, data, _source_image(source, item.slice_index))
    value = hd.sr.Measurement(
        codes.SCT.Length,
        float(length),
        codes.UCUM.Millimeter if unit == "mm" else PIXELS_UNIT,
        referenced_coordinates=[coords],
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(m, "ruler"), measurements=[value]
    )


def build_measurement_sr(
    items: Sequence[MeasuredItem], source: SourceSeries, modality: str, *, include_identity: bool = False
) -> hd.sr.Comprehensive3DSR:
    """The Measurement Report of ``items`` (measurements on ``source``'s own slices), de-identified
    unless ``include_identity``."""
    native = [i for i in items if i.measurement.ref.plane == NATIVE_PLANE]
    if not native:
        raise MeasurementError(
            "No measurement on this series' own slices to export (MPR planes are not stored)"
        )
    groups: list[
        hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    ] = []
    for item in native:
        ref = item.measurement.ref
        if (
            not 0 <= item.slice_index < len(source.slice_uids)
            or source.slice_uids[item.slice_index] != ref.sop_uid
        ):
            raise MeasurementError(
                f"Measurement {item.measurement.id[:8]} names slice {item.slice_index}, "
                "which is not its image in this series"
            )
        shape = item.measurement.shape
        if shape is Shape.RULER:
            groups.append(_ruler_group(item, source))
        elif shape in ANGLE_CONCEPTS:
            groups.append(_angle_group(item, source))
        elif shape is Shape.ARROW:
            groups.append(_arrow_group(item, source, include_identity))
        else:
            groups.append(_roi_group(item, source, modality == "CT"))
    device = hd.sr.ObserverContext(
        codes.DCM.Device,
        hd.sr.DeviceObserverIdentifyingAttributes(uid=stable_uid("slicewise/viewer"), name=MANUFACTURER),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=groups,
    )
    used = sorted({i.slice_index for i in native})
    evidence = [
        evidence_item(
            source, source.slice_uids[i], source.sop_class_uid, source.series_instance_uid, include_identity
        )
        for i in dict.fromkeys(used)
    ]
    evidence = list({ds.SOPInstanceUID: ds for ds in evidence}.values())
    mode = "identified" if include_identity else "deidentified"
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=stable_uid(f"slicewise/measurement-sr/series/{source.study_instance_uid}/{mode}"),
        series_number=MEASUREMENT_SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SERIES_DESCRIPTION,
    )
    if not include_identity:
        mark_deidentified(sr, "Slicewise: identifiers omitted, UIDs retained")
    return sr


def write_measurement_sr(
    stack: Stack, placed: Sequence[tuple[Measurement, int]], folder: Path, include_identity: bool
) -> Path:
    """Decode the slices that carry ROIs, compute their statistics from the modality values, build the
    SR of ``placed`` (each measurement with its slice index in ``stack``) and write it into ``folder``
    (run in the helper process of :mod:`viewer.core.airesults.process`, so the viewer neither decodes
    nor holds the GIL for highdicom). An ROI with no pixel centre inside and an angle with an arm of no
    length are left out."""
    from viewer.core.airesults.identity import read_first_header, source_from_stack
    from viewer.core.airesults.writer import write_dataset
    from viewer.core.dicom.volume import StackVolume

    items = []
    with StackVolume(stack) as volume:
        for m, i in placed:
            spacing = stack.slices[i].pixel_spacing
            stats = None
            if m.shape in ROI_SHAPES:
                stats = roi_stats(volume.get_slice(i), m.shape, m.points, spacing)
            if m.shape in ANGLE_CONCEPTS and math.isnan(angle_degrees(m, spacing)):
                continue
            if stats is None or stats.pixels:
                items.append(MeasuredItem(m, i, spacing, stats))
    source = source_from_stack(stack, read_first_header(stack))
    sr = build_measurement_sr(items, source, stack.modality, include_identity=include_identity)
    return write_dataset(sr, folder)
