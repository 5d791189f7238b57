"""Measurements on the real window: tied to their slice, ROI statistics in HU, shared by viewports, saved
per study and shown again when the study is reopened (from any folder)."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QImage
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window, mouse_drag, open_and_wait
from viewer.core.measure import Shape
from viewer.core.measure_store import STORE_FILE, MeasurementStore
from viewer.core.paths import user_data_path
from viewer.core.state.layout import Layout
from viewer.qt.export import render_view
from viewer.qt.main_window import MainWindow
from viewer.qt.slice_view import SliceView

N = 24


@pytest.fixture
def series(tmp_path: Path) -> Path:
    write_ct_series(tmp_path / "ct", N)
    return tmp_path / "ct"


def _open(qtbot: QtBot, folder: Path) -> MainWindow:
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [folder])
    assert window.current_stack() is not None
    return window


def _centre_drag(qtbot: QtBot, view: SliceView, half: int = 60) -> tuple[QPoint, QPoint]:
    vp = view.graphics.viewport()
    a = QPoint(vp.width() // 2 - half, vp.height() // 2 - half // 2)
    b = QPoint(vp.width() // 2 + half, vp.height() // 2 + half // 2)
    mouse_drag(qtbot, vp, a, b)
    return a, b


def _pixels(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    ptr = image.constBits()
    return np.frombuffer(ptr, np.uint8, count=image.sizeInBytes()).reshape(image.height(), -1).copy()


def test_a_ruler_is_drawn_on_its_slice_only_and_exported_only_there(qtbot: QtBot, series: Path) -> None:
    w = _open(qtbot, series)
    view = w.view
    w.set_slice(17)
    clean_17 = _pixels(render_view(view))
    w.set_slice(13)
    clean_13 = _pixels(render_view(view))
    qtbot.keyClick(view, Qt.Key.Key_M)
    _centre_drag(qtbot, view)
    assert len(view.measurements()) == 1
    assert not np.array_equal(_pixels(render_view(view)), clean_13)
    w.set_slice(17)
    assert view.measurements() == []
    assert np.array_equal(_pixels(render_view(view)), clean_17)  # the PNG export has no ruler either
    w.set_slice(20)
    assert view.measurements() == []
    w.set_slice(13)
    assert len(view.measurements()) == 1


def test_ellipse_roi_shows_hu_statistics_of_the_modality_values_and_area(qtbot: QtBot, series: Path) -> None:
    w = _open(qtbot, series)
    view = w.view
    w.set_slice(5)
    qtbot.keyClick(view, Qt.Key.Key_E)
    assert view.tool == "ellipse" and w.act_ellipse.isChecked() and not w.act_ruler.isChecked()
    _centre_drag(qtbot, view, half=40)
    (g,) = view.measurements()
    m = g.measurement
    assert m.shape is Shape.ELLIPSE
    # the factory's disc is 30 HU: the display window (80/40) would map it to grey 191, not 30
    lines = g.text().splitlines()
    assert lines[0] == "Mean 30.0 HU  SD 0.0"
    assert lines[1] == "Min 30.0  Max 30.0"
    area = float(re.fullmatch(r"Area ([\d.]+) mm²", lines[2]).group(1))  # type: ignore[union-attr]
    row_sp, col_sp = view.context.stack.slices[0].pixel_spacing  # type: ignore[union-attr,misc]
    a = abs(m.end[0] - m.start[0]) / 2 * col_sp
    b = abs(m.end[1] - m.start[1]) / 2 * row_sp
    assert area == pytest.approx(math.pi * a * b, rel=0.1)
    qtbot.keyClick(view, Qt.Key.Key_B)
    assert view.tool == "rectangle" and w.act_rectangle.isChecked() and not w.act_ellipse.isChecked()
    qtbot.keyClick(view, Qt.Key.Key_Escape)
    assert view.tool == "window" and not w.act_rectangle.isChecked()


def test_roi_keys_are_in_f1_and_del_removes_the_newest_on_the_slice(qtbot: QtBot, series: Path) -> None:
    w = _open(qtbot, series)
    keys = {desc: k for _section, k, desc in w.bindings()}
    assert any(k == "E" and "Ellipse ROI" in d for d, k in keys.items())
    assert any(k == "B" and "Rectangle" in d for d, k in keys.items())
    view = w.view
    w.set_slice(3)
    qtbot.keyClick(view, Qt.Key.Key_M)
    _centre_drag(qtbot, view)
    qtbot.keyClick(view, Qt.Key.Key_B)
    _centre_drag(qtbot, view, half=30)
    assert [g.measurement.shape for g in view.measurements()] == [Shape.RULER, Shape.RECTANGLE]
    qtbot.keyClick(view, Qt.Key.Key_R)  # reset view keeps measurements
    assert len(view.measurements()) == 2
    qtbot.keyClick(view, Qt.Key.Key_Delete)
    assert [g.measurement.shape for g in view.measurements()] == [Shape.RULER]
    qtbot.keyClick(view, Qt.Key.Key_Delete)
    qtbot.keyClick(view, Qt.Key.Key_Delete)  # nothing left: no error
    assert view.measurements() == []


def test_a_measurement_shows_in_every_viewport_showing_its_slice(qtbot: QtBot, series: Path) -> None:
    w = _open(qtbot, series)
    uid = w.current_stack().uid  # type: ignore[union-attr]
    w.set_layout(Layout.ONE_BY_TWO)
    w.state.set_active(1)
    w.show_stack(uid)
    left, right = w.views()
    w.state.set_active(0)
    w.set_slice(9)
    assert left.image_ref() == right.image_ref()  # same frame of reference: they scroll together
    qtbot.keyClick(left, Qt.Key.Key_E)
    _centre_drag(qtbot, left)
    assert len(left.measurements()) == len(right.measurements()) == 1
    assert right.measurements()[0].text() == left.measurements()[0].text()


def test_measurements_are_saved_per_study_and_shown_again_from_another_folder(
    qtbot: QtBot, series: Path, tmp_path: Path
) -> None:
    w = _open(qtbot, series)
    view = w.view
    w.set_slice(11)
    qtbot.keyClick(view, Qt.Key.Key_E)
    _centre_drag(qtbot, view)
    text = view.measurements()[0].text()
    saved = MeasurementStore(user_data_path()).load()
    assert [m.shape for m in saved] == [Shape.ELLIPSE]
    content = (user_data_path() / STORE_FILE).read_text()
    assert "CANARY" not in content.upper() and str(series) not in content
    w.close()

    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(series, moved)
    w2 = _open(qtbot, moved)
    w2.set_slice(11)
    (g,) = w2.view.measurements()
    assert g.text() == text
    w2.set_slice(12)
    assert w2.view.measurements() == []
    w2.set_slice(11)
    qtbot.keyClick(w2.view, Qt.Key.Key_Delete)
    assert MeasurementStore(user_data_path()).load() == []


def test_a_damaged_store_is_set_aside_and_the_window_still_opens(qtbot: QtBot, series: Path) -> None:
    (user_data_path() / STORE_FILE).write_text("{damaged")
    w = _open(qtbot, series)
    assert len(w.measurements) == 0
    assert (user_data_path() / (STORE_FILE + ".damaged")).read_text() == "{damaged"


def test_the_shown_series_measurements_export_as_a_measurement_sr(
    qtbot: QtBot, series: Path, tmp_path: Path
) -> None:
    import highdicom as hd
    import pydicom

    w = _open(qtbot, series)
    view = w.view
    w.set_slice(7)
    qtbot.keyClick(view, Qt.Key.Key_E)
    _centre_drag(qtbot, view, half=40)
    label = view.measurements()[0].text()
    w.set_slice(8)
    qtbot.keyClick(view, Qt.Key.Key_M)
    _centre_drag(qtbot, view)
    path = w.export_measurement_sr(tmp_path / "sr")
    raw = path.read_bytes()
    assert b"CANARY" not in raw  # de-identified by default
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path))
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    (roi,) = report.get_planar_roi_measurement_groups()
    means = [
        m.value for m in roi.get_measurements() if m.derivation is not None and m.derivation.meaning == "Mean"
    ]
    assert means == [pytest.approx(float(label.split()[1]), abs=0.05)]  # the label's mean, from the HU values
    (ruler,) = report.get_image_measurement_groups()
    assert ruler.get_measurements()[0].unit.value == "mm"
