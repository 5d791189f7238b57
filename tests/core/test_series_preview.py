"""A retrieve's growing preview (issue 13 item 2): the instances of one series as they arrive, sorted by
position with the loader's grouping, read from real files; the reader's slice found again by position
in the grown stack; the status line."""

from __future__ import annotations

import random
from pathlib import Path

from pydicom.data import get_testdata_file

from tests.factories import write_ct_series, write_localizer
from viewer.core.dicom.loader import load_paths
from viewer.core.geometry.stack import matching_slice, slice_position_mm
from viewer.core.pacs.models import SeriesMatch
from viewer.core.pacs.preview import SeriesPreview, is_localizer_description, main_series, receiving_text


def _z(stack: object) -> list[float]:
    return [info.position[2] for info in stack.slices]  # type: ignore[attr-defined]


def test_the_preview_grows_sorted_by_position_as_instances_arrive(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "s", 24, rows=16, columns=16, spacing_z=2.0)  # true z order
    (final,) = load_paths([tmp_path / "s"]).all_stacks()
    arrival = paths[:]
    random.Random(3).shuffle(arrival)
    preview = SeriesPreview(final.series_instance_uid, expected=len(paths))
    sizes: list[int] = []
    for k, path in enumerate(arrival, start=1):
        preview.add(path)
        if k in (1, 5, 13, 24):
            stack = preview.stack()
            assert stack is not None and preview.arrived == k
            zs = _z(stack)
            assert zs == sorted(zs) and len(set(zs)) == k  # every arrived slice once, by position
            assert sorted(zs) == sorted(_z(final)[paths.index(p)] for p in arrival[:k])
            sizes.append(len(stack))
    assert sizes == [1, 5, 13, 24]
    last = preview.stack()
    assert last is not None and [s.sop_instance_uid for s in last.slices] == [
        s.sop_instance_uid for s in final.slices
    ]  # complete: the loader's own order


def test_other_series_non_images_and_localizers_stay_out_of_the_preview(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "a", 6, rows=16, columns=16)
    (stack,) = load_paths([tmp_path / "a"]).all_stacks()
    other = write_ct_series(tmp_path / "b", 3, rows=16, columns=16)  # another series
    scout = write_localizer(
        tmp_path / "a" / "scout.dcm", study_uid=stack.study_instance_uid, series_uid=stack.series_instance_uid
    )
    junk = tmp_path / "notes.dcm"
    junk.write_text("not DICOM")
    preview = SeriesPreview(stack.series_instance_uid)
    preview.add(junk)
    assert preview.stack() is None  # nothing to show yet
    for path in [scout, *other, *paths]:
        preview.add(path)
    grown = preview.stack()
    assert grown is not None and len(grown) == 6  # the series' main stack, not the scout or series b
    assert grown.series_instance_uid == stack.series_instance_uid
    sr = SeriesPreview("1.2.3")
    sr.add(Path(str(get_testdata_file("test-SR.dcm"))))
    assert sr.stack() is None  # a structured report: no image


def test_matching_slice_keeps_the_position_not_the_index(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "s", 10, rows=16, columns=16, spacing_z=3.0)
    (full,) = load_paths([tmp_path / "s"]).all_stacks()
    part = SeriesPreview(full.series_instance_uid)
    for path in paths[4:8]:  # z = 12..21 mm
        part.add(path)
    early = part.stack()
    assert early is not None and len(early) == 4
    for k in range(4):
        moved = matching_slice(early, k, full)
        assert moved == k + 4 and slice_position_mm(full, moved) == slice_position_mm(early, k)
    assert matching_slice(full, 9, early) == 3  # beyond the smaller stack: its nearest slice


def test_receiving_text() -> None:
    assert receiving_text(1, 300) == "Receiving… 1 of 300 slices"
    assert receiving_text(1, 0) == "Receiving… 1 slice"
    assert receiving_text(40, 30) == "Receiving… 40 slices"  # more than the PACS said


def test_a_multi_frame_instance_counts_its_frames() -> None:
    """Arrived and expected counts are frames: an enhanced MR of 10 frames among 3 instances expected
    makes 10 arrived of 12 expected (the two still to come counted one each until they arrive)."""
    path = Path(str(get_testdata_file("emri_small_jpeg_2k_lossless.dcm")))
    (stack,) = load_paths([path]).all_stacks()
    frames = len(stack)
    assert frames > 1
    preview = SeriesPreview(stack.series_instance_uid, expected=3)
    assert (preview.arrived, preview.expected) == (0, 3)
    preview.add(path, frames)
    assert (preview.arrived, preview.expected) == (frames, frames + 2)
    grown = preview.stack()
    assert grown is not None and len(grown) == frames == preview.arrived  # a slice per frame
    assert SeriesPreview("1.2.3").expected == 0  # the PACS did not say


def _series(uid: str, n: int | None, description: str = "", modality: str = "CT") -> SeriesMatch:
    return SeriesMatch("1.2.3", uid, modality=modality, series_description=description, num_instances=n)


def test_the_main_series_is_the_largest_image_series_that_is_not_a_localizer() -> None:
    study = [
        _series("scout", 3, "Topogram 0.6 T20s"),
        _series("dose", 2, "Dose Report"),
        _series("sr", 900, "Radiation dose SR", modality="SR"),  # no images, however many instances
        _series("head", 40, "Head 5mm"),
        _series("bone", 200, "Head 1mm bone"),
        _series("survey", 600, "3-plane loc", modality="MR"),
    ]
    assert main_series(study) == "bone"
    assert main_series(study[:4]) == "head"
    assert main_series([_series("a", 40), _series("b", 40)]) == "a"  # a tie: the first
    # only localizers: the largest of them; counts unknown (or nothing but SR): the first to arrive
    assert main_series([_series("s1", 1, "Scout"), _series("s2", 2, "Localizer")]) == "s2"
    assert main_series([_series("a", None), _series("b", None)]) is None
    assert main_series([_series("sr", 5, modality="SR")]) is None and main_series([]) is None


def test_localizer_descriptions() -> None:
    for text in ("Topogram 0.6 T20s", "SCOUT", "3-Plane Loc", "Localiser", "Surview", "loc"):
        assert is_localizer_description(text), text
    for text in ("Head 5mm", "Blocked vessels", "Local angio", "Abdomen venous", ""):
        assert not is_localizer_description(text), text
