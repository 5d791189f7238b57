"""The corner-text overlay draws pre-rendered, cached text (issue 12 speed): what it paints must still
follow every slice change, and look as the text drawn directly did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF
from PySide6.QtGui import QColor, QFontMetrics, QImage, QPainter, QTextDocument
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.qt.overlays import BACKING, CORNERS, OverlayWidget, extra_text_width, line_backing


def _render(overlay: OverlayWidget) -> np.ndarray:
    """The overlay painted over black, as RGB values."""
    image = QImage(overlay.size(), QImage.Format.Format_RGB32)
    image.fill(QColor("black"))
    overlay.render(image)
    return _image_pixels(image)


def _twin(overlay: OverlayWidget, qtbot: QtBot) -> OverlayWidget:
    """A new overlay (nothing cached) with the same texts, letters, scale and size."""
    twin = OverlayWidget()
    qtbot.addWidget(twin)
    twin.resize(overlay.size())
    twin.set_phi_lines(list(overlay._phi))
    for corner in CORNERS:
        twin.set_corner(corner, list(overlay._corners[corner]), overlay._identifying[corner])
    twin.set_orientation(overlay.orientation())
    twin.set_scale(overlay._mm_per_px)
    for key, html in overlay.extra_html().items():
        twin.set_extra_html(key, html)
    return twin


def test_corner_text_follows_every_slice_change(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "ct", 6, rows=64, columns=64, shuffle=False, random_names=False)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    overlay = window.view.overlay
    window.set_image_corner_text("extension", "<b>AI</b>: slice result")
    seen = []
    for index in (1, 2, 3, 2, 5, 0):
        window.set_slice(index)
        window.view.repaint()
        qtbot.wait(1)
        assert f"Im {index + 1} / 6" in overlay.painted_texts  # the line drawn on the last paint
        assert "AI: slice result" in overlay.painted_texts
        pixels = _render(overlay)
        assert np.array_equal(pixels, _render(_twin(overlay, qtbot)))  # nothing stale from a cache
        seen.append(pixels)
    assert not np.array_equal(seen[0], seen[1])  # the changing line is painted anew
    assert np.array_equal(seen[1], seen[3])  # back on slice 3: the same pixels


def _image_pixels(image: QImage) -> np.ndarray:
    ptr = image.constBits()
    rows = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)
    return rows[:, : image.width(), :3].copy()


@pytest.mark.parametrize("size", [(400, 300), (401, 299), (333, 517)])
def test_cached_text_looks_as_text_drawn_directly(qtbot: QtBot, size: tuple[int, int]) -> None:
    """Corner lines, orientation letters, scale bar and an extension's HTML from their cached pixmaps:
    the pixels of drawing them directly (as the overlay did before it cached them)."""
    overlay = OverlayWidget()
    qtbot.addWidget(overlay)
    overlay.resize(*size)
    lines = ["Im 7 / 60", "Pos 12.5 mm   Thk 5 mm"]
    overlay.set_corner("bottom_left", lines)
    overlay.set_orientation({"right": "L", "top": "A"})
    overlay.set_scale(0.37)
    overlay.set_extra_html("ai", "<b>AI study</b>: ICH<br><span style='color:#8b949e'>slice 3</span>")
    cached = _render(overlay)
    direct = QImage(overlay.size(), QImage.Format.Format_RGB32)
    direct.fill(QColor("black"))
    p = QPainter(direct)
    p.setRenderHint(QPainter.RenderHint.TextAntialiasing)
    w, h, m = overlay.width(), overlay.height(), overlay.MARGIN
    p.setFont(overlay._font)
    fm = QFontMetrics(overlay._font)
    top = h - m - int(fm.height() * len(lines) + 2)
    for k, line in enumerate(lines):
        overlay._shadowed(p, m, top + k * fm.height() + fm.ascent(), line, overlay._color)
    p.setFont(overlay._orient_font)
    ofm = QFontMetrics(overlay._orient_font)
    overlay._shadowed(p, w - m - ofm.horizontalAdvance("L"), h / 2 + ofm.ascent() / 2, "L", overlay._accent)
    overlay._shadowed(p, (w - ofm.horizontalAdvance("A")) / 2, m + ofm.ascent(), "A", overlay._accent)
    bar = overlay.scale_bar()
    assert bar is not None
    y = h - m - ofm.height() - 10
    x0, x1 = (w - bar[1]) / 2, (w + bar[1]) / 2
    for pen_color, dy in ((overlay._shadow, 1.0), (overlay._accent, 0.0)):
        p.setPen(pen_color)
        p.drawLine(QPointF(x0 + dy, y + dy), QPointF(x1 + dy, y + dy))
        for x in (x0, x1):
            p.drawLine(QPointF(x + dy, y - 4 + dy), QPointF(x + dy, y + dy))
    p.setFont(overlay._font)
    label = f"{bar[0]} mm"
    overlay._shadowed(p, (w - fm.horizontalAdvance(label)) / 2, y - 6, label, overlay._accent)
    doc = QTextDocument()
    doc.setDefaultFont(overlay._font)
    doc.setDefaultStyleSheet(f"body {{ color: {overlay._color.name()}; }}")
    doc.setHtml("<div align='right'>" + "<br>".join(overlay.extra_html().values()) + "</div>")
    doc.setTextWidth(extra_text_width(w))
    p.translate(QPointF(w - m - doc.size().width(), h - m - doc.size().height() - 4))
    p.fillPath(line_backing(doc), BACKING)
    doc.drawContents(p)
    p.end()
    assert cached.any()
    assert np.array_equal(cached, _image_pixels(direct))


def test_extension_html_alternating_by_slice_is_painted_as_set(qtbot: QtBot) -> None:
    """The AI result's slice line differs from slice to slice: its pre-rendered blocks are kept per text,
    and whichever is set is the one painted (as a fresh overlay paints it)."""
    overlay = OverlayWidget()
    qtbot.addWidget(overlay)
    overlay.resize(400, 300)
    texts = [f"<b>AI study</b>: ICH<br>slice flags: any 0.{k}1" for k in range(3)] + ["slice: none"]
    for k in (0, 1, 3, 0, 2, 3, 1):
        overlay.set_extra_html("ai", texts[k])
        pixels = _render(overlay)
        assert np.array_equal(pixels, _render(_twin(overlay, qtbot)))
        doc = QTextDocument()
        doc.setHtml(texts[k])
        assert doc.toPlainText().splitlines()[-1] in overlay.painted_texts
