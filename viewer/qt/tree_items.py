"""Walking a QTreeWidget's items (Qt hands back None for an index out of range; these skip it)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QHeaderView, QTreeWidget, QTreeWidgetItem


def top_items(tree: QTreeWidget) -> list[QTreeWidgetItem]:
    items = (tree.topLevelItem(i) for i in range(tree.topLevelItemCount()))
    return [item for item in items if item is not None]


def children(item: QTreeWidgetItem) -> list[QTreeWidgetItem]:
    kids = (item.child(j) for j in range(item.childCount()))
    return [kid for kid in kids if kid is not None]


def child_texts(tree: QTreeWidget, columns: int) -> list[tuple[str, ...]]:
    """The first ``columns`` texts of every second-level row, top to bottom."""
    return [tuple(c.text(k) for k in range(columns)) for top in top_items(tree) for c in children(top)]


ITEM_SLACK_PX = 14  # the style sheet's item padding and selection border, which size hints leave out
HEADER_SLACK_PX = 14  # the style sheet's header padding (6 px a side) and border


def all_items(tree: QTreeWidget) -> list[QTreeWidgetItem]:
    """Every item, depth first."""
    out: list[QTreeWidgetItem] = []
    stack = list(reversed(top_items(tree)))
    while stack:
        item = stack.pop()
        out.append(item)
        stack.extend(reversed(children(item)))
    return out


def content_width(tree: QTreeWidget, column: int) -> int:
    """The width a column (not the first) needs for its header label and its items' texts in their own
    fonts (bold rows included), with the style sheet's padding; rows spanning the columns are left out.
    Unlike ``resizeColumnToContents`` it leaves out the header's sort-indicator room, which these
    unsortable trees never draw."""
    header = tree.headerItem()
    widest = QFontMetrics(tree.header().font()).horizontalAdvance(header.text(column)) + HEADER_SLACK_PX
    for item in all_items(tree):
        if item.isFirstColumnSpanned():
            continue
        metrics = QFontMetrics(item.font(column))
        widest = max(widest, metrics.horizontalAdvance(item.text(column)) + ITEM_SLACK_PX)
    return widest


def fit_columns(tree: QTreeWidget) -> None:
    """Every column as wide as its widest text (bold rows and the style sheet's padding included), and
    the tree at least as wide as its columns, so nothing is cut with '…': the dock grows instead."""
    header = tree.header()
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    for col in range(tree.columnCount()):
        tree.resizeColumnToContents(col)
        header.resizeSection(col, header.sectionSize(col) + ITEM_SLACK_PX)
    scroll = tree.verticalScrollBar().sizeHint().width()
    tree.setMinimumWidth(header.length() + 2 * tree.frameWidth() + scroll)


def cap_columns(tree: QTreeWidget, cap_px: int) -> None:
    """Every column as wide as its texts (those on screen and the first rows, as the header's resize
    precision says) but at most ``cap_px``: a longer text ends in '…' (its full text in the tooltip,
    which the caller sets), so that a narrow dock shows several columns; the reader can drag one wider."""
    header = tree.header()
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    tree.setTextElideMode(Qt.TextElideMode.ElideRight)
    for col in range(tree.columnCount()):
        tree.resizeColumnToContents(col)
        header.resizeSection(col, min(header.sectionSize(col), cap_px))
