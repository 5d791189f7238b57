"""Study browser: Patient / Study / Stack tree with middle-slice thumbnails and warning badges."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PySide6.QtCore import QMimeData, QModelIndex, QPersistentModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeWidget,
    QTreeWidgetItem,
    QTreeWidgetItemIterator,
    QWidget,
)

from viewer.core.dicom.model import LoadReport, Patient, Stack, Study
from viewer.qt.overlays import format_date
from viewer.qt.style import LEFT_DOCK_PX, icon
from viewer.qt.texts import patient_name_text, plural
from viewer.qt.viewport_grid import STACK_MIME, stack_mime

UID_ROLE = Qt.ItemDataRole.UserRole + 1
BASE_TEXT_ROLE = Qt.ItemDataRole.UserRole + 3  # stack text without the AI badge
THUMB_PX = 64
BADGE_PX = 16  # the ⚠ of a stack with warnings (column 1)
BROWSER_MIN_PX = 200


class _BadgeDelegate(QStyledItemDelegate):
    """Column 1's ⚠ at :data:`BADGE_PX`, not at the thumbnails' icon size: sized for 64 px icons, the
    column took 80 px of the 266 px dock and the texts wrapped into a 60 px column."""

    def initStyleOption(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        super().initStyleOption(option, index)
        option.decorationSize = QSize(BADGE_PX, BADGE_PX)


def stack_text(stack: Stack) -> str:
    """Two lines for a stack row: description, then modality, slice count and series number."""
    desc = stack.series_description or "(no description)"
    if stack.label:
        desc += f" [{stack.label}]"
    se = f" · Se {stack.series_number}" if stack.series_number is not None else ""
    return f"{desc}\n{stack.modality} · {plural(len(stack), 'image')}{se}"


def thumbnail_icon(thumb: np.ndarray) -> QIcon:
    """QIcon from a uint8 thumbnail (grey HxW or RGB HxWx3), letterboxed into a square."""
    data = np.ascontiguousarray(thumb)
    h, w = data.shape[:2]
    if data.ndim == 2:
        img = QImage(data.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    else:
        img = QImage(data.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    side = max(w, h)
    canvas = QPixmap(side, side)
    canvas.fill(QColor("black"))
    p = QPainter(canvas)
    p.drawImage((side - w) // 2, (side - h) // 2, img)
    p.end()
    return QIcon(canvas)


class StudyBrowser(QTreeWidget):
    """Loaded studies; a click on a stack row emits ``stack_selected(uid)``."""

    stack_selected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setColumnCount(2)
        self.setHeaderLabels(["Series", ""])
        self.setHeaderHidden(True)
        self.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.setIndentation(12)
        self.setUniformRowHeights(False)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setAcceptDrops(False)
        self.setDragEnabled(True)  # a stack row dragged onto a viewport is shown there
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        header = self.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self._badge_delegate = _BadgeDelegate(self)
        self.setItemDelegateForColumn(1, self._badge_delegate)
        self._stack_items: dict[str, QTreeWidgetItem] = {}
        self._patient_items: list[tuple[QTreeWidgetItem, Patient]] = []
        self._badges: dict[str, str] = {}
        self._privacy = False
        self.itemSelectionChanged.connect(self._on_selection)
        self.setMinimumWidth(BROWSER_MIN_PX)
        self.setWordWrap(True)  # a narrow dock wraps a long description or AI line instead of cutting it
        self._placeholder = QIcon(_placeholder_pixmap())

    def sizeHint(self) -> QSize:
        """:data:`~viewer.qt.style.LEFT_DOCK_PX` wide: the Studies dock's first width."""
        return QSize(LEFT_DOCK_PX, super().sizeHint().height())

    def mimeTypes(self) -> list[str]:
        return [STACK_MIME]

    def mimeData(self, items: Sequence[QTreeWidgetItem]) -> QMimeData:
        """A dragged stack row: its key for the viewport it is dropped on (patient and study rows: none)."""
        uids = [item.data(0, UID_ROLE) for item in items if item.data(0, UID_ROLE)]
        return stack_mime(str(uids[0])) if uids else QMimeData()

    # --- content ---------------------------------------------------------------------------------
    def add_report(self, report: LoadReport) -> list[Stack]:
        """Add the patients, studies and stacks of ``report``; returns the stacks that were new."""
        new: list[Stack] = []
        for patient in report.patients:
            p_item = self._patient_item(patient)
            for study in patient.studies:
                s_item = self._study_item(p_item, study)
                for series in study.series:
                    for stack in series.stacks:
                        if stack.uid in self._stack_items:
                            continue
                        item = QTreeWidgetItem(s_item, [stack_text(stack), ""])
                        item.setData(0, UID_ROLE, stack.uid)
                        item.setData(0, BASE_TEXT_ROLE, stack_text(stack))
                        item.setIcon(0, self._placeholder)
                        item.setToolTip(0, self._tooltip(stack, study))
                        if stack.warnings:
                            item.setIcon(1, icon("warning"))
                            item.setToolTip(1, "\n".join(stack.warnings))
                        self._stack_items[stack.uid] = item
                        new.append(stack)
                s_item.setExpanded(True)
            p_item.setExpanded(True)
        self._show_warning_column()
        return new

    def _show_warning_column(self) -> None:
        """The ⚠ column only while some stack has warnings: empty, it took the texts' room."""
        warned = any(not item.icon(1).isNull() for item in self._stack_items.values())
        self.setColumnHidden(1, not warned)

    def _patient_item(self, patient: Patient) -> QTreeWidgetItem:
        for item, known in self._patient_items:
            if (known.patient_id, known.name) == (patient.patient_id, patient.name):
                return item
        item = QTreeWidgetItem(self, [""])
        font = item.font(0)
        font.setBold(True)
        item.setFont(0, font)
        item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsSelectable)
        item.setFirstColumnSpanned(True)
        self._patient_items.append((item, patient))
        self._update_patient_text(item, patient, len(self._patient_items))
        return item

    def _study_item(self, parent: QTreeWidgetItem, study: Study) -> QTreeWidgetItem:
        for i in range(parent.childCount()):
            child = parent.child(i)
            if child is not None and child.data(0, UID_ROLE + 1) == study.study_instance_uid:
                return child
        text = " · ".join(v for v in (format_date(study.date), study.description) if v) or "(study)"
        item = QTreeWidgetItem(parent, [text])
        item.setData(0, UID_ROLE + 1, study.study_instance_uid)
        item.setFirstColumnSpanned(True)
        item.setForeground(0, QBrush(QColor("#8b949e")))
        item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsSelectable)
        return item

    def _update_patient_text(self, item: QTreeWidgetItem, patient: Patient, number: int) -> None:
        if self._privacy:
            item.setText(0, f"Patient {number}")
        else:
            name = patient_name_text(patient.name)
            item.setText(0, "  ·  ".join(t for t in (name, patient.patient_id) if t))

    @staticmethod
    def _tooltip(stack: Stack, study: Study) -> str:
        lines = [
            stack.series_description or "(no description)",
            f"{stack.modality}, {plural(len(stack), 'image')}",
            f"{stack.rows} × {stack.columns}",
            f"Sorted by {stack.sort_method.replace('_', ' ')}",
        ]
        if stack.slice_spacing:
            lines.append(f"Spacing {stack.slice_spacing:.2f} mm")
        if study.date:
            lines.append(format_date(study.date))
        lines += [f"⚠ {w}" for w in stack.warnings]
        return "\n".join(lines)

    def set_thumbnail(self, stack_uid: str, thumb: np.ndarray) -> None:
        item = self._stack_items.get(stack_uid)
        if item is not None:
            item.setIcon(0, thumbnail_icon(thumb))

    def set_badge(self, stack_uid: str, text: str) -> None:
        item = self._stack_items.get(stack_uid)
        if item is None:
            return
        self._badges[stack_uid] = text
        base = str(item.data(0, BASE_TEXT_ROLE))
        item.setText(0, f"{base}\n{text}" if text else base)  # a third line under the description

    def badge(self, stack_uid: str) -> str:
        return self._badges.get(stack_uid, "")

    def set_privacy(self, on: bool) -> None:
        self._privacy = on
        for k, (item, patient) in enumerate(self._patient_items, start=1):
            self._update_patient_text(item, patient, k)

    def patient_number(self, patient: Patient) -> int:
        """The patient's number as shown in privacy mode (``Patient n``); 0 when not listed."""
        for k, (_, known) in enumerate(self._patient_items, start=1):
            if (known.patient_id, known.name) == (patient.patient_id, patient.name):
                return k
        return 0

    def stack_uids(self) -> list[str]:
        """Stacks in browser (display) order."""
        by_item = {id(item): uid for uid, item in self._stack_items.items()}
        out: list[str] = []
        it = QTreeWidgetItemIterator(self)
        while it.value() is not None:
            uid = by_item.get(id(it.value()))
            if uid is not None:
                out.append(uid)
            it += 1
        return out

    def remove_stacks(self, uids: set[str]) -> None:
        """Remove these stacks' rows, then any study or patient left without one (no selection signal:
        the caller decides what to show next)."""
        blocked = self.blockSignals(True)
        try:
            self._remove_stacks(uids)
        finally:
            self.blockSignals(blocked)

    def _remove_stacks(self, uids: set[str]) -> None:
        for uid in uids:
            item = self._stack_items.pop(uid, None)
            self._badges.pop(uid, None)
            parent = item.parent() if item is not None else None
            if item is not None and parent is not None:
                parent.removeChild(item)
        for p_item, patient in list(self._patient_items):
            for study_item in [p_item.child(i) for i in range(p_item.childCount())]:
                if study_item is not None and study_item.childCount() == 0:
                    p_item.removeChild(study_item)
            if p_item.childCount() == 0:
                self.takeTopLevelItem(self.indexOfTopLevelItem(p_item))
                self._patient_items.remove((p_item, patient))
        for k, (p_item, patient) in enumerate(self._patient_items, start=1):
            self._update_patient_text(p_item, patient, k)
        self._show_warning_column()

    def item_for(self, stack_uid: str) -> QTreeWidgetItem | None:
        return self._stack_items.get(stack_uid)

    def select(self, stack_uid: str) -> None:
        item = self._stack_items.get(stack_uid)
        if item is not None and not item.isSelected():
            self.blockSignals(True)
            self.clearSelection()
            item.setSelected(True)
            self.setCurrentItem(item)
            self.blockSignals(False)
            self.scrollToItem(item)

    def _on_selection(self) -> None:
        items = self.selectedItems()
        if items:
            uid = items[0].data(0, UID_ROLE)
            if uid:
                self.stack_selected.emit(str(uid))


def _placeholder_pixmap() -> QPixmap:
    pm = QPixmap(THUMB_PX, THUMB_PX)
    pm.fill(QColor("#0d1117"))
    return pm
