"""Standalone AI widgets: the prediction timeline and the findings panel."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt

from tests.core.inference_models import blood_hu, build_model, make_stack
from viewer.core.inference.engine import InferenceEngine
from viewer.core.inference.results import StackPrediction
from viewer.qt.ai.findings import FindingsPanel
from viewer.qt.ai.timeline import PredictionTimeline


@pytest.fixture(scope="module")
def prediction(tmp_path_factory: pytest.TempPathFactory) -> StackPrediction:
    model = build_model(tmp_path_factory.mktemp("m") / "tiny.onnx")
    engine = InferenceEngine(model, provider="cpu", cache=None)
    return engine.predict_hu(make_stack(20), blood_hu(20, (5, 6, 7, 14)))


def test_timeline_shows_curves_thresholds_and_intended_use(qtbot, prediction: StackPrediction) -> None:
    tl = PredictionTimeline()
    qtbot.addWidget(tl)
    tl.set_prediction(prediction)
    assert tl.visible_classes() == list(prediction.class_names)
    assert len(tl._curves) == 6 and len(tl._threshold_lines) == 6
    x, y = tl._curves["any"].getData()
    assert len(x) == 20 and y[5] == pytest.approx(float(prediction.slice_probs[5, 0]))
    assert tl._threshold_lines["subdural"].value() == pytest.approx(0.4)
    assert len(tl._regions) == 2  # flagged runs 6-8 and 15
    assert not hasattr(tl, "intended_use")  # said once, in the status bar (AIStatusWidget)
    assert "ICH suspected" in tl.title.text()
    # toggle a class off and on through its check box
    tl.class_checkbox("epidural").setChecked(False)
    assert "epidural" not in tl.visible_classes() and not tl._curves["epidural"].isVisible()
    tl.class_checkbox("epidural").setChecked(True)
    assert "epidural" in tl.visible_classes()
    tl.set_prediction(None, "AI cannot analyze this stack")
    assert tl.title.text() == "AI cannot analyze this stack" and not tl._curves


@pytest.mark.parametrize("width", [480, 575, 900])
def test_timeline_title_never_runs_under_the_class_toggles(
    qtbot, prediction: StackPrediction, width: int
) -> None:
    tl = PredictionTimeline()
    qtbot.addWidget(tl)
    tl.set_prediction(prediction)
    tl.resize(width, tl.height())
    tl.show()
    qtbot.waitExposed(tl)
    first_box = min(tl._checks.values(), key=lambda b: b.geometry().left())
    assert tl.title.geometry().right() < first_box.geometry().left()
    assert tl.title.width() >= tl.title.minimumSizeHint().width()
    assert "ICH suspected" in tl.title.toolTip()  # the full text, whatever is shown
    assert tl.minimumSizeHint().width() <= 480  # a long title never widens the window


def test_timeline_click_and_current_line(qtbot, prediction: StackPrediction) -> None:
    tl = PredictionTimeline()
    qtbot.addWidget(tl)
    tl.resize(800, 220)
    tl.set_prediction(prediction)
    tl.show()
    qtbot.waitExposed(tl)
    tl.set_current_slice(3)  # the line follows within one cursor interval (~30 updates a second)
    qtbot.waitUntil(lambda: tl.current_line.value() == 3, timeout=2000)
    with qtbot.waitSignal(tl.slice_requested, timeout=2000) as blocker:
        qtbot.mouseClick(tl.plot.viewport(), Qt.MouseButton.LeftButton, pos=tl.view_to_widget(12, 0.5))
    assert blocker.args == [12]
    qtbot.waitUntil(lambda: tl.current_line.value() == 12, timeout=2000)


def test_timeline_line_ends_on_the_last_slice_of_a_fast_scroll(qtbot, prediction: StackPrediction) -> None:
    """While scrolling the line is moved at most every cursor interval; it always ends on the newest
    slice (none of the coalesced ones is left showing)."""
    tl = PredictionTimeline()
    qtbot.addWidget(tl)
    tl.set_prediction(prediction)
    tl.show()
    qtbot.waitExposed(tl)
    for k in range(1, 16):
        tl.set_current_slice(k)
    assert tl.current_slice() == 15 and tl.current_line.value() != 15  # not every step repaints
    qtbot.waitUntil(lambda: tl.current_line.value() == 15, timeout=2000)


def test_findings_panel_rows_and_range_click(qtbot, prediction: StackPrediction) -> None:
    panel = FindingsPanel()
    qtbot.addWidget(panel)
    panel.resize(500, 400)
    panel.set_prediction(prediction)
    panel.show()
    qtbot.waitExposed(panel)
    assert panel.tree.topLevelItemCount() == 6
    any_row = panel.tree.topLevelItem(0)
    assert any_row is not None and any_row.text(0) == "any"
    assert "flagged slices 6-8, 15 (slice threshold" in any_row.toolTip(0)
    assert any_row.text(1) == f"{prediction.study_probs[0]:.2f}"
    ranges = panel.range_items("any")
    peaks = [float(prediction.slice_probs[5:8, 0].max()), float(prediction.slice_probs[14, 0])]
    assert [r.text(0) for r in ranges] == [
        f"slices 6-8 · peak {peaks[0]:.2f}",
        f"slices 15 · peak {peaks[1]:.2f}",
    ]
    assert "Research use only" in panel.details.toolTip()
    assert "ICH suspected" in panel.badge.text()
    rect = panel.tree.visualItemRect(ranges[1])
    with qtbot.waitSignal(panel.slice_requested, timeout=2000) as blocker:
        qtbot.mouseClick(
            panel.tree.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(rect.left() + 8, rect.center().y())
        )
    assert blocker.args == [14]
    panel.set_prediction(None, "No model")
    assert panel.tree.topLevelItemCount() == 0 and panel.badge.text() == "No model"


def test_findings_columns_fit_a_narrow_dock(qtbot, prediction: StackPrediction) -> None:
    panel = FindingsPanel()
    qtbot.addWidget(panel)
    panel.resize(264, 400)
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_prediction(prediction)
    used = sum(panel.tree.columnWidth(c) for c in range(panel.tree.columnCount()))
    assert used <= panel.tree.viewport().width()  # no horizontal scrolling
    assert panel.minimumSizeHint().width() <= 264  # the texts never widen the dock
    assert "threshold" in panel.tree.headerItem().toolTip(0)


def test_why_cuda_is_not_used_is_one_short_line_with_the_details_in_its_tooltip(
    qtbot, prediction: StackPrediction
) -> None:
    """Issue 12: the CUDA explanation took five lines of the narrow findings panel (first in full, later
    a line pointing to About): one short line from the start, which provider runs and why CUDA is not
    used; the library error in its tooltip and behind a "details" link."""
    import dataclasses

    from viewer.core.inference.engine import _cuda_reason

    error = (
        "[E:onnxruntime:Default, provider_bridge_ort.cc:2036 TryGetProviderInfo_CUDA] Failed to load library "
        "libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: "
        "No such file or directory; Require cuDNN 9.* and CUDA 13."
    )
    note = _cuda_reason(["CUDAExecutionProvider", "CPUExecutionProvider"], [error], "auto")
    failed = dataclasses.replace(prediction, provider="CPUExecutionProvider", provider_note=note)
    panel = FindingsPanel()
    qtbot.addWidget(panel)
    panel.resize(264, 400)
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_prediction(failed)
    line = panel.provider_line
    assert line.isVisible() and "libcublasLt" not in line.text() + panel.details.text()
    assert line.text().startswith("CPU: no usable GPU / CUDA libraries") and "details" in line.text()
    assert "libcublasLt.so.13" in line.toolTip() and "Require cuDNN 9" in line.toolTip()
    assert line.sizeHint().height() < 2 * line.fontMetrics().height()  # one line
    assert line.sizeHint().width() <= panel.width()
    no_build = _cuda_reason(["CPUExecutionProvider"], [], "cuda")
    panel.set_prediction(dataclasses.replace(failed, provider_note=no_build))
    assert line.text().startswith("CPU: onnxruntime without CUDA") and "onnxruntime-gpu" in line.toolTip()
    panel.set_prediction(dataclasses.replace(failed, provider_note=""))
    assert not line.isVisible()


