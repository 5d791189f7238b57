"""The side docks at a laptop's 1366 x 768 and a desktop's 1920 x 1080: the demo head CT, analysed by the
bundled model and hung by its protocol (brain | bone), as a reader first sees it, with the maps' SEG
listed in the Results dock. The AI findings dock
took ~500 px at 1366 (its tree as wide as its longest texts), leaving the two viewports ~275 px each; now
the image keeps at least 60 % of the width, and the docks' texts still read in full (no "intraparenchy…",
no cut dock tabs, no lone "0.97" under the AI result on the image)."""

from __future__ import annotations

import re

import pytest
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QApplication, QDockWidget, QTabBar
from pytestqt.qtbot import QtBot

from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.core.foreign.match import PlacedSeg
from viewer.core.paths import bundled_model_path, demo_study_dir
from viewer.qt.main_window import MainWindow
from viewer.qt.results import ResultsController
from viewer.qt.tree_items import ITEM_SLACK_PX, all_items

IMAGE_SHARE = 0.6  # of the window's width (issue 12: the image area at least 60 % of the screen)


def _analysed_demo(qtbot: QtBot, size: tuple[int, int]) -> MainWindow:
    window = make_window(qtbot, size, hang=True)
    ai = window.ai_controller
    assert ai is not None
    ai.set_model_path(bundled_model_path())
    ai.set_provider("cpu")
    results = window.results_controller
    assert isinstance(results, ResultsController)
    open_and_wait(qtbot, window, [demo_study_dir()])
    with qtbot.waitSignal(ai.task_objects_ready, timeout=60_000):
        ai.analyze()
    # the maps' SEG listed in the Results dock (tabbed with the findings: its tree widened them too)
    qtbot.waitUntil(lambda: any(isinstance(p, PlacedSeg) for p in results.placed), timeout=60_000)
    qtbot.wait(50)
    QApplication.processEvents()
    return window


@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080)])
def test_the_image_keeps_most_of_the_width_and_the_docks_read_in_full(
    qtbot: QtBot, size: tuple[int, int]
) -> None:
    window = _analysed_demo(qtbot, size)
    ai = window.ai_controller
    assert ai is not None
    central_widget = window.centralWidget()
    assert central_widget is not None
    central = central_widget.geometry()
    assert central.width() >= IMAGE_SHARE * window.width(), (central.width(), window.width())
    # both side panels still shown beside it, neither over it
    docks = [window.browser_dock, ai.dock]
    for dock in docks:
        assert dock.isVisible() and not dock.geometry().intersects(central), dock.windowTitle()

    # the findings tree: class names and numbers whole, range rows within the tree
    tree = ai.findings.tree
    assert tree.topLevelItemCount() == 6
    viewport = tree.viewport().width()
    assert sum(tree.columnWidth(c) for c in range(tree.columnCount())) <= viewport
    for item in all_items(tree):
        depth = 0 if item.parent() is None else 1
        indent = (depth + 1) * tree.indentation()  # the root is decorated (expand arrows)
        if item.isFirstColumnSpanned():
            need = indent + QFontMetrics(item.font(0)).horizontalAdvance(item.text(0)) + ITEM_SLACK_PX
            assert need <= viewport, (item.text(0), need, viewport)
            continue
        for col in range(tree.columnCount()):
            text_px = QFontMetrics(item.font(col)).horizontalAdvance(item.text(col))
            room = tree.columnWidth(col) - (indent if col == 0 else 0) - ITEM_SLACK_PX
            assert text_px <= room, (item.text(col), col, text_px, room)

    # the tabs of the right dock (AI findings, Worklist, Review, Results) are not cut either
    bars = [b for b in window.findChildren(QTabBar) if b.parent() is window and b.isVisible()]
    assert bars
    for bar in bars:
        for i in range(bar.count()):
            assert bar.tabRect(i).width() >= bar.tabSizeHint(i).width(), bar.tabText(i)

    # the AI result on the image: a class keeps its probability on its line
    view = window.view
    w, h = view.overlay.width(), view.overlay.height()
    lines = view.overlay._extra_pixmap(w, h)[0]
    assert any("ICH suspected" in line for line in lines)
    assert not any(re.fullmatch(r"\s*[\d.]+\)?\s*", line) for line in lines), lines


def test_the_side_docks_keep_their_width_when_the_window_grows(qtbot: QtBot) -> None:
    """The first widths are set once, when the window is first shown; a bigger window gives its extra
    width to the image."""
    window = make_window(qtbot, (1366, 768))
    qtbot.wait(50)  # the docks' first widths are applied by the next layout pass
    docks = [d for d in window.findChildren(QDockWidget) if d.isVisible() and not d.isFloating()]
    assert {d.windowTitle() for d in docks} >= {"Studies", "AI findings"}
    before = {d.windowTitle(): d.width() for d in docks}
    window.resize(1920, 1080)
    central = window.centralWidget()
    assert central is not None
    qtbot.waitUntil(lambda: central.width() > 1000, timeout=5000)
    assert {d.windowTitle(): d.width() for d in docks} == before
