"""The measurement SR (TID 1500) of a written CT series, read back with highdicom."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from tests.factories import CANARY_NAME, write_ct_series
from viewer.core.airesults.identity import read_first_header, source_from_stack
from viewer.core.airesults.writer import dataset_bytes
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import Stack
from viewer.core.errors import MeasurementError
from viewer.core.measure import NATIVE_PLANE, ImageRef, Measurement, Shape, roi_stats
from viewer.core.measure_sr import MeasuredItem, build_measurement_sr


def _stack(tmp_path: Path) -> Stack:
    write_ct_series(tmp_path / "ct", 6)
    (stack,) = load_paths([str(tmp_path / "ct")]).all_stacks()
    return stack


def test_rois_and_a_ruler_round_trip_with_their_statistics(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    source = source_from_stack(stack, read_first_header(stack))
    spacing = stack.slices[2].pixel_spacing
    info = stack.slices[2]
    ref = ImageRef(
        stack.study_instance_uid, stack.series_instance_uid, NATIVE_PLANE, info.sop_instance_uid, 0
    )
    values = np.where(np.arange(64)[None, :] < 32, 30, -1000).astype(np.int16).repeat(64, axis=0)
    ellipse = Measurement(Shape.ELLIPSE, ref, ((20.0, 20.0), (44.0, 36.0)))
    rect = Measurement(Shape.RECTANGLE, ref, ((10.0, 10.0), (20.0, 30.0)))
    ruler = Measurement(Shape.RULER, ref, ((0.0, 0.0), (30.0, 40.0)))
    items = [
        MeasuredItem(
            ellipse, 2, spacing, roi_stats(values, Shape.ELLIPSE, (ellipse.start, ellipse.end), spacing)
        ),
        MeasuredItem(rect, 2, spacing, roi_stats(values, Shape.RECTANGLE, (rect.start, rect.end), spacing)),
        MeasuredItem(ruler, 2, spacing),
    ]
    sr = build_measurement_sr(items, source, "CT")
    raw = dataset_bytes(sr)
    assert CANARY_NAME.encode() not in raw
    back = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(raw)))
    assert back.StudyInstanceUID == stack.study_instance_uid
    report = back.content
    assert isinstance(report, hd.sr.MeasurementReport)
    groups = report.get_planar_roi_measurement_groups()
    assert len(groups) == 2
    ell = groups[0]
    assert ell.reference_type == hd.sr.CodedConcept("111030", "DCM", "Image Region")
    assert ell.roi.graphic_type == hd.sr.GraphicTypeValues.ELLIPSE
    assert np.allclose(ell.roi.value, [[20, 28], [44, 28], [32, 20], [32, 36]])  # major axis, minor axis
    (selected_from,) = ell.roi.ContentSequence
    assert selected_from.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == info.sop_instance_uid
    by_derivation = {
        (m.derivation.meaning if m.derivation is not None else m.name.meaning): m
        for m in ell.get_measurements()
    }
    expect = items[0].stats
    assert expect is not None
    assert by_derivation["Mean"].value == pytest.approx(expect.mean)
    assert by_derivation["Mean"].unit.value == "[hnsf'U]"
    assert by_derivation["Standard Deviation"].value == pytest.approx(expect.sd)
    assert by_derivation["Minimum"].value == -1000 and by_derivation["Maximum"].value == 30
    assert by_derivation["Area"].value == pytest.approx(expect.area)
    assert by_derivation["Area"].unit.value == "mm2"
    assert groups[1].roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    assert np.allclose(groups[1].roi.value, [[10, 10], [20, 10], [20, 30], [10, 30], [10, 10]])
    (other,) = report.get_image_measurement_groups()  # the ruler (TID 1501)
    (length,) = other.get_measurements()
    assert length.value == pytest.approx(np.hypot(30 * spacing[1], 40 * spacing[0]))  # type: ignore[index]


def test_mpr_only_or_a_wrong_slice_is_a_typed_error(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    source = source_from_stack(stack, read_first_header(stack))
    mpr = ImageRef(stack.study_instance_uid, stack.series_instance_uid, "coronal", "", 3)
    with pytest.raises(MeasurementError, match="own slices"):
        build_measurement_sr(
            [MeasuredItem(Measurement(Shape.RULER, mpr, ((0, 0), (1, 1))), 3, None)], source, "CT"
        )
    ref = ImageRef(
        stack.study_instance_uid, stack.series_instance_uid, NATIVE_PLANE, stack.slices[1].sop_instance_uid, 0
    )
    with pytest.raises(MeasurementError, match="not its image"):
        build_measurement_sr(
            [MeasuredItem(Measurement(Shape.RULER, ref, ((0, 0), (1, 1))), 4, None)], source, "CT"
        )


def _new_kinds(stack: Stack) -> tuple[ImageRef, list[Measurement]]:
    info = stack.slices[3]
    ref = ImageRef(
        stack.study_instance_uid, stack.series_instance_uid, NATIVE_PLANE, info.sop_instance_uid, 0
    )
    return ref, [
        Measurement(Shape.FREEHAND, ref, ((20.0, 20.0), (44.0, 22.0), (40.0, 40.0), (24.0, 44.0))),
        Measurement(Shape.ANGLE, ref, ((40.0, 10.0), (10.0, 10.0), (40.0, 40.0))),
        Measurement(Shape.COBB, ref, ((0.0, 0.0), (10.0, 0.0), (0.0, 20.0), (10.0, 30.0))),
        Measurement(Shape.ARROW, ref, ((30.0, 30.0), (50.0, 50.0)), "Patient CANARY's lesion"),
    ]


@pytest.mark.parametrize("include_identity", [False, True])
def test_freehand_angles_and_arrows_round_trip(tmp_path: Path, include_identity: bool) -> None:
    stack = _stack(tmp_path)
    source = source_from_stack(stack, read_first_header(stack))
    spacing = (0.5, 0.5)
    values = np.full((64, 64), 30, dtype=np.int16)
    values[30:, :] = 50
    _ref, (free, angle, cobb, arrow) = _new_kinds(stack)
    items = [
        MeasuredItem(free, 3, spacing, roi_stats(values, Shape.FREEHAND, free.points, spacing)),
        MeasuredItem(angle, 3, spacing),
        MeasuredItem(cobb, 3, spacing),
        MeasuredItem(arrow, 3, spacing),
    ]
    sr = build_measurement_sr(items, source, "CT", include_identity=include_identity)
    raw = dataset_bytes(sr)
    assert (b"CANARY" in raw) == include_identity  # the arrow's free text only with identifiers
    report = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(raw))).content
    assert isinstance(report, hd.sr.MeasurementReport)
    roi, pointer = report.get_planar_roi_measurement_groups()
    assert roi.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    assert np.allclose(roi.roi.value, [*free.points, free.points[0]])  # closed
    measured = {
        m.name.meaning if m.derivation is None else m.derivation.meaning: m for m in roi.get_measurements()
    }
    assert measured["Area"].name == hd.sr.CodedConcept("42798000", "SCT", "Area")
    assert measured["Area"].value == pytest.approx(items[0].stats.area)  # type: ignore[union-attr]
    assert measured["Mean"].value == pytest.approx(items[0].stats.mean)  # type: ignore[union-attr]
    assert pointer.roi.graphic_type == hd.sr.GraphicTypeValues.POINT
    assert np.allclose(pointer.roi.value, [30.0, 30.0])
    label = pointer.tracking_identifier
    assert label == ("arrow: Patient CANARY's lesion" if include_identity else "arrow")
    a, c = report.get_image_measurement_groups()
    (deg,) = a.get_measurements()
    assert deg.name == hd.sr.CodedConcept("1483009", "SCT", "Angle")
    assert deg.unit == hd.sr.CodedConcept("deg", "UCUM", "Degree")
    assert deg.value == pytest.approx(45.0)
    assert np.allclose(deg.referenced_coordinates[0].value, angle.points)
    (cobb_deg,) = c.get_measurements()
    assert cobb_deg.name == hd.sr.CodedConcept("285285000", "SCT", "Cobb angle")
    assert cobb_deg.unit.value == "deg"
    assert cobb_deg.value == pytest.approx(45.0)
    assert [len(sc.value) for sc in cobb_deg.referenced_coordinates] == [2, 2]  # its two lines


def test_the_sr_of_every_kind_passes_dciodvfy(tmp_path: Path) -> None:
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dicom3tools' dciodvfy is not installed (Debian package dicom3tools)")
    stack = _stack(tmp_path)
    source = source_from_stack(stack, read_first_header(stack))
    _ref, ms = _new_kinds(stack)
    values = np.zeros((64, 64), dtype=np.int16)
    ruler = Measurement(Shape.RULER, ms[0].ref, ((0.0, 0.0), (9.0, 9.0)))
    ellipse = Measurement(Shape.ELLIPSE, ms[0].ref, ((5.0, 5.0), (20.0, 15.0)))
    items = [
        MeasuredItem(m, 3, (0.5, 0.5), roi_stats(values, m.shape, m.points, (0.5, 0.5)) if m.shape in (
            Shape.FREEHAND, Shape.ELLIPSE) else None)
        for m in (*ms, ruler, ellipse)
    ]
    path = tmp_path / "sr.dcm"
    path.write_bytes(dataset_bytes(build_measurement_sr(items, source, "CT")))
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], errors
