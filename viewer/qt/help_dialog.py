"""F1 keyboard and mouse help: every built-in binding plus those registered by extensions."""

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

from viewer.core.constants import PRESET_KEYS, WINDOW_PRESETS
from viewer.qt.tree_items import child_texts

Binding = tuple[str, str, str]  # (section, keys, description)


def builtin_bindings() -> list[Binding]:
    rows: list[Binding] = [
        ("Navigation", "Mouse wheel", "Next / previous slice"),
        ("Navigation", "Down / Up", "Next / previous slice"),
        ("Navigation", "Page Down / Page Up", "10 slices forward / back"),
        ("Navigation", "Home / End", "First / last slice"),
        ("Navigation", "Right / Left", "Next / previous stack (series)"),
        ("Navigation", "C or Space", "Cine play / pause (fps in the toolbar)"),
        ("Window", "Left-drag", "Window / level: horizontal = width, vertical = level"),
        ("Window", "Ctrl + left-drag", "Window / level, 4× faster"),
    ]
    for k, name in enumerate(PRESET_KEYS, start=1):
        w = WINDOW_PRESETS[name]
        rows.append(("Window", str(k), f"Preset {name} (W {w.width:g} / L {w.level:g})"))
    rows += [
        ("Window", "0", "The DICOM header's window"),
        ("Window", "I", "Invert grey scale"),
        ("View", "Ctrl + wheel", "Zoom around the cursor"),
        ("View", "Right-drag", "Zoom"),
        ("View", "Middle-drag or Shift + left-drag", "Pan"),
        ("View", "+ / - (or Ctrl + / Ctrl -)", "Zoom in / out"),
        ("View", "F", "Fit image to window"),
        ("View", "A", "Actual size (1 image pixel = 1 screen pixel)"),
        ("View", "R", "Reset view: fit, header window, no inversion, no measurements"),
        ("Tools", "D", "Distance ruler on / off (mm; pixels without PixelSpacing)"),
        ("Tools", "Delete", "Remove all measurements"),
        ("Tools", "Esc", "Stop cine, back to window/level tool"),
        ("Tools", "Ctrl+T", "DICOM tag browser for the current slice"),
        ("Tools", "Ctrl+E", "Export current view as PNG (de-identified by default)"),
        ("Tools", "Ctrl+Shift+P", "Privacy: hide patient name and ID"),
        ("File", "Ctrl+O", "Open files"),
        ("File", "Ctrl+Shift+O", "Open folder"),
        ("File", "Drag and drop", "Drop files, folders or .zip anywhere on the window"),
        ("File", "Ctrl+Q", "Quit"),
        ("Help", "F1", "This help"),
        ("View", "F11", "Full screen"),
    ]
    return rows


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
