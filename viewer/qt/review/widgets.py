"""Standalone review widgets: the worklist, the per-study decision panel and the session chooser.

They only display values and emit requests; :class:`viewer.qt.review.controller.ReviewController`
turns requests into store writes and refreshes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydicom.uid import UID
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced

from viewer.core.constants import RSNA_CLASSES
from viewer.core.review.export import SessionSummary
from viewer.core.review.models import Finding, SessionInfo, StudyReview
from viewer.qt.tree_items import cap_columns, top_items

TEXT_COMMIT_MS = 500  # notes are committed this long after the last keystroke (and on focus-out)
DECISION_LABELS = {
    "confirmed": "✓ confirmed", "rejected": "✗ rejected", "uncertain": "? uncertain", None: "—",
}
_ID_ROLE = Qt.ItemDataRole.UserRole


FINDING_COLUMN_CAP_PX = 120  # a longer finding, slice list or decision ends in '…' (tooltip: all of it)


def _texts(tree: QTreeWidget) -> list[list[str]]:
    return [[item.text(c) for c in range(tree.columnCount())] for item in top_items(tree)]


NOT_OPEN = "not open yet"
NOT_OPEN_TIP = ("Not open in this window yet: the patient is named once it is opened (click the row). "
                "The session stores no patient names or IDs.")


def unopened_label(study: StudyReview) -> str:
    """What the session knows of a study not open in this window, for its worklist row: the modality of
    the analysed series, its slice count and where it is got from (``CT · 32 slices · local files``,
    ``CT · 32 slices · PACS node-a``). The store holds no patient name or ID, so none is shown, and no
    path (paths may hold names)."""
    parts: list[str] = []
    if study.ai is not None:
        name = UID(study.ai.sop_class_uid).name if study.ai.sop_class_uid else ""
        if name.endswith(" Image Storage"):
            parts.append(name.removesuffix(" Image Storage"))
        n = len(study.ai.slice_uids)
        if n:
            parts.append(f"{n} slice" if n == 1 else f"{n} slices")
    source = study.source
    parts.append(f"PACS {source.node}" if source.is_pacs else source.kind.label)
    return " · ".join(parts)


def short_uid(uid: str, n: int = 14) -> str:
    return uid if len(uid) <= n else "…" + uid[-n:]


@dataclass(frozen=True)
class StudyLabel:
    """What the worklist shows of a study open in the viewer (the store keeps only its UID)."""

    patient: str  # name, or "Patient k" in privacy mode (PHI: screen only)
    date: str
    description: str
    modality: str


def review_state(study: StudyReview) -> str:
    if study.done:
        return "done"
    if study.n_decided or study.note or study.impression:
        return "in progress"
    return "to review"


class WorklistPanel(QWidget):
    """The session's studies with AI result and review state; AI-positive first unless toggled."""

    study_activated = Signal(str)  # StudyInstanceUID
    order_changed = Signal(str)  # 'ai_first' or 'original'

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.progress_label = QLabel("No review session")
        self.ai_first = QCheckBox("AI-positive first")
        self.ai_first.setChecked(True)
        self.ai_first.setToolTip("Unchecked: keep the order in which studies were added")
        self.ai_first.toggled.connect(lambda on: self.order_changed.emit("ai_first" if on else "original"))
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["#", "Patient", "Study", "AI result", "Decided", "Review"])
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemActivated.connect(self._activated)
        self.tree.itemClicked.connect(self._activated)
        top = QHBoxLayout()
        top.addWidget(self.progress_label, 1)
        top.addWidget(self.ai_first)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.tree, 1)
        self._current: str | None = None

    @property
    def order(self) -> str:
        return "ai_first" if self.ai_first.isChecked() else "original"

    def set_studies(
        self,
        studies: Sequence[StudyReview],
        current: str | None = None,
        labels: Mapping[str, StudyLabel] | None = None,
    ) -> None:
        """``labels``: patient, date, description and modality of the studies open in the viewer; the
        others show their UID's tail until they are opened."""
        self._current = current
        self.tree.clear()
        labels = labels or {}
        done = sum(s.done for s in studies)
        self.progress_label.setText(f"{done} of {len(studies)} done")
        for s in studies:
            ai = s.ai.badge if s.ai else "not analysed"
            n_ai = sum(1 for f in s.findings if f.source == "ai" and f.positive)
            decided = f"{s.n_decided}/{len(s.findings)}" if s.findings else "—"
            label = labels.get(s.study_uid)
            if label is not None:
                patient = label.patient
                study = " · ".join(v for v in (label.date, label.modality, label.description) if v)
            else:
                patient, study = NOT_OPEN, unopened_label(s)
            texts = [str(s.position + 1), patient, study or short_uid(s.study_uid), ai, decided,
                     review_state(s)]
            item = QTreeWidgetItem(texts)
            item.setData(0, _ID_ROLE, s.study_uid)
            item.setToolTip(2, f"{study}\nStudy UID {s.study_uid}" if study else s.study_uid)
            if label is None:
                item.setToolTip(1, NOT_OPEN_TIP)
            if n_ai:
                item.setForeground(3, Qt.GlobalColor.red)
            if s.study_uid == current:
                font = QFont(item.font(0))
                font.setBold(True)
                for c in range(len(texts)):
                    item.setFont(c, font)
            self.tree.addTopLevelItem(item)
            if s.study_uid == current:
                self.tree.setCurrentItem(item)

    def study_uids(self) -> list[str]:
        return [str(item.data(0, _ID_ROLE)) for item in top_items(self.tree)]

    def row_texts(self) -> list[list[str]]:
        return _texts(self.tree)

    def clear_session(self) -> None:
        self.tree.clear()
        self.progress_label.setText("No review session")

    def _activated(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        uid = item.data(0, _ID_ROLE)
        if uid:
            self.study_activated.emit(str(uid))


class ReviewPanel(QWidget):
    """Decisions on one study: findings with confirm / reject / uncertain, add or correct a finding,
    note, impression and the 'done' mark. Emits requests; shows what the store holds."""

    decision_requested = Signal(int, str)  # finding id, decision
    jump_requested = Signal(int)  # 0-based slice index
    add_finding_requested = Signal(str, int, int)  # class, start, stop (0-based, inclusive)
    correction_requested = Signal(int, str, int, int)  # finding id, class, start, stop (0-based)
    remove_finding_requested = Signal(int)
    note_changed = Signal(str)
    impression_changed = Signal(str)
    done_toggled = Signal(bool)

    def __init__(self, classes: Sequence[str] = RSNA_CLASSES, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._study: StudyReview | None = None
        self._label: StudyLabel | None = None
        self._current_slice = 0
        self._n_slices = 0
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("QLabel { background: #5a3b00; color: white; padding: 4px; }")
        self.banner.hide()
        self.title = QLabel("No study")
        self.title.setWordWrap(True)

        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Finding", "AI", "Slices", "Decision"])
        self.tree.setRootIsDecorated(False)
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemClicked.connect(self._jump_to_item)
        self.tree.itemActivated.connect(self._jump_to_item)

        self.btn_confirm = QPushButton("Confirm (A)")
        self.btn_reject = QPushButton("Reject (X)")
        self.btn_uncertain = QPushButton("Uncertain (U)")
        self.btn_confirm.clicked.connect(lambda: self.request_decision("confirmed"))
        self.btn_reject.clicked.connect(lambda: self.request_decision("rejected"))
        self.btn_uncertain.clicked.connect(lambda: self.request_decision("uncertain"))
        buttons = QHBoxLayout()
        buttons.setSpacing(2)
        for b in (self.btn_confirm, self.btn_reject, self.btn_uncertain):
            buttons.addWidget(b)

        self.class_combo = QComboBox()
        self.class_combo.addItems([c for c in classes if c != "any"] or list(classes))
        self.from_spin = QSpinBox()
        self.to_spin = QSpinBox()
        for spin in (self.from_spin, self.to_spin):
            spin.setRange(1, 1)
            spin.setPrefix("slice ")
        self.btn_from_current = QPushButton("Current")
        self.btn_to_current = QPushButton("Current")
        self.btn_from_current.setToolTip("Start the range at the slice on screen")
        self.btn_to_current.setToolTip("End the range at the slice on screen")
        self.btn_from_current.clicked.connect(lambda: self.from_spin.setValue(self._current_slice + 1))
        self.btn_to_current.clicked.connect(lambda: self.to_spin.setValue(self._current_slice + 1))
        self.btn_add = QPushButton("Add finding")
        self.btn_add.setToolTip("A finding the AI missed: class and slice range")
        self.btn_correct = QPushButton("Correct")
        self.btn_correct.setToolTip("Set the class and slice range the reader sees for the selected finding")
        self.btn_remove = QPushButton("Remove")
        self.btn_remove.setToolTip("Remove the selected reader-added finding")
        self.btn_add.clicked.connect(self._add)
        self.btn_correct.clicked.connect(self._correct)
        self.btn_remove.clicked.connect(self._remove)
        edit = QGroupBox("Add or correct a finding")
        form = QFormLayout(edit)
        form.addRow("Class", self.class_combo)
        row1 = QHBoxLayout()
        row1.addWidget(self.from_spin)
        row1.addWidget(self.btn_from_current)
        row2 = QHBoxLayout()
        row2.addWidget(self.to_spin)
        row2.addWidget(self.btn_to_current)
        form.addRow("From", row1)
        form.addRow("To", row2)
        row3 = QHBoxLayout()
        for b in (self.btn_add, self.btn_correct, self.btn_remove):
            row3.addWidget(b)
        form.addRow(row3)

        self.note = QPlainTextEdit()
        self.note.setPlaceholderText("Note (saved as you type; left out of exports unless you opt in)")
        self.note.setMaximumHeight(80)
        self.impression = QLineEdit()
        self.impression.setPlaceholderText("Study impression")
        self.done = QCheckBox("Study done (Ctrl+Return)")
        self._flush_later = qdebounced(self.flush_text, TEXT_COMMIT_MS, parent=self)  # once typing pauses
        self.note.textChanged.connect(self._flush_later)
        self.impression.textEdited.connect(lambda _t: self._flush_later())
        self.impression.editingFinished.connect(self.flush_text)
        self.done.clicked.connect(self.done_toggled.emit)
        self._sent_note = ""
        self._sent_impression = ""
        self._loading = False
        # narrower buttons than the theme's (14 px a side), so that the panel, tabbed with the AI
        # findings, is no wider than they are (264 px): the image keeps 60 % of a 1366 px screen
        self.setStyleSheet("QPushButton { padding: 4px 3px; }")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.banner)
        layout.addWidget(self.title)
        layout.addWidget(self.tree, 1)
        layout.addLayout(buttons)
        layout.addWidget(edit)
        layout.addWidget(QLabel("Note"))
        layout.addWidget(self.note)
        layout.addWidget(QLabel("Impression"))
        layout.addWidget(self.impression)
        layout.addWidget(self.done)
        self.set_study(None)

    # --- display -----------------------------------------------------------------------------------
    def set_message(self, text: str) -> None:
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    def set_slice_count(self, n: int) -> None:
        self._n_slices = n
        for spin in (self.from_spin, self.to_spin):
            spin.setRange(1, max(1, n))

    def set_current_slice(self, index: int) -> None:
        self._current_slice = index

    def study(self) -> StudyReview | None:
        return self._study

    def set_label(self, label: StudyLabel | None) -> None:
        """What the viewer shows of the study under review (patient, date, description), for the title;
        None: the study is not open in the viewer (the title says what the session knows of it)."""
        self._label = label
        self._show_title()

    def _show_title(self) -> None:
        study = self._study
        if study is None:
            self.title.setText("No study under review")
            self.title.setToolTip("")
            return
        ai = study.ai.badge + " (investigational)" if study.ai else "Not analysed by the AI yet"
        label = self._label
        if label is not None:
            parts = (label.patient, label.date, label.description or label.modality)
            what = " · ".join(v for v in parts if v)
        else:
            what = unopened_label(study) or f"Study {short_uid(study.study_uid)}"
        self.title.setText(f"{what}: {ai}")
        self.title.setToolTip(f"Study UID {study.study_uid}")

    def set_study(self, study: StudyReview | None, *, read_only: bool = False) -> None:
        """Show ``study`` (None: nothing). Unsent text is flushed first for the previous study."""
        if self._study is not None and (study is None or study.study_uid != self._study.study_uid):
            self.flush_text()
        selected = self.selected_finding_id()
        same = study is not None and self._study is not None and study.study_uid == self._study.study_uid
        self._study = study
        self._loading = True
        self.tree.clear()
        self._show_title()
        if study is not None:
            for f in _display_order(study.findings):
                texts = _finding_texts(f)
                item = QTreeWidgetItem(texts)
                for col, text in enumerate(texts):
                    item.setToolTip(col, text)  # a capped column ends in '…'
                item.setData(0, _ID_ROLE, f.id)
                if f.positive:
                    font = QFont(item.font(0))
                    font.setBold(True)
                    item.setFont(0, font)
                self.tree.addTopLevelItem(item)
            if same and selected is not None:
                self.select_finding(selected)
            elif (first := self.tree.topLevelItem(0)) is not None:
                self.tree.setCurrentItem(first)
            # Capped, not as wide as the longest text: that made the tree's minimum width, and so the right
            # dock's, 442-720 px at 1366 px ("5-6, 11-29", "? uncertain (→ epidural, slices 3-6)").
            cap_columns(self.tree, FINDING_COLUMN_CAP_PX)
        if not same:
            text = study.note if study else ""
            if self.note.toPlainText() != text:
                self.note.setPlainText(text)
            self.impression.setText(study.impression if study else "")
            self._sent_note = text
            self._sent_impression = study.impression if study else ""
            self._flush_later.cancel()
        self.done.setChecked(bool(study and study.done))
        enabled = study is not None and not read_only
        for w in (self.btn_confirm, self.btn_reject, self.btn_uncertain, self.btn_add, self.btn_correct,
                  self.btn_remove, self.done, self.class_combo, self.from_spin, self.to_spin):
            w.setEnabled(enabled)
        self.note.setReadOnly(not enabled)
        self.impression.setReadOnly(not enabled)
        self._loading = False

    def finding_rows(self) -> list[list[str]]:
        return _texts(self.tree)

    def finding_ids(self) -> list[int]:
        return [int(item.data(0, _ID_ROLE)) for item in top_items(self.tree)]

    def selected_finding_id(self) -> int | None:
        item = self.tree.currentItem()
        return None if item is None else int(item.data(0, _ID_ROLE))

    def select_finding(self, finding_id: int) -> None:
        for item in top_items(self.tree):
            if int(item.data(0, _ID_ROLE)) == finding_id:
                self.tree.setCurrentItem(item)
                return

    def select_next(self) -> None:
        ids = self.finding_ids()
        current = self.selected_finding_id()
        if current in ids and ids.index(current) + 1 < len(ids):
            self.select_finding(ids[ids.index(current) + 1])

    # --- requests ----------------------------------------------------------------------------------
    def request_decision(self, decision: str) -> bool:
        fid = self.selected_finding_id()
        if fid is None or self._study is None or not self.btn_confirm.isEnabled():
            return False
        self.decision_requested.emit(fid, decision)
        return True

    def _jump_to_item(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        if self._study is None:
            return
        f = self._study.finding(int(item.data(0, _ID_ROLE)))
        if f.jump_slice is not None:
            self.jump_requested.emit(f.jump_slice)

    def _range(self) -> tuple[int, int]:
        a, b = self.from_spin.value() - 1, self.to_spin.value() - 1
        return min(a, b), max(a, b)

    def _add(self) -> None:
        if self._study is not None:
            self.add_finding_requested.emit(self.class_combo.currentText(), *self._range())

    def _correct(self) -> None:
        fid = self.selected_finding_id()
        if fid is not None and self._study is not None:
            self.correction_requested.emit(fid, self.class_combo.currentText(), *self._range())

    def _remove(self) -> None:
        fid = self.selected_finding_id()
        if fid is not None and self._study is not None and self._study.finding(fid).source == "reader":
            self.remove_finding_requested.emit(fid)

    def flush_text(self) -> None:
        """Send note / impression edits now (also called on a timer, on focus-out and on study change)."""
        if self._loading or self._study is None:
            return
        self._flush_later.cancel()
        note = self.note.toPlainText()
        if note != self._sent_note:
            self._sent_note = note
            self.note_changed.emit(note)
        imp = self.impression.text()
        if imp != self._sent_impression:
            self._sent_impression = imp
            self.impression_changed.emit(imp)


def _display_order(findings: Sequence[Finding]) -> list[Finding]:
    """AI-positive (most probable first), then reader-added, then AI-negative findings."""
    def key(f: Finding) -> tuple[int, float, int]:
        rank = 0 if f.source == "ai" and f.ai_positive else (1 if f.source == "reader" else 2)
        return (rank, -(f.study_prob or 0.0), f.id)

    return sorted(findings, key=key)


def _finding_texts(f: Finding) -> list[str]:
    name = f.class_name if f.source == "ai" else f"{f.class_name} (reader)"
    ai = "—" if f.study_prob is None else f"{f.study_prob:.2f}" + (" ▲" if f.ai_positive else "")
    slices = ", ".join(str(r) for r in f.ranges) or "—"
    decision = DECISION_LABELS.get(f.decision, str(f.decision))
    if f.source == "reader":
        decision = "added"
    fix = []
    if f.corrected_class:
        fix.append(f"→ {f.corrected_class}")
    if f.corrected_range is not None:
        fix.append(f"slices {f.corrected_range}")
    if fix:
        decision += " (" + ", ".join(fix) + ")"
    return [name, ai, slices, decision]


class SessionDialog(QDialog):
    """Pick a session (with progress), or ask for a new one; ``chosen_id`` / ``new_name`` after exec."""

    def __init__(self, sessions: Sequence[SessionInfo], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Review sessions")
        self.chosen_id: str | None = None
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Session", "Reader", "Done", "Last change (UTC)"])
        self.tree.setRootIsDecorated(False)
        for s in sessions:
            item = QTreeWidgetItem([s.name, s.reader, s.progress, s.modified_at[:19].replace("T", " ")])
            item.setData(0, _ID_ROLE, s.id)
            self.tree.addTopLevelItem(item)
        if (first := self.tree.topLevelItem(0)) is not None:
            self.tree.setCurrentItem(first)
        self.tree.itemActivated.connect(lambda *_: self.accept())
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tree)
        layout.addWidget(box)
        self.resize(560, 320)

    def rows(self) -> list[list[str]]:
        return _texts(self.tree)

    def accept(self) -> None:
        item = self.tree.currentItem()
        self.chosen_id = None if item is None else str(item.data(0, _ID_ROLE))
        super().accept()


class NewSessionDialog(QDialog):
    """Name and reader of a new session."""

    def __init__(self, parent: QWidget | None = None, name: str = "", reader: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("New review session")
        self.name = QLineEdit(name)
        self.reader = QLineEdit(reader)
        form = QFormLayout(self)
        form.addRow("Session name", self.name)
        form.addRow("Reader", self.reader)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        form.addRow(box)


class SummaryDialog(QDialog):
    """AI vs reader, one table row per class (sensitivity, specificity and the counts behind them)."""

    COLUMNS = ("Class", "Sensitivity", "Specificity", "TP", "FP", "FN", "TN", "Undecided")

    def __init__(self, summary: SessionSummary, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("AI vs reader")
        self.setModal(False)
        head = QLabel(
            f"Studies reviewed: {summary.n_done} of {summary.n_studies} "
            f"({summary.n_with_ai} analysed by the AI). The reader's decisions are the reference; "
            "uncertain and undecided calls are left out."
        )
        head.setWordWrap(True)
        self.table = QTableWidget(len(summary.per_class), len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        for row, c in enumerate(summary.per_class):
            values = [
                c.class_name,
                "n/a" if c.sensitivity is None else f"{c.sensitivity:.2f}",
                "n/a" if c.specificity is None else f"{c.specificity:.2f}",
                *(str(v) for v in (c.tp, c.fp, c.fn, c.tn, c.undecided)),
            ]
            for col, text in enumerate(values):
                item = QTableWidgetItem(text)
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(head)
        layout.addWidget(self.table, 1)
        layout.addWidget(buttons)
        self.resize(640, 160 + 32 * max(len(summary.per_class), 3))

    def rows(self) -> list[list[str]]:
        def text(r: int, c: int) -> str:
            item = self.table.item(r, c)
            return item.text() if item is not None else ""

        return [[text(r, c) for c in range(self.table.columnCount())] for r in range(self.table.rowCount())]
