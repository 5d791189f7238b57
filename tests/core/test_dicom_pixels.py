"""Pixel decoding across transfer syntaxes (pydicom + pydicom-data vendor files) and the guards."""

from __future__ import annotations

import re
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut
from pydicom.uid import DeflatedExplicitVRLittleEndian

from tests.factories import truncate_file, write_bomb_header, write_ct_series
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import SliceInfo, SliceSource, Stack
from viewer.core.dicom.pixels import decode_file, decode_frame
from viewer.core.dicom.volume import StackVolume
from viewer.core.errors import ImageTooLargeError, NotDicomError, PixelDecodeError


def _path(name: str) -> Path:
    found = get_testdata_file(name)
    assert found is not None, name
    return Path(str(found))


def _reference(name: str, frame: int | None = None) -> np.ndarray:
    ds = dcmread(_path(name))
    arr = ds.pixel_array if frame is None else ds.pixel_array[frame]
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)


def _stack(name: str) -> Stack:
    stacks = load_paths([_path(name)]).all_stacks()
    assert len(stacks) == 1, name
    return stacks[0]


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",  # explicit little endian
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
        "MR_small_padded.dcm",
    ],
)
def test_same_image_in_every_transfer_syntax(name: str) -> None:
    expected = _reference("MR_small.dcm")
    stack = _stack(name)
    got = decode_frame(stack.slices[0])
    assert got.dtype == np.float32 and got.dtype.isnative
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("name", "frames"),
    [
        ("emri_small.dcm", 10),
        ("emri_small_RLE.dcm", 10),
        ("emri_small_big_endian.dcm", 10),
        ("emri_small_jpeg_2k_lossless.dcm", 10),
        ("emri_small_jpeg_ls_lossless.dcm", 10),
    ],
)
def test_multiframe_expands_to_frames(name: str, frames: int) -> None:
    stack = _stack(name)
    assert len(stack) == frames
    assert [s.source.frame for s in stack.slices] == list(range(frames))
    expected = dcmread(_path("emri_small.dcm")).pixel_array.astype(np.float32)
    with StackVolume(stack) as vol:
        for f in (0, frames // 2, frames - 1):
            np.testing.assert_array_equal(vol.get_slice(f), expected[f])
        np.testing.assert_array_equal(vol.load_all(), expected)


def test_enhanced_ct_functional_groups() -> None:
    stack = _stack("eCT_Supplemental.dcm")
    ds = dcmread(_path("eCT_Supplemental.dcm"))
    assert len(stack) == int(ds.NumberOfFrames) == 2
    assert stack.sort_method == "position"
    per = ds.PerFrameFunctionalGroupsSequence
    positions = {tuple(float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient) for f in per}
    assert {s.position for s in stack.slices} == positions
    shared = ds.SharedFunctionalGroupsSequence[0]
    xform = (per[0].get("PixelValueTransformationSequence") or shared.PixelValueTransformationSequence)[0]
    assert stack.slices[0].rescale_intercept == float(xform.RescaleIntercept)
    raw = ds.pixel_array
    for info in stack.slices:
        expected = raw[info.source.frame] * float(xform.RescaleSlope) + float(xform.RescaleIntercept)
        np.testing.assert_allclose(decode_frame(info), expected)


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "JPEG-LL.dcm",
        "JPGLosslessP14SV1_1s_1f_8b.dcm",
        "JPEG2000.dcm",
        "693_J2KR.dcm",
        "MR2_J2KR.dcm",
        "image_dfl.dcm",
        "J2K_pixelrep_mismatch.dcm",
        "RG1_UNCR.dcm",
    ],
)
def test_greyscale_files_match_pydicom(name: str) -> None:
    got = decode_frame(_stack(name).slices[0])
    np.testing.assert_allclose(got, _reference(name), rtol=0, atol=1e-3)


def test_modality_lut_sequence_applied_once() -> None:
    got = decode_frame(_stack("mlut_18.dcm").slices[0])
    np.testing.assert_array_equal(got, _reference("mlut_18.dcm"))
    raw = dcmread(_path("mlut_18.dcm")).pixel_array
    assert not np.array_equal(got, raw.astype(np.float32))


def test_ct_rescale_gives_hounsfield_units(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path, 3)
    stack = load_paths([tmp_path]).all_stacks()[0]
    hu = decode_frame(stack.slices[1])
    assert hu[0, 0] == 1.0  # stored 1025, intercept -1024
    assert hu[32, 32] == 30.0 and hu[63, 63] == -1000.0
    stored = dcmread(paths[1]).pixel_array
    assert stored[32, 32] == 1054


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb.dcm",
        "SC_rgb_16bit.dcm",
        "SC_rgb_32bit.dcm",
        "SC_rgb_expb.dcm",
        "SC_rgb_rle.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_ybr_full_uncompressed.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "US1_J2KR.dcm",
        "SC_rgb_gdcm2k_uncompressed.dcm",
    ],
)
def test_colour_files_become_uint8_rgb(name: str) -> None:
    stack = _stack(name)
    assert stack.is_color
    rgb = decode_frame(stack.slices[0])
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.shape[:2] == (stack.rows, stack.columns)
    if name.startswith("SC_rgb") and "jpeg" not in name:
        # the SC_rgb family is red / green / blue / white / black bands: top row is pure red
        assert tuple(int(v) for v in rgb[0, 0]) == (255, 0, 0)


