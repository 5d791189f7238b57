"""Leaving MPR gives the reader the acquired series again (issue 12, seen on a screenshot: after MPR, the
1×1 layout kept the resliced axial plane, without the AI map overlay and the AI slider marks until
Alt+Q). As OHIF's MPR toggle returns to the layout before it (OHIF/Viewers#3699) and RadiAnt's and Horos's
MPR windows close onto the 2D viewer: the stack's own slices, at the MPR's patient position, with their
overlays and marks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from tests.qt.viewer_helpers import analysed_bleed_window
from viewer.core.state.layout import Layout
from viewer.qt.main_window import MainWindow
from viewer.qt.results import ResultsController

N_SLICES, BLEED = 6, (2, 3)


def _settled(qtbot: QtBot, window: MainWindow, index: int) -> None:
    view = window.views()[index]
    qtbot.waitUntil(
        lambda: view.shown_index == view.index and view.current_data() is not None, timeout=20_000
    )


@pytest.fixture
def analysed(qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MainWindow:
    """A CT series analysed by a model with localisation maps: AI marks and the maps' SEG overlay."""
    return analysed_bleed_window(qtbot, tmp_path, monkeypatch, BLEED, N_SLICES)


def _bleed_point(window: MainWindow, k: int) -> list[float]:
    """The patient point (mm) at the centre of slice ``k`` of the shown stack."""
    entry = window.state.entry(window.state.active)
    assert entry is not None and entry.geometry is not None
    geom = entry.geometry
    return [float(v) for v in geom.voxel_to_patient((k, (geom.rows - 1) / 2, (geom.columns - 1) / 2))]


def test_layout_1x1_after_mpr_shows_the_acquired_slices_with_overlay_and_marks(
    qtbot: QtBot, analysed: MainWindow
) -> None:
    w = analysed
    ai, results = w.ai_controller, w.results_controller
    assert ai is not None and isinstance(results, ResultsController)
    pred = ai.prediction()
    assert pred is not None
    flagged = pred.flagged_slices()
    assert flagged and w.slider.marks()["ai"] == flagged
    w.set_slice(BLEED[0])
    w.show_mpr()  # from slice 2: the planes go through it
    assert w.state.in_mpr and w.state.layout is Layout.ONE_BY_THREE
    assert w.actions_registry.action("layout_mpr").isChecked()
    for k in range(3):
        _settled(qtbot, w, k)
    assert w.current_slice() == BLEED[0]
    assert w.view.planes() is not None and not any(w.slider.marks().values())  # planes: no slice marks
    w.state.go_to_point(0, _bleed_point(w, BLEED[1]))  # the reader scrolls the axial plane to slice 3

    w.set_layout(Layout.ONE)  # the Layout menu's 1×1
    _settled(qtbot, w, 0)
    view = w.view
    assert view.planes() is None  # the acquired slices, not a resliced axial plane
    assert w.current_slice() == BLEED[1]  # at the MPR's patient position
    assert not w.state.in_mpr and not w.actions_registry.action("layout_mpr").isChecked()
    assert w.slider.marks()["ai"] == flagged
    qtbot.waitUntil(lambda: results.overlay(view).is_shown(), timeout=5000)  # the maps' SEG overlay again
    assert "AI study" in view.overlay.extra_html().get("ai", "")


def test_mpr_toggles_back_to_the_layout_before_it(qtbot: QtBot, analysed: MainWindow) -> None:
    w = analysed
    stack = w.current_stack()
    assert stack is not None
    w.set_layout(Layout.ONE_BY_TWO)
    w.state.set_active(1)
    w.show_stack(stack.uid)  # the same series side by side; the right one is read
    w.set_slice(BLEED[1])
    other = w.state.viewport(0)
    w.show_mpr()
    for k in range(3):
        _settled(qtbot, w, k)
    w.state.go_to_point(0, _bleed_point(w, BLEED[0]))
    w.actions_registry.action("layout_mpr").trigger()  # Alt+M again: MPR off
    assert w.state.layout is Layout.ONE_BY_TWO and not w.state.in_mpr
    left = w.state.viewport(0)  # as before MPR (window, zoom ...), the same stack at the MPR's point
    assert w.state.active == 1 and replace(left, position_mm=other.position_mm) == other
    assert w.current_slice() == BLEED[0] and left.position_mm == w.state.viewport(1).position_mm
    _settled(qtbot, w, 1)
    assert w.view.planes() is None and w.current_slice() == BLEED[0]
    assert w.slider.marks()["ai"]
