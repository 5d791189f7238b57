"""A freehand ROI's vertices edited one by one with real mouse events on the real window: a vertex dragged
(statistics and area follow live while dragging), removed (Ctrl+click, the context menu), added
(Ctrl+click on the outline), each one step of the undo history and saved in measurements.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from tests.core.test_measure_shapes import pnpoly_oracle
from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window, mouse_path, open_and_wait
from viewer.core.measure import Measurement, RoiStats, polygon_area, stats_text
from viewer.core.paths import user_data_path
from viewer.qt.main_window import MainWindow
from viewer.qt.slice_view import SliceView

CTRL = Qt.KeyboardModifier.ControlModifier
LEFT = Qt.MouseButton.LeftButton
HEXAGON = [(32 + 20 * np.cos(a), 32 + 14 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 7)[:-1]]


@pytest.fixture
def series(tmp_path: Path) -> Path:
    write_ct_series(tmp_path / "ct", 4)
    return tmp_path / "ct"


def _vp(view: SliceView, x: float, y: float) -> QPoint:
    view.vb.updateMatrix()
    return view.graphics.mapFromScene(view.image.mapToScene(QPointF(x, y)))


def _send(
    view: SliceView, kind: QEvent.Type, p: QPoint, buttons: Qt.MouseButton,
    modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier,
) -> None:
    vp = view.graphics.viewport()
    button = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseMove else LEFT
    ev = QMouseEvent(kind, QPointF(p), QPointF(vp.mapToGlobal(p)), button, buttons, modifiers)
    QApplication.sendEvent(vp, ev)


def _ctrl_click(qtbot: QtBot, view: SliceView, p: QPoint) -> None:
    """A left click with Ctrl held, as the platform delivers it (the modifier on both events)."""
    _send(view, QEvent.Type.MouseButtonPress, p, LEFT, CTRL)
    qtbot.wait(10)
    _send(view, QEvent.Type.MouseButtonRelease, p, Qt.MouseButton.NoButton, CTRL)


def _expected_text(view: SliceView, m: Measurement) -> str:
    """The label numpy gives: HU values at the pixel centres inside (PNPOLY), the shoelace area in mm²."""
    values = view.current_data()
    assert values is not None
    inside = values[pnpoly_oracle(m.points, values.shape)].astype(np.float64)
    spacing = view.context.stack.slices[0].pixel_spacing  # type: ignore[union-attr]
    area = polygon_area(m.points, spacing)[0]
    return stats_text(RoiStats(inside.mean(), inside.std(), inside.min(), inside.max(), inside.size, area,
                               "mm²"), "HU")


def _hexagon(qtbot: QtBot, window: MainWindow) -> Measurement:
    """A six-vertex freehand ROI drawn with the L tool (one mouse move per corner), then selected with
    the window/level tool (a click inside)."""
    view = window.view
    qtbot.keyClick(view, Qt.Key.Key_L)
    mouse_path(qtbot, view.graphics.viewport(), [_vp(view, x, y) for x, y in HEXAGON])
    qtbot.keyClick(view, Qt.Key.Key_Escape)
    (g,) = view.measurements()
    assert len(g.measurement.points) == 6
    qtbot.mouseClick(view.graphics.viewport(), LEFT, pos=_vp(view, 32, 32))
    assert view.layer.selected_id == g.measurement.id
    return g.measurement


def _open(qtbot: QtBot, folder: Path) -> MainWindow:
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [folder])
    window.set_slice(1)
    window.view.setFocus()
    return window


def test_dragging_one_vertex_updates_the_statistics_live_and_is_one_undo_step(
    qtbot: QtBot, series: Path
) -> None:
    window = _open(qtbot, series)
    view = window.view
    m = _hexagon(qtbot, window)
    before = view.measurements()[0].text()
    assert before == _expected_text(view, m)
    # vertex 0 (the right corner) dragged 10 px outwards: the draft's label follows every move
    start, end = _vp(view, *m.points[0]), _vp(view, m.points[0][0] + 10, m.points[0][1])
    _send(view, QEvent.Type.MouseButtonPress, start, LEFT)
    texts = []
    for k in range(1, 5):
        qtbot.wait(25)
        _send(view, QEvent.Type.MouseMove, start + (end - start) * (k / 4), LEFT)
        draft = view.layer._draft
        assert draft is not None and draft.measurement.points[1:] == m.points[1:]
        assert draft.text() == _expected_text(view, draft.measurement)
        texts.append(draft.text())
    assert len(set(texts)) > 1 and texts[-1] != before  # live: the area grows as the vertex moves out
    qtbot.wait(25)
    _send(view, QEvent.Type.MouseButtonRelease, end, Qt.MouseButton.NoButton)
    (g,) = view.measurements()
    moved = g.measurement
    assert moved.id == m.id and moved.points[1:] == m.points[1:]
    assert moved.points[0] == pytest.approx((m.points[0][0] + 10, m.points[0][1]), abs=0.2)
    assert g.text() == _expected_text(view, moved) == texts[-1]
    assert window.act_undo.text() == "Undo change freehand ROI"
    window.undo()
    assert view.measurements()[0].measurement == m and view.measurements()[0].text() == before
    window.redo()
    assert view.measurements()[0].measurement == moved


def test_ctrl_click_removes_and_adds_vertices_the_menu_removes_one_and_it_is_saved(
    qtbot: QtBot, series: Path
) -> None:
    window = _open(qtbot, series)
    view = window.view
    vp = view.graphics.viewport()
    m = _hexagon(qtbot, window)
    _ctrl_click(qtbot, view, _vp(view, *m.points[2]))  # on vertex 2: removed
    five = view.measurements()[0].measurement
    assert five.id == m.id and five.points == m.points[:2] + m.points[3:]
    assert view.measurements()[0].text() == _expected_text(view, five)
    assert window.act_undo.text() == "Undo remove a point from freehand ROI"
    assert view.layer.selected_id == m.id  # still selected: the next edit needs no click
    # on the outline halfway between vertices 0 and 1: a point added there (between them)
    (x0, y0), (x1, y1) = five.points[0], five.points[1]
    _ctrl_click(qtbot, view, _vp(view, (x0 + x1) / 2, (y0 + y1) / 2))
    six = view.measurements()[0].measurement
    assert len(six.points) == 6 and six.points[0] == five.points[0] and six.points[2:] == five.points[1:]
    assert six.points[1] == pytest.approx(((x0 + x1) / 2, (y0 + y1) / 2), abs=0.6)
    assert window.act_undo.text() == "Undo add a point to freehand ROI"
    # the context menu of vertex 4: "Delete point"
    qtbot.mouseClick(vp, Qt.MouseButton.RightButton, pos=_vp(view, *six.points[4]))
    menu = view.layer.context_menu
    assert menu is not None and menu.isVisible()
    item = next(a for a in menu.actions() if a.text() == "Delete point")
    assert item.isEnabled()
    item.trigger()
    menu.close()
    final = view.measurements()[0].measurement
    assert final.points == six.points[:4] + six.points[5:]
    # saved: measurements.json holds the edited outline (written once per change)
    stored = json.loads((user_data_path() / "measurements.json").read_text())
    saved = [p for study in stored["studies"].values() for p in study if p["id"] == m.id]
    assert len(saved) == 1 and [tuple(p) for p in saved[0]["points"]] == list(final.points)
    # three undos: the outline as drawn again
    for _ in range(3):
        window.undo()
    assert view.measurements()[0].measurement == m


def test_f1_lists_the_vertex_gestures(qtbot: QtBot) -> None:
    window = make_window(qtbot)
    help_dialog = window.show_help()
    texts = " ".join(" ".join(row) for row in help_dialog.texts())
    assert "Ctrl + click a freehand ROI" in texts and "Delete point" in texts
    assert help_dialog.isVisible() and not help_dialog.isModal()
    help_dialog.close()


def test_a_triangle_keeps_its_three_points(qtbot: QtBot, series: Path) -> None:
    window = _open(qtbot, series)
    view = window.view
    qtbot.keyClick(view, Qt.Key.Key_L)
    mouse_path(qtbot, view.graphics.viewport(), [_vp(view, x, y) for x, y in ((20, 20), (44, 22), (30, 44))])
    qtbot.keyClick(view, Qt.Key.Key_Escape)
    (g,) = view.measurements()
    tri = g.measurement
    assert len(tri.points) == 3
    qtbot.mouseClick(view.graphics.viewport(), LEFT, pos=_vp(view, 31, 29))
    hints: list[str] = []
    view.status_hint.connect(hints.append)
    _ctrl_click(qtbot, view, _vp(view, *tri.points[1]))
    assert view.measurements()[0].measurement == tri
    assert hints and "at least 3 points" in hints[-1]
    qtbot.mouseClick(view.graphics.viewport(), Qt.MouseButton.RightButton, pos=_vp(view, *tri.points[1]))
    menu = view.layer.context_menu
    assert menu is not None
    assert not next(a for a in menu.actions() if a.text() == "Delete point").isEnabled()
    menu.close()
