"""Measurement graphics: rulers, ROIs (ellipse, rectangle, freehand), angles, Cobb angles and arrows,
drawn as children of the image item in the image's pixel coordinates, so they follow zoom, pan,
rotation and flips (the numbers come from :mod:`viewer.core.measure`). A selected measurement is drawn
brighter, with square handles at the points that can be dragged; :func:`hit_test` finds what lies under
the cursor, in screen pixels."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF
from PySide6.QtGui import QColor, QFont

from viewer.core.measure import ANGLE_SHAPES, ROI_SHAPES, Measurement, Point, Shape, Spacing, ruler_length

RULER_COLOR = "#ffd33d"
ROI_COLOR = "#5ad1ff"
ANGLE_COLOR = "#9dff7a"
ARROW_COLOR = "#ff9d5c"
SELECTED_COLOR = "#ffffff"
ELLIPSE_POINTS = 96
HANDLE_SIZE = 9  # screen pixels
FREEHAND_HANDLE_SIZE = 6
HANDLE_GRAB = 8.0  # a press this close (screen pixels) to a handle drags it
FREEHAND_GRAB = 5.0  # ... to a freehand vertex (they lie close together; between them: the edge)
LINE_GRAB = 6.0  # ... this close to a line selects (and moves) the measurement
ARROW_HEAD = 0.18  # the head's length, a fraction of the arrow's (clamped in screen pixels when drawn)
ARROW_HEAD_MIN, ARROW_HEAD_MAX = 8.0, 18.0  # screen pixels
ARC_POINTS = 24

Polyline = tuple[np.ndarray, np.ndarray]  # x (columns), y (rows)


def _color(shape: Shape) -> str:
    if shape is Shape.RULER:
        return RULER_COLOR
    if shape in ANGLE_SHAPES:
        return ANGLE_COLOR
    if shape is Shape.ARROW:
        return ARROW_COLOR
    return ROI_COLOR


def outline(m: Measurement) -> tuple[np.ndarray, np.ndarray]:
    """The main outline's x (column) and y (row) coordinates in image pixel units (a Cobb angle's first
    line; :func:`polylines` gives every line)."""
    return polylines(m, 1.0)[0]


def _arrow_head(tip: Point, tail: Point, length: float) -> Polyline:
    dx, dy = tail[0] - tip[0], tail[1] - tip[1]
    norm = math.hypot(dx, dy)
    if norm == 0:
        return np.array([tip[0]]), np.array([tip[1]])
    ux, uy = dx / norm, dy / norm
    spread = math.radians(25)
    c, s = math.cos(spread), math.sin(spread)
    left = (tip[0] + length * (ux * c - uy * s), tip[1] + length * (uy * c + ux * s))
    right = (tip[0] + length * (ux * c + uy * s), tip[1] + length * (uy * c - ux * s))
    return np.array([left[0], tip[0], right[0]]), np.array([left[1], tip[1], right[1]])


def _angle_arc(m: Measurement, radius: float) -> Polyline:
    (ax, ay), (vx, vy), (bx, by) = m.points
    a0, a1 = math.atan2(ay - vy, ax - vx), math.atan2(by - vy, bx - vx)
    sweep = (a1 - a0 + math.pi) % (2 * math.pi) - math.pi  # the short way round
    t = a0 + np.linspace(0.0, sweep, ARC_POINTS)
    return vx + radius * np.cos(t), vy + radius * np.sin(t)


def polylines(m: Measurement, image_px_per_screen_px: float) -> list[Polyline]:
    """Every line of a measurement, in image pixel coordinates (the arrow head and the angle's arc are
    sized in screen pixels: ``image_px_per_screen_px`` converts)."""
    pts = m.points
    (x0, y0), (x1, y1) = m.start, m.end
    if m.shape is Shape.RULER:
        return [(np.array([x0, x1]), np.array([y0, y1]))]
    if m.shape is Shape.RECTANGLE:
        return [(np.array([x0, x1, x1, x0, x0]), np.array([y0, y0, y1, y1, y0]))]
    if m.shape is Shape.ELLIPSE:
        t = np.linspace(0.0, 2 * math.pi, ELLIPSE_POINTS + 1)
        cx, cy, a, b = (x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2
        return [(cx + a * np.cos(t), cy + b * np.sin(t))]
    if m.shape is Shape.FREEHAND:
        xy = np.array([*pts, pts[0]], dtype=float)
        return [(xy[:, 0], xy[:, 1])]
    if m.shape is Shape.ANGLE:
        xy = np.array(pts, dtype=float)
        arms = min(math.dist(pts[0], pts[1]), math.dist(pts[2], pts[1]))
        radius = min(0.3 * arms, 24.0 * image_px_per_screen_px)
        lines: list[Polyline] = [(xy[:, 0], xy[:, 1])]
        if radius > 0:
            lines.append(_angle_arc(m, radius))
        return lines
    if m.shape is Shape.COBB:
        xy = np.array(pts, dtype=float)
        return [(xy[:2, 0], xy[:2, 1]), (xy[2:, 0], xy[2:, 1])]
    # arrow: the shaft from the tip to the tail, and the head at the tip
    length = math.dist(m.start, m.end)
    head = min(max(ARROW_HEAD * length, ARROW_HEAD_MIN * image_px_per_screen_px),
               ARROW_HEAD_MAX * image_px_per_screen_px)
    return [(np.array([x0, x1]), np.array([y0, y1])), _arrow_head(m.start, m.end, head)]


def handles(m: Measurement) -> tuple[Point, ...]:
    """The points that can be dragged one by one: every point (a freehand outline's vertices too; its
    inside moves it as a whole)."""
    return m.points


def handle_size(m: Measurement) -> int:
    """Screen pixels of a handle: smaller on a freehand outline, whose vertices lie close together."""
    return FREEHAND_HANDLE_SIZE if m.shape is Shape.FREEHAND else HANDLE_SIZE


def nearest_edge(m: Measurement, to_screen: Callable[[np.ndarray], np.ndarray], screen_pos: QPointF
                 ) -> tuple[int, float]:
    """A freehand outline's edge nearest ``screen_pos``: (index of its second vertex, where a point put
    on it is inserted; distance in screen pixels)."""
    ring = to_screen(np.array([*m.points, m.points[0]], dtype=float))
    p = np.array([screen_pos.x(), screen_pos.y()], dtype=float)
    d = _segment_distance(p, ring[:-1], ring[1:])
    k = int(np.argmin(d))
    return k + 1, float(d[k])


Placement = tuple[Point, tuple[float, float]]  # where (image coordinates), the label's anchor


def label_places(m: Measurement) -> list[Placement]:
    """Where the label may go, best first (the first that fits on screen is used): beside an ROI's
    rightmost point (else its leftmost, lowest, highest), at an angle's vertex, between a Cobb angle's
    lines, at an arrow's tail (on the side away from its tip), beyond a ruler's end."""
    pts = np.array(m.points, dtype=float)
    if m.shape in ROI_SHAPES:
        xs, ys = outline(m)
        ring = np.column_stack([xs, ys])
        right, left = ring[int(np.argmax(xs))], ring[int(np.argmin(xs))]
        low, high = ring[int(np.argmax(ys))], ring[int(np.argmin(ys))]
        return [
            ((float(right[0]), float(right[1])), (-0.04, 0.5)),
            ((float(left[0]), float(left[1])), (1.04, 0.5)),
            ((float(low[0]), float(low[1])), (0.5, -0.1)),
            ((float(high[0]), float(high[1])), (0.5, 1.1)),
        ]
    if m.shape is Shape.ANGLE:
        v = m.points[1]
        return [(v, (1.1, 0.0)), (v, (-0.1, 0.0)), (v, (1.1, 1.0)), (v, (-0.1, 1.0))]
    if m.shape is Shape.COBB:
        mid = pts.mean(axis=0)
        at = (float(mid[0]), float(mid[1]))
        return [(at, (-0.05, 0.5)), (at, (1.05, 0.5))]
    if m.shape is Shape.ARROW:
        tip, tail = m.start, m.end
        ax, ay = (0.0 if tail[0] >= tip[0] else 1.0), (0.0 if tail[1] >= tip[1] else 1.0)
        return [(tail, (ax, ay)), (tail, (1 - ax, ay)), (tail, (ax, 1 - ay)), (tail, (1 - ax, 1 - ay))]
    right, left = max(m.points), min(m.points)
    return [(right, (0.0, 1.0)), (left, (1.0, 1.0)), (right, (0.0, 0.0)), (left, (1.0, 0.0))]


class HandleItem(pg.ScatterPlotItem):
    """A selected measurement's handles: they leave clicks to the view (a plain ScatterPlotItem takes a
    click on a spot for itself, so a Ctrl+click on a freehand vertex or a right-click would not arrive)."""

    def mouseClickEvent(self, ev: Any) -> None:
        ev.ignore()


@dataclass(frozen=True)
class LabelOption:
    at: Point  # image coordinates
    anchor: tuple[float, float]
    rect: QRectF  # what the label covers there, scene coordinates


class MeasurementGraphic:
    """One measurement on screen: its lines, its label and, when selected, its handles."""

    def __init__(
        self, parent: pg.ImageItem, m: Measurement, text: str, spacing: Spacing, image_px_per_screen_px: float
    ) -> None:
        self.measurement = m
        self.spacing = spacing
        self._parent = parent
        self.selected = False
        self.scale = image_px_per_screen_px
        self.items: list[pg.GraphicsObject] = []
        color = QColor(_color(m.shape))
        self._color = color
        for xs, ys in polylines(m, image_px_per_screen_px):
            line = pg.PlotCurveItem(xs, ys, pen=self._pen(color, 1.6))
            self._add(line, 20)
        if m.shape is Shape.RULER:  # end ticks, as before
            xs, ys = outline(m)
            ticks = pg.ScatterPlotItem(xs, ys, symbol="+", size=9, pen=self._pen(color, 1.6), brush=None)
            self._add(ticks, 20)
        self.handle_item = HandleItem(
            symbol="s", size=handle_size(m), pen=self._pen(QColor("#000000"), 1),
            brush=pg.mkBrush(SELECTED_COLOR),
        )
        self._add(self.handle_item, 22)
        self.label = pg.TextItem(text, color=color, fill=pg.mkBrush(0, 0, 0, 150))
        font = QFont()
        font.setPointSizeF(9.5)
        self.label.setFont(font)
        self.label.setParentItem(parent)
        self.label.setZValue(21)
        (lx, ly), anchor = label_places(m)[0]
        self.label.setAnchor(anchor)
        self.label.setPos(lx, ly)
        self.label.setVisible(bool(text))

    @staticmethod
    def _pen(color: QColor, width: float) -> object:
        pen = pg.mkPen(color, width=width)
        pen.setCosmetic(True)
        return pen

    def _add(self, item: pg.GraphicsObject, z: float) -> None:
        item.setParentItem(self._parent)
        item.setZValue(z)
        self.items.append(item)

    def label_options(self, visible: QRectF) -> list[LabelOption]:
        """The label's places (:func:`label_places`) with the rectangle each would take (scene
        coordinates), those wholly inside ``visible`` (the view) first."""
        size = self.label.textItem.boundingRect()
        w, h = size.width(), size.height()
        options = []
        for (x, y), (ax, ay) in label_places(self.measurement):
            at = self._parent.mapToScene(QPointF(x, y))
            options.append(LabelOption((x, y), (ax, ay), QRectF(at.x() - ax * w, at.y() - ay * h, w, h)))
        return sorted(options, key=lambda o: not visible.contains(o.rect))

    def shows_in(self, visible: QRectF) -> bool:
        """Whether any of the measurement is drawn inside ``visible`` (scene coordinates)."""
        lines = polylines(self.measurement, self.scale)
        xs = np.concatenate([np.asarray(x, dtype=float) for x, _ in lines]) if lines else np.zeros(0)
        ys = np.concatenate([np.asarray(y, dtype=float) for _, y in lines]) if lines else np.zeros(0)
        if not xs.size:
            return False
        # widened a little: a horizontal or vertical ruler's box has no height or width, and an empty
        # rectangle intersects nothing (its label went off screen with the ruler's start)
        box = QRectF(float(xs.min()), float(ys.min()), float(np.ptp(xs)), float(np.ptp(ys)))
        box = box.adjusted(-1e-3, -1e-3, 1e-3, 1e-3)
        return self._parent.mapRectToScene(box).intersects(visible) or visible.contains(
            self._parent.mapToScene(QPointF(float(xs[0]), float(ys[0])))
        )

    def moved_inside(self, option: LabelOption, visible: QRectF) -> LabelOption:
        """``option`` shifted into ``visible`` where it reaches past an edge (its start kept on screen when
        it is the larger): a label cut at the viewport's edge can misread ("Mean -723.5 HU" as "3.5 HU")."""
        r = QRectF(option.rect)
        dx = min(0.0, visible.right() - r.right())
        dx = max(dx, visible.left() - r.left())
        dy = min(0.0, visible.bottom() - r.bottom())
        dy = max(dy, visible.top() - r.top())
        if not dx and not dy:
            return option
        r.translate(dx, dy)
        ax, ay = option.anchor
        at = self._parent.mapFromScene(QPointF(r.left() + ax * r.width(), r.top() + ay * r.height()))
        return LabelOption((at.x(), at.y()), option.anchor, r)

    def put_label(self, option: LabelOption) -> None:
        self.label.setAnchor(option.anchor)
        self.label.setPos(*option.at)

    def editor_rect(self, w: float, h: float, visible: QRectF) -> QRectF:
        """Where an editor of this size goes: the label's place (scene coordinates)."""
        options = []
        for (x, y), (ax, ay) in label_places(self.measurement):
            at = self._parent.mapToScene(QPointF(x, y))
            options.append(QRectF(at.x() - ax * w, at.y() - ay * h, w, h))
        inside = [r for r in options if visible.contains(r)]
        return (inside or options)[0]

    def set_selected(self, selected: bool) -> None:
        """Drawn brighter and thicker, with its handles, while selected."""
        self.selected = selected
        color = QColor(SELECTED_COLOR) if selected else self._color
        for item in self.items:
            if isinstance(item, pg.PlotCurveItem):
                item.setPen(self._pen(color, 2.4 if selected else 1.6))
        pts = handles(self.measurement) if selected else ()
        self.handle_item.setData([p[0] for p in pts], [p[1] for p in pts])

    def text(self) -> str:
        return str(self.label.toPlainText())

    def length(self) -> float:
        """A ruler's length (mm, or pixels without PixelSpacing)."""
        return ruler_length(self.measurement.start, self.measurement.end, self.spacing)[0]

    def remove(self) -> None:
        for item in (*self.items, self.label):
            item.setParentItem(None)
            if item.scene() is not None:
                item.scene().removeItem(item)


