"""The crosshair tool in the real window (offscreen, real DICOM files, real mouse events): a click moves the
crosshair point and the other MPR planes go through it; dragging a line's outer part turns that plane into
an oblique one, resliced off the GUI thread with its own orientation letters; Alt+O restores the planes.

The volume is a field linear in patient position (HU = 4 x + 2 y + 3 z + c), so any plane, oblique too,
must show exactly the field at its pixels' positions (linear interpolation reproduces a linear field).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from pytestqt.qtbot import QtBot

from tests.factories import write_geometry_series
from tests.qt.viewer_helpers import make_window, mouse_path, open_and_wait
from viewer.core.constants import Window
from viewer.core.geometry.orientation import Orientation
from viewer.core.measure import Shape, two_point
from viewer.qt.main_window import MainWindow
from viewer.qt.slice_view import CROSSHAIR_TOOL, SliceView

SLICES, ROWS, COLS = 24, 40, 40
PIXEL_MM, SLICE_MM = 1.0, 1.0
ORIGIN = np.array([-20.0, -20.0, 0.0])
FIELD = np.array([4.0, 2.0, 3.0])


def _hu() -> np.ndarray:
    k, j, i = np.meshgrid(np.arange(SLICES), np.arange(ROWS), np.arange(COLS), indexing="ij")
    pts = ORIGIN + np.stack([i * PIXEL_MM, j * PIXEL_MM, k * SLICE_MM], axis=-1)
    return (pts @ FIELD - 200).astype(np.int16)


@pytest.fixture
def mpr(qtbot: QtBot, tmp_path: Path) -> MainWindow:
    write_geometry_series(
        tmp_path / "vol",
        _hu(),
        positions=[tuple(ORIGIN + np.array([0.0, 0.0, k * SLICE_MM])) for k in range(SLICES)],
        spacing=(PIXEL_MM, PIXEL_MM),
    )
    w = make_window(qtbot, (1500, 700))
    open_and_wait(qtbot, w, [tmp_path / "vol"])
    w.show_mpr()
    for k in range(3):
        _settled(qtbot, w.views()[k])
    return w


def _settled(qtbot: QtBot, view: SliceView) -> None:
    qtbot.waitUntil(
        lambda: view.shown_index == view.index and view.current_data() is not None, timeout=20_000
    )


def _screen(view: SliceView, row: float, col: float) -> QPoint:
    """Where image pixel (row, col) is in the view's graphics viewport widget."""
    return view.graphics.mapFromScene(view.scene_at(row, col))


def _field_at(points: np.ndarray) -> np.ndarray:
    return points @ FIELD - 200


def test_a_click_moves_the_crosshair_and_the_other_planes_go_through_it(
    qtbot: QtBot, mpr: MainWindow
) -> None:
    w = mpr
    axial, coronal, sagittal = w.views()
    assert w.actions_registry.key_owner("Shift+X") == "crosshair"
    assert any("Crosshair" in row[2] for row in w.actions_registry.bindings())  # in F1
    w.view.setFocus()
    qtbot.keyClick(w.view, Qt.Key.Key_X, Qt.KeyboardModifier.ShiftModifier)
    assert all(v.tool == CROSSHAIR_TOOL for v in w.views())
    row, col = 9, 27
    p = _screen(axial, row, col)
    mouse_path(qtbot, axial.graphics.viewport(), [p, p])  # a click
    point = w.state.crosshair(0)
    assert point is not None
    np.testing.assert_allclose(point[:2], ORIGIN[:2] + np.array([col * PIXEL_MM, row * PIXEL_MM]), atol=0.6)
    for view in (coronal, sagittal):
        _settled(qtbot, view)
    # the coronal plane is image row 9 of the axial slices, the sagittal plane column 27
    clicked = ORIGIN + np.array([col * PIXEL_MM, row * PIXEL_MM, 0.0])
    for i, axis in ((1, 1), (2, 0)):
        plane = w.state.plane(i)
        assert plane is not None
        assert abs(float(np.dot(plane.normal, clicked)) - plane.position_mm) == pytest.approx(0.0, abs=1e-6)
        assert abs(float(plane.normal[axis])) == pytest.approx(1.0)
    # the axial viewport draws both lines through the clicked pixel
    lines = axial.reference_lines()
    (r0, _), (r1, _) = lines["viewport1"]
    (_, c0), (_, c1) = lines["viewport2"]
    assert r0 == pytest.approx(row) and r1 == pytest.approx(row)
    assert c0 == pytest.approx(col) and c1 == pytest.approx(col)
    qtbot.keyClick(w.view, Qt.Key.Key_Escape)
    assert all(v.tool == "window" for v in w.views())


