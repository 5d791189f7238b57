"""The AI result's block in the bottom-right corner stays clear of the corner texts, also in a narrow
viewport (1x2 on a 1366 x 768 screen) where the bottom-right lines are stacked above the bottom-left ones:
there it covered "W 80 L 40" and the zoom line; and the overlay legend still finds room there."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from viewer.core.foreign.legend import LegendGroup, LegendRow
from viewer.qt.overlays import OverlayWidget
from viewer.qt.results.legend import OverlayLegend

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


@pytest.mark.parametrize("width", [900, 245])
def test_the_legend_finds_room_beside_the_ai_block(qtbot: QtBot, width: int) -> None:
    """A 1x2 head-CT viewport at 1366 x 768 stacks the top-right lines under the top-left ones: the legend of
    the AI maps, which sat right there, was dropped; now it goes below them, clear of every text and of
    the AI block."""
    overlay = OverlayWidget()
    qtbot.addWidget(overlay)
    overlay.resize(width, 460)
    overlay.set_corner("top_left", ["SYNTH 0001", "ID SYNTH-0001"])
    overlay.set_corner("top_right", ["Head 5mm (synthetic)", "CT  Se 2"])
    overlay.set_corner("bottom_left", ["Im 20 / 32", "Pos 28.5 mm   Thk 5 mm"])
    overlay.set_corner("bottom_right", ["W 80  L 40", "Zoom 0.45×"])
    overlay.set_orientation({"left": "R", "right": "L", "top": "A", "bottom": "P"})
    overlay.set_extra_html("ai", AI_HTML)
    rows = (LegendRow("epidural", (255, 123, 114)), LegendRow("subdural", (86, 211, 100)))
    overlay.set_legend(OverlayLegend((LegendGroup("SEG", rows),)))
    overlay.show()
    qtbot.waitExposed(overlay)
    texts = overlay.text_rects()  # composes, which places the legend
    legend, block = overlay.legend_rect, overlay.extra_rect()
    assert legend is not None and block is not None
    assert not any(legend.intersects(r) for r in texts) and not legend.intersects(block)
