"""The slice view renders its viewport's state (window, inversion, zoom/pan, turn) and the reader's mouse
and keys change that state: real window, real files, real events (offscreen)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QImage
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window, mouse_drag, open_and_wait, wheel
from viewer.core.constants import WINDOW_PRESETS, Window
from viewer.core.state.layout import Layout
from viewer.qt.main_window import MainWindow
from viewer.qt.slice_view import KEY_ZOOM_FACTOR, SliceView


@pytest.fixture
def loaded(qtbot: QtBot, tmp_path: Path) -> MainWindow:
    write_ct_series(tmp_path / "ct", 12, rows=64, columns=48)  # not square: a quarter turn shows
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    return window


def _pixels(view: SliceView) -> QImage:
    view.repaint()
    return view.graphics.grab().toImage()


def test_a_state_change_repaints_the_view(qtbot: QtBot, loaded: MainWindow) -> None:
    """Intents sent to the state (not to the view) reach the screen: levels, lookup table, overlay text,
    scale, pan and turn, and the painted pixels change."""
    state, view = loaded.state, loaded.view
    before = _pixels(view)
    state.set_window(0, Window(300, 30))
    assert view.image.getLevels() == pytest.approx((-120.0, 180.0))
    assert "W 300  L 30" in view.overlay.corner_text("bottom_right")
    after = _pixels(view)
    assert after != before  # repainted in the new window

    state.toggle_invert(0)
    assert view.inverted and view.image.lut is not None and view.image.lut[0] == 255
    assert "INV" in view.overlay.corner_text("bottom_right")

    state.set_zoom(0, 0.05, (1.5, -2.0))  # 0.05 mm per screen pixel, centred 1.5 / -2 mm off the middle
    per_px, dx, dy = view.view_frame()
    assert (per_px, dx, dy) == pytest.approx((0.05, 1.5, -2.0), rel=1e-6, abs=1e-6)
    assert f"Zoom {view.zoom_factor():.2f}×" in view.overlay.corner_text("bottom_right")
    assert _pixels(view) != after

    labels = view.overlay.orientation()
    state.rotate(0, 1)
    assert np.array_equal(view.display_turn(), state.viewport(0).turn())
    assert view.fitted  # a turn fits the image again
    rect = view.image_rect()
    assert rect.width() > rect.height()  # 64 rows x 48 columns, taller than wide until turned a quarter
    assert view.overlay.orientation() != labels
    state.flip(0)
    state.reset_view(0)
    assert view.current_window() == view.default_window() and not view.inverted
    assert np.array_equal(view.display_turn(), np.eye(2, dtype=int)) and view.fitted
    assert view.overlay.orientation() == labels


def test_mouse_and_keys_change_the_state(qtbot: QtBot, loaded: MainWindow) -> None:
    """What the reader does in the view is an intent: the state holds the result, the view shows it."""
    state, view = loaded.state, loaded.view
    gv = view.graphics.viewport()
    c = QPoint(gv.width() // 2, gv.height() // 2)

    mouse_drag(qtbot, gv, c, c + QPoint(40, -20))  # left drag: window/level
    dragged = state.viewport(0).window
    assert dragged is not None and dragged != view.default_window()
    assert view.current_window() == dragged
    qtbot.keyClick(view, Qt.Key.Key_4)
    assert state.viewport(0).window == WINDOW_PRESETS["bone"]
    qtbot.keyClick(view, Qt.Key.Key_0)
    assert state.viewport(0).window is None  # the stack's own window
    qtbot.keyClick(view, Qt.Key.Key_I)
    assert state.viewport(0).invert

    mouse_drag(qtbot, gv, c, c + QPoint(0, -60), button=Qt.MouseButton.RightButton)  # right drag: zoom
    scale = state.viewport(0).scale
    assert scale is not None
    assert view.view_frame()[0] == pytest.approx(scale)
    mouse_drag(qtbot, gv, c, c + QPoint(50, 0), modifiers=Qt.KeyboardModifier.ShiftModifier)  # pan
    pan = state.viewport(0).pan
    assert pan != (0.0, 0.0) and view.view_frame()[1:] == pytest.approx(pan)
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    assert state.viewport(0).scale == pytest.approx(scale / KEY_ZOOM_FACTOR)
    assert state.viewport(0).pan == pytest.approx(pan)  # zoomed about the view centre
    wheel(gv, 2, Qt.KeyboardModifier.ControlModifier)
    assert state.viewport(0).scale < scale / KEY_ZOOM_FACTOR  # Ctrl+wheel zooms in, through the state
    qtbot.keyClick(view, Qt.Key.Key_F)
    assert state.viewport(0).scale is None and state.viewport(0).pan == (0.0, 0.0)

    qtbot.keyClick(view, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert state.viewport(0).rotation == 1
    qtbot.keyClick(view, Qt.Key.Key_H)
    assert (state.viewport(0).rotation, state.viewport(0).mirror) == (3, True)
    qtbot.keyClick(view, Qt.Key.Key_V)
    assert (state.viewport(0).rotation, state.viewport(0).mirror) == (3, False)  # H then V: a half turn
    qtbot.keyClick(view, Qt.Key.Key_R)
    vp = state.viewport(0)
    assert (vp.window, vp.invert, vp.scale, vp.rotation, vp.mirror) == (None, False, None, 0, False)


def test_a_zoomed_view_keeps_its_scale_when_resized_and_a_fitted_one_refits(
    qtbot: QtBot, loaded: MainWindow
) -> None:
    state, view = loaded.state, loaded.view
    fitted = view.zoom_factor()
    loaded.resize(900, 700)
    qtbot.waitUntil(lambda: view.zoom_factor() < fitted * 0.95, timeout=5000)  # refitted, smaller
    state.set_zoom(0, 0.1, (0.0, 0.0))
    loaded.resize(1200, 800)
    qtbot.wait(50)
    assert view.view_frame() == pytest.approx((0.1, 0.0, 0.0), abs=1e-6)
    assert state.viewport(0).scale == 0.1  # a resize is not an intent


def test_window_and_zoom_sync_render_in_the_other_viewports(qtbot: QtBot, loaded: MainWindow) -> None:
    state = loaded.state
    state.set_layout(Layout.ONE_BY_TWO)
    key = state.viewport(0).stack_key
    assert key is not None
    loaded.show_in_viewport(1, key)
    left, right = loaded.views()
    state.set_sync(window=True, zoom=True)
    qtbot.keyClick(left, Qt.Key.Key_2)
    assert right.current_window() == WINDOW_PRESETS["subdural"]
    assert right.image.getLevels() == pytest.approx(WINDOW_PRESETS["subdural"].levels)
    left.zoom_by(2.0)
    assert right.view_frame() == pytest.approx(left.view_frame(), abs=1e-6)
    qtbot.keyClick(left, Qt.Key.Key_0)
    assert right.current_window() == right.default_window()


def test_an_intent_the_state_refuses_changes_nothing_and_says_why(qtbot: QtBot, loaded: MainWindow) -> None:
    view = loaded.view
    before = loaded.state.viewport(0)
    frame = view.view_frame()
    with qtbot.waitSignal(view.status_hint, timeout=1000) as hint:
        view.zoom_by(float("inf"))  # a scale of 0 mm per screen pixel
    assert "Zoom scale" in hint.args[0]
    assert loaded.state.viewport(0) == before and view.view_frame() == pytest.approx(frame)
