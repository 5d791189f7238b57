"""int16 volumes (issue 14): the dtype decided once per stack from the headers, exact values, the
float32 fallback, and consumers (windowing, thumbnails, the AI) giving the same results for both."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid

from tests.factories import compress_files, make_ct_slice, write_ct_series
from viewer.core.constants import Window
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import Stack
from viewer.core.dicom.pixels import int16_ok, modality_dtype
from viewer.core.dicom.volume import StackVolume
from viewer.core.errors import PixelDecodeError
from viewer.core.paths import bundled_model_path, demo_study_dir
from viewer.core.windowing import apply_window, to_uint8


def _stack(folder: Path | str) -> Stack:
    (stack,) = load_paths([folder]).all_stacks()
    return stack


def _path(name: str) -> Path:
    found = get_testdata_file(name)
    assert found is not None, name
    return Path(str(found))


def _reference(path: Path) -> np.ndarray:
    """pydicom's own modality LUT, in float64: the values every dtype must reproduce exactly."""
    ds = dcmread(path)
    return np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CT_small.dcm", np.int16),  # signed 16-bit, intercept -1024: range checked per slice
        ("MR_small.dcm", np.int16),
        ("MR_small_bigendian.dcm", np.int16),
        ("MR_small_RLE.dcm", np.int16),
        ("MR_small_jp2klossless.dcm", np.int16),
        ("JPEG2000.dcm", np.int16),
        ("emri_small.dcm", np.int16),
        ("mlut_18.dcm", np.float32),  # a Modality LUT Sequence
        ("rtdose.dcm", np.float32),  # 32-bit stored values and a fractional slope (dose grid scaling)
    ],
)
def test_dtype_from_headers_and_values_exact(name: str, expected: type) -> None:
    stack = _stack(_path(name))
    assert modality_dtype(stack.slices) == expected
    with StackVolume(stack) as vol:
        assert vol.dtype == expected
        got = vol.get_slice(0)
    assert got.dtype == expected
    ref = _reference(_path(name))
    ref = ref if ref.ndim == 2 else ref[0]
    np.testing.assert_array_equal(got.astype(np.float64), ref.astype(np.float32).astype(np.float64))


def test_a_fractional_slope_or_intercept_anywhere_makes_the_whole_stack_float32(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "s", 6, rows=16, columns=16, shuffle=False)
    ds = dcmread(paths[4])
    ds.RescaleIntercept = -1024.5  # one slice only
    ds.save_as(paths[4])
    stack = _stack(tmp_path / "s")
    assert [int16_ok(s) for s in stack.slices] == [True] * 4 + [False, True]
    with StackVolume(stack) as vol:
        assert vol.dtype == np.float32
        assert vol.get_slice(0).dtype == np.float32  # the first slice alone would fit int16
        volume = vol.load_all()
    assert volume.dtype == np.float32
    assert volume[4, 0, 0] == pytest.approx(4 - 0.5) and volume[3, 0, 0] == 3


def test_signed_16_bit_data_at_its_extreme_switches_the_volume_to_float32(tmp_path: Path) -> None:
    """Stored -32768 with intercept -1024 is -33792, outside int16: never wrapped, never clipped."""
    folder = tmp_path / "s"
    paths = write_ct_series(folder, 8, rows=16, columns=16, shuffle=False)
    ds = dcmread(paths[5])
    hu = ds.pixel_array.astype(np.int32) - 1024
    hu[3, 3] = -33792  # stored -32768
    extreme = make_ct_slice(
        hu,
        position=ds.ImagePositionPatient,
        instance_number=6,
        study_uid=ds.StudyInstanceUID,
        series_uid=ds.SeriesInstanceUID,
        frame_of_reference_uid=ds.FrameOfReferenceUID,
    )
    extreme.SOPInstanceUID = extreme.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    extreme.save_as(paths[5], enforce_file_format=True)
    stack = _stack(folder)
    with StackVolume(stack) as vol:
        assert vol.dtype == np.int16  # the headers allow int16
        volume = vol.load_all()
        assert vol.dtype == np.float32 and volume.dtype == np.float32  # one dtype, for good
        assert volume[5, 3, 3] == -33792 and volume[5, 0, 0] == 5 and volume[2, 0, 0] == 2
    with StackVolume(stack) as vol:
        assert vol.get_slice(2).dtype == np.int16
        assert vol.get_slice(5)[3, 3] == -33792
        assert vol.dtype == np.float32 and vol.cached(2) is None  # the int16 slice was dropped
        assert vol.get_slice(2).dtype == np.float32


