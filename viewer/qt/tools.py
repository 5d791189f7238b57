"""Measurement tools drawn in the image's ViewBox (view coordinates are millimetres when spacing is known)."""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import QPointF
from PySide6.QtGui import QColor, QFont

RULER_COLOR = "#ffd33d"


def distance_text(p0: QPointF, p1: QPointF, calibrated: bool) -> str:
    """Length of the segment in view units: ``'12.3 mm'`` with PixelSpacing, else ``'45.0 px'``."""
    d = math.hypot(p1.x() - p0.x(), p1.y() - p0.y())
    return f"{d:.1f} mm" if calibrated else f"{d:.1f} px"


class Ruler:
    """One distance measurement: a line with end ticks and a length label."""

    def __init__(self, vb: pg.ViewBox, start: QPointF, calibrated: bool) -> None:
        self.vb = vb
        self.calibrated = calibrated
        self.start = QPointF(start)
        self.end = QPointF(start)
        pen = pg.mkPen(QColor(RULER_COLOR), width=1.6)
        self.line = pg.PlotDataItem(
            [start.x(), start.x()],
            [start.y(), start.y()],
            pen=pen,
            symbol="+",
            symbolSize=9,
            symbolPen=pen,
            symbolBrush=None,
        )
        self.line.setZValue(20)
        self.label = pg.TextItem("", color=RULER_COLOR, anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 150))
        font = QFont()
        font.setPointSizeF(9.5)
        self.label.setFont(font)
        self.label.setZValue(21)
        vb.addItem(self.line, ignoreBounds=True)
        vb.addItem(self.label, ignoreBounds=True)

    def set_end(self, end: QPointF) -> None:
        self.end = QPointF(end)
        self.line.setData([self.start.x(), end.x()], [self.start.y(), end.y()])
        self.label.setText(self.text())
        self.label.setPos(end)

    def text(self) -> str:
        return distance_text(self.start, self.end, self.calibrated)

    def length(self) -> float:
        return math.hypot(self.end.x() - self.start.x(), self.end.y() - self.start.y())

    def remove(self) -> None:
        self.vb.removeItem(self.line)
        self.vb.removeItem(self.label)