def test_dragging_a_line_turns_that_plane_into_a_correct_oblique_and_alt_o_restores_it(
    qtbot: QtBot, mpr: MainWindow
) -> None:
    w = mpr
    axial, coronal, _sagittal = w.views()
    w.set_crosshair_tool(True)
    centre_rc = (20.0, 20.0)
    c = _screen(axial, *centre_rc)
    mouse_path(qtbot, axial.graphics.viewport(), [c, c])
    _settled(qtbot, coronal)
    coronal.set_window(Window(333, 44))  # the reader's own window survives turning the plane
    zoom_before = coronal.zoom_factor()
    # grab the coronal line (image row 20) near the right edge and drag it round by 30° about the point
    radius = 16.0
    path = []
    for deg in range(0, 31, 5):
        a = math.radians(deg)
        path.append(_screen(axial, centre_rc[0] + radius * math.sin(a), centre_rc[1] + radius * math.cos(a)))
    mouse_path(qtbot, axial.graphics.viewport(), path, Qt.KeyboardModifier.ControlModifier)  # one plane
    vp = w.state.viewport(1)
    assert vp.orientation is Orientation.OBLIQUE
    assert w.state.viewport(2).orientation is Orientation.SAGITTAL  # only the grabbed line's plane turned
    plane = w.state.plane(1)
    assert plane is not None
    angle = math.degrees(math.acos(abs(float(np.dot(plane.normal, (0.0, 1.0, 0.0))))))
    assert angle == pytest.approx(30.0, abs=2.5)  # screen pixels round the drag a little
    assert float(np.dot(plane.normal, (0.0, 0.0, 1.0))) == pytest.approx(0.0, abs=1e-9)  # still upright
    _settled(qtbot, coronal)
    shown = coronal.planes()
    assert shown is not None and shown.orientation is Orientation.OBLIQUE
    data = coronal.current_data()
    assert data is not None
    shown_plane = shown.plane(coronal.index)
    rr, cc = np.mgrid[0 : shown_plane.size[0], 0 : shown_plane.size[1]]
    pts = shown_plane.pixel_to_patient(rr, cc)
    kji = shown.geometry.patient_to_voxel(pts)
    inside = np.all((kji >= 0) & (kji <= np.array(shown.geometry.shape) - 1), axis=-1)
    assert inside.sum() > 500
    np.testing.assert_allclose(data[inside], _field_at(pts)[inside], atol=1e-2)
    # the overlay names the turned edges (two letters: mostly left, a little posterior or anterior)
    labels = coronal.overlay._orientation
    assert len(labels.get("right", "")) == 2 and labels["right"][0] == "L"
    assert coronal.spacing() == shown_plane.spacing
    # the axial line of the turned plane crosses the point at 30°
    (r0, c0), (r1, c1) = axial.reference_lines()["viewport1"]
    assert math.degrees(math.atan2(abs(r1 - r0), abs(c1 - c0))) == pytest.approx(angle, abs=0.5)
    assert coronal.current_window() == Window(333, 44)
    assert coronal.zoom_factor() == pytest.approx(zoom_before)
    qtbot.keyClick(w.view, Qt.Key.Key_O, Qt.KeyboardModifier.AltModifier)
    assert w.state.viewport(1).orientation is Orientation.CORONAL and w.state.viewport(1).oblique is None
    _settled(qtbot, coronal)
    restored = coronal.planes()
    assert restored is not None and restored.orientation is Orientation.CORONAL


def test_scene_helpers_round_trip(mpr: MainWindow) -> None:
    axial = mpr.views()[0]
    r, c = axial.pixel_at(QPointF(axial.scene_at(7.25, 11.5)))
    assert (r, c) == pytest.approx((7.25, 11.5))


