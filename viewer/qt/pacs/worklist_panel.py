"""The PACS worklist tab of the PACS dock: a date range, Refresh (a job, with progress and cancel), the
CT head studies ordered AI-positive first, each row coloured by its AI status; a double-click asks the
controller to retrieve and open the study.

No threads and no clients here: :mod:`viewer.qt.pacs.controller` connects the signals to jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from PySide6.QtCore import QDate, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QDateEdit,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from viewer.core.pacs.worklist import AiStatus, WorklistRow
from viewer.qt.pacs.compact_rows import CompactRows, joined
from viewer.qt.pacs.widgets import (
    COLUMN_CAP_PX,
    UID_ROLE,
    _dicom_date,
    date_range_row,
    narrow_form,
    node_chooser,
    set_node_names,
)
from viewer.qt.texts import patient_name_text

WORKLIST_COLUMNS = ("AI", "Probability", "Patient", "Patient ID", "Date", "Time", "Description")
STATUS_ROLE = Qt.ItemDataRole.UserRole + 2
LONG_COLUMNS = (2, 6)  # patient and description: the texts that run long, given tooltips
# row background per AI status (dark-theme friendly, text stays readable); None = the default
STATUS_COLOURS: dict[AiStatus, str | None] = {
    AiStatus.POSITIVE: "#7a2323",
    AiStatus.NEGATIVE: "#1f5a2e",
    AiStatus.OUT_OF_SCOPE: "#5a5a5a",
    AiStatus.UNREADABLE: "#6b5a1f",
    AiStatus.NOT_ANALYSED: None,
}


def worklist_lines(texts: Sequence[str]) -> tuple[str, str]:
    """A worklist row in a narrow dock (:class:`~viewer.qt.pacs.compact_rows.CompactRows`): AI status,
    probability, patient and ID; date, time and description (``texts``: the :data:`WORKLIST_COLUMNS`)."""
    status, probability, patient, patient_id, day, time, description = texts
    return joined(f"{status} {probability}".strip(), patient, patient_id), joined(
        f"{day} {time}".strip(), description
    )


def _qdate(day: date) -> QDate:
    return QDate(day.year, day.month, day.day)


def _pydate(day: QDate) -> date:
    return date(day.year(), day.month(), day.day())


def _dicom_time(text: str) -> str:
    digits = text.split(".")[0]
    return f"{digits[0:2]}:{digits[2:4]}" if len(digits) >= 4 and digits.isdigit() else text


class WorklistPanel(QWidget):
    refresh_requested = Signal(str, object, object, bool)  # node name, date from, date to, head only
    cancel_requested = Signal()
    open_requested = Signal(str, str)  # node name, study UID

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.node = node_chooser()
        today = _qdate(date.today())
        self.date_from = QDateEdit(today)
        self.date_to = QDateEdit(today)
        for edit in (self.date_from, self.date_to):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
        self.head_only = QCheckBox("Head studies only")
        self.head_only.setToolTip("Only studies whose description names the head (e.g. HEAD, BRAIN, CRANIAL)")
        self.head_only.setChecked(True)
        self.btn_refresh = QPushButton("Refresh")
        self.btn_cancel = QPushButton("Cancel")
        self.btn_cancel.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m studies")
        self.progress.hide()
        self.rows = QTreeWidget()
        self.rows.setHeaderLabels(list(WORKLIST_COLUMNS))
        self.rows.setRootIsDecorated(False)
        self.rows.setUniformRowHeights(True)
        self.compact_rows = CompactRows(self.rows, worklist_lines, COLUMN_CAP_PX)
        self.rows.setToolTip("Double-click a study to retrieve and open it")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = narrow_form(QFormLayout())
        form.addRow("PACS", self.node)
        form.addRow("Study date", date_range_row(self.date_from, self.date_to))
        form.addRow("", self.head_only)
        buttons = QHBoxLayout()
        buttons.addWidget(self.btn_refresh)
        buttons.addWidget(self.btn_cancel)
        buttons.addWidget(self.progress, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.rows, 1)
        layout.addWidget(self.status)

        self.btn_refresh.clicked.connect(self._refresh)
        self.btn_cancel.clicked.connect(self.cancel_requested)
        self.rows.itemDoubleClicked.connect(self._open)

    def set_nodes(self, names: list[str]) -> None:
        set_node_names(self.node, names)
        self.btn_refresh.setEnabled(bool(names) and not self.btn_cancel.isEnabled())

    def date_range(self) -> tuple[date, date]:
        low, high = _pydate(self.date_from.date()), _pydate(self.date_to.date())
        return (low, high) if low <= high else (high, low)

    def _refresh(self) -> None:
        if not self.node.currentText():
            self.show_message("No PACS node chosen: add one in the Query tab (Nodes…)", ok=False)
            return
        low, high = self.date_range()
        self.refresh_requested.emit(self.node.currentText(), low, high, self.head_only.isChecked())

    def set_running(self, running: bool, what: str = "") -> None:
        self.btn_refresh.setEnabled(not running and self.node.count() > 0)
        self.btn_cancel.setEnabled(running)
        self.progress.setVisible(running)
        self.progress.setFormat(f"%v / %m {what}" if what else "%v / %m")
        if running:
            self.progress.setRange(0, 0)

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def show_rows(self, rows: list[WorklistRow]) -> None:
        self.rows.clear()
        items = []
        for row in rows:
            s = row.study
            item = QTreeWidgetItem(
                [
                    row.status.value,
                    "" if row.probability is None else f"{row.probability:.2f}",
                    patient_name_text(s.patient_name),
                    s.patient_id,
                    _dicom_date(s.study_date),
                    _dicom_time(s.study_time),
                    s.study_description,
                ]
            )
            item.setData(0, UID_ROLE, s.study_uid)
            item.setData(0, STATUS_ROLE, row.status.name)
            colour = STATUS_COLOURS[row.status]
            if colour is not None:
                for col in range(len(WORKLIST_COLUMNS)):
                    item.setBackground(col, QBrush(QColor(colour)))
            if row.model:
                item.setToolTip(0, f"AI result by {row.model}")
            for col in LONG_COLUMNS:
                item.setToolTip(col, item.text(col))
            items.append(item)
        self.rows.addTopLevelItems(items)
        self.compact_rows.fit()
        positive = sum(r.status is AiStatus.POSITIVE for r in rows)
        waiting = sum(r.status is AiStatus.NOT_ANALYSED for r in rows)
        self.show_message(
            f"{len(rows)} studies: {positive} AI positive, {waiting} not analysed (analysed when opened)",
            ok=True,
        )

    def row_uids(self) -> list[str]:
        out = []
        for k in range(self.rows.topLevelItemCount()):
            item = self.rows.topLevelItem(k)
            if item is not None:
                out.append(str(item.data(0, UID_ROLE)))
        return out

    def _open(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        if self.node.currentText():
            self.open_requested.emit(self.node.currentText(), str(item.data(0, UID_ROLE)))

    def show_message(self, text: str, ok: bool) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("" if ok else "color: #e66;")
