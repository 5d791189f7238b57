"""De-identified PNG export: no identifying text in the image (issue 14, RELIABILITY.md §4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from PySide6.QtGui import QImage
from pytestqt.qtbot import QtBot

from tests.factories import CANARY_ID, CANARY_NAME, write_ct_series
from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.qt.export import render_view
from viewer.qt.main_window import MainWindow

STUDY_DESC = "CANARY STUDY DESCRIPTION"
SERIES_DESC = "CANARY SERIES DESCRIPTION"
IDENTIFIERS = (CANARY_NAME.replace("^", " "), CANARY_ID, STUDY_DESC, SERIES_DESC, "2026-01-01", "20260101")


def _series(folder: Path, *, identified: bool) -> Path:
    for path in write_ct_series(folder, 6, seed=3, shuffle=False, random_names=False):
        ds = pydicom.dcmread(path)
        if identified:
            ds.StudyDescription, ds.SeriesDescription = STUDY_DESC, SERIES_DESC
        else:
            for keyword in ("StudyDescription", "SeriesDescription", "StudyDate"):
                delattr(ds, keyword)
            ds.PatientName, ds.PatientID = "OTHER^PERSON", "OTHER-ID"
        ds.save_as(path)
    return folder


def _pixels(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_RGB32)
    return np.frombuffer(img.constBits(), dtype=np.uint8).reshape(img.height(), img.bytesPerLine()).copy()


def _shown(qtbot: QtBot, folder: Path) -> MainWindow:
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [folder])
    qtbot.waitUntil(lambda: window.current_stack() is not None, timeout=10_000)
    return window


def test_deidentified_export_draws_no_identifying_text(qtbot: QtBot, tmp_path: Path) -> None:
    window = _shown(qtbot, _series(tmp_path / "a", identified=True))
    view = window.view
    on_screen = view.overlay.corner_text("top_left") + view.overlay.corner_text("top_right")
    assert STUDY_DESC in on_screen and SERIES_DESC in on_screen  # the screen shows them

    out = window.export_view(tmp_path / "view.png")
    drawn = " | ".join(view.overlay.painted_texts)
    assert not [t for t in IDENTIFIERS if t in drawn], drawn
    assert "Im 1 / 6" in drawn and "W 80  L 40" in drawn  # it did draw the non-identifying overlay
    assert not QImage(str(out)).isNull()

    render_view(view, include_demographics=True)  # the opt-in export draws them
    drawn = " | ".join(view.overlay.painted_texts)
    assert STUDY_DESC in drawn and SERIES_DESC in drawn and CANARY_ID in drawn
    assert STUDY_DESC in view.overlay.corner_text("top_left")  # the screen is unchanged afterwards


def test_deidentified_export_pixels_do_not_depend_on_identifiers(qtbot: QtBot, tmp_path: Path) -> None:
    with_ids = _shown(qtbot, _series(tmp_path / "a", identified=True))
    without = _shown(qtbot, _series(tmp_path / "b", identified=False))
    a = _pixels(QImage(str(with_ids.export_view(tmp_path / "a.png"))))
    b = _pixels(QImage(str(without.export_view(tmp_path / "b.png"))))
    assert a.shape == b.shape and np.array_equal(a, b)
    identified = _pixels(render_view(with_ids.view, include_demographics=True))
    assert not np.array_equal(identified, a)  # the text is there when asked for, so the check can fail
