"""Prediction timeline: per-slice probability per class along the slice axis (pyqtgraph).

x = slice (0-based index, labelled 1-based), y = probability. One coloured curve per class; the legend is
a row of check boxes in the class colours that show or hide each class (an in-plot legend would cover
the high-probability curves); dashed threshold lines in the class colours, shaded flagged runs, and a
current-slice line that follows scrolling. Clicking or dragging anywhere on the plot (or dragging the
current-slice line) emits ``slice_requested(index)``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QGraphicsItem,
    QHBoxLayout,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)
from superqt import QElidingLabel

from viewer.core.constants import RSNA_CLASS_COLORS
from viewer.core.inference.results import StackPrediction

log = logging.getLogger(__name__)

CLASS_COLORS: dict[str, str] = RSNA_CLASS_COLORS
FALLBACK_COLORS = ("#e3b341", "#f778ba", "#a5d6ff", "#7ee787", "#ffdf5d", "#bc8cff")
CURRENT_LINE_COLOR = "#2f81f7"
TIMELINE_HEIGHT = 190  # px, on screens 950 px high and more
CURSOR_INTERVAL_MS = 33  # the current-slice line follows scrolling at most ~30 times a second
FLAG_FILL = (255, 123, 114, 40)


def timeline_height() -> int:
    """:data:`TIMELINE_HEIGHT`, or a fifth of a smaller screen's height (at least 120 px): on a 1366 x 768
    laptop screen the strip leaves the image 40 px more."""
    screen = QGuiApplication.primaryScreen()
    if screen is None:
        return TIMELINE_HEIGHT
    return max(120, min(TIMELINE_HEIGHT, screen.availableGeometry().height() // 5))


def class_color(name: str, index: int) -> str:
    return CLASS_COLORS.get(name, FALLBACK_COLORS[index % len(FALLBACK_COLORS)])


class _SliceViewBox(pg.ViewBox):
    """A ViewBox that turns left clicks and drags into slice requests instead of pan/zoom."""

    def __init__(self, on_x: Any) -> None:
        super().__init__(enableMenu=False)
        self._on_x = on_x
        self.setMouseEnabled(x=False, y=False)

    def mouseClickEvent(self, ev: Any) -> None:
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self._on_x(self.mapSceneToView(ev.scenePos()).x())
        else:
            ev.ignore()

    def mouseDragEvent(self, ev: Any, axis: Any = None) -> None:
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self._on_x(self.mapSceneToView(ev.scenePos()).x())
        else:
            ev.ignore()

    def wheelEvent(self, ev: Any, axis: Any = None) -> None:
        ev.ignore()


# The abbreviations radiologists use, so the class toggles fit narrow screens (full name in the tooltip).
SHORT_NAMES = {
    "epidural": "EDH",
    "intraparenchymal": "IPH",
    "intraventricular": "IVH",
    "subarachnoid": "SAH",
    "subdural": "SDH",
}


def _cache_rendering(item: QGraphicsItem) -> None:
    """Render ``item`` and its children once to pixmaps, re-rendered only when they change."""
    item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
    for child in item.childItems():
        _cache_rendering(child)


class ElidedLabel(QElidingLabel):
    """A one-line label that shortens its text with '…' to the width it gets (full text in the
    tooltip), so a long title never widens the window nor runs under its neighbours."""

    def setText(self, text: str) -> None:
        super().setText(text)
        self.setToolTip(text)

    def sizeHint(self) -> QSize:
        return self.minimumSizeHint()


class PredictionTimeline(QWidget):
    """Standalone widget: ``set_prediction`` / ``set_current_slice``; emits ``slice_requested(int)``."""

    slice_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("aiTimeline")
        self._prediction: StackPrediction | None = None
        self._current = 0
        self._cursor_timer = QTimer(self)
        self._cursor_timer.setSingleShot(True)
        self._cursor_timer.setInterval(CURSOR_INTERVAL_MS)
        self._cursor_timer.timeout.connect(self._show_cursor)
        self._curves: dict[str, pg.PlotDataItem] = {}
        self._threshold_lines: dict[str, pg.InfiniteLine] = {}
        self._regions: list[pg.LinearRegionItem] = []
        self._checks: dict[str, QCheckBox] = {}
        self._hidden: set[str] = set()

        self.view_box = _SliceViewBox(self._request_x)
        self.plot = pg.PlotWidget(viewBox=self.view_box)
        self.plot.setMinimumHeight(90)
        self.plot.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.plot.setBackground("#0d1117")
        item = self.plot.getPlotItem()
        item.hideButtons()
        item.showGrid(x=False, y=True, alpha=0.15)
        self.view_box.setYRange(0.0, 1.0, padding=0.06)
        self.view_box.setLimits(yMin=-0.05, yMax=1.05)
        self.current_line = pg.InfiniteLine(
            pos=0,
            angle=90,
            movable=True,
            pen=pg.mkPen(CURRENT_LINE_COLOR, width=2),
            hoverPen=pg.mkPen(CURRENT_LINE_COLOR, width=3),
        )
        self.current_line.setZValue(10)
        self.current_line.sigDragged.connect(lambda line: self._request_x(line.value()))
        self.plot.addItem(self.current_line)
        self.current_line.hide()
        bottom = item.getAxis("bottom")
        bottom.setTickSpacing()
        bottom.tickStrings = self._tick_strings
        for name in ("left", "bottom"):
            # Axes change only with the data; without a pixmap cache every move of the current-slice
            # line re-renders their text (about 6 ms per slice change, more than the image itself).
            _cache_rendering(item.getAxis(name))

        self._checks_row = QHBoxLayout()
        self._checks_row.setContentsMargins(4, 0, 4, 0)
        self._checks_row.setSpacing(8)
        self.title = ElidedLabel()
        self.title.setText("AI: no analysis for this stack")
        self.title.setObjectName("aiTimelineTitle")
        # Takes the room the class toggles leave; cut with '…' on narrow screens rather than widen
        # the window (full text in its tooltip, the findings panel and the status bar).
        self.title.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self._checks_row.addWidget(self.title, 1)

        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(timeline_height())  # the image keeps the space; the strip stays readable
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(1)
        top = QWidget()
        top.setLayout(self._checks_row)
        self._header = top
        layout.addWidget(top)
        layout.addWidget(self.plot, 1)
        self._set_collapsed(True)

    def _set_collapsed(self, collapsed: bool) -> None:
        """Without a result for the shown stack the strip is only its one-line header (the image gets the
        plot's room: about 150 px at 1366x768); a result opens the plot."""
        self.plot.setVisible(not collapsed)
        height = self._header.sizeHint().height() + 2 if collapsed else timeline_height()
        self.setFixedHeight(height)

    @property
    def collapsed(self) -> bool:
        return self.plot.isHidden()

    # --- public API --------------------------------------------------------------------------------
    @property
    def prediction(self) -> StackPrediction | None:
        return self._prediction

    def set_prediction(self, prediction: StackPrediction | None, message: str = "") -> None:
        """Show ``prediction`` (None clears; ``message`` then says why)."""
        self._prediction = prediction
        for curve in self._curves.values():
            self.plot.removeItem(curve)
        for line in self._threshold_lines.values():
            self.plot.removeItem(line)
        for region in self._regions:
            self.plot.removeItem(region)
        self._curves.clear()
        self._threshold_lines.clear()
        self._regions.clear()
        for box in self._checks.values():
            self._checks_row.removeWidget(box)
            box.deleteLater()
        self._checks.clear()
        if prediction is None:
            self.title.setText(message or "AI: no analysis for this stack")
            self.current_line.hide()
            self._set_collapsed(True)
            return
        self._set_collapsed(False)
        n = prediction.num_slices
        xs = np.arange(n, dtype=np.float64)
        for k, name in enumerate(prediction.class_names):
            color = class_color(name, k)
            width = 2.5 if name == "any" else 1.6
            curve = self.plot.plot(
                xs,
                prediction.slice_probs[:, k].astype(np.float64),
                pen=pg.mkPen(color, width=width),
                symbol="o" if n <= 60 else None,
                symbolSize=4,
                symbolBrush=color,
                symbolPen=None,
            )
            self._curves[name] = curve
            line = pg.InfiniteLine(
                pos=float(prediction.thresholds[k]),
                angle=0,
                movable=False,
                pen=pg.mkPen(QColor(color), width=1, style=Qt.PenStyle.DashLine),
            )
            self.plot.addItem(line)
            self._threshold_lines[name] = line
            box = QCheckBox(SHORT_NAMES.get(name, name))
            box.setChecked(name not in self._hidden)
            box.setToolTip(
                f"{name}: threshold {prediction.thresholds[k]:.3f} (dashed line); click to show or hide"
            )
            box.setStyleSheet(f"QCheckBox {{ color: {color}; }}")
            box.toggled.connect(lambda on, cls=name: self.set_class_visible(cls, on))
            self._checks_row.addWidget(box)
            self._checks[name] = box
            curve.setVisible(name not in self._hidden)
            line.setVisible(name not in self._hidden)
        flagged = prediction.flagged.any(axis=1)
        from viewer.core.inference.postprocess import flagged_ranges

        for r in flagged_ranges(np.asarray(flagged)):
            region = pg.LinearRegionItem(
                values=(r.start - 0.5, r.stop + 0.5),
                movable=False,
                brush=pg.mkBrush(*FLAG_FILL),
                pen=pg.mkPen(None),
            )
            region.setZValue(-10)
            self.plot.addItem(region)
            self._regions.append(region)
        # Limits first: setXRange is clamped by the limits in force, which were the previous stack's (a
        # 32-slice stack after a 24-slice one showed slices 1-25 only).
        self.view_box.setLimits(xMin=-1.0, xMax=n + 0.0)
        self.view_box.setXRange(-0.5, max(n - 0.5, 0.5), padding=0.0)
        for item in [*self._curves.values(), *self._threshold_lines.values(), *self._regions]:
            _cache_rendering(item)  # only the current-slice line moves while scrolling
        source = "cached" if prediction.from_cache else f"{prediction.elapsed_s:.2f} s"
        self.title.setText(
            f"AI: {prediction.badge()}  ·  {prediction.model_name} {prediction.model_version}  ·  {source}"
        )
        self.current_line.show()
        self.set_current_slice(self._current)

    def set_current_slice(self, index: int) -> None:
        """Move the current-slice line: at once after a pause, at most every :data:`CURSOR_INTERVAL_MS`
        while the reader scrolls (repainting the strip cost 2.2 ms of each slice change, and the line
        moving 60 times a second is not seen any better than 30)."""
        self._current = int(index)
        if self._cursor_timer.isActive():
            return  # the timer shows the newest slice when it fires
        self._show_cursor()
        self._cursor_timer.start()

    def _show_cursor(self) -> None:
        if self.current_line.value() != float(self._current):
            self.current_line.blockSignals(True)
            self.current_line.setValue(float(self._current))
            self.current_line.blockSignals(False)

    def current_slice(self) -> int:
        return self._current

    def set_class_visible(self, name: str, visible: bool) -> None:
        if visible:
            self._hidden.discard(name)
        else:
            self._hidden.add(name)
        if name in self._curves:
            self._curves[name].setVisible(visible)
            self._threshold_lines[name].setVisible(visible)
        box = self._checks.get(name)
        if box is not None and box.isChecked() != visible:
            box.setChecked(visible)

    def visible_classes(self) -> list[str]:
        return [n for n in self._curves if n not in self._hidden]

    def class_checkbox(self, name: str) -> QCheckBox:
        return self._checks[name]

    def view_to_widget(self, x: float, y: float = 0.5) -> Any:
        """Widget (viewport) coordinates of the plot point (x, y): for tests and tooltips."""
        scene = self.view_box.mapViewToScene(QPointF(x, y))
        return self.plot.mapFromScene(scene)

    # --- internals ---------------------------------------------------------------------------------
    def _request_x(self, x: float) -> None:
        if self._prediction is None:
            return
        index = int(np.clip(round(float(x)), 0, self._prediction.num_slices - 1))
        if index != self._current:
            self.slice_requested.emit(index)
        self.set_current_slice(index)

    @staticmethod
    def _tick_strings(values: list[float], scale: float, spacing: float) -> list[str]:
        return [str(round(v) + 1) if abs(v - round(v)) < 1e-6 else "" for v in values]
