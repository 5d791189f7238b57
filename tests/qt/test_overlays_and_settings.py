"""Orientation letters from ImageOrientationPatient, overlay text helpers, and the settings store."""

from __future__ import annotations

import pytest

from viewer.core.constants import WINDOW_PRESETS, Window
from viewer.qt.overlays import direction_letters, format_date, orientation_labels
from viewer.qt.settings import Settings


@pytest.mark.parametrize(
    ("iop", "expected"),
    [
        ((1, 0, 0, 0, 1, 0), {"left": "R", "right": "L", "top": "A", "bottom": "P"}),  # axial
        ((1, 0, 0, 0, 0, -1), {"left": "R", "right": "L", "top": "S", "bottom": "I"}),  # coronal
        ((0, 1, 0, 0, 0, -1), {"left": "A", "right": "P", "top": "S", "bottom": "I"}),  # sagittal
    ],
)
def test_orientation_labels(iop: tuple[float, ...], expected: dict[str, str]) -> None:
    assert orientation_labels(iop) == expected


def test_oblique_direction_gets_two_letters_and_missing_iop_none() -> None:
    assert direction_letters((0.8, 0.6, 0.0)) == "LP"
    assert direction_letters((-0.95, 0.0, 0.1)) == "R"
    assert orientation_labels(None) == {}


def test_format_date() -> None:
    assert format_date("20260101") == "2026-01-01"
    assert format_date("") == ""


def test_settings_round_trip_and_presets(qapp: object) -> None:
    s = Settings()
    assert s.presets() == WINDOW_PRESETS
    s.set_preset("brain", Window(90, 45))
    s.cine_fps = 500  # clamped on read
    s.sync()
    again = Settings()
    assert again.presets()["brain"] == Window(90, 45)
    assert again.presets()["bone"] == WINDOW_PRESETS["bone"]
    assert again.cine_fps == 60
    again.reset_presets()
    assert again.presets() == WINDOW_PRESETS
    with pytest.raises(ValueError, match="Unknown window preset"):
        again.set_preset("liver", Window(150, 90))
