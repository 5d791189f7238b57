"""Model input preprocessing, shared by the viewer's inference engine and the training package.

HU slices -> pad to square with air -> area-resize to ``size`` -> one channel per CT window, each
``(clip(HU, low, high) - low) / width`` in [0, 1]. Training and inference call this one function, so
both see identical pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from viewer.core.constants import MODEL_INPUT_SIZE, MODEL_WINDOWS, Window

AIR_HU = -1024.0


@lru_cache(maxsize=16)
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix that averages input cells by their overlap with each output cell."""
    scale = n_in / n_out
    edges = np.arange(n_out + 1, dtype=np.float64) * scale
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    weights = overlap / overlap.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def pad_to_square(hu: np.ndarray, fill: float = AIR_HU) -> np.ndarray:
    """Centre a (S, H, W) stack on a square canvas of air, keeping the pixel aspect."""
    s, h, w = hu.shape
    if h == w:
        return hu
    n = max(h, w)
    out = np.full((s, n, n), fill, dtype=np.float32)
    top, left = (n - h) // 2, (n - w) // 2
    out[:, top : top + h, left : left + w] = hu
    return out


def resize_slices(hu: np.ndarray, size: int) -> np.ndarray:
    """Area-resize a square (S, N, N) float32 stack to (S, size, size)."""
    _, h, w = hu.shape
    if h == size and w == size:
        return hu
    if h % size == 0 and w % size == 0:  # exact block mean: the common 512 -> 256 case
        fy, fx = h // size, w // size
        rows_summed = hu[:, 0::fy, :].copy()
        for dy in range(1, fy):
            rows_summed += hu[:, dy::fy, :]
        out = rows_summed[:, :, 0::fx].copy()
        for dx in range(1, fx):
            out += rows_summed[:, :, dx::fx]
        out *= np.float32(1.0 / (fy * fx))
        return out
    rows, cols = _area_matrix(h, size), _area_matrix(w, size)
    return np.matmul(np.matmul(rows, hu), cols.T)


def window_channels(hu: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
    """(S, H, W) HU -> (S, C, H, W) float32 in [0, 1], one channel per window."""
    s, h, w = hu.shape
    out = np.empty((s, len(windows), h, w), dtype=np.float32)
    for c, win in enumerate(windows):
        width = max(float(win.width), 1.0)
        low = float(win.level) - width / 2.0
        channel = out[:, c]
        np.subtract(hu, np.float32(low), out=channel)
        channel *= np.float32(1.0 / width)
        np.clip(channel, 0.0, 1.0, out=channel)
    return out


def preprocess_stack(
    hu: np.ndarray,
    windows: Sequence[Window] = MODEL_WINDOWS,
    size: int = MODEL_INPUT_SIZE,
) -> np.ndarray:
    """(S, H, W) or (H, W) HU -> (S, C, size, size) float32 model input in [0, 1]."""
    arr = np.asarray(hu, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"expected (slices, rows, columns) HU, got shape {arr.shape}")
    return window_channels(resize_slices(pad_to_square(arr), size), windows)
