"""Model-grid maps back on the stack's pixel grid: the exact inverse of preprocessing v1's geometry."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.core.preprocess import model_grid_to_pixels, pad_to_square, resize_slices


def _disk(rows: int, cols: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:cols]
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).astype(np.float32)


@pytest.mark.parametrize(("rows", "cols"), [(256, 256), (200, 256), (256, 180), (512, 384)])
def test_round_trip_keeps_a_lesion_in_place(rows: int, cols: int) -> None:
    truth = _disk(rows, cols, rows * 0.3, cols * 0.7, min(rows, cols) * 0.12)
    on_model = resize_slices(pad_to_square(truth[None], fill=0.0), 128)  # what the model sees
    back = model_grid_to_pixels(on_model, rows, cols)[0]
    assert back.shape == (rows, cols)
    got = back >= 0.5
    ref = truth >= 0.5
    iou = (got & ref).sum() / (got | ref).sum()
    assert iou > 0.93
    cy, cx = np.argwhere(got).mean(axis=0) - np.argwhere(ref).mean(axis=0)
    assert abs(cy) < 0.5 and abs(cx) < 0.5  # no shift from the padding or the resize


def test_constant_maps_stay_constant_and_batches_broadcast() -> None:
    maps = np.full((3, 2, 64, 64), 0.25, dtype=np.float32)
    out = model_grid_to_pixels(maps, 100, 130)
    assert out.shape == (3, 2, 100, 130)
    assert np.allclose(out, 0.25)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="square"):
        model_grid_to_pixels(np.zeros((4, 64, 32), dtype=np.float32), 10, 10)
    with pytest.raises(ValueError, match="at least"):
        model_grid_to_pixels(np.zeros((64, 64), dtype=np.float32), 0, 10)
