"""Key 0 shows the header's VOI as pydicom defines it (VOI LUT Sequence, SIGMOID); presets stay linear."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from pytestqt.qtbot import QtBot

from tests.core.test_header_voi import vlut_file, write_voi_ct
from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.qt.main_window import MainWindow


def _grey(window: MainWindow) -> np.ndarray:
    """The 8-bit grey image pyqtgraph renders for the current slice (before zoom)."""
    item = window.view.image
    item.render()
    img = item.qimage.convertToFormat(QImage.Format.Format_Grayscale8)
    arr = np.frombuffer(img.constBits(), dtype=np.uint8).reshape(img.height(), img.bytesPerLine())
    return arr[:, : img.width()].astype(int)


def _show(qtbot: QtBot, path: Path) -> MainWindow:
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [path])
    qtbot.waitUntil(lambda: window.current_stack() is not None, timeout=10_000)
    window.view.setFocus()
    return window


def _bottom_right(window: MainWindow) -> str:
    return window.view.overlay.corner_text("bottom_right")


def test_voi_lut_sequence_is_the_header_window(qtbot: QtBot) -> None:
    window = _show(qtbot, vlut_file())
    ds = pydicom.dcmread(vlut_file())
    expected = np.round(apply_voi_lut(ds.pixel_array, ds) / 65535.0 * 255.0).astype(int)
    assert "VOI LUT" in _bottom_right(window)
    assert np.abs(_grey(window) - expected).max() <= 1
    qtbot.keyClick(window.view, Qt.Key.Key_1)  # a preset: linear
    assert "VOI LUT" not in _bottom_right(window) and "W 80  L 40" in _bottom_right(window)
    qtbot.keyClick(window.view, Qt.Key.Key_0)  # back to the header's VOI
    assert "VOI LUT" in _bottom_right(window)
    assert np.abs(_grey(window) - expected).max() <= 1
    qtbot.keyClick(window.view, Qt.Key.Key_I)  # invert applies to it too
    assert np.abs(_grey(window) - (255 - expected)).max() <= 1


def test_sigmoid_header_window(qtbot: QtBot, tmp_path: Path) -> None:
    path = write_voi_ct(tmp_path / "sig" / "1.dcm", "SIGMOID")
    window = _show(qtbot, path.parent)
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds)
    y_min, y_max = -(2**15) - 1024, 2**15 - 1 - 1024
    sigmoid = np.round((apply_voi_lut(hu, ds) - y_min) / (y_max - y_min) * 255.0).astype(int)
    linear = np.round(np.clip((hu - 0.0) / 80.0, 0, 1) * 255.0).astype(int)
    assert np.abs(sigmoid - linear).max() > 20  # the two differ enough for the check to mean something
    assert np.abs(_grey(window) - sigmoid).max() <= 1
    assert "SIGMOID" in _bottom_right(window)
    qtbot.keyClick(window.view, Qt.Key.Key_1)  # brain preset 80/40, linear, like manual windowing
    assert np.abs(_grey(window) - linear).max() <= 1
    qtbot.keyClick(window.view, Qt.Key.Key_0)
    assert np.abs(_grey(window) - sigmoid).max() <= 1
