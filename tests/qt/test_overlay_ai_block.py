"""The AI result's block in the bottom-right corner stays clear of the corner texts, also in a narrow
viewport (1x2 on a 1366 x 768 screen) where the bottom-right lines are stacked above the bottom-left ones:
there it covered "W 80 L 40" and the zoom line."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from viewer.qt.overlays import OverlayWidget

AI_HTML = "<b>AI study</b>: ICH suspected: subdural 0.97<br>slice flags: any 1.00, subdural 0.96"


@pytest.mark.parametrize("width", [900, 420, 280, 220])
def test_the_ai_block_covers_no_corner_text(qtbot: QtBot, width: int) -> None:
    overlay = OverlayWidget()
    qtbot.addWidget(overlay)
    overlay.resize(width, 460)
    overlay.set_corner("bottom_left", ["Im 20 / 32", "Pos 28.5 mm   Thk 5 mm"])
    overlay.set_corner("bottom_right", ["W 80  L 40", "Zoom 0.51×"])
    overlay.set_extra_html("ai", AI_HTML)
    overlay.show()
    qtbot.waitExposed(overlay)
    block = overlay.extra_rect()
    assert block is not None and block.height() > 0
    texts = overlay.text_rects()
    assert texts and not any(block.intersects(r) for r in texts)
    assert block.top() >= 0 and block.right() <= width
