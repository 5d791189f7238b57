"""A PACS list's study rows as two lines across the columns while its dock is too narrow for the columns.

In the default docks (~264 px at 1366x768 and at 1920x1080) a study list showed the patient's name and ID
and nothing of the date, modality or description a reader picks a study by (they were off to the right,
behind a scroll bar). Below :data:`COMPACT_BELOW_PX` the header and every column but the first are hidden,
the first is as wide as the list, and each top-level row is drawn in it as two lines (:class:`TwoLines`,
composed from the row's own column texts, which stay as they are); child rows (a study's series) are
drawn as they are. A wider dock shows the columns again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import QEvent, QModelIndex, QObject, QPersistentModelIndex, QSize
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem, QTreeWidget, QWidget

from viewer.qt.tree_items import cap_columns

# narrower than this, the columns a reader picks a study by (patient, ID, date, modality) do not fit
COMPACT_BELOW_PX = 520

# the two lines of a top-level row, from its column texts
TwoLines = Callable[[Sequence[str]], tuple[str, str]]

_Index = QModelIndex | QPersistentModelIndex


def joined(*parts: str) -> str:
    """The non-empty parts, separated by ' · '."""
    return " · ".join(p for p in parts if p)


class _TwoLineDelegate(QStyledItemDelegate):
    def __init__(self, lines: TwoLines, parent: QObject) -> None:
        super().__init__(parent)
        self._lines = lines

    def _text(self, index: _Index) -> str | None:
        if index.parent().isValid():  # a child row: drawn as it is
            return None
        columns = index.model().columnCount(index.parent())
        texts = [str(index.sibling(index.row(), k).data() or "") for k in range(columns)]
        first, second = self._lines(texts)
        return f"{first}\u2028{second}"  # a line separator: what Qt's delegate makes of a newline

    def initStyleOption(self, option: QStyleOptionViewItem, index: _Index) -> None:
        super().initStyleOption(option, index)
        text = self._text(index)
        if text is not None:
            option.text = text

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: _Index) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        widget = opt.widget
        style = widget.style() if isinstance(widget, QWidget) else None
        if style is None:
            super().paint(painter, option, index)
            return
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)

    def sizeHint(self, option: QStyleOptionViewItem, index: _Index) -> QSize:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        widget = opt.widget
        style = widget.style() if isinstance(widget, QWidget) else None
        if style is None:
            return super().sizeHint(option, index)
        return style.sizeFromContents(QStyle.ContentsType.CT_ItemViewItem, opt, QSize(), widget)


class CompactRows(QObject):
    """Switches ``tree`` between columns and two-line rows (``lines``) as its width crosses
    :data:`COMPACT_BELOW_PX`. Call :meth:`fit` after adding rows: the columns are fitted to their texts
    (:func:`~viewer.qt.tree_items.cap_columns` with ``cap_px``) while they are shown, and when they come
    back (fitting hidden columns measured 600 two-line rows: 1,000 studies took 33 ms to list, not 17)."""

    def __init__(self, tree: QTreeWidget, lines: TwoLines, cap_px: int) -> None:
        super().__init__(tree)
        self._tree = tree
        self._columns_delegate = tree.itemDelegate()
        self._two_lines = _TwoLineDelegate(lines, self)
        self._uniform = tree.uniformRowHeights()
        self._cap_px = cap_px
        self.compact = False
        tree.installEventFilter(self)
        self.fit()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self._tree and event.type() == QEvent.Type.Resize:
            self._choose()
        return False

    def fit(self) -> None:
        """Columns fitted to their texts, or two lines, by the tree's width now."""
        if not self._choose() and not self.compact:
            cap_columns(self._tree, self._cap_px)

    def _choose(self) -> bool:
        """Columns or two lines by the tree's width now; True when that changed (and the columns were
        fitted, when they came back)."""
        tree = self._tree
        compact = tree.width() < COMPACT_BELOW_PX
        changed = compact != self.compact
        if changed:
            self.compact = compact
            tree.setItemDelegate(self._two_lines if compact else self._columns_delegate)
            tree.setHeaderHidden(compact)
            # a study's series rows are one line: two-line rows do not all have one height
            tree.setUniformRowHeights(self._uniform and not compact)
            for column in range(1, tree.columnCount()):
                tree.setColumnHidden(column, compact)
            if not compact:
                cap_columns(tree, self._cap_px)
            tree.doItemsLayout()  # row heights measured again (with uniform heights Qt keeps the old one)
        if compact:  # the one column shown as wide as the tree (a longer line ends in '…')
            tree.header().setStretchLastSection(True)
        return changed