def test_ybr_converted_to_rgb() -> None:
    rgb = decode_frame(_stack("SC_ybr_full_uncompressed.dcm").slices[0])
    ref = decode_frame(_stack("SC_rgb.dcm").slices[0])
    diff = np.abs(rgb.astype(int) - ref.astype(int))
    assert diff.max() <= 8 and diff.mean() < 1  # rounding only; unconverted YBR red would be (76, 85, 255)


def test_palette_colour_to_rgb() -> None:
    stack = _stack("OT-PAL-8-face.dcm")
    rgb = decode_frame(stack.slices[0])
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
    assert len({tuple(p) for p in rgb.reshape(-1, 3)[::97]}) > 20  # a real colour image, not grey indices


def test_monochrome1_values_kept_and_flagged(tmp_path: Path) -> None:
    write_ct_series(tmp_path, 2)
    for p in tmp_path.iterdir():
        ds = dcmread(p)
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(p)
    stack = load_paths([tmp_path]).all_stacks()[0]
    with StackVolume(stack) as vol:
        assert vol.invert_display
        assert vol.get_slice(1)[0, 0] == 1.0


def test_truncated_pydicom_file_names_file_and_bytes() -> None:
    stack = _stack("MR_truncated.dcm")
    expected = r"MR_truncated\.dcm \(expected 8,192 bytes, found 8,130; E-TRUNC-PIXEL\)"
    with pytest.raises(PixelDecodeError, match=expected):
        decode_frame(stack.slices[0])


def test_truncated_slice_marks_only_that_slice_bad(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path, 6, rows=32, columns=32)
    truncate_file(paths[2], 1000)
    report = load_paths([tmp_path])
    assert report.skipped == ()
    stack = report.all_stacks()[0]
    with StackVolume(stack) as vol:
        with pytest.raises(PixelDecodeError, match=r"expected 2,048 bytes, found 1,048"):
            vol.get_slice(2)
        assert set(vol.bad_slices) == {2} and paths[2].name in vol.bad_slices[2]
        assert vol.get_slice(3)[0, 0] == 3.0
        volume = vol.load_all()
    assert volume.shape == (6, 32, 32)
    assert [volume[k, 0, 0] for k in (0, 1, 3, 4, 5)] == [0, 1, 3, 4, 5]
    assert np.all(volume[2] == -1000.0)  # filled with the stack minimum


def test_header_bomb_rejected_before_allocation(tmp_path: Path) -> None:
    bomb = write_bomb_header(tmp_path / "bomb.dcm")
    assert bomb.stat().st_size < 4096
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match=r"^Image too large \(17\.2 GB declared, limit 2 GB\)$"):
        decode_file(bomb)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 1024**2  # nothing near the declared size was allocated
    assert elapsed < 30  # sanity only


def test_decode_frame_guard_on_handmade_info(tmp_path: Path) -> None:
    info = SliceInfo(
        source=SliceSource(tmp_path / "none.dcm"),
        sop_instance_uid="1",
        instance_number=1,
        rows=65535,
        columns=65535,
        samples_per_pixel=1,
        photometric="MONOCHROME2",
        bits_allocated=32,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        pixel_offset=200,
    )
    with pytest.raises(ImageTooLargeError, match=r"17\.2 GB declared"):
        decode_frame(info)


def test_not_dicom_file(tmp_path: Path) -> None:
    text = tmp_path / "a.txt"
    text.write_text("plain text " * 50)
    with pytest.raises(NotDicomError):
        decode_file(text)


def test_deflate_bomb_refused(tmp_path: Path) -> None:
    ds = dcmread(_path("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.ImageComments = "A" * (200 * 1024**2)  # inflates ~1000x
    ds.save_as(tmp_path / "dfl_bomb.dcm")
    size = (tmp_path / "dfl_bomb.dcm").stat().st_size
    assert size < 2 * 1024**2
    report = load_paths([tmp_path])
    assert [s.code for s in report.skipped] == ["E-TOO-LARGE"]
    assert "Deflated data inflates beyond the limit" in report.skipped[0].reason
    del ds.ImageComments
    ds.save_as(tmp_path / "dfl_bomb.dcm")  # a normal deflated file loads
    stack = load_paths([tmp_path]).all_stacks()[0]
    np.testing.assert_array_equal(decode_frame(stack.slices[0]), _reference("CT_small.dcm"))


@pytest.mark.parametrize("name", ["JPEG2000-embedded-sequence-delimiter.dcm", "JPEG-lossy.dcm"])
def test_undecodable_compressed_frame_is_typed(name: str) -> None:
    """Files no installed plugin decodes: a PixelDecodeError naming the file, recorded as a bad slice."""
    stack = _stack(name)
    with StackVolume(stack) as vol:
        with pytest.raises(PixelDecodeError, match=f"Cannot decode {re.escape(name)}"):
            vol.get_slice(0)
        assert set(vol.bad_slices) == {0}
        with pytest.raises(PixelDecodeError):  # remembered, not retried
            vol.get_slice(0)
