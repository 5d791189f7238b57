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
