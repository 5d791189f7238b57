"""The slice slider under the image, with coloured marks (e.g. AI-flagged slices)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen, QPixmap
from PySide6.QtWidgets import QSlider, QStyle, QStyleOptionSlider, QWidget


class MarkedSlider(QSlider):
    """Horizontal QSlider that paints groups of slice marks (``key`` -> indices, colour)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.setPageStep(10)
        self.setSingleStep(1)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self._marks: dict[str, tuple[list[int], QColor]] = {}
        self._pixmap: tuple[tuple[object, ...], QPixmap] | None = None  # the marks drawn, and for what
        self.setMinimumHeight(22)

    def set_marks(self, key: str, indices: Sequence[int], color: str) -> None:
        if indices:
            self._marks[key] = ([int(i) for i in indices], QColor(color))
        else:
            self._marks.pop(key, None)
        self.update()

    def marks(self) -> dict[str, list[int]]:
        return {k: list(v[0]) for k, v in self._marks.items()}

    def paintEvent(self, ev: QPaintEvent) -> None:
        super().paintEvent(ev)
        if not self._marks or self.maximum() <= self.minimum():
            return
        p = QPainter(self)
        p.drawPixmap(0, 0, self._marks_pixmap())
        p.end()

    def _marks_pixmap(self) -> QPixmap:
        """The marks, drawn into a pixmap once per set of marks, range and geometry (a slice change moves
        only the handle: the marks are one pixmap draw, not two lines per mark)."""
        opt = QStyleOptionSlider()
        self.initStyleOption(opt)
        groove: QRect = self.style().subControlRect(
            QStyle.ComplexControl.CC_Slider, opt, QStyle.SubControl.SC_SliderGroove, self
        )
        handle: QRect = self.style().subControlRect(
            QStyle.ComplexControl.CC_Slider, opt, QStyle.SubControl.SC_SliderHandle, self
        )
        dpr = self.devicePixelRatioF()
        key = (
            self.width(), self.height(), dpr, groove.left(), groove.width(), handle.width(),
            self.minimum(), self.maximum(),
            tuple((tuple(indices), color.rgba()) for indices, color in self._marks.values()),
        )
        if self._pixmap is not None and self._pixmap[0] == key:
            return self._pixmap[1]
        pm = QPixmap(max(1, round(self.width() * dpr)), max(1, round(self.height() * dpr)))
        pm.setDevicePixelRatio(dpr)
        pm.fill(Qt.GlobalColor.transparent)
        x0 = groove.left() + handle.width() / 2
        span = max(1.0, groove.width() - handle.width())
        rng = self.maximum() - self.minimum()
        p = QPainter(pm)
        for indices, color in self._marks.values():
            p.setPen(QPen(color, 2))
            for i in indices:
                x = x0 + (i - self.minimum()) / rng * span
                p.drawLine(int(x), 2, int(x), 7)
                p.drawLine(int(x), self.height() - 7, int(x), self.height() - 2)
        p.end()
        self._pixmap = (key, pm)
        return pm
