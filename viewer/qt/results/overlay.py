"""The label/probability overlay of one slice view, and SR / presentation-state graphics.

Both are children of the view's image item, in its pixel coordinates: they follow zoom, pan, rotation
and flips exactly as the image does. The overlay is one QGraphicsPixmapItem placed at the top-left
pixel of its tile (nearest-neighbour: each mask pixel covers its image pixel); a slice change swaps in
a cached pixmap, so showing it costs a dictionary look-up and a pointer swap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QImage, QPixmap
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPixmapItem

from viewer.core.foreign.match import OverlayTile
from viewer.core.foreign.model import Graphic
from viewer.core.foreign.outline import is_marker, outline

REGION_COLOR = "#ffb000"  # SR regions and presentation-state graphics (measurement tools use others)
OVERLAY_Z = 10  # above the image, below measurements (20) and their labels
GRAPHIC_Z = 15
PIXMAP_CACHE = 256  # slices' overlay pixmaps kept (cropped to the masks: usually small)


def tile_pixmap(tile: OverlayTile) -> QPixmap:
    rgba = np.ascontiguousarray(tile.rgba)
    h, w = rgba.shape[:2]
    image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
    return QPixmap.fromImage(image.copy())  # copy: the QImage must not outlive the array


class PixmapCache:
    """Pixmaps of composed tiles by key (slice and what is hidden), least recently used dropped."""

    def __init__(self, size: int = PIXMAP_CACHE) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, tuple[QPixmap, int, int] | None] = OrderedDict()

    def get(self, key: Hashable) -> tuple[QPixmap, int, int] | bool | None:
        """The cached (pixmap, row, column), None for "nothing to draw", False when not cached."""
        if key not in self._items:
            return False
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Hashable, tile: OverlayTile | None) -> tuple[QPixmap, int, int] | None:
        value = (tile_pixmap(tile), tile.row, tile.column) if tile is not None else None
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()


class LabelOverlay:
    """One view's overlay item: a pixmap in the image's pixel coordinates."""

    def __init__(self, image: pg.ImageItem) -> None:
        self.item = QGraphicsPixmapItem()
        self.item.setTransformationMode(Qt.TransformationMode.FastTransformation)
        self.item.setShapeMode(QGraphicsPixmapItem.ShapeMode.BoundingRectShape)
        self.item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemStacksBehindParent, False)
        self.item.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.item.setParentItem(image)
        self.item.setZValue(OVERLAY_Z)
        self.item.hide()
        self._shown: tuple[QPixmap, int, int] | None = None

    def show(self, value: tuple[QPixmap, int, int] | None, opacity: float, visible: bool) -> None:
        if value is not self._shown:
            self._shown = value
            if value is not None:
                pixmap, row, column = value
                self.item.setPixmap(pixmap)
                self.item.setPos(float(column), float(row))
        self.item.setOpacity(opacity)
        self.item.setVisible(visible and value is not None)

    def is_shown(self) -> bool:
        return self.item.isVisible()

    def remove(self) -> None:
        self.item.setParentItem(None)  # type: ignore[arg-type]  # PySide6's stub misses the None
        if self.item.scene() is not None:
            self.item.scene().removeItem(self.item)


class RegionGraphic:
    """An SR region (SCOORD) or presentation-state graphic / text on the image, with a short label."""

    def __init__(self, parent: pg.ImageItem, graphic: Graphic | None, label: str) -> None:
        color = QColor(REGION_COLOR)
        pen = pg.mkPen(color, width=1.6)
        pen.setCosmetic(True)
        self.items: list[QGraphicsItem] = []
        anchor = (0.0, 0.0)
        if graphic is not None and graphic.points:
            xs, ys = outline(graphic)
            if is_marker(graphic) and label and len(xs) == 1:
                line: pg.GraphicsObject | None = None  # a text's anchor: the text marks it
            elif is_marker(graphic):
                line = pg.PlotDataItem(xs, ys, pen=None, symbol="+", symbolSize=11, symbolPen=pen)
            else:
                line = pg.PlotCurveItem(xs, ys, pen=pen)
            if line is not None:
                line.setParentItem(parent)
                line.setZValue(GRAPHIC_Z)
                self.items.append(line)
            anchor = (float(np.max(xs)), float(np.min(ys)))
        if label:
            text = pg.TextItem(label, color=color, anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 150))
            font = QFont()
            font.setPointSizeF(9.0)
            text.setFont(font)
            text.setParentItem(parent)
            text.setZValue(GRAPHIC_Z + 1)
            text.setPos(*anchor)
            self.items.append(text)

    def remove(self) -> None:
        for item in self.items:
            item.setParentItem(None)  # type: ignore[arg-type]  # PySide6's stub misses the None
            if item.scene() is not None:
                item.scene().removeItem(item)
        self.items.clear()
