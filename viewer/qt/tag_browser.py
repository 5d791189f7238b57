"""Searchable DICOM tag browser for the current slice (header only, pixel data never read)."""

from __future__ import annotations

import logging

import pydicom
from pydicom.dataset import Dataset
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QLineEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QTreeWidgetItemIterator,
    QVBoxLayout,
    QWidget,
)

from viewer.core.dicom.model import SliceSource
from viewer.core.dicom.sources import read_header_dataset

logger = logging.getLogger(__name__)

MAX_VALUE_CHARS = 200
NAME_COLUMN_PX = 120  # the Name column's starting width: Value gets what is left
# Patient-identifying attributes masked in privacy mode (group 0010 is masked as a whole too).
PHI_KEYWORDS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "OtherPatientIDs",
        "OtherPatientNames",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "ReferringPhysicianName",
        "InstitutionName",
        "InstitutionAddress",
        "AccessionNumber",
        "PerformingPhysicianName",
        "OperatorsName",
        "PatientMotherBirthName",
        "MilitaryRank",
        "EthnicGroup",
        "IssuerOfPatientID",
    }
)
MASK = "•••"


def read_header(source: SliceSource) -> Dataset:
    """The header of the file (zip member, gzip file) a slice comes from, without pixel data."""
    return read_header_dataset(source)


def is_phi(elem: pydicom.DataElement) -> bool:
    return elem.keyword in PHI_KEYWORDS or elem.tag.group == 0x0010


def value_text(elem: pydicom.DataElement) -> str:
    try:
        text = str(elem.value) if elem.VR not in ("OB", "OW", "OF", "OD", "UN") else f"<{elem.VR} data>"
    except Exception:
        text = "<unreadable>"
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


class TagBrowser(QWidget):
    """Tree of (tag, name, VR, value) with a filter box; sequences are expandable."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter tags: name, keyword, (gggg,eeee) or value")
        self.search.setClearButtonEnabled(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Tag", "Name", "VR", "Value"])
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(True)
        # Tag and VR fit their (short) contents; Name is a fixed, user-resizable width (a long name is
        # elided, its keyword is the tooltip); Value takes the rest, so it shows at any dock width.
        h = self.tree.header()
        h.setStretchLastSection(False)
        h.setMinimumSectionSize(28)
        for col, mode in enumerate(
            (
                QHeaderView.ResizeMode.ResizeToContents,
                QHeaderView.ResizeMode.Interactive,
                QHeaderView.ResizeMode.ResizeToContents,
                QHeaderView.ResizeMode.Stretch,
            )
        ):
            h.setSectionResizeMode(col, mode)
        self.tree.setColumnWidth(1, NAME_COLUMN_PX)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.info = QLabel("")
        self.info.setObjectName("sectionLabel")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.search)
        layout.addWidget(self.info)
        layout.addWidget(self.tree)
        self.search.textChanged.connect(self.apply_filter)
        self.privacy = False
        self._source: SliceSource | None = None

    def set_source(self, source: SliceSource | None, label: str = "") -> None:
        """Show the header of ``source`` (re-read only when it changed)."""
        if source == self._source and self.tree.topLevelItemCount():
            return
        self._source = source
        self.tree.clear()
        if source is None:
            self.info.setText("No slice")
            return
        try:
            ds = read_header(source)
        except Exception as exc:
            logger.warning("Tag browser could not read a header: %s", type(exc).__name__)
            self.info.setText(f"Header unreadable: {type(exc).__name__}")
            return
        self.info.setText(label)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and len(meta):
            self._add_dataset(meta, None)
        self._add_dataset(ds, None)
        self.apply_filter(self.search.text())

    def set_privacy(self, on: bool) -> None:
        if on != self.privacy:
            self.privacy = on
            source, self._source = self._source, None
            self.set_source(source, self.info.text())

    def _add_dataset(self, ds: Dataset, parent: QTreeWidgetItem | None) -> None:
        for elem in ds:
            value = MASK if self.privacy and is_phi(elem) else ("" if elem.VR == "SQ" else value_text(elem))
            cols = [f"({elem.tag.group:04X},{elem.tag.element:04X})", elem.name, str(elem.VR), value]
            item = QTreeWidgetItem(parent, cols) if parent is not None else QTreeWidgetItem(self.tree, cols)
            item.setData(1, Qt.ItemDataRole.UserRole, elem.keyword)
            item.setToolTip(1, f"{elem.name} ({elem.keyword})" if elem.keyword else elem.name)
            if value:
                item.setToolTip(3, value)
            if elem.VR == "SQ" and not (self.privacy and is_phi(elem)):
                for k, child in enumerate(elem.value):
                    sub = QTreeWidgetItem(item, ["", f"Item {k + 1}", "", ""])
                    self._add_dataset(child, sub)

    def apply_filter(self, text: str) -> None:
        needle = text.strip().lower()
        it = QTreeWidgetItemIterator(self.tree)
        items = []
        while it.value() is not None:
            items.append(it.value())
            it += 1
        for item in items:
            item.setHidden(bool(needle))
        if not needle:
            return
        for item in items:
            hay = " ".join(item.text(c) for c in range(4)).lower()
            hay += " " + str(item.data(1, Qt.ItemDataRole.UserRole) or "").lower()
            hay += " " + hay.replace("(", "").replace(")", "").replace(",", "")
            if needle in hay:
                node: QTreeWidgetItem | None = item
                while node is not None:
                    node.setHidden(False)
                    node.setExpanded(True)
                    node = node.parent()

    def visible_rows(self) -> list[tuple[str, str, str]]:
        """(tag, name, value) of the rows the filter leaves visible (for tests and copy)."""
        out = []
        it = QTreeWidgetItemIterator(self.tree)
        while it.value() is not None:
            item = it.value()
            if not item.isHidden():
                out.append((item.text(0), item.text(1), item.text(3)))
            it += 1
        return out
