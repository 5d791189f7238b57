"""Viewport layouts, the active viewport and MPR planes in the real window (offscreen, real DICOM files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QMouseEvent
from PySide6.QtWidgets import QApplication, QWidget
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series, write_geometry_series, write_tilted_series
from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.reslice import SlabMode
from viewer.core.state.layout import Layout
from viewer.qt.main_window import MainWindow
from viewer.qt.viewport_grid import stack_mime

# a volume whose every voxel is distinct: hu[k, j, i] = 100 k + 10 j + i (HU), 6 slices 2 mm apart of
# 5 rows x 8 columns at 0.5 mm
SLICES, ROWS, COLS = 6, 5, 8
PIXEL_MM, SLICE_MM = 0.5, 2.0
_K, _J, _I = np.meshgrid(np.arange(SLICES), np.arange(ROWS), np.arange(COLS), indexing="ij")
HU = (100 * _K + 10 * _J + _I).astype(np.int16)
ORIGIN = np.array([-2.0, -1.0, 10.0])  # patient position of voxel (0, 0, 0), LPS mm


def voxel_point(k: int, j: int, i: int) -> list[float]:
    """Patient position (LPS mm) of voxel (k, j, i) of the axial volume above (IOP 1,0,0 / 0,1,0)."""
    return [float(ORIGIN[0] + i * PIXEL_MM), float(ORIGIN[1] + j * PIXEL_MM), float(ORIGIN[2] + k * SLICE_MM)]


@pytest.fixture
def volume_window(qtbot: QtBot, tmp_path: Path) -> MainWindow:
    write_geometry_series(
        tmp_path / "vol",
        HU,
        positions=[voxel_point(k, 0, 0) for k in range(SLICES)],
        spacing=(PIXEL_MM, PIXEL_MM),
    )
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "vol"])
    return window


@pytest.fixture
def two_series(qtbot: QtBot, tmp_path: Path) -> MainWindow:
    write_ct_series(tmp_path / "a", 10, rows=32, columns=32, seed=1)
    write_ct_series(tmp_path / "b", 14, rows=32, columns=32, seed=2)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "a", tmp_path / "b"])
    return window


def click(widget: QWidget) -> None:
    p = QPoint(widget.width() // 2, widget.height() // 2)
    for kind, buttons in (
        (QEvent.Type.MouseButtonPress, Qt.MouseButton.LeftButton),
        (QEvent.Type.MouseButtonRelease, Qt.MouseButton.NoButton),
    ):
        ev = QMouseEvent(
            kind, QPointF(p), QPointF(widget.mapToGlobal(p)), Qt.MouseButton.LeftButton, buttons,
            Qt.KeyboardModifier.NoModifier,
        )
        QApplication.sendEvent(widget, ev)


def settled(qtbot: QtBot, window: MainWindow, index: int) -> None:
    view = window.views()[index]
    qtbot.waitUntil(
        lambda: view.shown_index == view.index and view.current_data() is not None, timeout=20_000
    )


def test_each_layout_shows_its_viewports_and_new_ones_take_the_next_series(
    qtbot: QtBot, two_series: MainWindow
) -> None:
    w = two_series
    first = w.current_stack()
    assert first is not None and len(w.views()) == 1
    for layout in Layout:
        w.set_layout(layout)
        assert len(w.views()) == layout.viewport_count == len(w.grid.frames())
        assert all(f.isVisible() for f in w.grid.frames())
    w.set_layout(Layout.ONE)
    w.set_layout(Layout.ONE_BY_TWO)
    keys = [vp.stack_key for vp in w.state.viewports]
    assert keys[0] == first.uid and keys[1] is not None and keys[1] != first.uid
    assert w.views()[1].context is not None and w.views()[1].context.stack.uid == keys[1]


def test_layout_keys_are_registry_actions_listed_in_f1(qtbot: QtBot, two_series: MainWindow) -> None:
    w = two_series
    qtbot.keyClick(w.view, Qt.Key.Key_4, Qt.KeyboardModifier.AltModifier)
    assert w.state.layout is Layout.TWO_BY_TWO and len(w.views()) == 4
    qtbot.keyClick(w.view, Qt.Key.Key_1, Qt.KeyboardModifier.AltModifier)
    assert w.state.layout is Layout.ONE and len(w.views()) == 1
    rows = {(section, keys) for section, keys, _ in w.bindings()}
    for keys in ("Alt+1", "Alt+2", "Alt+3", "Alt+4", "Alt+5", "Alt+M", "Alt+C", "Alt+S", "Alt+T", "F6"):
        assert ("Layout", keys) in rows, keys


def test_a_click_makes_a_viewport_active_and_it_gets_the_keys(qtbot: QtBot, two_series: MainWindow) -> None:
    w = two_series
    w.set_layout(Layout.ONE_BY_TWO)
    left, right = w.views()
    assert w.state.active == 0 and w.grid.frames()[0].active and not w.grid.frames()[1].active
    click(right.graphics.viewport())
    assert w.state.active == 1 and w.view is right
    assert w.grid.frames()[1].active and not w.grid.frames()[0].active
    before_left, before_right = left.index, right.index
    qtbot.keyClick(right, Qt.Key.Key_Down)
    assert right.index == before_right + 1 and left.index == before_left  # different frames of reference
    assert w.slider.value() == right.index and w.slider.maximum() == right.count() - 1
    # each viewport keeps its own overlay
    assert f"Im {right.index + 1} / {right.count()}" in right.overlay.corner_text("bottom_left")
    assert f"Im {left.index + 1} / {left.count()}" in left.overlay.corner_text("bottom_left")


def test_a_series_dragged_from_the_browser_lands_in_the_viewport_it_is_dropped_on(
    qtbot: QtBot, two_series: MainWindow
) -> None:
    w = two_series
    w.set_layout(Layout.ONE_BY_TWO)
    first = w.state.viewports[0].stack_key
    assert first is not None
    items = [w.browser._stack_items[first]]
    mime = w.browser.mimeData(items)
    assert mime.hasFormat("application/x-slicewise-stack")
    target = w.grid.frames()[1]
    pos = QPointF(target.width() / 2, target.height() / 2)
    enter = QDragEnterEvent(
        pos.toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted()
    dropped = stack_mime(first)  # held here: the event keeps only a pointer to it
    drop = QDropEvent(
        pos, Qt.DropAction.CopyAction, dropped, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(target, drop)
    assert drop.isAccepted()
    assert w.state.viewports[1].stack_key == first and w.state.active == 1
    assert w.views()[1].context is not None and w.views()[1].context.stack.uid == first


def test_coronal_and_sagittal_planes_show_the_volume_with_the_spacing_as_aspect(
    qtbot: QtBot, volume_window: MainWindow
) -> None:
    w = volume_window
    w.set_plane(Orientation.CORONAL)
    view = w.view
    assert view.planes() is not None
    j = 3
    w.state.go_to_point(w.state.active, voxel_point(2, j, 4))
    settled(qtbot, w, 0)
    data = view.current_data()
    assert data is not None
    # rows run from the head (last slice) down, columns from the patient's right (column 0) to the left
    np.testing.assert_array_equal(data, HU[::-1, j, :])
    rect = view.image_rect()
    assert rect.width() / rect.height() == pytest.approx((COLS * PIXEL_MM) / (SLICES * SLICE_MM))
    assert view.overlay.orientation() == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    assert "Coronal" in view.overlay.corner_text("top_right")
    assert f"Pos {voxel_point(2, j, 4)[1]:.1f} mm" in view.overlay.corner_text("bottom_left")

    w.set_plane(Orientation.SAGITTAL)
    i = 5
    w.state.go_to_point(w.state.active, voxel_point(1, 2, i))
    settled(qtbot, w, 0)
    np.testing.assert_array_equal(view.current_data(), HU[::-1, :, i])
    rect = view.image_rect()
    assert rect.width() / rect.height() == pytest.approx((ROWS * PIXEL_MM) / (SLICES * SLICE_MM))
    assert view.overlay.orientation() == {"left": "A", "right": "P", "top": "S", "bottom": "I"}

    w.set_plane(Orientation.NATIVE)
    assert w.view.planes() is None and w.view.count() == SLICES


def test_a_mip_slab_takes_the_maximum_over_its_thickness(qtbot: QtBot, volume_window: MainWindow) -> None:
    w = volume_window
    w.set_plane(Orientation.CORONAL)
    j = 2
    w.state.go_to_point(w.state.active, voxel_point(0, j, 0))
    w.set_slab(SlabMode.MINIP, 2 * PIXEL_MM)  # the plane and one row on each side
    settled(qtbot, w, 0)
    np.testing.assert_array_equal(w.view.current_data(), HU[::-1, j - 1 : j + 2, :].min(axis=1))
    w.set_slab(SlabMode.MIP)
    settled(qtbot, w, 0)
    np.testing.assert_array_equal(w.view.current_data(), HU[::-1, j - 1 : j + 2, :].max(axis=1))
    assert "MIP 1 mm" in w.view.overlay.corner_text("top_right")
    assert w.slab_combo.currentText() == "MIP"
    w.set_slab(None)
    settled(qtbot, w, 0)
    np.testing.assert_array_equal(w.view.current_data(), HU[::-1, j, :])


def test_mpr_layout_shows_three_planes_and_keys_scroll_the_active_one(
    qtbot: QtBot, volume_window: MainWindow
) -> None:
    w = volume_window
    qtbot.keyClick(w.view, Qt.Key.Key_M, Qt.KeyboardModifier.AltModifier)
    assert w.state.layout is Layout.ONE_BY_THREE
    assert [vp.orientation for vp in w.state.viewports] == [
        Orientation.AXIAL, Orientation.CORONAL, Orientation.SAGITTAL
    ]
    for k in range(3):
        settled(qtbot, w, k)
    axial, coronal, sagittal = w.views()
    np.testing.assert_array_equal(axial.current_data(), HU[axial.index])  # axial of an axial stack
    click(coronal.graphics.viewport())
    assert w.view is coronal
    before = (axial.index, coronal.index, sagittal.index)
    qtbot.keyClick(coronal, Qt.Key.Key_Down)
    settled(qtbot, w, 1)
    assert (axial.index, coronal.index, sagittal.index) == (before[0], before[1] + 1, before[2])
    np.testing.assert_array_equal(coronal.current_data(), HU[::-1, coronal.index, :])


def test_series_of_one_frame_of_reference_scroll_together_by_position(qtbot: QtBot, tmp_path: Path) -> None:
    for_uid = "1.2.826.0.1.3680043.8.498.4242"
    write_geometry_series(tmp_path / "a", HU, positions=[(0.0, 0.0, 2.0 * k) for k in range(SLICES)],
                          spacing=(PIXEL_MM, PIXEL_MM), frame_of_reference_uid=for_uid, seed=1)
    # the second series starts 4 mm higher: its slice k lies where the first's slice k + 2 does
    write_geometry_series(tmp_path / "b", HU, positions=[(0.0, 0.0, 4.0 + 2.0 * k) for k in range(SLICES)],
                          spacing=(PIXEL_MM, PIXEL_MM), frame_of_reference_uid=for_uid, seed=2)
    w = make_window(qtbot)
    open_and_wait(qtbot, w, [tmp_path / "a", tmp_path / "b"])
    w.set_layout(Layout.ONE_BY_TWO)
    left, right = w.views()
    assert left.context is not None and right.context is not None
    assert left.context.stack.uid != right.context.stack.uid
    a_low = left.context.stack.slices[0].position[2] == 0.0  # which series went left
    low, high = (left, right) if a_low else (right, left)
    w.state.set_active(w.grid.index_of(low) or 0)
    w.set_slice(4)
    assert low.index == 4 and high.index == 2


def test_reference_lines_show_the_other_viewports_planes_and_follow_them(
    qtbot: QtBot, volume_window: MainWindow
) -> None:
    w = volume_window
    w.show_mpr()
    for k in range(3):
        settled(qtbot, w, k)
    axial, coronal, sagittal = w.views()
    k, i = 4, 6
    w.state.go_to_point(0, voxel_point(k, 0, 0))  # the axial viewport to slice k
    w.state.go_to_point(2, voxel_point(0, 0, i))  # the sagittal viewport to column i
    lines = coronal.reference_lines()
    assert set(lines) == {"viewport0", "viewport2"}
    (r0, _), (r1, _) = lines["viewport0"]  # the axial plane: a row of the coronal image (head at the top)
    assert r0 == pytest.approx(SLICES - 1 - k) and r1 == pytest.approx(SLICES - 1 - k)
    (_, c0), (_, c1) = lines["viewport2"]  # the sagittal plane: a column
    assert c0 == pytest.approx(i) and c1 == pytest.approx(i)
    assert set(axial.reference_lines()) == {"viewport1", "viewport2"}
    qtbot.keyClick(w.view, Qt.Key.Key_L, Qt.KeyboardModifier.AltModifier)  # lines off
    assert all(not v.reference_lines() for v in w.views())
    qtbot.keyClick(w.view, Qt.Key.Key_L, Qt.KeyboardModifier.AltModifier)
    assert set(sagittal.reference_lines()) == {"viewport0", "viewport1"}


def test_corner_texts_of_a_narrow_viewport_do_not_overlap(qtbot: QtBot, two_series: MainWindow) -> None:
    w = two_series
    w.resize(1000, 700)
    w.set_layout(Layout.ONE_BY_THREE)
    view = w.views()[0]
    qtbot.waitUntil(lambda: view.overlay.width() < view.overlay.COMPACT_WIDTH, timeout=5000)
    overlay = view.overlay
    assert overlay.compact  # several viewports share the screen: a shorter top-left corner
    assert not any("CT Head" in line for line in overlay.corner_lines("top_left"))
    rects = [r for _, r in overlay._corner_rects(overlay.width(), overlay.height()).values()]
    assert len(rects) == 4
    assert not any(a.intersects(b) for k, a in enumerate(rects) for b in rects[k + 1 :])
    w.set_layout(Layout.ONE)
    assert not w.views()[0].overlay.compact  # the single viewport shows every line


def test_a_tilted_stack_resliced_says_so_in_its_corner(qtbot: QtBot, tmp_path: Path) -> None:
    write_tilted_series(tmp_path / "tilt", 10, tilt_deg=15.0)
    w = make_window(qtbot)
    open_and_wait(qtbot, w, [tmp_path / "tilt"])
    assert "Gantry tilt" not in w.view.overlay.corner_text("bottom_left")
    w.set_plane(Orientation.SAGITTAL)
    settled(qtbot, w, 0)
    corner = w.view.overlay.corner_text("bottom_left")
    assert "Gantry tilt 15.0°: slices resampled to an upright grid" in corner
    assert w.view.overlay.orientation() == {"left": "A", "right": "P", "top": "S", "bottom": "I"}