def test_a_measurement_on_a_turned_plane_shows_on_that_plane_only(qtbot: QtBot, mpr: MainWindow) -> None:
    """Issue 12: measurements on oblique planes were keyed by plane number, so a ruler drawn on a plane
    turned 30° was drawn again on the plane of the same number at any other angle. Also: a plane turned
    with its number unchanged replaced the kept (old) plane on screen when it arrived."""
    w = mpr
    coronal = w.views()[1]

    def turned_and_shown() -> None:  # the turned plane itself on screen (not the previous one kept there)
        def shown() -> bool:
            planes, data = coronal.planes(), coronal.current_data()
            plane = planes.cached(coronal.index) if planes is not None else None
            return plane is not None and data is not None and np.array_equal(data, plane)

        qtbot.waitUntil(shown, timeout=20_000)

    w.state.rotate_plane(0, 1, math.radians(30))
    turned_and_shown()
    at30 = w.state.viewport(1).oblique
    assert at30 is not None
    ref = coronal.image_ref()
    assert ref is not None and ref.plane == "oblique" and ref.geometry
    coronal.measurement_set.add(two_point(Shape.RULER, ref, (5.0, 5.0), (20.0, 12.0)))
    assert len(coronal.measurements()) == 1
    index = coronal.index
    w.state.rotate_plane(0, 1, math.radians(-60))  # to -30°
    turned_and_shown()
    assert coronal.index == index  # the same plane number, another plane
    assert coronal.image_ref() != ref and coronal.measurements() == []
    w.state.rotate_plane(0, 1, 0.0, start=at30)  # back to the plane it was drawn on
    turned_and_shown()
    assert coronal.image_ref() == ref and len(coronal.measurements()) == 1


def _crosses_at(view: SliceView, row: float, col: float) -> bool:
    """The axial view's two lines (coronal: an image row, sagittal: an image column) cross at (row, col)."""
    lines = view.reference_lines()
    (r0, _), (r1, _) = lines["viewport1"]
    (_, c0), (_, c1) = lines["viewport2"]
    return all(abs(r - row) < 1e-6 for r in (r0, r1)) and all(abs(c - col) < 1e-6 for c in (c0, c1))


def test_ctrl_z_puts_a_dragged_crosshair_point_back_in_every_viewport(qtbot: QtBot, mpr: MainWindow) -> None:
    """Issue 12: a drag of the crosshair point (press to release, many mouse steps) is one step of the
    window's undo history, like a plane turn: Ctrl+Z puts the point and the other planes back where they
    were, Ctrl+Y (or Ctrl+Shift+Z) moves them again."""
    w = mpr
    axial, coronal, sagittal = w.views()
    w.set_crosshair_tool(True)
    c = _screen(axial, 20.0, 20.0)
    mouse_path(qtbot, axial.graphics.viewport(), [c, c])  # a click: the first step
    for view in (coronal, sagittal):
        _settled(qtbot, view)
    start_point = w.state.crosshair(0)
    start = [w.state.viewport(i).position_mm for i in (0, 1, 2)]
    start_index = [v.index for v in (coronal, sagittal)]
    assert start_point is not None and _crosses_at(axial, 20.0, 20.0)
    path = [_screen(axial, 20.0 - k, 20.0 + 1.4 * k) for k in range(0, 12, 2)]  # to row 10, column 34
    mouse_path(qtbot, axial.graphics.viewport(), path)
    for view in (coronal, sagittal):
        _settled(qtbot, view)
    moved_point = w.state.crosshair(0)
    moved = [w.state.viewport(i).position_mm for i in (0, 1, 2)]
    moved_index = [v.index for v in (coronal, sagittal)]
    assert moved_point is not None and moved[1:] != start[1:] and moved_index != start_index
    assert _crosses_at(axial, 10.0, 34.0)
    assert w.act_undo.isEnabled() and w.act_undo.text() == "Undo move crosshair"
    w.view.setFocus()
    qtbot.keyClick(w.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    for view in (coronal, sagittal):
        _settled(qtbot, view)
    assert w.state.crosshair(0) == start_point
    assert [w.state.viewport(i).position_mm for i in (0, 1, 2)] == start
    assert [v.index for v in (coronal, sagittal)] == start_index  # the views show the planes again
    assert _crosses_at(axial, 20.0, 20.0)
    assert w.act_undo.text() == "Undo move crosshair"  # the first click's step is next, not the drag's steps
    qtbot.keyClick(w.view, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    for view in (coronal, sagittal):
        _settled(qtbot, view)
    assert w.state.crosshair(0) == moved_point
    assert [w.state.viewport(i).position_mm for i in (0, 1, 2)] == moved
    assert [v.index for v in (coronal, sagittal)] == moved_index
    assert _crosses_at(axial, 10.0, 34.0)
