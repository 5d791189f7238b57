"""The status-bar progress names what it counts: files while scanning, slices while decoding."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from tests.qt.viewer_helpers import make_window


def test_decoding_progress_counts_slices_not_files(qtbot: QtBot) -> None:
    window = make_window(qtbot)
    window._show_progress("Decoding", 3, 12, unit="slices")
    assert window.progress.text() == "3 / 12 slices"
    window._show_progress("Scanning", 5, 40)
    assert window.progress.text() == "5 / 40 files"
    window.close()
