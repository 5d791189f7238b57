"""The results overlay's legend, painted by the view's corner overlay
(:class:`viewer.qt.overlays.OverlayWidget`) in the free space of its left (else right) column, clear of
the corner texts.

Binary segments get a colour swatch, fractional SEGs and Parametric Maps a colour bar from transparent to
their colour with the values its ends stand for (0 - 1, or the map's own range and unit). The pixmap is
rendered once per size and kept, so a slice change that re-composes the corner texts costs a look-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetrics, QLinearGradient, QPainter, QPen, QPixmap

from viewer.core.foreign.legend import LegendGroup

PAD = 5
SWATCH = 11  # px: a binary segment's square
RAMP = 46  # px: a colour bar's length
GAP = 6
BACKGROUND = QColor(0, 0, 0, 160)
TEXT = QColor("#e6edf3")
DIM = QColor("#9da7b3")


@dataclass(frozen=True)
class _Line:
    kind: str  # "title", "row", "scale", "more"
    text: str
    height: int
    group: int
    row: int = -1


class OverlayLegend:
    """The legend of one stack's overlay (immutable: a new one when the shown segments change)."""

    def __init__(self, groups: tuple[LegendGroup, ...]) -> None:
        self.groups = groups
        self.font = QFont()
        self.font.setPointSizeF(9.0)
        self.small = QFont(self.font)
        self.small.setPointSizeF(7.5)
        self._cache: dict[tuple[int, int, float, bool], tuple[list[str], QPixmap] | None] = {}

    def texts(self) -> list[str]:
        """Every text the full legend holds (titles, labels, tick labels)."""
        out = []
        for g in self.groups:
            if len(self.groups) > 1:
                out.append(g.title)
            out.extend(r.label for r in g.rows)
            if g.scale is not None:
                out.extend(_scale_texts(g))
        return out

    def render(
        self, max_width: float, max_height: float, dpr: float, titles: bool = True
    ) -> tuple[list[str], QPixmap] | None:
        """(texts drawn, pixmap) no larger than ``max_width`` x ``max_height`` logical px: rows that do not
        fit are summed up as "+k more"; None when not even one row fits. ``titles`` False: without the
        objects' titles (their series descriptions; a de-identified export)."""
        key = (int(max_width), int(max_height), dpr, titles)
        if key not in self._cache:
            self._cache[key] = self._render(int(max_width), int(max_height), dpr, titles)
        return self._cache[key]

    def _lines(self, max_height: int, titles: bool) -> list[_Line] | None:
        lh = QFontMetrics(self.font).height() + 1
        sh = QFontMetrics(self.small).height()
        lines: list[_Line] = []
        for k, g in enumerate(self.groups):
            if titles and len(self.groups) > 1:
                lines.append(_Line("title", g.title, lh, k))
            lines.extend(_Line("row", r.label, lh, k, j) for j, r in enumerate(g.rows))
            if g.scale is not None:
                lines.append(_Line("scale", "", sh, k))
        room = max_height - 2 * PAD
        if sum(line.height for line in lines) <= room:
            return lines
        kept: list[_Line] = []
        used = lh  # the "+k more" line
        for line in lines:
            if used + line.height > room:
                break
            kept.append(line)
            used += line.height
        while kept and kept[-1].kind == "title":  # a title without its rows says nothing
            kept.pop()
        if not any(line.kind == "row" for line in kept):
            return None
        # a cut group keeps its scale right under its last shown row
        last = kept[-1]
        scale = self.groups[last.group].scale
        if last.kind == "row" and scale is not None and used + sh <= room:
            kept.append(_Line("scale", "", sh, last.group))
        shown = sum(1 for line in kept if line.kind == "row")
        total = sum(len(g.rows) for g in self.groups)
        kept.append(_Line("more", f"+{total - shown} more", lh, -1))
        return kept

    def _render(
        self, max_width: int, max_height: int, dpr: float, titles: bool
    ) -> tuple[list[str], QPixmap] | None:
        lines = self._lines(max_height, titles)
        if not lines:
            return None
        fm = QFontMetrics(self.font)
        sfm = QFontMetrics(self.small)
        ramps = any(g.scale is not None for g in self.groups)
        label_x = PAD + (RAMP if ramps else SWATCH) + GAP
        text_room = max(20, max_width - label_x - PAD)
        texts: list[str] = []
        drawn: list[tuple[_Line, str]] = []
        width = 0
        for line in lines:
            if line.kind == "scale":
                scale = self.groups[line.group].scale
                assert scale is not None
                unit_w = sfm.horizontalAdvance(scale.unit) + GAP if scale.unit else 0
                width = max(width, PAD + RAMP + sfm.horizontalAdvance(scale.high) // 2 + unit_w + PAD)
                drawn.append((line, ""))
                texts.extend(_scale_texts(self.groups[line.group]))
                continue
            x = PAD if line.kind in ("title", "more") else label_x
            text = fm.elidedText(line.text, Qt.TextElideMode.ElideRight, max(20, max_width - x - PAD))
            if line.kind == "row":
                text = fm.elidedText(line.text, Qt.TextElideMode.ElideRight, text_room)
            width = max(width, x + fm.horizontalAdvance(text) + PAD)
            drawn.append((line, text))
            texts.append(text)
        width = min(width, max_width)
        height = 2 * PAD + sum(line.height for line in lines)
        pm = QPixmap(max(1, math.ceil(width * dpr)), max(1, math.ceil(height * dpr)))
        pm.setDevicePixelRatio(dpr)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(BACKGROUND)
        p.drawRoundedRect(QRectF(0, 0, width, height), 4, 4)
        y = float(PAD)
        for line, text in drawn:
            if line.kind == "scale":
                self._paint_scale(p, self.groups[line.group], y)
            elif line.kind == "row":
                group = self.groups[line.group]
                self._paint_key(p, group.rows[line.row].color, group.rows[line.row].ramp, y, line.height)
                self._text(p, label_x, y, text, TEXT, self.font)
            else:
                self._text(p, PAD, y, text, DIM, self.font)
            y += line.height
        p.end()
        return texts, pm

    def _paint_key(self, p: QPainter, color: tuple[int, int, int], ramp: bool, y: float, lh: int) -> None:
        if ramp:
            box = QRectF(PAD, y + (lh - 9) / 2, RAMP, 9)
            gradient = QLinearGradient(box.topLeft(), box.topRight())
            gradient.setColorAt(0.0, QColor(*color, 0))
            gradient.setColorAt(1.0, QColor(*color, 255))
            p.setBrush(QBrush(gradient))
        else:
            box = QRectF(PAD, y + (lh - SWATCH) / 2, SWATCH, SWATCH)
            p.setBrush(QColor(*color))
        p.setPen(QPen(DIM, 0.8))
        p.drawRect(box)
        p.setPen(Qt.PenStyle.NoPen)

    def _paint_scale(self, p: QPainter, group: LegendGroup, y: float) -> None:
        scale = group.scale
        assert scale is not None
        sfm = QFontMetrics(self.small)
        baseline = y + sfm.ascent()
        for text, x in ((scale.low, PAD), (scale.middle, PAD + RAMP / 2), (scale.high, PAD + RAMP)):
            left = x if x == PAD else x - sfm.horizontalAdvance(text) / 2
            self._text(p, left, baseline - sfm.ascent(), text, DIM, self.small)
        if scale.unit:
            right = PAD + RAMP + sfm.horizontalAdvance(scale.high) / 2 + GAP
            self._text(p, right, baseline - sfm.ascent(), scale.unit, DIM, self.small)

    @staticmethod
    def _text(p: QPainter, x: float, top: float, text: str, color: QColor, font: QFont) -> None:
        p.setFont(font)
        p.setPen(color)
        p.drawText(QPointF(x, top + QFontMetrics(font).ascent()), text)


def _scale_texts(group: LegendGroup) -> list[str]:
    s = group.scale
    return [] if s is None else [t for t in (s.low, s.middle, s.high, s.unit) if t]
