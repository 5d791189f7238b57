"""Under a CT stack without an AI result the timeline is its one-line header, and the image gets the
plot's room; a result opens it (real window offscreen, real model run on a real series)."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from tests.core.inference_models import build_model, write_bleed_series
from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.qt.ai.timeline import timeline_height


def test_the_empty_timeline_collapses_to_its_header_and_the_image_takes_the_room(
    qtbot: QtBot, tmp_path: Path
) -> None:
    write_bleed_series(tmp_path / "ct", 6, (2, 3))
    window = make_window(qtbot, (1366, 768))
    ai = window.ai_controller
    assert ai is not None
    ai.set_model_path(build_model(tmp_path / "tiny.onnx"))
    ai.set_provider("cpu")
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    timeline = ai.timeline
    qtbot.waitUntil(timeline.isVisible, timeout=5000)
    assert ai.prediction() is None
    assert timeline.height() < 40 and not timeline.plot.isVisible()
    assert timeline.collapsed
    assert timeline.title.isVisible() and "no analysis" in timeline.title.text()
    qtbot.waitUntil(lambda: window.view.height() > 0, timeout=5000)
    collapsed_view = window.view.height()

    with qtbot.waitSignal(ai.prediction_shown, timeout=30_000):
        ai.analyze()
    assert ai.prediction() is not None and not timeline.collapsed
    qtbot.waitUntil(lambda: timeline.height() == timeline_height(), timeout=5000)
    assert timeline.plot.isVisible()
    qtbot.waitUntil(lambda: window.view.height() < collapsed_view, timeout=5000)
    assert collapsed_view - window.view.height() > 60  # the plot's room went back to the image