@pytest.mark.parametrize("syntax", [None, RLELossless, JPEG2000Lossless])
def test_int16_volume_equals_the_float32_volume(tmp_path: Path, syntax: str | None) -> None:
    """Fast path (readinto), slice decoder and process pool all give the float32 loop's values."""
    paths = write_ct_series(tmp_path / "s", 20, rows=32, columns=32)
    if syntax is not None:
        compress_files(paths, syntax)
    stack = _stack(tmp_path / "s")
    float_stack = replace(stack, slices=tuple(replace(s, rescale_slope=1.0 + 1e-12) for s in stack.slices))
    with StackVolume(stack) as vol, StackVolume(float_stack) as fvol:
        assert vol.dtype == np.int16 and fvol.dtype == np.float32
        first = vol.get_slice(7)
        ints, floats = vol.load_all(), fvol.load_all()
    assert ints.dtype == np.int16 and floats.dtype == np.float32
    np.testing.assert_array_equal(ints.astype(np.float32), floats)
    np.testing.assert_array_equal(first, ints[7])
    assert [int(v) for v in ints[:, 0, 0]] == list(range(20))


def test_twelve_bit_unsigned_ct_is_masked_and_rescaled_in_place(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "s", 4, rows=16, columns=16, shuffle=False)
    for k, p in enumerate(paths):
        ds = dcmread(p)
        stored = (ds.pixel_array.astype(np.int32)).astype(np.uint16)
        stored[1, 1] = 4095 | 0xF000  # garbage above BitsStored, as some scanners write
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.PixelData = stored.tobytes()
        ds.save_as(p)
        assert k == int(dcmread(p).pixel_array[0, 0]) - 1024
    stack = _stack(tmp_path / "s")
    with StackVolume(stack) as vol:
        volume = vol.load_all()
    assert volume.dtype == np.int16
    for k, p in enumerate(paths):
        np.testing.assert_array_equal(volume[k].astype(np.float64), _reference(p))
    assert volume[0, 1, 1] == 4095 - 1024


def test_windowing_and_thumbnails_accept_int16() -> None:
    from viewer.qt.workers import make_thumbnail

    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 3000, (64, 64)).astype(np.int16)
    for window in (Window(80, 40), Window(1500, -600), Window(1, 0)):
        np.testing.assert_array_equal(apply_window(hu, window), apply_window(hu.astype(np.float32), window))
        np.testing.assert_array_equal(
            to_uint8(hu, window, invert=True), to_uint8(hu.astype(np.float32), window, invert=True)
        )
        levels = window.levels
        np.testing.assert_array_equal(
            make_thumbnail(hu, levels, False), make_thumbnail(hu.astype(np.float32), levels, False)
        )


@pytest.mark.skipif(
    not bundled_model_path().is_file() or not any(demo_study_dir().rglob("*")),
    reason="bundled model or demo study not present",
)
def test_bundled_model_gives_bit_identical_outputs_for_int16_and_float32() -> None:
    from viewer.core.inference.engine import InferenceEngine

    stacks = [s for s in load_paths([demo_study_dir()]).all_stacks() if s.modality == "CT"]
    stack = max(stacks, key=len)
    with StackVolume(stack) as vol:
        hu = vol.load_all()
    assert hu.dtype == np.int16
    engine = InferenceEngine(bundled_model_path(), provider="cpu", cache=None)
    a = engine.predict_hu(stack, hu, use_cache=False)
    b = engine.predict_hu(stack, hu.astype(np.float32), use_cache=False)
    np.testing.assert_array_equal(a.slice_probs, b.slice_probs)
    np.testing.assert_array_equal(a.study_probs, b.study_probs)
    np.testing.assert_array_equal(engine.preprocess(hu), engine.preprocess(hu.astype(np.float32)))


def test_a_frame_beyond_its_pixel_data_element_is_refused_on_every_path(tmp_path: Path) -> None:
    """A damaged Pixel Data length (the bytes after it are not this frame's) is refused by the single-slice
    read and by the int16 whole-volume fast path alike, with its code."""
    files = sorted(write_ct_series(tmp_path / "ct", 3, shuffle=False, random_names=False))
    raw = bytearray(files[1].read_bytes())
    tag = raw.rfind(b"\xe0\x7f\x10\x00OW")  # (7FE0,0010) OW, explicit VR little endian
    assert tag > 0
    length = int.from_bytes(raw[tag + 8 : tag + 12], "little")
    raw[tag + 8 : tag + 12] = (length // 2).to_bytes(4, "little")  # the file still holds every byte
    files[1].write_bytes(bytes(raw))
    stack = _stack(tmp_path / "ct")
    bad = next(i for i, s in enumerate(stack.slices) if s.source.path == files[1])
    with StackVolume(stack) as vol:
        assert vol.dtype == np.int16
        vol.load_all()
        assert "E-TRUNC-PIXEL" in vol.bad_slices[bad]
    with StackVolume(stack) as vol, pytest.raises(PixelDecodeError, match="E-TRUNC-PIXEL"):
        vol.get_slice(bad)
