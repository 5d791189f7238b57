"""A segmentation model's result in the viewer: ``slicewise predict --dicom-out`` writes the DICOM SEG
beside the study, and opening the folder shows it through the others'-results overlay (its segments,
on the slices and pixels the model marked)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pytestqt.qtbot import QtBot

from tests.core.inference_models import SEG_CLASSES, build_seg_model, write_bleed_series
from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.core.foreign.match import PlacedSeg, SliceAt
from viewer.predict_cli import main as predict_main
from viewer.qt.results import ResultsController

N_SLICES, BLEED = 6, (2, 3)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("segview")
    write_bleed_series(root / "ct", N_SLICES, BLEED)
    model = build_seg_model(root.parent / f"{root.name}-seg.onnx")
    out = root.parent / f"{root.name}-r.json"
    argv = [str(root / "ct"), "--model", str(model), "--provider", "cpu", "--out", str(out), "--quiet"]
    assert predict_main([*argv, "--no-cache", "--dicom-out", str(root / "results")]) == 0
    (rec,) = json.loads(out.read_text())["stacks"]
    return root, rec


def test_the_seg_of_a_segmentation_model_shows_in_the_viewer(
    qtbot: QtBot, analysed: tuple[Path, dict[str, object]]
) -> None:
    root, rec = analysed
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [root])
    controller = window.results_controller
    assert isinstance(controller, ResultsController) and controller.wait(60_000)
    (placed,) = [p for p in controller.placed if isinstance(p, PlacedSeg)]
    assert [s.label for s in placed.obj.segments] == list(SEG_CLASSES)
    stack = window.current_stack()
    assert stack is not None
    findings = {f["class"]: f for f in rec["findings"]}  # type: ignore[attr-defined]
    for i in range(N_SLICES):
        layers = controller.layers(SliceAt(stack.uid, i))
        if i not in BLEED:
            assert layers == []
            continue
        by_label = {placed.obj.segments[f.segment - 1].label: f.mask for _, f in layers}
        assert set(by_label) == {"epidural", "subdural"}  # the classes the test model marks
        assert all(np.asarray(m).any() for m in by_label.values())
    # the overlay's voxels are the volume's voxels
    total = sum(int(np.asarray(f.mask).sum()) for f in placed.obj.frames if f.segment == 5)
    assert total == findings["subdural"]["voxels"]
    view = window.view
    view.set_index(BLEED[0])
    qtbot.wait(20)
    assert controller.overlay(view).is_shown()
    view.set_index(0)
    qtbot.wait(20)
    assert not controller.overlay(view).is_shown()


def test_analyze_with_a_segmentation_model_shows_its_seg(
    qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Analyze in the viewer with a segmentation model: no classification display, the volumes in the
    status bar, and its DICOM SEG (written in the helper process) shown by the Results overlay on the
    slices the model marked."""
    import viewer.qt.ai.controller as ai_controller

    monkeypatch.setattr(ai_controller, "ai_results_dir", lambda: tmp_path / "ai-results")
    write_bleed_series(tmp_path / "ct", N_SLICES, BLEED)
    window = make_window(qtbot)
    ai, results = window.ai_controller, window.results_controller
    assert ai is not None and isinstance(results, ResultsController)
    ai.set_model_path(build_seg_model(tmp_path / "seg.onnx"))
    ai.set_provider("cpu")
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    messages: list[str] = []
    window.statusBar().messageChanged.connect(messages.append)
    with qtbot.waitSignal(ai.task_objects_ready, timeout=60_000) as written:
        ai.analyze()
    (seg_file,) = written.args[0]
    assert seg_file.sop_class_uid == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    qtbot.waitUntil(lambda: any(isinstance(p, PlacedSeg) for p in results.placed), timeout=60_000)
    assert ai.prediction() is None  # nothing shown as a classification
    (summary,) = [m for m in messages if m.startswith("AI per-class lesion masks")]
    assert "epidural" in summary and "subdural" in summary and " mL" in summary  # the classes it marks
    stack = window.current_stack()
    assert stack is not None
    marked = [i for i in range(N_SLICES) if results.layers(SliceAt(stack.uid, i))]
    assert marked == list(BLEED)
