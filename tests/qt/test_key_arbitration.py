"""One key map (issue 12): every key belongs to one action of the registry, in and out of a review."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.qt.actions import ActionSpec, KeyConflictError
from viewer.qt.review import attach


def test_no_key_means_two_things_and_f1_lists_each_once(qtbot: QtBot) -> None:
    window = make_window(qtbot)
    if window.review_controller is None:
        attach(window, offer_resume=False)
    registry = window.actions_registry
    with pytest.raises(KeyConflictError, match="already belongs to"):
        window.add_action(ActionSpec("stray", "Stray", lambda: None, ("A",)))
    assert registry.key_owner("A") == "review_confirm"
    assert registry.key_owner("Ctrl+0") == "actual_size"
    assert registry.key_owner("M") == "ruler"
    assert registry.key_owner("D") is None  # a stray D does nothing
    assert registry.key_owner("Ctrl+Return") == "review_done"
    assert registry.key_owner("Ctrl+Z") == "undo"  # one history: measurements and study done
    assert registry.key_owner("Ctrl+Shift+Z") == registry.key_owner("Ctrl+Y") == "redo"
    assert [registry.key_owner(k) for k in ("L", "G", "Shift+G", "T", "F2")] == [
        "freehand", "angle", "cobb", "arrow", "edit_arrow_text"
    ]
    keys = [k for _section, k, _text in window.bindings()]
    assert len(keys) == len(set(keys))


def test_plus_on_the_main_keyboard_zooms(qtbot: QtBot, tmp_path: Path) -> None:
    """Issue 12: + is Shift+= on most layouts; the view ignored it (only Ctrl++ and = zoomed)."""
    write_ct_series(tmp_path / "ct", 3)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    window.activateWindow()
    window.view.setFocus()
    qtbot.waitUntil(window.isActiveWindow, timeout=2000)
    zoom = window.view.zoom_factor()
    qtbot.keyClick(window.view, Qt.Key.Key_Plus, Qt.KeyboardModifier.ShiftModifier)
    assert window.view.zoom_factor() == pytest.approx(zoom * 1.25, rel=0.02)
    qtbot.keyClick(window.view, Qt.Key.Key_Plus)
    qtbot.keyClick(window.view, Qt.Key.Key_Plus, Qt.KeyboardModifier.KeypadModifier)
    assert window.view.zoom_factor() == pytest.approx(zoom * 1.25**3, rel=0.02)
    qtbot.keyClick(window.view, Qt.Key.Key_Minus)
    assert window.view.zoom_factor() == pytest.approx(zoom * 1.25**2, rel=0.02)


def test_ruler_and_actual_size_keep_their_keys_during_a_review(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "ct", 5)
    window = make_window(qtbot)
    rc = window.review_controller or attach(window, offer_resume=False)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    window.activateWindow()
    window.view.setFocus()
    qtbot.waitUntil(window.isActiveWindow, timeout=2000)
    for session in (None, "keys"):
        if session:
            assert rc.new_session(session) is not None
        window.view.zoom_by(3.0)
        qtbot.keyClick(window.view, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier)
        assert window.view.zoom_factor() == pytest.approx(1.0, rel=0.05)
        qtbot.keyClick(window.view, Qt.Key.Key_M)
        assert window.view.tool == "ruler" and window.act_ruler.isChecked()
        qtbot.keyClick(window.view, Qt.Key.Key_M)
        assert window.view.tool == "window" and not window.act_ruler.isChecked()
        zoom = window.view.zoom_factor()
        qtbot.keyClick(window.view, Qt.Key.Key_A)  # confirm: never 1:1
        assert window.view.zoom_factor() == pytest.approx(zoom)
        expected = "no session open" if session is None else "select a finding first"
        assert expected in window.statusBar().currentMessage()
    study = rc.current_study()
    assert study is not None and not study.done
    window.close()
