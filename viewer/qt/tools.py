"""Measurement graphics: a ruler, ellipse or rectangle drawn as children of the image item, in the
image's pixel coordinates, so they follow zoom, pan, rotation and flips (the numbers come from
:mod:`viewer.core.measure`)."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor, QFont

from viewer.core.measure import Measurement, Shape, Spacing, ruler_length

RULER_COLOR = "#ffd33d"
ROI_COLOR = "#5ad1ff"
ELLIPSE_POINTS = 96


def outline(m: Measurement) -> tuple[np.ndarray, np.ndarray]:
    """The outline's x (column) and y (row) coordinates in image pixel units."""
    (x0, y0), (x1, y1) = m.start, m.end
    if m.shape is Shape.RULER:
        return np.array([x0, x1]), np.array([y0, y1])
    if m.shape is Shape.RECTANGLE:
        return np.array([x0, x1, x1, x0, x0]), np.array([y0, y0, y1, y1, y0])
    t = np.linspace(0.0, 2 * math.pi, ELLIPSE_POINTS + 1)
    cx, cy, a, b = (x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2
    return cx + a * np.cos(t), cy + b * np.sin(t)


class MeasurementGraphic:
    """One measurement on screen: its outline (a line with end ticks for a ruler) and its label."""

    def __init__(self, parent: pg.ImageItem, m: Measurement, text: str, spacing: Spacing) -> None:
        self.measurement = m
        self.spacing = spacing
        color = QColor(RULER_COLOR if m.shape is Shape.RULER else ROI_COLOR)
        pen = pg.mkPen(color, width=1.6)
        pen.setCosmetic(True)
        xs, ys = outline(m)
        if m.shape is Shape.RULER:
            self.line: pg.GraphicsObject = pg.PlotDataItem(
                xs, ys, pen=pen, symbol="+", symbolSize=9, symbolPen=pen, symbolBrush=None
            )
        else:
            self.line = pg.PlotCurveItem(xs, ys, pen=pen)
        self.line.setParentItem(parent)
        self.line.setZValue(20)
        self.label = pg.TextItem(text, color=color, anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 150))
        font = QFont()
        font.setPointSizeF(9.5)
        self.label.setFont(font)
        self.label.setParentItem(parent)
        self.label.setZValue(21)
        self.label.setPos(max(m.start[0], m.end[0]), min(m.start[1], m.end[1]))

    def text(self) -> str:
        return str(self.label.toPlainText())

    def length(self) -> float:
        """A ruler's length (mm, or pixels without PixelSpacing)."""
        return ruler_length(self.measurement.start, self.measurement.end, self.spacing)[0]

    def remove(self) -> None:
        for item in (self.line, self.label):
            item.setParentItem(None)
            if item.scene() is not None:
                item.scene().removeItem(item)
