"""A and D mean 1:1 and ruler outside a review, confirm and done inside one (window-wide shortcuts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.qt.review import attach


def test_a_and_d_keep_their_viewer_meaning_until_a_session_is_open(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "ct", 5)
    window = make_window(qtbot)
    rc = window.review_controller or attach(window, offer_resume=False)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    window.activateWindow()
    window.view.setFocus()
    assert rc.session is None

    window.view.zoom_by(3.0)
    qtbot.keyClick(window.view, Qt.Key.Key_A)
    assert window.view.zoom_factor() == pytest.approx(1.0, rel=0.05)
    qtbot.keyClick(window.view, Qt.Key.Key_D)
    assert window.view.tool == "ruler" and window.act_ruler.isChecked()
    qtbot.keyClick(window.view, Qt.Key.Key_D)
    assert window.view.tool == "window" and not window.act_ruler.isChecked()

    rc.new_session("keys")
    study = rc.current_study()
    assert study is not None and not study.done
    qtbot.keyClick(window.view, Qt.Key.Key_D)
    assert window.view.tool == "window"  # D now marks the study done instead
    study = rc.current_study()
    assert study is not None and study.done
    window.close()
