"""Corner texts readable on any background (polish, issue 12): in 1x2 and 2x2 layouts at 1366 x 768 the AI
result's block sits over the image, and its red "AI study" line was hard to read on white bone; the light
corner lines had a shadow only down-right. Now each AI line has a dark translucent backing (only behind
its text) and every corner line a dark outline; and the empty viewport's hint no longer wraps a lone
word onto a line of its own in a 2x2 viewport."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtGui import QColor, QImage
from pytestqt.qtbot import QtBot

from viewer.qt.overlays import OverlayWidget
from viewer.qt.slice_view import EMPTY_HINT

RED = QColor("#ff7b72")  # the AI controller's "AI study" / slice-flag colour
AI_LINE = "<span style='color:#ff7b72'><b>AI study</b>: ICH suspected: subdural 0.97</span>"


def _over_white(overlay: OverlayWidget) -> np.ndarray:
    """The overlay painted over white (bone at a wide window), as RGB values."""
    image = QImage(overlay.size(), QImage.Format.Format_RGB32)
    image.fill(QColor("white"))
    overlay.render(image)
    ptr = image.constBits()
    rows = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)
    return rows[:, : image.width(), 2::-1].astype(float)  # BGRA in memory -> RGB


def _luminance(rgb: np.ndarray) -> np.ndarray:
    c = rgb / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return lin @ np.array([0.2126, 0.7152, 0.0722])


def _contrast(a: float, b: float) -> float:
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


def _overlay(qtbot: QtBot, width: int, height: int = 460) -> OverlayWidget:
    overlay = OverlayWidget()
    qtbot.addWidget(overlay)
    overlay.resize(width, height)
    return overlay


@pytest.mark.parametrize("width", [900, 700])
def test_the_ai_line_reads_on_white_bone(qtbot: QtBot, width: int) -> None:
    """Behind the red AI line the background is dark enough for WCAG AA contrast (4.5:1) over white."""
    overlay = _overlay(qtbot, width)
    overlay.set_extra_html("ai", AI_LINE)
    rect = overlay.extra_rect()
    assert rect is not None
    pixels = _over_white(overlay)
    top, bottom = int(rect.top()) + 5, int(rect.bottom()) - 5  # inside the document margin
    block = pixels[top:bottom, int(rect.left()) + 2 : int(rect.right()) - 2].reshape(-1, 3)
    colours, counts = np.unique(block, axis=0, return_counts=True)
    background = colours[np.argmax(counts)]  # the most common colour: what the text stands on
    red = _luminance(np.array([RED.red(), RED.green(), RED.blue()], dtype=float))
    assert _contrast(float(_luminance(background)), float(red)) >= 4.5


def test_the_backing_hides_no_image_beside_the_text(qtbot: QtBot) -> None:
    """The backing follows each line: beside a short second line, and a few px off the block, the image
    shows untouched."""
    overlay = _overlay(qtbot, 900)
    overlay.set_extra_html("ai", AI_LINE + "<br><span style='color:#8b949e'>slice: none</span>")
    rect = overlay.extra_rect()
    assert rect is not None
    pixels = _over_white(overlay)
    painted = np.argwhere((pixels < 255).any(axis=2))
    assert painted.size
    (y0, x0), (y1, x1) = painted.min(axis=0), painted.max(axis=0)
    assert x0 >= rect.left() - 4 and x1 <= rect.right() + 4
    assert y0 >= rect.top() - 2 and y1 <= rect.bottom() + 2
    second_line = int(rect.bottom()) - 4 - overlay.fontMetrics().height() // 2  # doc margin 4 px
    assert (pixels[second_line, int(rect.left()) + 5 : int(rect.left()) + 60] == 255).all()


def test_corner_lines_have_a_dark_edge_on_every_side(qtbot: QtBot) -> None:
    """Light corner text over white: in each text row, the first painted pixel from the left is dark (the
    outline), and so is the first from the top in each column; a down-right shadow left these light."""
    overlay = _overlay(qtbot, 400, 200)
    overlay.set_corner("bottom_left", ["Im 16 / 32", "Pos 8.5 mm   Thk 5 mm"])
    pixels = _over_white(overlay)
    lum = _luminance(pixels)
    inked = lum < 0.999
    rows = [r for r in range(lum.shape[0]) if inked[r].any()]
    cols = [c for c in range(lum.shape[1]) if inked[:, c].any()]
    assert rows and cols
    first_left = [lum[r, np.argmax(inked[r])] for r in rows]
    first_top = [lum[np.argmax(inked[:, c]), c] for c in cols]
    assert np.mean(np.array(first_left) < 0.75) >= 0.9
    assert np.mean(np.array(first_top) < 0.75) >= 0.8  # (0.1-0.2 with the shadow only down-right)


@pytest.mark.parametrize("size", [(410, 318), (414, 470), (820, 640)])
def test_the_empty_hint_keeps_its_lines_whole(qtbot: QtBot, size: tuple[int, int]) -> None:
    """An empty viewport of a 2x2 layout at 1366 x 768 (about 410 px wide) shows the drop hint as its own
    three lines (smaller type where needed), not with "here" alone on a second line."""
    overlay = _overlay(qtbot, *size)
    overlay.set_hint(EMPTY_HINT)
    _over_white(overlay)  # paints
    assert overlay.painted_texts == EMPTY_HINT.split("\n")


@pytest.mark.parametrize("size", [(412, 236), (410, 318), (900, 700)])
def test_the_ai_block_leaves_the_orientation_letters_visible(qtbot: QtBot, size: tuple[int, int]) -> None:
    """In a 2x2 viewport at 1366 x 768 (412 x 236 px beside the AI timeline) the four AI lines reach the
    middle of the right edge: they (and now their backing) covered the "L"; the block moves left of the
    letter there."""
    overlay = _overlay(qtbot, *size)
    overlay.set_corner("top_left", ["SYNTH 0001", "ID SYNTH-0001"])
    overlay.set_corner("top_right", ["Head 5mm (synthetic)", "CT  Se 2"])
    overlay.set_corner("bottom_left", ["Im 16 / 32", "Pos 8.5 mm   Thk 5 mm"])
    overlay.set_corner("bottom_right", ["W 80  L 40", "Zoom 0.44×"])
    overlay.set_orientation({"left": "R", "right": "L", "top": "A", "bottom": "P"})
    overlay.set_scale(0.9)
    overlay.set_extra_html(
        "ai",
        AI_LINE
        + "<br><span style='color:#ff7b72'>slice flags: any 1.00, subdural 0.92, epidural 0.28</span>",
    )
    texts = overlay.text_rects()  # corner lines, letters, scale bar
    backing = overlay.extra_backing()
    assert not backing.isEmpty()
    assert not [r for r in texts if backing.intersects(r)]


@pytest.mark.parametrize("mm_per_px", [0.9, 0.64])
def test_the_ai_block_ends_above_the_scale_bar(qtbot: QtBot, mm_per_px: float) -> None:
    """In a 1x2 viewport at 1366 x 768 (414 x 480 px) the demo's AI lines wrap and reach left over the
    scale bar's "20 mm" (seen on a screenshot): the block ends above the scale bar, as it does above the
    bottom corner texts."""
    overlay = _overlay(qtbot, 414, 480)
    overlay.set_corner("top_left", ["SYNTH 0001", "ID SYNTH-0001"])
    overlay.set_corner("top_right", ["Head 5mm (synthetic)", "CT  Se 2"])
    overlay.set_corner("bottom_left", ["Im 20 / 32", "Pos 28.5 mm   Thk 5 mm"])
    overlay.set_corner("bottom_right", ["W 80  L 40", "Zoom 0.76×"])
    overlay.set_orientation({"left": "R", "right": "L", "top": "A", "bottom": "P"})
    overlay.set_scale(mm_per_px)
    overlay.set_extra_html(
        "ai", AI_LINE + "<br><span style='color:#ff7b72'>slice flags: any 1.00, subdural 0.96</span>"
    )
    backing = overlay.extra_backing()
    assert overlay.scale_bar() is not None and not backing.isEmpty()
    assert not [r for r in overlay.text_rects() if backing.intersects(r)]
