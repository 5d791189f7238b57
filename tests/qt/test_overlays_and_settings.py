"""Orientation letters from ImageOrientationPatient, overlay text helpers, and the settings store."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.factories import CANARY_ID, CANARY_NAME
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


def test_format_date(qapp: object) -> None:
    from PySide6.QtCore import QDate, QLocale

    before = QLocale()
    try:
        QLocale.setDefault(QLocale(QLocale.Language.German, QLocale.Country.Germany))
        short = QLocale().toString(QDate(2026, 1, 1), QLocale.FormatType.ShortFormat)
        assert format_date("20260101") == short
        assert format_date("2026.01.01") == format_date("20260101")
        QLocale.setDefault(QLocale.c())  # no locale set: ISO, not Qt's C short format "1 01 2026"
        assert format_date("20260101") == "2026-01-01"
    finally:
        QLocale.setDefault(before)
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


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_settings_file_is_private_whatever_the_umask(qapp: object, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        s = Settings(tmp_path / "cfg" / "settings.ini")
        s.cine_fps = 20
        s.sync()
    finally:
        os.umask(old)
    assert stat.S_IMODE(s.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(s.path.parent.stat().st_mode) == 0o700


def test_recent_paths_stay_off_disk_unless_allowed(qapp: object, tmp_path: Path) -> None:
    folder = f"/data/{CANARY_NAME}_{CANARY_ID}"
    s = Settings(tmp_path / "settings.ini")
    assert not s.remember_recent  # off by default
    s.add_recent([folder])
    s.last_folder = folder
    s.sync()
    assert s.recent() == [[folder]] and s.last_folder == folder  # this session still has them
    text = s.path.read_text()
    assert CANARY_NAME not in text and CANARY_ID not in text
    assert Settings(tmp_path / "settings.ini").recent() == []

    s.remember_recent = True  # allowed: this session's list is kept, and later ones too
    s.sync()
    again = Settings(tmp_path / "settings.ini")
    assert again.recent() == [[folder]] and again.last_folder == folder
    assert CANARY_ID in s.path.read_text()
    again.remember_recent = False  # withdrawn: what was stored goes
    again.sync()
    assert CANARY_ID not in s.path.read_text()


def test_stored_recent_paths_are_dropped_when_remembering_is_off(qapp: object, tmp_path: Path) -> None:
    path = tmp_path / "settings.ini"
    path.write_text(  # as an earlier Slicewise wrote it: recent folders verbatim, no consent setting
        "[paths]\n"
        f"last_folder=/data/{CANARY_ID}\n"
        f'recent="[[\\"/data/{CANARY_ID}\\"]]"\n'
        "[view]\ncine_fps=12\n"
    )
    s = Settings(path)
    assert s.recent() == [] and s.last_folder == ""
    assert CANARY_ID not in path.read_text()
    assert s.cine_fps == 12  # the other settings stay
