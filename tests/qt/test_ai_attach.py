"""AI controller attached to the real MainWindow: Analyze, marks, findings, N / Shift+N, timeline clicks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt

from tests.core.inference_models import build_model, write_bleed_series
from tests.factories import CANARY_ID, CANARY_NAME

pytest.importorskip("viewer.core.dicom.volume")
pytest.importorskip("viewer.qt.main_window")

from viewer.qt.ai import AIController, attach
from viewer.qt.main_window import MainWindow

BLEED = (5, 6, 7, 14)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ct")
    write_bleed_series(folder / "head", 20, BLEED)
    return folder / "head"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return build_model(tmp_path / "tiny.onnx")


@pytest.fixture
def window(qtbot, model: Path) -> Iterator[tuple[MainWindow, AIController]]:
    w = MainWindow()
    qtbot.addWidget(w)
    ctrl = attach(w)
    ctrl.set_model_path(model)
    ctrl.set_provider("cpu")
    w.show()
    qtbot.waitExposed(w)
    yield w, ctrl
    ctrl.shutdown()
    w.close()


def _open(qtbot, w: MainWindow, folder: Path) -> None:
    with qtbot.waitSignal(w.load_finished, timeout=30_000):
        w.open_paths([folder])
    qtbot.waitUntil(lambda: w.current_stack() is not None, timeout=10_000)


def _analyze(qtbot, ctrl: AIController) -> None:
    ctrl.analyze()
    qtbot.waitUntil(lambda: ctrl.prediction() is not None, timeout=30_000)


def test_analyze_fills_timeline_marks_findings_and_badges(qtbot, window, series: Path) -> None:
    w, ctrl = window
    _open(qtbot, w, series)
    assert ctrl.prediction() is None and w.slider.marks().get("ai", []) == []
    _analyze(qtbot, ctrl)
    pred = ctrl.prediction()
    assert pred is not None and pred.num_slices == 20
    assert ctrl.timeline.prediction is pred and len(ctrl.timeline._curves) == 6
    assert w.slider.marks()["ai"] == list(BLEED)
    assert ctrl.findings.tree.topLevelItemCount() == 6
    assert ctrl.findings.range_items("any")[0].text(0).startswith("slices 6-8 · peak ")
    stack = w.current_stack()
    assert stack is not None
    assert w.browser.badge(stack.uid).startswith("ICH suspected")
    assert "ICH suspected" in w.windowTitle()
    assert "CPU" in ctrl.status.label.text() and "tiny-test" in ctrl.status.label.text()
    assert "Research use only" in ctrl.status.research_use.text() and ctrl.status.research_use.isVisible()
    # corner text follows the slice: nothing above threshold on slice 0, 'any' on slice 5
    w.set_slice(0)
    assert "none above threshold" in w.view.overlay.extra_html()["ai"]
    w.set_slice(5)
    corner = w.view.overlay.extra_html()["ai"]
    assert "any" in corner and "Research use only" not in corner  # said once, in the status bar
    # the timeline's line follows at most ~30 times a second while scrolling: 5 shortly after
    qtbot.waitUntil(lambda: ctrl.timeline.current_line.value() == 5, timeout=2000)
    for text in (w.windowTitle(), ctrl.findings.badge.text(), ctrl.status.label.text(), corner):
        assert CANARY_NAME not in text and CANARY_ID not in text


def test_n_jumps_between_flagged_runs_and_ctrl_arrows_step_through_flagged_slices(
    qtbot, window, series: Path
) -> None:
    """Flagged 5-7 and 14 (0-based): N / Shift+N go to the start of the next / previous run (issue 12:
    they used to step one slice inside a run); Ctrl+Down / Ctrl+Up step through flagged slices."""
    w, ctrl = window
    _open(qtbot, w, series)
    _analyze(qtbot, ctrl)
    assert [(r.start, r.stop) for r in ctrl.prediction().flagged_runs()] == [(5, 7), (14, 14)]
    w.activateWindow()
    w.view.setFocus()
    w.set_slice(0)
    qtbot.keyClick(w.view, Qt.Key.Key_N)
    assert w.current_slice() == 5
    qtbot.keyClick(w.view, Qt.Key.Key_N)  # the rest of the run 5-7 is skipped
    assert w.current_slice() == 14
    qtbot.keyClick(w.view, Qt.Key.Key_N)  # no further run: stays, and says so
    assert w.current_slice() == 14 and "no further flagged run" in w.statusBar().currentMessage()
    qtbot.keyClick(w.view, Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier)
    assert w.current_slice() == 5  # the start of the previous run, not its last slice
    w.set_slice(0)
    seen = []
    for _ in range(4):
        qtbot.keyClick(w.view, Qt.Key.Key_Down, Qt.KeyboardModifier.ControlModifier)
        seen.append(w.current_slice())
    assert seen == [5, 6, 7, 14]
    qtbot.keyClick(w.view, Qt.Key.Key_Up, Qt.KeyboardModifier.ControlModifier)
    assert w.current_slice() == 7


def test_timeline_click_and_findings_click_change_the_slice(qtbot, window, series: Path) -> None:
    w, ctrl = window
    _open(qtbot, w, series)
    _analyze(qtbot, ctrl)
    w.set_slice(0)
    tl = ctrl.timeline
    qtbot.mouseClick(tl.plot.viewport(), Qt.MouseButton.LeftButton, pos=tl.view_to_widget(11, 0.5))
    assert w.current_slice() == 11
    ctrl.dock.show()
    ctrl.dock.raise_()
    qtbot.waitExposed(ctrl.findings.tree)
    item = ctrl.findings.range_items("any")[1]
    ctrl.findings.tree.scrollToItem(item)
    rect = ctrl.findings.tree.visualItemRect(item)
    qtbot.mouseClick(
        ctrl.findings.tree.viewport(),
        Qt.MouseButton.LeftButton,
        pos=QPoint(rect.left() + 8, rect.center().y()),
    )
    assert w.current_slice() == 14


def test_stack_the_model_cannot_take_gets_a_message(qtbot, window, series: Path, tmp_path: Path) -> None:
    w, ctrl = window
    ctrl.set_model_path(build_model(tmp_path / "needs50.onnx", metadata={"min_slices": 50}))
    _open(qtbot, w, series)
    with qtbot.waitSignal(ctrl.analysis_failed, timeout=30_000) as blocker:
        ctrl.analyze()
    assert "at least 50 slices" in blocker.args[0]
    assert ctrl.findings.badge.text() == "AI not run: out of scope"
    banner = ctrl.findings.banner
    assert banner.isVisible() and "at least 50 slices" in banner.text()
    assert "S-TOO-FEW-SLICES" in banner.text()
    assert ctrl.findings.tree.topLevelItemCount() == 0 and ctrl.prediction() is None  # no probabilities
    assert ctrl.prediction() is None
    w.set_slice(3)  # the viewer keeps working
    assert w.current_slice() == 3


def test_missing_model_gets_a_message(qtbot, window, series: Path, tmp_path: Path) -> None:
    w, ctrl = window
    ctrl.set_model_path(tmp_path / "nope.onnx")
    _open(qtbot, w, series)
    with qtbot.waitSignal(ctrl.analysis_failed, timeout=30_000) as blocker:
        ctrl.analyze()
    assert "not found" in blocker.args[0]


def test_auto_analyze_setting_and_cache(qtbot, window, series: Path) -> None:
    w, ctrl = window
    ctrl.auto_action.setChecked(True)
    assert ctrl.auto_analyze
    _open(qtbot, w, series)
    qtbot.waitUntil(lambda: ctrl.prediction() is not None, timeout=30_000)
    first = ctrl.prediction()
    assert first is not None and w.slider.marks()["ai"] == list(BLEED)
    # a second window (new session) gets the result from the on-disk cache
    w2 = MainWindow()
    qtbot.addWidget(w2)
    ctrl2 = attach(w2)
    assert ctrl2.auto_analyze  # the setting persisted
    _open(qtbot, w2, series)
    qtbot.waitUntil(lambda: ctrl2.prediction() is not None, timeout=30_000)
    second = ctrl2.prediction()
    assert second is not None and second.from_cache
    assert (second.slice_probs == first.slice_probs).all()
    ctrl2.shutdown()
    w2.close()


def test_result_for_another_stack_is_not_displayed(qtbot, window, tmp_path: Path) -> None:
    w, ctrl = window
    write_bleed_series(tmp_path / "two" / "a", 20, BLEED)
    write_bleed_series(tmp_path / "two" / "b", 12, (2,))
    _open(qtbot, w, tmp_path / "two")
    stacks = sorted(w.loaded_stacks(), key=len)
    short, long_ = stacks[0], stacks[-1]
    w.show_stack(long_.uid)
    ctrl.analyze()
    w.show_stack(short.uid)  # before the worker's result reaches the GUI thread
    qtbot.waitUntil(lambda: w.browser.badge(long_.uid) != "", timeout=30_000)
    assert ctrl.wait(10_000)
    qtbot.wait(50)
    assert ctrl.prediction() is None  # the result belongs to the other stack
    assert w.slider.marks().get("ai", []) == []
    assert ctrl.timeline.prediction is None
    w.show_stack(long_.uid)  # kept for when that stack is shown again
    pred = ctrl.prediction()
    assert pred is not None and pred.stack_uid == long_.uid
    assert w.slider.marks()["ai"] == list(BLEED)


def test_result_arriving_after_cancel_is_not_displayed(qtbot, window, series: Path) -> None:
    w, ctrl = window
    _open(qtbot, w, series)
    ctrl.analyze()
    assert ctrl.wait(30_000)  # the worker has finished; its result is still queued for this thread
    ctrl.cancel()
    qtbot.wait(100)  # now the late result is delivered
    assert ctrl.prediction() is None and ctrl.timeline.prediction is None
    assert w.slider.marks().get("ai", []) == []
    assert "cancelled" in ctrl.status.label.text()
    _analyze(qtbot, ctrl)  # analysing again shows it (from the cache)
    assert w.slider.marks()["ai"] == list(BLEED)


def test_auto_analyze_covers_every_opened_ct_stack(qtbot, window, tmp_path: Path) -> None:
    w, ctrl = window
    ctrl.auto_action.setChecked(True)
    write_bleed_series(tmp_path / "three" / "a", 20, BLEED)
    write_bleed_series(tmp_path / "three" / "b", 12, (2,))
    write_bleed_series(tmp_path / "three" / "c", 8, ())
    _open(qtbot, w, tmp_path / "three")
    uids = [s.uid for s in w.loaded_stacks()]
    assert len(uids) == 3
    qtbot.waitUntil(lambda: all(w.browser.badge(u) for u in uids), timeout=60_000)
    shown = w.current_stack()
    assert shown is not None and ctrl.prediction() is not None
    assert ctrl.prediction().stack_uid == shown.uid
    badges = {len(s): w.browser.badge(s.uid) for s in w.loaded_stacks()}
    assert badges[8].startswith("No ICH flagged (any ") and badges[20].startswith("ICH suspected")
    assert ctrl.queued() == []


def test_reuses_slices_the_viewer_already_decoded(qtbot, window, series: Path, model: Path) -> None:
    from viewer.core.dicom.volume import StackVolume
    from viewer.core.inference.engine import InferenceEngine
    from viewer.qt.ai.worker import AnalyzeJob

    w, _ctrl = window
    _open(qtbot, w, series)
    shown = w.current_volume()
    stack = w.current_stack()
    qtbot.waitUntil(lambda: all(shown.cached(i) is not None for i in range(len(shown))), timeout=30_000)
    engine = InferenceEngine(model, provider="cpu", cache=None)
    job = AnalyzeJob(1, lambda: engine, stack, shown_volume=shown)
    stages: list[str] = []
    job.stage.connect(lambda _r, stage, _d, _t: stages.append(stage))
    with qtbot.waitSignal(job.succeeded, timeout=30_000) as blocker:
        job.start()
    assert job.wait(10_000)
    assert "Preprocessing" in stages and "Loading slices" not in stages  # nothing decoded again
    volume = StackVolume(stack)
    try:
        fresh = engine.predict_volume(volume)
    finally:
        volume.close()
    assert (blocker.args[1].slice_probs == fresh.slice_probs).all()


def test_out_of_scope_stack_shows_the_reason_and_no_probability(qtbot, window, tmp_path: Path) -> None:
    from tests import scope_cases as sc

    w, ctrl = window
    _open(qtbot, w, sc.write_body(tmp_path / "chest", "chest"))
    with qtbot.waitSignal(ctrl.analysis_failed, timeout=30_000) as blocker:
        ctrl.analyze()
    assert "out of scope" in blocker.args[0].lower() and "head" in blocker.args[0]
    stack = w.current_stack()
    assert stack is not None
    assert ctrl.prediction() is None and ctrl.timeline.prediction is None
    assert ctrl.findings.tree.topLevelItemCount() == 0
    assert ctrl.findings.banner.isVisible() and "S-NOT-HEAD" in ctrl.findings.banner.text()
    assert w.browser.badge(stack.uid) == "AI: out of scope" and "out of scope" in w.windowTitle()
    assert w.slider.marks().get("ai", []) == []
    texts = [
        w.windowTitle(), w.browser.badge(stack.uid), ctrl.findings.badge.text(), ctrl.findings.banner.text(),
        ctrl.status.label.text(), w.view.overlay.extra_html().get("ai", ""),
    ]
    assert not any(re.search(r"\b0\.\d\d\b", t) for t in texts), texts  # no probability anywhere


def test_cautioned_result_shows_a_banner_and_the_study_decision(qtbot, window, tmp_path: Path) -> None:
    w, ctrl = window
    write_bleed_series(tmp_path / "clean", 12, ())
    _open(qtbot, w, tmp_path / "clean")
    _analyze(qtbot, ctrl)
    pred = ctrl.prediction()
    assert pred is not None and pred.applicability is not None and pred.applicability.cautioned
    assert "S-NO-TRAINED-RANGE" in pred.applicability.codes  # the tiny model records no trained range
    banner = ctrl.findings.banner
    assert banner.isVisible() and "caution" in banner.text() and "trained range" in banner.text()
    assert "caution" in w.view.overlay.extra_html()["ai"]
    badge = f"No ICH flagged (any {pred.study_prob:.2f})"
    stack = w.current_stack()
    assert stack is not None
    assert pred.badge() == badge and w.browser.badge(stack.uid) == badge and badge in w.windowTitle()
    corner = w.view.overlay.extra_html()["ai"].replace("&nbsp;", " ")  # a class keeps its number
    assert ctrl.findings.badge.text() == badge and badge in corner


def test_analyze_writes_and_menu_exports_dicom_ai_objects(
    qtbot, window, series: Path, tmp_path: Path
) -> None:
    import pydicom

    from viewer.qt.ai.controller import ai_results_dir

    w, ctrl = window
    _open(qtbot, w, series)
    _analyze(qtbot, ctrl)
    pred = ctrl.prediction()
    assert pred is not None
    # Analyze wrote the de-identified AI SR in the background, beside the cache
    qtbot.waitUntil(lambda: any(ai_results_dir().glob("*.dcm")), timeout=20_000)
    assert "Export AI results as DICOM…" in [a.text() for a in w.menu("AI").actions()]
    # the menu's export (the method behind the folder dialog)
    written = ctrl.export_dicom(tmp_path / "export", include_identity=False)
    assert written and all(p.parent == tmp_path / "export" for p in written)
    datasets = [pydicom.dcmread(p) for p in written]
    sr = next(ds for ds in datasets if ds.Modality == "SR")
    assert sr.PatientIdentityRemoved == "YES" and sr.StudyInstanceUID == pred.study_instance_uid
    assert (ai_results_dir() / f"{sr.SOPInstanceUID}.dcm").is_file()  # the same object Analyze wrote
