"""Analyze with a model that has localisation maps (contract version 2): the findings panel shows the bleed
volumes, and the maps' DICOM SEG (written in the helper process) is shown by the Results overlay on the
slices and pixels the maps marked, registered under rotation, flips, zoom and pan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF
from pytestqt.qtbot import QtBot

from tests.core.inference_models import blood_hu, build_model, write_bleed_series
from tests.qt.viewer_helpers import (
    OVERLAY_TURNS,
    make_window,
    open_and_wait,
    overlay_offset,
    screen_color,
    turn_view,
)
from viewer.core.foreign.match import PlacedSeg, SliceAt
from viewer.qt.ai.findings import VOLUME_COLUMN
from viewer.qt.results import ResultsController
from viewer.qt.style import MUTED_COLOR
from viewer.qt.tree_items import top_items

N_SLICES, BLEED = 6, (2, 3)


def test_analyze_shows_volumes_and_the_registered_map_overlay(
    qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import viewer.qt.ai.controller as ai_controller

    monkeypatch.setattr(ai_controller, "ai_results_dir", lambda: tmp_path / "ai-results")
    write_bleed_series(tmp_path / "ct", N_SLICES, BLEED)
    window = make_window(qtbot)
    ai, results = window.ai_controller, window.results_controller
    assert ai is not None and isinstance(results, ResultsController)
    ai.set_model_path(build_model(tmp_path / "maps.onnx", maps_factor=2))
    ai.set_provider("cpu")
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    with qtbot.waitSignal(ai.task_objects_ready, timeout=60_000) as written:
        ai.analyze()
    (seg_file,) = written.args[0]  # only the SEG goes to the overlay, not the AI SR / KOS
    assert seg_file.sop_class_uid == "1.2.840.10008.5.1.4.1.1.66.4"
    qtbot.waitUntil(lambda: any(isinstance(p, PlacedSeg) for p in results.placed), timeout=60_000)
    qtbot.wait(20)
    # the AI's own SEG leaves the findings panel in front (others' objects raise the Results dock)
    assert window.tabifiedDockWidgets(ai.dock) and not ai.dock.visibleRegion().isEmpty()
    assert results.dock.visibleRegion().isEmpty()
    pred = ai.prediction()
    assert pred is not None and pred.maps is not None

    # findings panel: the volume column, one value per class, as the prediction's volumes
    panel = ai.findings
    assert not panel.tree.isColumnHidden(VOLUME_COLUMN)
    volumes = pred.volumes_ml()
    rows = {row.text(0): row for row in top_items(panel.tree)}
    shown = {name: row.text(VOLUME_COLUMN) for name, row in rows.items()}
    measured = {"any", "subdural"}
    assert {n: shown[n] for n in measured} == {n: f"{volumes[n]:.1f}" for n in measured}
    assert float(shown["subdural"]) > 1.0
    # a class the classifier does not flag shows no volume, even where its map finds blood (epidural's
    # map is the subdural one in this model: "No ICH flagged" studies read "epidural 0.2 mL")
    for name in ("epidural", "intraventricular"):
        assert shown[name] == "–" and "does not flag" in rows[name].toolTip(VOLUME_COLUMN)
    # issue 12: a class the classifier flags whose map has no voxel at its threshold read "0.0" (mL)
    flagged = {f.class_name for f in pred.findings if f.positive or f.flagged}
    for name in ("intraparenchymal", "subarachnoid"):
        assert name in flagged and volumes[name] == 0.0
        assert shown[name] == "–"
        assert "volume not measurable" in rows[name].toolTip(VOLUME_COLUMN)

    stack = window.current_stack()
    assert stack is not None
    marked = [i for i in range(N_SLICES) if results.layers(SliceAt(stack.uid, i))]
    assert marked == list(BLEED)
    (placed,) = [p for p in results.placed if isinstance(p, PlacedSeg)]
    subdural = sum(int(np.asarray(f.mask).sum()) for f in placed.obj.frames if f.segment == 5)
    assert subdural == int(pred.maps.mask(4).sum())
    # the Results dock lists every segment; those on no image (epidural: not flagged, its map not shown)
    # in the muted colour, not as if found
    (seg_row,) = top_items(results.panel.tree)
    rows = {seg_row.child(k).text(0): seg_row.child(k) for k in range(seg_row.childCount())}
    assert rows["epidural"].foreground(0).color().name() == MUTED_COLOR
    assert "no voxel" in rows["epidural"].toolTip(0)
    assert rows["subdural"].foreground(0).color().name() != MUTED_COLOR

    view = window.view
    view.set_index(BLEED[0])
    qtbot.wait(20)
    overlay = results.overlay(view)
    assert overlay.is_shown()
    results.set_opacity(1.0)
    truth = blood_hu(N_SLICES, BLEED)[BLEED[0]] == 75.0
    inside = (32, 40)  # (row, column) inside the blob, off its centre so that a flip moves it
    assert truth[inside] and not truth[3, 3]
    row, col = inside
    for turn in OVERLAY_TURNS:
        turn_view(window, turn)
        qtbot.wait(20)
        assert overlay_offset(window, overlay.item, row, col) < 1e-6
        on_image = view.image.mapToScene(QPointF(col + 0.5, row + 0.5))
        colour = screen_color(window, on_image)
        tint = max(abs(colour.red() - colour.green()), abs(colour.blue() - colour.green()))
        assert tint > 60, (turn, colour.name())
        grey = screen_color(window, view.image.mapToScene(QPointF(3.5, 3.5)))
        assert abs(grey.red() - grey.green()) < 5 and abs(grey.blue() - grey.green()) < 5, (turn, grey)
    view.set_index(0)
    assert not overlay.is_shown()
