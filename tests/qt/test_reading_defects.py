"""Defects found by reading studies through the real window (session 10): each test fails before its fix."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from tests.core.inference_models import blood_hu, build_model, make_stack
from viewer.core.inference.engine import InferenceEngine
from viewer.core.inference.results import StackPrediction
from viewer.qt.ai.timeline import PredictionTimeline


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> InferenceEngine:
    return InferenceEngine(build_model(tmp_path_factory.mktemp("m") / "tiny.onnx"), provider="cpu", cache=None)


def _predict(engine: InferenceEngine, n: int, bleed: tuple[int, ...]) -> StackPrediction:
    return engine.predict_hu(make_stack(n, uid=f"1.2.3.{n}"), blood_hu(n, bleed))


def test_timeline_shows_every_slice_of_a_longer_stack_after_a_shorter_one(qtbot, engine: InferenceEngine) -> None:
    """A 32-slice stack analysed after a 24-slice one showed slices 1-25 only: the new x range was clamped
    by the previous stack's limits, so the last slices (and their flags) could not be seen or clicked."""
    short, long = _predict(engine, 24, (3, 4)), _predict(engine, 32, (28, 29, 30))
    tl = PredictionTimeline()
    qtbot.addWidget(tl)
    tl.resize(900, 200)
    tl.show()
    qtbot.waitExposed(tl)
    tl.set_prediction(short)
    assert tl.view_box.viewRange()[0] == pytest.approx([-0.5, 23.5])
    tl.set_prediction(long)
    assert tl.view_box.viewRange()[0] == pytest.approx([-0.5, 31.5])
    with qtbot.waitSignal(tl.slice_requested, timeout=2000) as blocker:  # the last flagged slice is reachable
        qtbot.mouseClick(tl.plot.viewport(), Qt.MouseButton.LeftButton, pos=tl.view_to_widget(30, 0.5))
    assert blocker.args == [30]
    tl.set_prediction(short)  # and back to the shorter one: no empty room after its last slice
    assert tl.view_box.viewRange()[0] == pytest.approx([-0.5, 23.5])
