"""The one preprocessing function shared by training and inference."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.core.constants import MODEL_WINDOWS, Window
from viewer.core.preprocess import pad_to_square, preprocess_stack, resize_slices, window_channels


def test_output_shape_dtype_and_range() -> None:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1024, 2000, size=(5, 512, 512)).astype(np.float32)
    out = preprocess_stack(hu, MODEL_WINDOWS, 256)
    assert out.shape == (5, 3, 256, 256)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_window_channels_exact_values() -> None:
    hu = np.array([[[0.0, 40.0, 80.0, -20.0]]], dtype=np.float32)
    out = window_channels(hu, (Window(80, 40), Window(200, 80)))
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(out[0, 1, 0], [0.1, 0.3, 0.5, 0.0], atol=1e-6)


def test_integer_downscale_is_block_mean() -> None:
    hu = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    out = resize_slices(hu, 2)
    np.testing.assert_allclose(out[0], [[2.5, 4.5], [10.5, 12.5]])


def test_fractional_resize_preserves_constant_and_mean() -> None:
    hu = np.full((2, 300, 300), 42.0, dtype=np.float32)
    np.testing.assert_allclose(resize_slices(hu, 128), 42.0, rtol=1e-5)
    rng = np.random.default_rng(1)
    noisy = rng.normal(size=(1, 300, 300)).astype(np.float32)
    assert resize_slices(noisy, 128).mean() == pytest.approx(noisy.mean(), abs=1e-4)


def test_non_square_is_padded_with_air_keeping_aspect() -> None:
    hu = np.zeros((1, 2, 4), dtype=np.float32)
    sq = pad_to_square(hu)
    assert sq.shape == (1, 4, 4)
    assert (sq[0, 0] == -1024).all() and (sq[0, 1] == 0).all() and (sq[0, 3] == -1024).all()


def test_single_slice_and_bad_rank() -> None:
    assert preprocess_stack(np.zeros((64, 64), np.float32), MODEL_WINDOWS, 32).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="expected"):
        preprocess_stack(np.zeros((1, 1, 8, 8), np.float32))


# ------------------------------------------------------------------------------------------ version 2
# Millimetre resampling centred on the head, through the real loader (generated DICOM files).

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from pydicom.uid import generate_uid  # noqa: E402

from tests.factories import make_ct_slice  # noqa: E402
from viewer.core.dicom.loader import load_paths  # noqa: E402
from viewer.core.dicom.volume import StackVolume  # noqa: E402
from viewer.core.errors import ModelContractError, StackNotSupportedError  # noqa: E402
from viewer.core.preprocess import (  # noqa: E402
    PreprocessSpec,
    SliceGeometry,
    geometry_from_stack,
    preprocess,
    slab_weights,
)

V2 = PreprocessSpec(version=2, size=64, field_mm=230.0, slab_mm=5.0)


def phantom(
    n: int, rows: int, cols: int, spacing: float, *, dz: float = 5.0, shift_px: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """An asymmetric head: scalp/skull ring, brain, a left-sided hyperdense lens; varies along z."""
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy, cx = (rows - 1) / 2 + shift_px[0], (cols - 1) / 2 + shift_px[1]
    x, y = (xx - cx) * spacing, (yy - cy) * spacing
    out = np.full((n, rows, cols), -1000.0, dtype=np.float32)
    for k in range(n):
        z = (k - n / 2) * dz
        a, b = 70.0 * (1 - (z / 110) ** 2) ** 0.5, 88.0 * (1 - (z / 110) ** 2) ** 0.5
        r = (x / a) ** 2 + (y / b) ** 2
        sl = out[k]
        sl[r < 1.0] = 1200.0
        sl[r < 0.86] = 30.0 + 0.1 * z
        lens = ((x + 0.7 * a) / 10.0) ** 2 + ((y + 20.0) / 25.0) ** 2 < 1.0
        sl[lens & (r < 0.86)] = 70.0
        sl[(np.abs(x - 8) < 4) & (np.abs(y) < 20) & (r < 0.86)] = 5.0  # ventricle, off the midline
    return out


def write_series(
    folder: Path,
    hu: np.ndarray,
    spacing: float,
    *,
    dz: float = 5.0,
    thickness: float | None = None,
    unsigned: bool = False,
    monochrome1: bool = False,
    flip_rows_direction: bool = False,
    order_seed: int = 0,
) -> None:
    """Write ``hu`` as a CT series (scrambled file order); options change only the encoding."""
    folder.mkdir(parents=True, exist_ok=True)
    n, rows, cols = hu.shape
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    order = np.random.default_rng(order_seed).permutation(n)
    for k in order:
        pixels = hu[k][:, ::-1] if flip_rows_direction else hu[k]
        x0 = (cols - 1) / 2 * spacing if flip_rows_direction else -(cols - 1) / 2 * spacing
        ds = make_ct_slice(
            np.rint(pixels).astype(np.int16),
            position=(x0, -(rows - 1) / 2 * spacing, k * dz),
            orientation=(-1, 0, 0, 0, 1, 0) if flip_rows_direction else (1, 0, 0, 0, 1, 0),
            instance_number=int(k) + 1,
            study_uid=study,
            series_uid=series,
            frame_of_reference_uid=frame,
            spacing=(spacing, spacing),
            thickness=thickness or dz,
        )
        if unsigned:
            ds.PixelRepresentation = 0
            ds.BitsStored, ds.HighBit = 12, 11
            ds.PixelData = (np.rint(pixels) + 1024).clip(0, 4095).astype(np.uint16).tobytes()
        if monochrome1:
            ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(folder / f"{k * 7919 % 1000:04d}_{k}.dcm", enforce_file_format=True)


def load_and_preprocess(folder: Path, spec: PreprocessSpec = V2) -> np.ndarray:
    report = load_paths([folder])
    (stack,) = [s for p in report.patients for st in p.studies for se in st.series for s in se.stacks]
    vol = StackVolume(stack)
    try:
        hu = vol.load_all()
    finally:
        vol.close()
    return preprocess(hu, spec, geometry_from_stack(stack))


def test_v2_identical_under_encoding_order_and_flipped_row_direction(tmp_path: Path) -> None:
    hu = phantom(6, 96, 80, 0.9)
    ref = load_and_preprocess(_write(tmp_path / "ref", hu, 0.9))
    assert ref.shape == (6, 3, 64, 64)
    variants: dict[str, dict[str, bool | int]] = {
        "order": {"order_seed": 5},
        "unsigned": {"unsigned": True},
        "monochrome1": {"monochrome1": True},
        "flipped_rows": {"flip_rows_direction": True},
    }
    for name, kwargs in variants.items():
        out = load_and_preprocess(_write(tmp_path / name, hu, 0.9, **kwargs))
        if name == "flipped_rows":  # the normal (row x column) points down: the stack runs top to bottom
            out = out[::-1]
        assert float(np.abs(out - ref).max()) < 1e-5, name
    # and the flip is not a no-op: v1 (matrix resize, no orientation) sees a mirrored image
    v1 = PreprocessSpec(version=1, size=64)
    a, b = load_and_preprocess(tmp_path / "ref", v1), load_and_preprocess(tmp_path / "flipped_rows", v1)[::-1]
    assert float(np.abs(a - b).max()) > 0.1


def _write(folder: Path, hu: np.ndarray, spacing: float, **kwargs: bool | int) -> Path:
    write_series(folder, hu, spacing, **kwargs)  # type: ignore[arg-type]
    return folder


def test_v2_centres_on_the_head_not_the_image(tmp_path: Path) -> None:
    centred = phantom(4, 260, 260, 1.0)
    off = phantom(4, 260, 260, 1.0, shift_px=(-20, 25))  # head 32 mm off the image centre
    a = load_and_preprocess(_write(tmp_path / "c", centred, 1.0))
    b = load_and_preprocess(_write(tmp_path / "o", off, 1.0))
    assert float(np.abs(a - b).max()) < 1e-5
    v1 = PreprocessSpec(version=1, size=64)
    assert float(np.abs(preprocess(centred, v1) - preprocess(off, v1)).max()) > 0.5


def test_v2_output_depends_on_millimetres_not_the_matrix(tmp_path: Path) -> None:
    fine = phantom(3, 512, 512, 0.45)  # 230 mm field, 512 matrix
    coarse = phantom(3, 200, 200, 1.5)  # 300 mm field, 200 matrix
    a = load_and_preprocess(_write(tmp_path / "f", fine, 0.45))
    b = load_and_preprocess(_write(tmp_path / "c", coarse, 1.5))
    brain = a[:, 0] > 0  # edges differ by partial volume; the bulk must agree
    assert float(np.abs(a - b)[:, 0][brain].mean()) < 0.03
    v1 = PreprocessSpec(version=1, size=64)
    assert float(np.abs(preprocess(fine, v1) - preprocess(coarse, v1)).mean()) > 0.05


def test_v2_slab_averages_thin_slices_to_the_training_thickness() -> None:
    w = slab_weights([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 1.0, 5.0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w[3], [0, 0.2, 0.2, 0.2, 0.2, 0.2, 0], atol=1e-6)
    assert np.array_equal(slab_weights([0.0, 5.0, 10.0], 5.0, 5.0), np.eye(3, dtype=np.float32))
    thin = np.zeros((7, 32, 32), np.float32)
    thin[3] = 100.0  # one bright 1 mm slice spreads into the 5 mm slabs around it
    geom = SliceGeometry((8.0, 8.0), positions=tuple(float(z) for z in range(7)), thickness=1.0)
    spec = PreprocessSpec(version=2, size=32, field_mm=256.0, windows=(Window(400, 0),))
    out = preprocess(thin, spec, geom)[:, 0]
    expected = (np.array([0, 25, 20, 20, 20, 25, 0]) + 200) / 400  # edge slabs hold 4 slices
    np.testing.assert_allclose(out[:, 16, 16], expected, atol=1e-5)


def test_v2_accepts_int16_like_float32() -> None:
    hu = np.rint(phantom(2, 64, 64, 3.0))
    geom = SliceGeometry((3.0, 3.0), positions=(0.0, 5.0))
    a = preprocess(hu, V2, geom)
    b = preprocess(np.rint(hu).astype(np.int16), V2, geom)
    assert float(np.abs(a - b).max()) < 1e-5


def test_v2_needs_geometry_and_spacing() -> None:
    with pytest.raises(StackNotSupportedError, match="geometry"):
        preprocess(np.zeros((2, 8, 8), np.float32), V2, None)
    with pytest.raises(StackNotSupportedError, match="pixel spacing"):
        SliceGeometry((0.0, 1.0))


def test_spec_metadata_round_trip_and_bad_values() -> None:
    raw = json.dumps(V2.to_metadata())
    assert PreprocessSpec.from_metadata(raw, size=64, windows=MODEL_WINDOWS) == V2
    assert PreprocessSpec.from_metadata(None, size=128, windows=MODEL_WINDOWS).version == 1
    for bad, match in (
        ('{"version": 3}', "version"),
        ('{"version": 2, "kind": "pad_resize"}', "kind"),
        ('{"version": 2, "size": 256}', "size"),
        ('{"version": 2, "field_mm": -1}', "field_mm"),
        ("[1]", "object"),
        ("{", "JSON"),
    ):
        with pytest.raises(ModelContractError, match=match):
            PreprocessSpec.from_metadata(bad, size=64, windows=MODEL_WINDOWS)


def test_spec_from_a_parsed_record_with_and_without_its_windows() -> None:
    """One reader for the parsed records training keeps (ONNX metadata, checkpoints): windows from the record,
    the default only where the caller gives one, version 1 without a preprocessing entry."""
    windows = [{"width": 80.0, "level": 40.0}, {"width": 200.0, "level": 80.0}]
    spec = PreprocessSpec.from_record({"preprocessing": V2.to_metadata(), "windows": windows}, size=64)
    assert spec.version == 2
    assert spec.windows == (Window(80.0, 40.0), Window(200.0, 80.0))
    old = PreprocessSpec.from_record({}, size=128, default_windows=MODEL_WINDOWS)
    assert (old.version, old.windows) == (1, MODEL_WINDOWS)
    for record, match in (({}, "not a list"), ({"windows": [{"width": 80.0}]}, "malformed")):
        with pytest.raises(ModelContractError, match=match):
            PreprocessSpec.from_record(record, size=128)
