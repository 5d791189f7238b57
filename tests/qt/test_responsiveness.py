"""The GUI thread keeps serving events while a 1,000-file folder loads (event-loop latency)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QTimer
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window

N_FILES = 1000
HEARTBEAT_MS = 10
MAX_LAG_S = 1.0  # generous: a frozen UI shows multi-second gaps


@pytest.mark.slow
def test_event_loop_stays_responsive_while_1000_files_load(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "big", N_FILES, rows=64, columns=64, shuffle=False)
    window = make_window(qtbot)
    beats: list[float] = []
    timer = QTimer()
    timer.setInterval(HEARTBEAT_MS)
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    timer.start()
    progress: list[tuple[int, int]] = []
    window.view.index_changed.connect(lambda _i: None)
    with qtbot.waitSignal(window.load_finished, timeout=120_000):
        window.open_paths([tmp_path / "big"])
        job = window._jobs[-1]
        job.progress.connect(lambda d, t: progress.append((d, t)))
    qtbot.wait(200)  # thumbnails and the first slice settle while the heartbeat keeps running
    timer.stop()
    gaps = np.diff(np.asarray(beats))
    lag = gaps - HEARTBEAT_MS / 1000
    print(
        f"\nheartbeat over {len(beats)} ticks: p50 {np.percentile(lag, 50) * 1000:.1f} ms, "
        f"p99 {np.percentile(lag, 99) * 1000:.1f} ms, max {lag.max() * 1000:.1f} ms; "
        f"{len(progress)} progress updates"
    )
    assert len(window.current_stack()) == N_FILES
    assert len(beats) > 20, "the heartbeat timer barely ran: the event loop was blocked"
    assert lag.max() < MAX_LAG_S
    assert progress and progress[-1][0] == progress[-1][1] == N_FILES
