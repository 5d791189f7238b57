"""Reading others' results (viewer.core.foreign): SEG, Parametric-map-like fractional SEG, TID 1500 SR
and GSPS written by highdicom/pydicom around a factory series, pydicom-data's real SEG and SRs, and
malformed objects (each a typed failure, never an exception out of the reader or the load)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.factories import write_ct_series
from tests.result_objects import blob_masks, source_datasets, write_gsps, write_measurement_sr, write_seg
from viewer.core.airesults import process
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import LoadReport, ResultFile
from viewer.core.errors import ResultObjectError
from viewer.core.foreign.kinds import ResultKind, result_kind
from viewer.core.foreign.match import PlacedReport, PlacedSeg, SliceAt, compose_overlay, place
from viewer.core.foreign.model import EntryKind, GraphicType, ImageRef, ReportObject, ResultFailure, SegObject
from viewer.core.foreign.outline import outline
from viewer.core.foreign.read import read_result_files
from viewer.core.foreign.seg import read_seg
from viewer.core.foreign.sr import read_sr

N, SIZE = 6, 64


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("series")
    return root, write_ct_series(root / "ct", N, rows=SIZE, columns=SIZE, shuffle=False)


def _load(*paths: Path) -> LoadReport:
    return load_paths(list(paths))


def _read(report: LoadReport) -> list[SegObject | ReportObject | ResultFailure]:
    return read_result_files(report.result_files)


def test_scan_sets_result_objects_aside_instead_of_loading_or_skipping_them(
    series: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    _, paths = series
    sources = source_datasets(paths)
    write_seg(sources, tmp_path, blob_masks(N, SIZE, SIZE, [1]))
    write_measurement_sr(sources, tmp_path, 1)
    write_gsps(sources, tmp_path, 1)
    report = _load(series[1][0].parent, tmp_path)
    assert [len(st) for st in report.all_stacks()] == [N]  # the SEG is not a stack of its own
    assert report.skipped == ()
    kinds = sorted(str(result_kind(f.sop_class_uid)) for f in report.result_files)
    assert kinds == ["Presentation state", "SEG", "SR"]
    assert all(isinstance(f, ResultFile) and f.source is not None for f in report.result_files)
    assert report.summary().startswith(f"Loaded {N + 3} of {N + 3} files")


def test_seg_masks_segments_and_colours_round_trip(series: tuple[Path, list[Path]], tmp_path: Path) -> None:
    _, paths = series
    sources = source_datasets(paths)
    masks = blob_masks(N, SIZE, SIZE, [1, 2])
    seg = read_seg(dcmread(write_seg(sources, tmp_path, masks)))
    assert seg.kind is ResultKind.SEG and not seg.fractional
    assert [(s.number, s.label, s.type) for s in seg.segments] == [
        (1, "Haemorrhage", "Hemorrhage"),
        (2, "Oedema", "Edema"),
    ]
    red, blue = (s.color for s in seg.segments)
    assert red[0] > 240 and red[1] < 20 and red[2] < 20  # CIELab from sRGB red, back to sRGB
    assert blue[2] > 240 and blue[0] < 20
    by_slice = {(f.image, f.segment): f.mask for f in seg.frames}
    for k, path in enumerate(paths):
        uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        for s in (1, 2):
            got = by_slice.get((ImageRef(uid, 0), s))
            if masks[k, ..., s - 1].any():
                assert got is not None and got.dtype == np.bool_
                np.testing.assert_array_equal(got, masks[k, ..., s - 1])
            else:
                assert got is None  # empty frames are left out
    report = _load(paths[0].parent)
    placed = place([seg], report.all_stacks())[0]
    assert isinstance(placed, PlacedSeg) and placed.references_loaded
    uid = report.all_stacks()[0].uid
    assert placed.slices_of(1) == [SliceAt(uid, 1), SliceAt(uid, 2)]
    assert placed.slices_of(2) == [SliceAt(uid, 1)]
    tile = compose_overlay([(seg, f) for f in placed.layers[SliceAt(uid, 1)]])
    assert tile is not None and (tile.row, tile.column) == (20, 10)  # the union of both blocks' boxes
    assert tile.rgba.shape == (24, 28, 4)
    assert tuple(tile.rgba[22 - 20, 33 - 10]) == (*red, 255)
    assert tuple(tile.rgba[41 - 20, 11 - 10]) == (*blue, 255)
    assert tile.rgba[30 - 20, 25 - 10, 3] == 0  # between the blocks: transparent
    assert (
        compose_overlay(
            [(seg, f) for f in placed.layers[SliceAt(uid, 1)]],
            frozenset({(seg.sop_instance_uid, 1), (seg.sop_instance_uid, 2)}),
        )
        is None
    )


def test_fractional_seg_gives_probability_alpha(series: tuple[Path, list[Path]], tmp_path: Path) -> None:
    _, paths = series
    masks = np.zeros((N, SIZE, SIZE, 2), dtype=np.float32)
    masks[3, 4:8, 4:8, 0] = 0.5
    masks[3, 5, 5, 0] = 1.0
    seg = read_seg(dcmread(write_seg(source_datasets(paths), tmp_path, masks, fractional=True)))
    assert seg.fractional
    (frame,) = seg.frames
    assert frame.mask.dtype == np.float32
    assert frame.mask[5, 5] == pytest.approx(1.0) and frame.mask[4, 4] == pytest.approx(0.5, abs=1 / 255)
    tile = compose_overlay([(seg, frame)])
    assert tile is not None and tile.rgba[1, 1, 3] == 255 and tile.rgba[0, 0, 3] in (127, 128)


def test_tid1500_sr_entries_images_and_regions(series: tuple[Path, list[Path]], tmp_path: Path) -> None:
    _, paths = series
    sources = source_datasets(paths)
    sr = read_sr(dcmread(write_measurement_sr(sources, tmp_path, 2)))
    assert sr.kind is ResultKind.SR and sr.title == "Imaging Measurement Report"
    uid2, uid3 = (s.SOPInstanceUID for s in sources[2:4])
    rows = {(e.group, e.name): e for e in sr.entries}
    area = rows[("Lesion 1", "Area")]
    assert area.kind is EntryKind.MEASUREMENT and area.numeric == 42.0 and area.unit == "mm2"
    assert area.images == (ImageRef(uid2, 0),) and area.tracking_uid
    region = rows[("Lesion 1", "Image Region")]
    assert region.graphic is not None and region.graphic.type is GraphicType.POLYGON
    assert region.graphic.points[:2] == ((10.0, 10.0), (30.0, 10.0))
    assert rows[("Lesion 1", "Level of Significance")].value == "Severe"
    finding = rows[("AI slices", "Hemorrhage")]
    assert finding.kind is EntryKind.FINDING and finding.value == "Present"
    assert finding.images == (ImageRef(uid2, 0), ImageRef(uid3, 0))
    assert not any(
        e.name in ("Observer Type", "Language of Content Item and Descendants") for e in sr.entries
    )
    # every source slice is referenced (evidence): the report "references a loaded series"
    assert {r.sop_instance_uid for r in sr.referenced} >= {s.SOPInstanceUID for s in sources}
    placed = place([sr], _load(paths[0].parent).all_stacks())[0]
    assert isinstance(placed, PlacedReport) and placed.references_loaded
    by_name = {(e.entry.group, e.entry.name): [s.index for s in e.slices] for e in placed.entries}
    assert by_name[("Lesion 1", "Area")] == [2] and by_name[("AI slices", "Hemorrhage")] == [2, 3]


def test_gsps_annotations(series: tuple[Path, list[Path]], tmp_path: Path) -> None:
    _, paths = series
    sources = source_datasets(paths)
    report = _load(write_gsps(sources, tmp_path, 4))
    (gsps,) = _read(report)
    assert isinstance(gsps, ReportObject) and gsps.kind is ResultKind.PRESENTATION_STATE
    line, text = gsps.entries
    assert line.graphic is not None and line.graphic.type is GraphicType.POLYLINE
    assert line.images == (ImageRef(sources[4].SOPInstanceUID, 0),)
    assert text.value == "see here" and text.graphic is not None and text.graphic.points == ((20.0, 15.0),)
    assert not line.graphic.relative


def test_gsps_display_units_are_scaled_by_the_image(series: tuple[Path, list[Path]], tmp_path: Path) -> None:
    path = write_gsps(source_datasets(series[1]), tmp_path, 1)
    ds = dcmread(path)
    obj = ds.GraphicAnnotationSequence[0].GraphicObjectSequence[0]
    obj.GraphicAnnotationUnits = "DISPLAY"
    obj.GraphicData = [0.25, 0.5, 0.75, 0.5]
    ds.save_as(path)
    (gsps,) = _read(_load(path))
    assert isinstance(gsps, ReportObject)
    graphic = gsps.entries[0].graphic
    assert graphic is not None and graphic.relative
    assert graphic.in_pixels(64, 128).points == ((32.0, 32.0), (96.0, 32.0))


def test_outlines() -> None:
    from viewer.core.foreign.model import Graphic

    xs, ys = outline(Graphic(GraphicType.CIRCLE, ((10.0, 10.0), (13.0, 14.0))))
    assert np.allclose(np.hypot(xs - 10, ys - 10), 5.0)
    xs, ys = outline(Graphic(GraphicType.ELLIPSE, ((0.0, 5.0), (10.0, 5.0), (5.0, 3.0), (5.0, 7.0))))
    assert xs.min() == pytest.approx(0.0) and xs.max() == pytest.approx(10.0)
    assert ys.min() == pytest.approx(3.0, abs=1e-3) and ys.max() == pytest.approx(7.0, abs=1e-3)


def test_real_seg_and_srs_from_pydicom_data_reference_no_loaded_image(
    series: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    for name in ("liver.dcm", "test-SR.dcm", "reportsi.dcm"):
        shutil.copy(str(get_testdata_file(name)), tmp_path / name)
    report = _load(series[1][0].parent, tmp_path)
    objects = _read(report)
    assert not [o for o in objects if isinstance(o, ResultFailure)]
    liver = next(o for o in objects if isinstance(o, SegObject))
    assert [(s.label, s.category, s.type) for s in liver.segments] == [("Liver", "Tissue", "Liver")]
    assert liver.segments[0].color == (221, 130, 101)  # its RecommendedDisplayCIELabValue, via highdicom
    assert len(liver.frames) == 3 and liver.frames[0].mask.shape == (512, 512)
    assert all(f.image is not None and f.position is not None for f in liver.frames)
    diagnosis = next(o for o in objects if isinstance(o, ReportObject) and o.title == "Diagnosis")
    assert ("Diameter", "3 cm") in [(e.name, e.value) for e in diagnosis.entries]
    placed = place([o for o in objects if not isinstance(o, ResultFailure)], report.all_stacks())
    assert len(placed) == 3 and not any(p.references_loaded for p in placed)


def _damaged_seg(series: tuple[Path, list[Path]], folder: Path, name: str) -> Path:
    path = write_seg(source_datasets(series[1]), folder, blob_masks(N, SIZE, SIZE, [1]), name=name)
    ds = dcmread(path)
    if name == "no_segments.dcm":
        del ds.SegmentSequence
    elif name == "unknown_segment.dcm":
        ds.PerFrameFunctionalGroupsSequence[0].SegmentIdentificationSequence[0].ReferencedSegmentNumber = 9
    elif name == "bad_colour.dcm":
        ds.SegmentSequence[0].RecommendedDisplayCIELabValue = [1, 2]
    elif name == "frame_count.dcm":
        ds.NumberOfFrames = 7
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("no_segments.dcm", "SegmentSequence"),
        ("unknown_segment.dcm", "segment 9, which is not described"),
        ("bad_colour.dcm", "RecommendedDisplayCIELabValue"),
        ("frame_count.dcm", "7 frames but"),
    ],
)
def test_malformed_seg_is_a_typed_failure_and_the_series_loads(
    series: tuple[Path, list[Path]], tmp_path: Path, name: str, reason: str
) -> None:
    path = _damaged_seg(series, tmp_path, name)
    with pytest.raises(ResultObjectError, match=reason):
        read_seg(dcmread(path))
    report = _load(series[1][0].parent, path)
    assert [len(s) for s in report.all_stacks()] == [N]
    (failure,) = _read(report)
    assert isinstance(failure, ResultFailure) and failure.code == "E-RESULT-MALFORMED"
    assert reason in failure.reason and failure.display_name == name


def test_malformed_srs_are_typed_failures(series: tuple[Path, list[Path]], tmp_path: Path) -> None:
    sources = source_datasets(series[1])
    bad_scoord = dcmread(write_measurement_sr(sources, tmp_path, 1, name="scoord.dcm"))
    stack = [bad_scoord]
    while stack:  # an odd number of SCOORD coordinates
        item = stack.pop()
        for child in getattr(item, "ContentSequence", []):
            if getattr(child, "ValueType", "") == "SCOORD":
                child.GraphicData = [1.0, 2.0, 3.0]
            stack.append(child)
    bad_scoord.save_as(tmp_path / "scoord.dcm")
    no_root = dcmread(write_measurement_sr(sources, tmp_path, 1, name="root.dcm"))
    del no_root.ValueType
    no_root.save_as(tmp_path / "root.dcm")
    number = write_measurement_sr(sources, tmp_path, 1, name="number.dcm")
    element = b"\x40\x00\x0a\xa3DS\x04\x0042.0"  # NumericValue "42.0" (explicit VR little endian)
    data = number.read_bytes()
    assert data.count(element) == 1
    number.write_bytes(data.replace(element, element[:-4] + b"4x.0"))
    (tmp_path / "cut.dcm").write_bytes((tmp_path / "root.dcm").read_bytes()[:400])
    report = _load(tmp_path)
    failures = {f.display_name: f.reason for f in _read(report) if isinstance(f, ResultFailure)}
    assert "pairs expected" in failures["scoord.dcm"]
    assert "not a CONTAINER" in failures["root.dcm"]
    assert "not a number" in failures["number.dcm"]
    # a file cut inside its header is either refused by the scan or fails to parse: never dropped
    skipped = {Path(s.path).name: s.code for s in report.skipped}
    assert failures.get("cut.dcm") is not None or skipped.get("cut.dcm") == "E-READ"


def test_objects_are_read_in_the_helper_process(series: tuple[Path, list[Path]], tmp_path: Path) -> None:
    sources = source_datasets(series[1])
    write_seg(sources, tmp_path, blob_masks(N, SIZE, SIZE, [1]))
    report = _load(tmp_path)
    (seg,) = process.call(read_result_files, list(report.result_files)).result(timeout=120)
    assert isinstance(seg, SegObject) and seg.segments[0].label == "Haemorrhage"


def test_real_binary_seg_masks_match_pydicom_and_a_cut_down_copy_is_refused() -> None:
    """pydicom-data's 1-bit SEGs (no longer stacks: their masks are read as result objects).
    liver_1frame.dcm keeps one frame but all three Per-frame Functional Groups items: refused, named."""
    path = Path(str(get_testdata_file("liver.dcm")))
    (seg,) = _read(_load(path))
    assert isinstance(seg, SegObject)
    pixels = dcmread(path).pixel_array
    for k, frame in enumerate(seg.frames):
        np.testing.assert_array_equal(frame.mask, pixels[k] != 0)
    report = _load(Path(str(get_testdata_file("liver_1frame.dcm"))))
    assert report.all_stacks() == [] and len(report.result_files) == 1
    (failure,) = _read(report)
    assert isinstance(failure, ResultFailure)
    assert failure.reason == "1 frames but 3 Per-frame Functional Groups items"


def test_slicewise_own_ai_sr_and_kos_are_read_back_on_the_flagged_slices(tmp_path: Path) -> None:
    """The AI Result SR Analyze writes (TID 1500, one group per class with the flagged slices as its
    source images) and its Key Object Selection, read as another system's results would be."""
    from tests.core.inference_models import build_model, write_bleed_series
    from viewer.core.airesults.identity import read_first_header, source_from_stack
    from viewer.core.airesults.writer import write_ai_objects
    from viewer.core.dicom.volume import StackVolume
    from viewer.core.inference.engine import InferenceEngine

    write_bleed_series(tmp_path / "ct", 6, (2, 3))
    (stack,) = _load(tmp_path / "ct").all_stacks()
    engine = InferenceEngine(build_model(tmp_path / "tiny.onnx"), provider="cpu", cache=None)
    volume = StackVolume(stack)
    try:
        pred = engine.predict_volume(volume, use_cache=False)
    finally:
        volume.close()
    assert pred.study_positive
    write_ai_objects(pred, source_from_stack(stack, read_first_header(stack)), tmp_path / "ai")
    report = _load(tmp_path / "ct", tmp_path / "ai")
    objects = [o for o in _read(report) if not isinstance(o, ResultFailure)]
    assert len(objects) == len(report.result_files) == 2  # AI SR + KOS
    placed = place(objects, report.all_stacks())
    sr = next(
        p for p in placed if isinstance(p, PlacedReport) and p.obj.title == "Imaging Measurement Report"
    )
    assert sr.references_loaded
    for finding in pred.findings:
        if not finding.flagged_ranges:
            continue
        flagged = sorted({i for r in finding.flagged_ranges for i in range(r.start, r.stop + 1)})
        rows = [e for e in sr.entries if e.entry.kind is EntryKind.FINDING and e.entry.name == "Finding"]
        assert any([s.index for s in e.slices] == flagged for e in rows), (finding.class_name, flagged)
    kos = next(p for p in placed if isinstance(p, PlacedReport) and p is not sr)
    assert kos.references_loaded and any(e.entry.kind is EntryKind.IMAGE and e.slices for e in kos.entries)