@dataclass(frozen=True)
class Hit:
    """What a press found: a measurement, and the handle (point index) when one was grabbed."""

    measurement: Measurement
    handle: int | None


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances from ``p`` to each segment ``a[i]-b[i]`` (arrays of (n, 2))."""
    ab = b - a
    denom = np.einsum("ij,ij->i", ab, ab)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(denom > 0, np.einsum("ij,ij->i", p - a, ab) / denom, 0.0)
    t = np.clip(t, 0.0, 1.0)
    closest = a + t[:, None] * ab
    return np.hypot(*(p - closest).T)


def _inside(p: np.ndarray, poly: np.ndarray) -> bool:
    """Even-odd point-in-polygon test."""
    x, y = float(p[0]), float(p[1])
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(crosses & (x < xs)) % 2)


def hit_test(
    graphics: Sequence[MeasurementGraphic],
    to_screen: Callable[[np.ndarray], np.ndarray],
    screen_pos: QPointF,
    inside_counts: Callable[[Measurement], bool] = lambda m: True,
) -> Hit | None:
    """The measurement under ``screen_pos`` (newest first): a handle of the selected one within
    :data:`HANDLE_GRAB` pixels, else a line within :data:`LINE_GRAB`, a label, or the inside of an ROI
    for which ``inside_counts``. ``to_screen`` maps (n, 2) image points to screen (scene) pixels."""
    p = np.array([screen_pos.x(), screen_pos.y()], dtype=float)
    for g in reversed(graphics):
        m = g.measurement
        if g.selected and handles(m):
            hs = to_screen(np.array(handles(m), dtype=float))
            d = np.hypot(*(hs - p).T)
            k = int(np.argmin(d))
            if d[k] <= (FREEHAND_GRAB if m.shape is Shape.FREEHAND else HANDLE_GRAB):
                return Hit(m, k)
    for g in reversed(graphics):
        m = g.measurement
        for xs, ys in polylines(m, g.scale):
            pts = to_screen(np.column_stack([xs, ys]))
            if len(pts) >= 2 and float(_segment_distance(p, pts[:-1], pts[1:]).min()) <= LINE_GRAB:
                return Hit(m, None)
        if m.shape in ROI_SHAPES and inside_counts(m):
            xs, ys = outline(m)
            if _inside(p, to_screen(np.column_stack([xs, ys]))):
                return Hit(m, None)
        if g.label.isVisible() and g.label.sceneBoundingRect().contains(screen_pos):
            return Hit(m, None)
    return None
