"""Rotation handles on the crosshair's lines and the line under the mouse.

With the crosshair tool on, each reference line of a plane that can turn (a resliced MPR plane) gets two
round handles on its outer parts, one each side of the point where the lines cross: filled in the line's
colour with a dark rim, so they show on black background and on bright bone alike, and drawn in screen
pixels (a pyqtgraph scatter in ``pxMode``), so they keep their size under zoom. Hovering a line's outer
part (where a press turns the planes) draws it solid and thicker; the cursor says what a press does
(:func:`rotate_cursor` to turn, a four-way arrow to move the point). The hit testing is the crosshair
tool's (:mod:`viewer.qt.crosshair`); this module only draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QCursor, QPainter, QPainterPath, QPen, QPixmap

HANDLE_PX = 12  # handle diameter on screen (pixels), whatever the zoom
HANDLE_RIM = QColor(16, 16, 16)  # dark rim: visible on bright images
HANDLE_AT = 0.75  # handles this far from the crossing point towards each end of the line
LINE_PX, HOVER_LINE_PX = 1.2, 2.6  # line width normally and under the mouse

Segment = tuple[tuple[float, float], tuple[float, float]]  # (row, col) image pixels of the two ends


def crossing(a: Segment, b: Segment) -> tuple[float, float] | None:
    """Where two segments (row, col) cross, None when they do not (parallel, or apart)."""
    (r0, c0), (r1, c1) = a
    (s0, d0), (s1, d1) = b
    dr, dc, er, ec = r1 - r0, c1 - c0, s1 - s0, d1 - d0
    den = dr * ec - dc * er
    if abs(den) < 1e-12:
        return None
    t = ((s0 - r0) * ec - (d0 - c0) * er) / den
    u = ((s0 - r0) * dc - (d0 - c0) * dr) / den
    if not (-1e-9 <= t <= 1 + 1e-9 and -1e-9 <= u <= 1 + 1e-9):
        return None
    return (r0 + t * dr, c0 + t * dc)


def handle_points(line: Segment, others: list[Segment]) -> list[tuple[float, float]]:
    """The two handles of ``line`` (row, col): HANDLE_AT of the way from where it crosses the other lines
    (else its middle) to each of its ends."""
    (r0, c0), (r1, c1) = line
    centre = next((p for o in others if (p := crossing(line, o)) is not None), None)
    cr, cc = centre if centre is not None else ((r0 + r1) / 2, (c0 + c1) / 2)
    return [(cr + HANDLE_AT * (r - cr), cc + HANDLE_AT * (c - cc)) for r, c in ((r0, c0), (r1, c1))]


def line_pen(color: str, hovered: bool) -> QPen:
    pen = pg.mkPen(
        QColor(color),
        width=HOVER_LINE_PX if hovered else LINE_PX,
        style=Qt.PenStyle.SolidLine if hovered else Qt.PenStyle.DashLine,
    )
    pen.setCosmetic(True)
    return pen


class ReferenceHandles:
    """The handles of one view's reference lines: one scatter item, a child of the image item."""

    def __init__(self, parent: pg.GraphicsObject) -> None:
        self.item = pg.ScatterPlotItem(pxMode=True, size=HANDLE_PX, symbol="o")
        self.item.setParentItem(parent)
        self.item.setZValue(20)
        self.item.setVisible(False)
        self.points: dict[str, list[tuple[float, float]]] = {}  # line key -> handles (row, col)

    def update(self, lines: Mapping[str, tuple[Segment, str]], visible: bool) -> None:
        """Place handles on ``lines`` (key -> (segment, colour)); ``visible``: the crosshair tool is on.
        Hidden handles get no new scatter data (the callers pass every line again when the tool turns
        on): rebuilding the scatter on each slice change cost ~0.9 ms of the GUI thread in a 2x2 layout."""
        segs = {k: seg for k, (seg, _) in lines.items()}
        self.points = {
            key: handle_points(seg, [o for k, o in segs.items() if k != key]) for key, seg in segs.items()
        }
        if not (visible and self.points):
            self.item.setVisible(False)
            return
        spots = [
            {
                "pos": (c + 0.5, r + 0.5),  # pixel centres of the image item
                "brush": pg.mkBrush(QColor(lines[key][1])),
                "pen": pg.mkPen(HANDLE_RIM, width=1.5),
            }
            for key, pts in self.points.items()
            for r, c in pts
        ]
        self.item.setData(spots)
        self.item.setVisible(True)


_ROTATE_CURSOR: QCursor | None = None


def rotate_cursor() -> QCursor:
    """A circular-arrow cursor (Qt has no rotation cursor shape): white with a dark outline."""
    global _ROTATE_CURSOR
    if _ROTATE_CURSOR is None:
        size = 24
        pix = QPixmap(size, size)
        pix.fill(Qt.GlobalColor.transparent)
        p = QPainter(pix)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(5, 5, 14, 14)
        path = QPainterPath()
        path.arcMoveTo(rect, 60)
        path.arcTo(rect, 60, 270)
        end = path.currentPosition()
        a = math.radians(330)  # where the arc ends (Qt's angles: anticlockwise on screen, y down)
        radial = QPointF(math.cos(a), -math.sin(a))
        tangent = QPointF(-math.sin(a), -math.cos(a))  # the direction of travel there
        head = QPainterPath(end + tangent * 5)
        head.lineTo(end + radial * 4)
        head.lineTo(end - radial * 4)
        head.closeSubpath()
        for color, width in ((QColor(0, 0, 0), 4.0), (QColor(255, 255, 255), 2.0)):
            p.setPen(QPen(color, width))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawPath(path)
            p.setBrush(color)
            p.drawPath(head)
        p.end()
        _ROTATE_CURSOR = QCursor(pix, size // 2, size // 2)
    return _ROTATE_CURSOR
