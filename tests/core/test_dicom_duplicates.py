"""Files sharing a SOP Instance UID: the best copy is used, per file; different images are never merged."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.factories import make_ct_slice, write_slice
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import LoadReport, Stack
from viewer.core.dicom.pixels import decode_file
from viewer.core.dicom.volume import StackVolume

# Six decodable encodings of one 64x64 MR image (one SOP Instance UID), plus a truncated copy.
MR_COPIES = [
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_padded.dcm",
]


def _copy(folder: Path, name: str, as_name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(str(get_testdata_file(name)), folder / (as_name or name)))


def _duplicates(report: LoadReport) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in report.skipped if s.code == "E-DUPLICATE"}


def _files(stack: Stack) -> set[str]:
    return {s.source.path.name for s in stack.slices}


def test_truncated_copy_never_wins_over_decodable_ones(tmp_path: Path) -> None:
    _copy(tmp_path, "MR_truncated.dcm", "0_MR_truncated.dcm")  # first by path
    for name in MR_COPIES:
        _copy(tmp_path, name)
    report = load_paths([tmp_path])
    (stack,) = report.all_stacks()
    assert len(stack) == 1
    assert _files(stack) == {"MR_small.dcm"}  # complete and lossless; the first by path of the equals
    dups = _duplicates(report)
    assert set(dups) == {"0_MR_truncated.dcm", *MR_COPIES} - {"MR_small.dcm"}
    assert "incomplete" in dups["0_MR_truncated.dcm"]
    assert stack.warnings[0].startswith("6 duplicate file(s) ignored")
    with StackVolume(stack) as vol:
        np.testing.assert_array_equal(vol.get_slice(0), decode_file(str(get_testdata_file("MR_small.dcm"))))


@pytest.mark.parametrize(
    ("lossy", "lossless"),
    [
        ("SC_rgb_jpeg.dcm", "SC_rgb_jpeg_dcmd.dcm"),  # JPEG baseline vs its decompressed original
        ("US1_J2KI.dcm", "US1_UNCI.dcm"),  # both flagged lossy: JPEG 2000 vs the uncompressed copy
        ("MR2_J2KI.dcm", "MR2_UNCI.dcm"),
    ],
)
def test_lossless_copy_preferred_over_a_lossy_one(tmp_path: Path, lossy: str, lossless: str) -> None:
    _copy(tmp_path, lossy, f"0_{lossy}")  # first by path
    _copy(tmp_path, lossless)
    report = load_paths([tmp_path])
    (stack,) = report.all_stacks()
    assert _files(stack) == {lossless}
    dups = _duplicates(report)
    assert list(dups) == [f"0_{lossy}"] and "lossy" in dups[f"0_{lossy}"]


def _ct_pair(folder: Path, *, same_pixels: bool, first_type: tuple[str, ...]) -> tuple[Path, Path]:
    study, series, fref = generate_uid(), generate_uid(), generate_uid()
    hu = np.arange(64, dtype=np.int16).reshape(8, 8)
    common = dict(position=(0, 0, 0), study_uid=study, series_uid=series, frame_of_reference_uid=fref)
    a = make_ct_slice(hu, image_type=first_type, **common)  # type: ignore[arg-type]
    b = make_ct_slice(hu if same_pixels else hu[::-1].copy(), **common)  # type: ignore[arg-type]
    b.SOPInstanceUID = b.file_meta.MediaStorageSOPInstanceUID = a.SOPInstanceUID
    return write_slice(folder / "0_first.dcm", a), write_slice(folder / "1_second.dcm", b)


def test_original_preferred_over_derived(tmp_path: Path) -> None:
    _ct_pair(tmp_path, same_pixels=True, first_type=("DERIVED", "SECONDARY", "AXIAL"))
    report = load_paths([tmp_path])
    (stack,) = report.all_stacks()
    assert _files(stack) == {"1_second.dcm"}  # ORIGINAL
    assert "DERIVED" in _duplicates(report)["0_first.dcm"]


def test_same_uid_with_different_pixels_is_kept_apart(tmp_path: Path) -> None:
    _ct_pair(tmp_path, same_pixels=False, first_type=("ORIGINAL", "PRIMARY", "AXIAL"))
    report = load_paths([tmp_path])
    main, other = report.all_stacks()
    assert (_files(main), _files(other)) == ({"0_first.dcm"}, {"1_second.dcm"})
    assert other.label == "UID clash"
    assert not _duplicates(report)
    assert any("different image" in w for w in main.warnings)
    assert any("never merged" in w for w in other.warnings)


@pytest.mark.parametrize("first", ["color3d_jpeg_baseline.dcm", "examples_ybr_color.dcm"])
def test_same_uid_with_other_frame_count_and_size_is_kept_whole(tmp_path: Path, first: str) -> None:
    """A 30-frame YBR file and a 120-frame file of another size share a SOP Instance UID."""
    assert dcmread(get_testdata_file(first)).SOPInstanceUID  # both carry the same one
    for name in ("color3d_jpeg_baseline.dcm", "examples_ybr_color.dcm"):
        _copy(tmp_path, name, f"0_{name}" if name == first else name)
    report = load_paths([tmp_path])
    stacks = report.all_stacks()
    assert sorted(len(s) for s in stacks) == [30, 120]
    for stack in stacks:  # every frame of a file, none of the other's
        assert len(_files(stack)) == 1
        assert [s.source.frame for s in stack.slices] == list(range(len(stack)))
    assert not _duplicates(report)


def test_same_uid_with_other_bit_depth_is_kept_apart(tmp_path: Path) -> None:
    _copy(tmp_path, "SC_rgb.dcm")
    _copy(tmp_path, "SC_rgb_16bit.dcm")
    _copy(tmp_path, "SC_rgb_rle.dcm")  # the 8-bit image again, RLE-compressed: a duplicate
    report = load_paths([tmp_path])
    assert sorted(_files(s).pop() for s in report.all_stacks()) == ["SC_rgb.dcm", "SC_rgb_16bit.dcm"]
    assert list(_duplicates(report)) == ["SC_rgb_rle.dcm"]


def test_multiframe_duplicates_reported_once_per_file_and_never_mixed(tmp_path: Path) -> None:
    _copy(tmp_path, "emri_small_jpeg_2k_lossless_too_short.dcm", "0_too_short.dcm")  # incomplete
    copies = ["emri_small.dcm", "emri_small_big_endian.dcm", "emri_small_RLE.dcm"]
    copies.append("emri_small_jpeg_ls_lossless.dcm")
    for name in copies:
        _copy(tmp_path, name)
    report = load_paths([tmp_path])
    (stack,) = report.all_stacks()
    assert len(stack) == 10
    assert _files(stack) == {"emri_small.dcm"}  # all ten frames from one file
    assert len(_duplicates(report)) == 4  # files, not 40 frames
    assert stack.warnings[0].startswith("4 duplicate file(s) ignored")
