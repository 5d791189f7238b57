"""Closing the window while a load result is still queued must not start new work afterwards."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window
from viewer.qt.workers import LoadJob


def test_a_load_result_delivered_after_close_opens_no_volume_and_starts_no_job(
    qtbot: QtBot, tmp_path: Path
) -> None:
    write_ct_series(tmp_path / "ct", 4)
    window = make_window(qtbot)
    window.open_paths([tmp_path / "ct"])
    job = next(j for j in window._jobs if isinstance(j, LoadJob))
    assert job.wait(60_000)  # the scan is over; its ``done`` signal waits in the event queue
    window.close()
    qtbot.wait(100)  # deliver the queued result
    assert window.current_volume() is None
    assert window._jobs == []
