"""Window presets and windowing maths (values from issue 2 / VIEWER.md; OHIF once shipped two swapped)."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.core.constants import PRESET_KEYS, WINDOW_PRESETS, Window
from viewer.core.windowing import apply_window, drag_window, preset, to_uint8


@pytest.mark.parametrize(
    ("name", "width", "level"),
    [
        ("brain", 80, 40),
        ("subdural", 200, 80),
        ("stroke", 40, 40),
        ("bone", 2800, 600),
        ("lung", 1500, -600),
        ("abdomen", 400, 40),
        ("mediastinum", 350, 50),
    ],
)
def test_preset_values(name: str, width: float, level: float) -> None:
    assert preset(name) == Window(width, level)


def test_preset_key_order_matches_number_keys() -> None:
    assert PRESET_KEYS == ("brain", "subdural", "stroke", "bone", "lung", "abdomen", "mediastinum")
    assert set(PRESET_KEYS) == set(WINDOW_PRESETS)


def test_unknown_preset_lists_known_names() -> None:
    with pytest.raises(ValueError, match="brain"):
        preset("liver")


def test_levels_round_trip() -> None:
    win = Window(80, 40)
    assert win.levels == (0.0, 80.0)
    assert Window.from_levels(*win.levels) == win


def test_apply_window_maps_edges_and_clips() -> None:
    hu = np.array([-1000.0, 0.0, 40.0, 80.0, 3000.0], dtype=np.float32)
    out = apply_window(hu, Window(80, 40))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(apply_window(hu, Window(80, 40), invert=True), [1.0, 1.0, 0.5, 0.0, 0.0])


def test_to_uint8() -> None:
    hu = np.array([0.0, 40.0, 80.0], dtype=np.float32)
    assert to_uint8(hu, Window(80, 40)).tolist() == [0, 128, 255]


def test_drag_window_directions_and_floor() -> None:
    start = Window(400, 40)
    assert drag_window(start, 10, 0) == Window(410, 40)
    assert drag_window(start, 0, -20) == Window(400, 20)
    assert drag_window(start, -1000, 0).width == 1.0
