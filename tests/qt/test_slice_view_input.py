"""Wheel, keys, drags and presets on the real slice view of a loaded series."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window, mouse_drag, open_and_wait, wheel
from viewer.core.constants import PRESET_KEYS, WINDOW_PRESETS, Window
from viewer.qt.main_window import MainWindow

N = 24


@pytest.fixture
def loaded(qtbot: QtBot, tmp_path: Path) -> MainWindow:
    write_ct_series(tmp_path / "ct", N)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    assert window.current_stack() is not None
    return window


def test_wheel_scrolls_one_slice_per_notch(qtbot: QtBot, loaded: MainWindow) -> None:
    vp = loaded.view.graphics.viewport()
    seen: list[int] = []
    loaded.slice_changed.connect(seen.append)
    wheel(vp, -1)  # towards the user: next slice
    assert loaded.current_slice() == 1
    wheel(vp, -3)
    assert loaded.current_slice() == 4
    wheel(vp, 2)
    assert loaded.current_slice() == 2
    assert seen == [1, 4, 2]  # one event of 3 notches = one jump of 3 slices


def test_ctrl_wheel_zooms_instead_of_scrolling(qtbot: QtBot, loaded: MainWindow) -> None:
    vp = loaded.view.graphics.viewport()
    zoom = loaded.view.zoom_factor()
    wheel(vp, 3, Qt.KeyboardModifier.ControlModifier)
    assert loaded.current_slice() == 0
    assert loaded.view.zoom_factor() > zoom * 1.05


def test_keys_navigate(qtbot: QtBot, loaded: MainWindow) -> None:
    view = loaded.view
    qtbot.keyClick(view, Qt.Key.Key_Down)
    assert loaded.current_slice() == 1
    qtbot.keyClick(view, Qt.Key.Key_PageDown)
    assert loaded.current_slice() == 11
    qtbot.keyClick(view, Qt.Key.Key_Up)
    assert loaded.current_slice() == 10
    qtbot.keyClick(view, Qt.Key.Key_End)
    assert loaded.current_slice() == N - 1
    qtbot.keyClick(view, Qt.Key.Key_PageDown)  # clamps at the end
    assert loaded.current_slice() == N - 1
    qtbot.keyClick(view, Qt.Key.Key_PageUp)
    assert loaded.current_slice() == N - 11
    qtbot.keyClick(view, Qt.Key.Key_Home)
    assert loaded.current_slice() == 0
    assert loaded.slider.value() == 0


def test_keys_reach_the_view_from_the_main_window(qtbot: QtBot, loaded: MainWindow) -> None:
    qtbot.keyClick(loaded, Qt.Key.Key_Down)
    assert loaded.current_slice() == 1


def test_slice_shows_the_right_pixels(qtbot: QtBot, loaded: MainWindow) -> None:
    # write_ct_series puts HU == k in the top-left pixel of slice k: raw HU reach the ImageItem
    loaded.set_slice(7)
    image = loaded.view.image.image
    assert image is not None and image[0, 0] == pytest.approx(7.0)
    assert image[32, 32] == pytest.approx(30.0)


def test_left_drag_changes_levels_by_the_expected_amount(qtbot: QtBot, loaded: MainWindow) -> None:
    view = loaded.view
    start = view.current_window()
    assert start == Window(80, 40)  # the header window
    vp = view.graphics.viewport()
    c = QPoint(vp.width() // 2, vp.height() // 2)
    mouse_drag(qtbot, vp, c, c + QPoint(60, -30))
    after = view.current_window()
    assert after.width == pytest.approx(start.width + 60 * view.wl_sensitivity)
    assert after.level == pytest.approx(start.level - 30 * view.wl_sensitivity)
    low, high = view.image.getLevels()
    assert (low, high) == pytest.approx(after.levels)
    # the pixels are untouched: windowing is setLevels only
    assert view.image.image[0, 0] == pytest.approx(0.0)


def test_shift_drag_pans_without_changing_the_window(qtbot: QtBot, loaded: MainWindow) -> None:
    view = loaded.view
    before_range = view.vb.viewRange()
    start = view.current_window()
    vp = view.graphics.viewport()
    c = QPoint(vp.width() // 2, vp.height() // 2)
    mouse_drag(qtbot, vp, c, c + QPoint(80, 0), modifiers=Qt.KeyboardModifier.ShiftModifier)
    assert view.current_window() == start
    assert view.vb.viewRange()[0][0] != pytest.approx(before_range[0][0])


@pytest.mark.parametrize("k", range(7))
def test_number_keys_set_exact_preset_levels(qtbot: QtBot, loaded: MainWindow, k: int) -> None:
    qtbot.keyClick(loaded.view, getattr(Qt.Key, f"Key_{k + 1}"))
    expected = WINDOW_PRESETS[PRESET_KEYS[k]]
    assert loaded.view.current_window() == expected
    assert loaded.view.image.getLevels() == pytest.approx(expected.levels)
    assert f"W {expected.width:.0f}  L {expected.level:.0f}" in loaded.view.overlay.corner_text(
        "bottom_right"
    )


def test_zero_restores_header_window_and_brain_bone_not_swapped(qtbot: QtBot, loaded: MainWindow) -> None:
    qtbot.keyClick(loaded.view, Qt.Key.Key_4)
    assert loaded.view.current_window() == Window(2800, 600)  # bone
    qtbot.keyClick(loaded.view, Qt.Key.Key_1)
    assert loaded.view.current_window() == Window(80, 40)  # brain
    qtbot.keyClick(loaded.view, Qt.Key.Key_5)
    qtbot.keyClick(loaded.view, Qt.Key.Key_0)
    assert loaded.view.current_window() == Window(80, 40)


def test_overlay_shows_slice_number_and_position(qtbot: QtBot, loaded: MainWindow) -> None:
    loaded.set_slice(5)
    text = loaded.view.overlay.corner_text("bottom_left")
    assert f"Im 6 / {N}" in text
    assert "Pos 25.0 mm" in text  # write_ct_series: z = 5 mm * k
    assert "Thk 5 mm" in text
    assert loaded.view.overlay.orientation() == {"left": "R", "right": "L", "top": "A", "bottom": "P"}


def test_invert_uses_a_lut_and_reset_clears_it(qtbot: QtBot, loaded: MainWindow) -> None:
    view = loaded.view
    qtbot.keyClick(view, Qt.Key.Key_I)
    assert view.inverted
    assert view.image.lut is not None and view.image.lut[0] == 255
    assert "INV" in view.overlay.corner_text("bottom_right")
    qtbot.keyClick(view, Qt.Key.Key_3)
    qtbot.keyClick(view, Qt.Key.Key_R)
    assert not view.inverted
    assert view.current_window() == Window(80, 40)


def test_cine_plays_and_stops(qtbot: QtBot, loaded: MainWindow) -> None:
    loaded.fps_spin.setValue(60)
    qtbot.keyClick(loaded.view, Qt.Key.Key_C)
    assert loaded.view.cine_timer.isActive()
    qtbot.waitUntil(lambda: loaded.current_slice() >= 3, timeout=5000)
    qtbot.keyClick(loaded.view, Qt.Key.Key_Space)
    assert not loaded.view.cine_timer.isActive()


def test_ruler_measures_in_millimetres(qtbot: QtBot, loaded: MainWindow) -> None:
    view = loaded.view
    qtbot.keyClick(view, Qt.Key.Key_M)
    assert view.tool == "ruler"
    vp = view.graphics.viewport()
    a, b = QPoint(vp.width() // 2 - 100, vp.height() // 2), QPoint(vp.width() // 2 + 100, vp.height() // 2)
    mouse_drag(qtbot, vp, a, b)
    rulers = view.measurements()  # drawn graphics of the shown slice
    assert len(rulers) == 1
    start_mm = view.vb.mapSceneToView(view.graphics.mapToScene(a))
    end_mm = view.vb.mapSceneToView(view.graphics.mapToScene(b))
    assert rulers[0].length() == pytest.approx(end_mm.x() - start_mm.x(), rel=0.05)
    assert rulers[0].text().endswith(" mm")
    start = view.current_window()
    assert start == Window(80, 40)  # the drag measured, it did not window
    qtbot.keyClick(view, Qt.Key.Key_Delete)
    assert view.measurements() == []


def test_hover_reports_hu_and_patient_position(qtbot: QtBot, loaded: MainWindow) -> None:
    view = loaded.view
    loaded.set_slice(3)
    scene_pos = view.image.mapToScene(view.image.mapFromParent(view.image.pos()))  # pixel (0, 0) corner
    text = view.hover_info(view.image.mapToScene(0.5, 0.5))
    assert "HU 3" in text
    assert "(-16.0, -16.0, 15.0) mm" in text
    assert scene_pos is not None


def test_fit_and_one_to_one(qtbot: QtBot, loaded: MainWindow) -> None:
    view = loaded.view
    qtbot.keyClick(view, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier)  # actual size
    assert view.zoom_factor() == pytest.approx(1.0, rel=0.02)
    qtbot.keyClick(view, Qt.Key.Key_F)
    assert view.zoom_factor() > 2.0  # 64 px image in a ~700 px view
