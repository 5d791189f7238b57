"""Freehand ROIs, angles, Cobb angles and arrows drawn with real mouse events on the real window; select,
move, reshape, delete, undo and redo; saved and shown again on reopening; in the measurement SR."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QImage, QMouseEvent
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from tests.core.test_measure_shapes import pnpoly_oracle
from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window, mouse_drag, mouse_path, open_and_wait
from viewer.core.measure import RoiStats, Shape, angle_degrees, polygon_area, stats_text
from viewer.qt.export import render_view
from viewer.qt.main_window import MainWindow
from viewer.qt.slice_view import SliceView

N = 12
CTRL = Qt.KeyboardModifier.ControlModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def series(tmp_path: Path) -> Path:
    write_ct_series(tmp_path / "ct", N)
    return tmp_path / "ct"


@pytest.fixture
def anisotropic(tmp_path: Path) -> Path:
    """The factory series with rows 0.5 mm and columns 1.0 mm apart (non-square pixels)."""
    paths = write_ct_series(tmp_path / "aniso", N)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.PixelSpacing = [0.5, 1.0]
        ds.save_as(p, enforce_file_format=True)
    return tmp_path / "aniso"


def _open(qtbot: QtBot, folder: Path) -> MainWindow:
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [folder])
    window.activateWindow()
    window.view.setFocus()
    return window


def _vp(view: SliceView, x: float, y: float) -> QPoint:
    """The viewport pixel showing image point (x, y)."""
    view.vb.updateMatrix()  # pyqtgraph applies a new view range lazily (at the next paint)
    return view.graphics.mapFromScene(view.image.mapToScene(QPointF(x, y)))


def _centre(view: SliceView) -> QPoint:
    vp = view.graphics.viewport()
    return QPoint(vp.width() // 2, vp.height() // 2)


LEFT = Qt.MouseButton.LeftButton


def _click(qtbot: QtBot, view: SliceView, p: QPoint, button: Qt.MouseButton = LEFT) -> None:
    qtbot.mouseClick(view.graphics.viewport(), button, pos=p)


def _double_click(view: SliceView, p: QPoint) -> None:
    """Press, release, double-click, release: what the platform sends for a double click."""
    vp = view.graphics.viewport()
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    for kind, buttons in (
        (QEvent.Type.MouseButtonPress, left),
        (QEvent.Type.MouseButtonRelease, none),
        (QEvent.Type.MouseButtonDblClick, left),
        (QEvent.Type.MouseButtonRelease, none),
    ):
        ev = QMouseEvent(
            kind, QPointF(p), QPointF(vp.mapToGlobal(p)), left, buttons, Qt.KeyboardModifier.NoModifier
        )
        QApplication.sendEvent(vp, ev)


def _pixels(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    return np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes()).copy()


def _shapes(view: SliceView) -> list[Shape]:
    return [g.measurement.shape for g in view.measurements()]


def test_freehand_roi_statistics_are_numpys_on_the_hu_values_inside(qtbot: QtBot, series: Path) -> None:
    w = _open(qtbot, series)
    view = w.view
    w.set_slice(4)
    qtbot.keyClick(view, Qt.Key.Key_L)
    assert view.tool == "freehand" and w.actions_registry.action("freehand").isChecked()
    # a hexagon across the edge of the factory's 30 HU disc (centre 32, 32, radius 25.6 px), dragged
    corners = [(32 + 30 * math.cos(a), 32 + 18 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 7)[:-1]]
    path = []
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1], strict=True):
        path += [_vp(view, x0 + (x1 - x0) * t, y0 + (y1 - y0) * t) for t in np.linspace(0, 1, 8)[:-1]]
    mouse_path(qtbot, view.graphics.viewport(), path)
    (g,) = view.measurements()
    m = g.measurement
    assert m.shape is Shape.FREEHAND and len(m.points) >= 30
    values = view.current_data()
    assert values is not None
    inside = values[pnpoly_oracle(m.points, values.shape)].astype(np.float64)
    assert 0 < np.count_nonzero(inside == -1000) < inside.size  # partly outside the disc
    spacing = view.context.stack.slices[0].pixel_spacing  # type: ignore[union-attr]
    area = polygon_area(m.points, spacing)[0]
    expect = RoiStats(inside.mean(), inside.std(), inside.min(), inside.max(), inside.size, area, "mm²")
    assert g.text() == stats_text(expect, "HU")
    hexagon = polygon_area(corners, spacing)[0]
    assert area == pytest.approx(hexagon, rel=0.03)  # the screen round trip keeps the drawn shape


def test_an_angle_on_non_square_pixels_measures_what_the_screen_shows(
    qtbot: QtBot, anisotropic: Path
) -> None:
    w = _open(qtbot, anisotropic)
    view = w.view
    assert view.context.stack.slices[0].pixel_spacing == (0.5, 1.0)  # type: ignore[union-attr]
    w.set_slice(2)
    qtbot.keyClick(view, Qt.Key.Key_G)
    v = _centre(view)
    a, c = v + QPoint(150, 0), v + QPoint(150, -150)  # a 45° angle on screen (the view keeps mm aspect)
    mouse_drag(qtbot, view.graphics.viewport(), a, v)
    assert view.measurements() == [] and "second arm" in w.statusBar().currentMessage()
    _click(qtbot, view, c)
    (g,) = view.measurements()
    m = g.measurement
    assert m.shape is Shape.ANGLE
    assert angle_degrees(m, (0.5, 1.0)) == pytest.approx(45.0, abs=0.01)
    assert g.text() == "45.0°"
    assert abs(angle_degrees(m, None) - 45.0) > 10  # in raw pixels it is not 45°: the spacing counts
    assert view.tool == "angle"  # the next angle can be drawn at once


def test_cobb_angle_is_the_angle_between_two_dragged_lines(qtbot: QtBot, anisotropic: Path) -> None:
    w = _open(qtbot, anisotropic)
    view = w.view
    qtbot.keyClick(view, Qt.Key.Key_G, SHIFT)
    assert view.tool == "cobb"
    c = _centre(view)
    vp = view.graphics.viewport()
    mouse_drag(qtbot, vp, c + QPoint(-120, -80), c + QPoint(120, -80))  # horizontal
    assert view.measurements() == []
    mouse_drag(qtbot, vp, c + QPoint(-87, 110), c + QPoint(87, 10))  # rising 30° (dx 174, dy 100)
    (g,) = view.measurements()
    expected = math.degrees(math.atan2(100, 174))
    assert angle_degrees(g.measurement, (0.5, 1.0)) == pytest.approx(expected, abs=0.01)
    assert re.fullmatch(r"Cobb (\d+\.\d)°", g.text())
    assert float(g.text()[5:-1]) == pytest.approx(expected, abs=0.05)


def test_an_arrow_takes_its_text_inline_and_edits_it_again(qtbot: QtBot, series: Path) -> None:
    w = _open(qtbot, series)
    view = w.view
    qtbot.keyClick(view, Qt.Key.Key_T)
    c = _centre(view)
    mouse_drag(qtbot, view.graphics.viewport(), c, c + QPoint(120, 90))
    editor = view.layer.text_editor
    assert editor.isVisible() and editor.hasFocus()
    qtbot.keyClicks(editor, "Bleed here")  # letters go to the editor, not to the viewer's keys
    assert view.tool == "arrow"
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    assert not editor.isVisible()
    (g,) = view.measurements()
    assert g.measurement.shape is Shape.ARROW
    assert g.measurement.text == "Bleed here" and g.text() == "Bleed here"
    qtbot.keyClick(view, Qt.Key.Key_F2)  # the arrow is still selected
    assert editor.isVisible() and editor.text() == "Bleed here"
    editor.setText("changed")
    qtbot.keyClick(editor, Qt.Key.Key_Escape)  # cancels
    assert not editor.isVisible() and view.measurements()[0].measurement.text == "Bleed here"
    mid = c + QPoint(60, 45)
    _double_click(view, mid)
    assert editor.isVisible()
    editor.setText("Subdural")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    assert view.measurements()[0].text() == "Subdural"
    qtbot.keyClick(view, Qt.Key.Key_Z, CTRL)
    assert view.measurements()[0].text() == "Bleed here"
    assert w.statusBar().currentMessage().startswith("Undone: edit text of arrow")


def test_select_move_reshape_delete_and_undo_redo(qtbot: QtBot, series: Path) -> None:
    w = _open(qtbot, series)
    view = w.view
    vp = view.graphics.viewport()
    qtbot.keyClick(view, Qt.Key.Key_M)
    c = _centre(view)
    mouse_drag(qtbot, vp, c + QPoint(-100, 0), c + QPoint(100, 0))
    mouse_drag(qtbot, vp, c + QPoint(-100, 120), c + QPoint(100, 120))
    first, second = (g.measurement for g in view.measurements())
    plain = _pixels(render_view(view))
    _click(qtbot, view, c)  # on the first ruler: selected, even with the ruler tool
    assert view.layer.selected_id == first.id
    assert np.array_equal(_pixels(render_view(view)), plain)  # a PNG export shows no selection
    assert view.layer.selected_id == first.id
    assert view.measurements()[0].selected and not view.measurements()[1].selected
    mouse_drag(qtbot, vp, c + QPoint(20, 0), c + QPoint(60, -40))  # drag its body: moved
    moved = view.measurements()[0].measurement
    start = view.image.mapFromScene(view.graphics.mapToScene(c + QPoint(20, 0)))
    end = view.image.mapFromScene(view.graphics.mapToScene(c + QPoint(60, -40)))
    dx, dy = end.x() - start.x(), end.y() - start.y()
    assert moved.id == first.id and len(view.measurements()) == 2
    assert np.allclose(np.array(moved.points) - np.array(first.points), [[dx, dy], [dx, dy]])
    handle = _vp(view, *moved.end)
    mouse_drag(qtbot, vp, handle, handle + QPoint(0, 80))  # drag its right handle: only that end moves
    reshaped = view.measurements()[0].measurement
    assert reshaped.start == moved.start and reshaped.end[1] > moved.end[1]
    assert reshaped.end[0] == pytest.approx(moved.end[0], abs=0.2)
    assert "mm" in view.measurements()[0].text()
    qtbot.keyClick(view, Qt.Key.Key_Z, CTRL)
    assert view.measurements()[0].measurement == moved
    qtbot.keyClick(view, Qt.Key.Key_Z, CTRL)
    assert view.measurements()[0].measurement == first
    qtbot.keyClick(view, Qt.Key.Key_Z, CTRL)  # the second ruler's drawing
    assert [g.measurement for g in view.measurements()] == [first]
    qtbot.keyClick(view, Qt.Key.Key_Z, SHIFT | CTRL)  # redo: the second ruler is back ...
    qtbot.keyClick(view, Qt.Key.Key_Y, CTRL)  # ... and the move (Ctrl+Y redoes too)
    assert [g.measurement for g in view.measurements()] == [moved, second]
    assert w.act_redo.text() == "Redo change ruler"
    # Del deletes the selection (the older ruler), not the newest
    _click(qtbot, view, _vp(view, *np.mean(moved.points, axis=0)))
    assert view.layer.selected_id == first.id
    qtbot.keyClick(view, Qt.Key.Key_Delete)
    assert [g.measurement.id for g in view.measurements()] == [second.id]
    qtbot.keyClick(view, Qt.Key.Key_Z, CTRL)
    assert {g.measurement.id for g in view.measurements()} == {first.id, second.id}
    _click(qtbot, view, _vp(view, *np.mean(moved.points, axis=0)))
    assert view.layer.selected_id == first.id
    qtbot.keyClick(view, Qt.Key.Key_Escape)  # the selection goes first, then the tool
    assert view.layer.selected_id is None and view.tool == "ruler"
    qtbot.keyClick(view, Qt.Key.Key_Escape)
    assert view.tool == "window"


def test_the_context_menu_deletes_without_a_modal_loop(qtbot: QtBot, series: Path) -> None:
    w = _open(qtbot, series)
    view = w.view
    qtbot.keyClick(view, Qt.Key.Key_E)
    c = _centre(view)
    mouse_drag(qtbot, view.graphics.viewport(), c - QPoint(80, 60), c + QPoint(80, 60))
    qtbot.keyClick(view, Qt.Key.Key_Escape)  # back to window/level: a press inside an ROI selects it
    _click(qtbot, view, c, Qt.MouseButton.RightButton)
    menu = view.layer.context_menu
    assert menu is not None and menu.isVisible()
    assert [a.text() for a in menu.actions() if a.text()] == ["Delete", "Delete all on this slice"]
    next(a for a in menu.actions() if a.text() == "Delete").trigger()
    menu.close()
    assert view.measurements() == []
    _click(qtbot, view, c, Qt.MouseButton.RightButton)  # nothing there now: no menu
    assert not view.layer.context_menu.isVisible()  # type: ignore[union-attr]


def test_new_kinds_persist_show_only_on_their_slice_and_export_as_sr(
    qtbot: QtBot, series: Path, tmp_path: Path
) -> None:
    import highdicom as hd

    w = _open(qtbot, series)
    view = w.view
    vp = view.graphics.viewport()
    w.set_slice(7)
    c = _centre(view)
    qtbot.keyClick(view, Qt.Key.Key_L)
    ring = [c + QPoint(int(90 * math.cos(t)), int(70 * math.sin(t))) for t in np.linspace(0, 2 * math.pi, 30)]
    mouse_path(qtbot, vp, ring)
    qtbot.keyClick(view, Qt.Key.Key_G)
    mouse_drag(qtbot, vp, c + QPoint(-150, -150), c + QPoint(-60, -150))
    _click(qtbot, view, c + QPoint(-150, -60))
    qtbot.keyClick(view, Qt.Key.Key_G, SHIFT)
    mouse_drag(qtbot, vp, c + QPoint(60, -150), c + QPoint(180, -140))
    mouse_drag(qtbot, vp, c + QPoint(60, 150), c + QPoint(180, 120))
    qtbot.keyClick(view, Qt.Key.Key_T)
    mouse_drag(qtbot, vp, c, c + QPoint(-120, 130))
    qtbot.keyClicks(view.layer.text_editor, "see here")
    qtbot.keyClick(view.layer.text_editor, Qt.Key.Key_Return)
    assert _shapes(view) == [Shape.FREEHAND, Shape.ANGLE, Shape.COBB, Shape.ARROW]
    texts = [g.text() for g in view.measurements()]
    w.set_slice(8)
    assert view.measurements() == []
    w.set_slice(7)
    path = w.export_measurement_sr(tmp_path / "sr")
    assert b"see here" not in path.read_bytes()  # the arrow's free text stays out (de-identified)
    report = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path)).content
    assert isinstance(report, hd.sr.MeasurementReport)
    roi, arrow = report.get_planar_roi_measurement_groups()
    assert roi.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    assert arrow.roi.graphic_type == hd.sr.GraphicTypeValues.POINT
    angle, cobb = report.get_image_measurement_groups()
    assert [m.name.meaning for m in angle.get_measurements()] == ["Angle"]
    assert [m.name.meaning for m in cobb.get_measurements()] == ["Cobb angle"]
    assert angle.get_measurements()[0].value == pytest.approx(float(texts[1][:-1]), abs=0.05)
    w.close()

    moved = tmp_path / "elsewhere"
    shutil.copytree(series, moved)
    w2 = _open(qtbot, moved)
    w2.set_slice(7)
    assert _shapes(w2.view) == [Shape.FREEHAND, Shape.ANGLE, Shape.COBB, Shape.ARROW]
    assert [g.text() for g in w2.view.measurements()] == texts
    w2.set_slice(6)
    assert w2.view.measurements() == []


def _label_rects(qtbot: QtBot, view: SliceView) -> list[object]:
    view.graphics.viewport().repaint()  # pyqtgraph places a text item at its next paint
    qtbot.wait(10)
    return [g.label.sceneBoundingRect() for g in view.measurements()]


def test_labels_stay_inside_the_view_and_clear_of_each_other(qtbot: QtBot, series: Path) -> None:
    """Seen at 1920x1080: an ROI label at the right edge was cut off, and a freehand ROI's label
    covered an angle's drawn at its right."""
    w = _open(qtbot, series)
    view = w.view
    vp = view.graphics.viewport()
    right = QPoint(vp.width() - 12, vp.height() // 2)
    qtbot.keyClick(view, Qt.Key.Key_B)
    mouse_drag(qtbot, vp, right - QPoint(120, 40), right)  # an ROI touching the right edge
    c = _centre(view)
    qtbot.keyClick(view, Qt.Key.Key_L)
    mouse_path(qtbot, vp, [c + QPoint(int(-60 * math.cos(t)) - 60, int(50 * math.sin(t)))
                           for t in np.linspace(0, 2 * math.pi, 24)])
    qtbot.keyClick(view, Qt.Key.Key_G)  # its vertex just right of the freehand ROI: where its label goes
    mouse_drag(qtbot, vp, c + QPoint(140, -60), c + QPoint(40, 10))
    _click(qtbot, view, c + QPoint(140, 70))
    assert _shapes(view) == [Shape.RECTANGLE, Shape.FREEHAND, Shape.ANGLE]
    visible = view.vb.sceneBoundingRect()
    _rect, free, angle = view.measurements()
    # where each would go alone: the angle's label places all lie under the freehand ROI's first choice
    first = free.label_options(visible)[0].rect
    assert all(o.rect.intersects(first) for o in angle.label_options(visible))
    rects = _label_rects(qtbot, view)
    assert all(visible.contains(r) for r in rects), (visible, rects)
    assert not any(a.intersects(b) for k, a in enumerate(rects) for b in rects[k + 1 :]), rects
    view.zoom_by(1.6)  # after a zoom they are placed again
    visible = view.vb.sceneBoundingRect()
    on_screen = [
        r
        for r, g in zip(_label_rects(qtbot, view), view.measurements(), strict=True)
        if all(visible.contains(view.image.mapToScene(QPointF(*p))) for p in g.measurement.points)
    ]
    assert on_screen and all(visible.contains(r) for r in on_screen)