def test_parametric_map_is_a_probability_overlay(series: tuple[Path, list[Path]], tmp_path: Path) -> None:
    from tests.result_objects import write_parametric_map

    _, paths = series
    values = np.zeros((N, SIZE, SIZE), dtype=np.float32)
    values[2, 10:20, 10:20] = 0.25
    values[2, 14, 14] = 1.0
    report = _load(paths[0].parent, write_parametric_map(source_datasets(paths), tmp_path, values))
    assert [len(s) for s in report.all_stacks()] == [N]  # the map is not a stack of its own
    (pm,) = _read(report)
    assert isinstance(pm, SegObject) and pm.kind is ResultKind.PARAMETRIC_MAP and pm.fractional
    assert pm.segments[0].label == "PROB"
    assert any("range 0 to 1" in n for n in pm.notes)
    placed = place([pm], report.all_stacks())[0]
    assert isinstance(placed, PlacedSeg)
    uid = report.all_stacks()[0].uid
    assert sorted(placed.layers) == [SliceAt(uid, 2)]  # empty frames left out
    (frame,) = placed.layers[SliceAt(uid, 2)]
    assert frame.mask[14, 14] == pytest.approx(1.0) and frame.mask[10, 10] == pytest.approx(0.25)
    tile = compose_overlay([(pm, frame)])
    assert tile is not None and (tile.row, tile.column) == (10, 10) and tile.rgba[4, 4, 3] == 255
