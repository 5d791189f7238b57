"""Windowing (VOI) maths, pure numpy. Presets live in :mod:`viewer.core.constants`."""

from __future__ import annotations

import numpy as np

from viewer.core.constants import WINDOW_PRESETS, Window


def preset(name: str) -> Window:
    try:
        return WINDOW_PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown window preset {name!r}; known: {', '.join(WINDOW_PRESETS)}") from None


def apply_window(values: np.ndarray, window: Window, *, invert: bool = False) -> np.ndarray:
    """Linear window to float32 in [0, 1]: ``(clip(v, low, high) - low) / width``.

    A non-positive width is treated as a 1-unit window (DICOM requires width >= 1).
    """
    width = max(float(window.width), 1.0)
    low = float(window.level) - width / 2.0
    out = np.asarray(values, dtype=np.float32) - np.float32(low)
    out *= np.float32(1.0 / width)
    np.clip(out, 0.0, 1.0, out=out)
    if invert:
        np.subtract(1.0, out, out=out)
    return out


def to_uint8(values: np.ndarray, window: Window, *, invert: bool = False) -> np.ndarray:
    """Window to 8-bit grey, e.g. for PNG export."""
    return np.round(apply_window(values, window, invert=invert) * 255.0).astype(np.uint8)


def drag_window(start: Window, dx: float, dy: float, *, sensitivity: float = 1.0) -> Window:
    """Window after a left-drag of (dx, dy) screen pixels from ``start``.

    Horizontal motion changes the width (right = wider), vertical motion the level (down = higher),
    both by ``sensitivity`` units per pixel. Width never goes below 1.
    """
    return Window(width=max(1.0, start.width + dx * sensitivity), level=start.level + dy * sensitivity)
