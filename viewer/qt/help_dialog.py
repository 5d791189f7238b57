"""F1 keyboard and mouse help: the mouse gestures plus every key of the action registry."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from viewer.qt.actions import Binding
from viewer.qt.tree_items import child_texts


def mouse_bindings() -> list[Binding]:
    """The mouse gestures (keys come from the action registry, :mod:`viewer.qt.actions`)."""
    return [
        ("Navigation", "Mouse wheel", "Next / previous slice"),
        ("Window", "Left-drag", "Window / level: horizontal = width, vertical = level"),
        ("Window", "Ctrl + left-drag", "Window / level, 4× faster"),
        ("Tools", "Left-drag with M / E / B / L", "Draw a ruler / ellipse / rectangle / freehand ROI on the "
         "shown slice"),
        ("Tools", "G: drag, then click", "Angle: drag one arm to the vertex, then click the other arm's end"),
        ("Tools", "Shift+G: drag twice", "Cobb angle: drag the two lines"),
        ("Tools", "T: drag, then type", "Arrow: drag from the tip; type its text, Return"),
        ("Tools", "Click a measurement", "Select it (Del deletes it; right-click: its menu)"),
        ("Tools", "Drag a measurement", "Move it (with a drawing tool: the selected one); drag a handle of "
         "the selected one to reshape it"),
        ("Tools", "Drag a freehand ROI's vertex", "Move that point only (select the ROI first; its inside "
         "moves it whole); statistics and area follow live"),
        ("Tools", "Ctrl + click a freehand ROI", "On a vertex: remove it (also right-click › Delete "
         "point); on its outline between vertices: add one there"),
        ("Tools", "Double-click an arrow", "Edit its text"),
        ("Crosshair", "Shift+X, then click or drag", "Move the crosshair point (four-way arrow near the "
         "crossing); the other planes go through it; Ctrl+Z undoes a move"),
        ("Crosshair", "Drag a round handle", "Turn both other MPR planes together about the point "
         "(they stay perpendicular; rotation cursor, the line lit while hovered); Alt+O: orthogonal again; "
         "Ctrl+Z undoes a turn or Alt+O"),
        ("Crosshair", "Ctrl + drag a handle", "Turn that line's plane alone"),
        ("View", "Ctrl + wheel", "Zoom around the cursor"),
        ("View", "Right-drag", "Zoom"),
        ("View", "Middle-drag or Shift + left-drag", "Pan"),
        ("File", "Drag and drop", "Drop files, folders or .zip anywhere on the window"),
    ]


class KeyboardHelp(QDialog):
    """Non-modal list of bindings grouped by section."""

    def __init__(self, bindings: Sequence[Binding], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard and mouse")
        self.setModal(False)
        self.resize(620, 640)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Keys", "Action"])
        self.tree.setRootIsDecorated(False)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.setAlternatingRowColors(True)
        sections: dict[str, QTreeWidgetItem] = {}
        for section, keys, text in bindings:
            top = sections.get(section)
            if top is None:
                top = QTreeWidgetItem(self.tree, [section, ""])
                font = top.font(0)
                font.setBold(True)
                top.setFont(0, font)
                top.setFirstColumnSpanned(True)
                top.setFlags(Qt.ItemFlag.ItemIsEnabled)
                sections[section] = top
            QTreeWidgetItem(top, [keys, text])
        self.tree.expandAll()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tree)
        layout.addWidget(buttons)

    def texts(self) -> list[tuple[str, ...]]:
        return child_texts(self.tree, 2)
