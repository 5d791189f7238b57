"""The AI result on the image in a 1x2 layout on a 1366 x 768 screen (issue 12, seen on a screenshot of the
analysed demo: the dark-backed block still took three wrapped lines over the image and the overlay it
describes): the active small viewport shows one line, the decision and its top class; hovering it shows
the whole text; a large viewport keeps the whole block."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QToolTip
from pytestqt.qtbot import QtBot

from tests.qt.viewer_helpers import analysed_bleed_window
from viewer.core.state.layout import Layout

BLEED = (2, 3)


def test_the_ai_text_is_one_line_in_a_1x2_viewport_and_whole_on_hover(
    qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = analysed_bleed_window(qtbot, tmp_path, monkeypatch, BLEED, size=(1366, 768))
    w.set_slice(BLEED[0])
    overlay = w.view.overlay
    assert not overlay.extra_is_compact()  # one large viewport: the whole block
    block = overlay.extra_rect()
    assert block is not None and block.height() >= 2 * overlay.fontMetrics().lineSpacing()

    w.set_layout(Layout.ONE_BY_TWO)
    w.state.set_active(0)
    qtbot.waitUntil(lambda: 0 < w.view.overlay.width() < 560, timeout=5000)
    overlay = w.view.overlay
    assert overlay.extra_is_compact()
    block = overlay.extra_rect()
    assert block is not None and block.height() < 2 * overlay.fontMetrics().lineSpacing()
    overlay.grab()  # paints
    ai_lines = [t for t in overlay.painted_texts if t.startswith("AI")]
    assert len(ai_lines) == 1 and "ICH suspected" in ai_lines[0]
    assert not any(block.intersects(r) for r in overlay.text_rects())

    # the mouse over the line: the whole text (with the slice's flags) as a tooltip
    graphics = w.view.graphics
    centre = block.center()
    qtbot.mouseMove(graphics.viewport(), QPoint(int(centre.x()), int(centre.y())))
    qtbot.waitUntil(QToolTip.isVisible, timeout=5000)
    assert "slice flags" in QToolTip.text() and "ICH suspected" in QToolTip.text()
    qtbot.mouseMove(graphics.viewport(), QPoint(20, 20))
    qtbot.waitUntil(lambda: not QToolTip.isVisible(), timeout=5000)
