"""Non-modal load report: files skipped and why, slices that cannot be shown, stacks split, warnings.

Rows about a stack name its patient (hidden in privacy mode) and series; a double-click on such a row
asks the main window to show it (``show_requested(stack_uid, slice_index)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QHeaderView, QLabel, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from viewer.core.codes import code_in, describe
from viewer.core.dicom.model import LoadReport, Patient, Stack
from viewer.qt.style import WARNING_COLOR, icon
from viewer.qt.texts import NO_NAME
from viewer.qt.tree_items import child_texts

TARGET_ROLE = Qt.ItemDataRole.UserRole + 1  # (stack uid, slice index) a double-click shows
FIRST_COLUMN_PX = 360


@dataclass(frozen=True)
class ReportRow:
    what: str
    code: str
    reason: str
    stack_uid: str | None = None  # the stack a double-click shows, None for a file that was not loaded
    index: int = 0  # ... at this slice
    path: str = ""  # a skipped file's whole path (``what`` is relative to the files' common folder)


def common_folder(paths: list[str]) -> str:
    """The folder every path lies in (a skipped file is listed relative to it: the opened folder's path
    repeated on every row, cut in the middle, hid the part that tells the files apart); "" for fewer
    than two paths or none in common. Archive members (``archive.zip:member``) are named as they are."""
    folders = [os.path.dirname(p) for p in paths if os.path.isabs(p)]  # not archive members' labels
    if len(folders) < 2:
        return ""
    try:
        folder = os.path.commonpath(folders)
    except ValueError:  # two drives
        return ""
    return "" if folder in ("", os.sep) else folder


def relative_to(path: str, folder: str) -> str:
    return path[len(folder) + 1 :] if folder and path.startswith(folder + os.sep) else path


def reason_text(meaning: str, reason: str) -> str:
    """``meaning: reason``, unless the reason already starts with the code's meaning ("DICOMDIR index,
    not an image" read "DICOMDIR index: DICOMDIR index, not an image")."""
    return reason if reason.casefold().startswith(meaning.casefold()) else f"{meaning}: {reason}"


def patient_label(patient: Patient | None, number: int, privacy: bool) -> str:
    """``Doe John`` (or ``Patient 2`` in privacy mode, numbered in the report's order)."""
    if patient is None:
        return ""
    if privacy:
        return f"Patient {number}"
    return patient.name.replace("^", " ").strip() or patient.patient_id or NO_NAME


def stack_label(stack: Stack) -> str:
    """The series as a reader knows it: description, else series number and modality."""
    name = stack.series_description or " ".join(
        v
        for v in (stack.modality, f"Se {stack.series_number}" if stack.series_number is not None else "")
        if v
    )
    return name or "(unnamed series)"


PatientNumber = Callable[[Patient], int]  # the browser's "Patient n" for a patient (privacy mode)


def report_sections(
    report: LoadReport, privacy: bool = False, number: PatientNumber | None = None
) -> dict[str, list[ReportRow]]:
    """Rows per section: Skipped files, Warnings, Stacks (split or with warnings). ``number`` gives the
    patients' numbers in privacy mode (default: their order in the report)."""
    folder = common_folder([s.path for s in report.skipped])
    skipped = [
        ReportRow(
            relative_to(s.path, folder),
            s.code,
            reason_text(describe(s.code), s.reason.replace(folder + os.sep, "") if folder else s.reason),
            path=s.path,
        )
        for s in report.skipped
    ]
    warnings = [ReportRow("", "", w) for w in report.warnings]
    stacks = []
    for k, patient in enumerate(report.patients, start=1):
        who = patient_label(patient, number(patient) if number is not None else k, privacy)
        for study in patient.studies:
            for series in study.series:
                for st in series.stacks:
                    name = " · ".join(v for v in (who, stack_label(st)) if v)
                    if st.label:
                        name += f" [{st.label}]"
                        stacks.append(ReportRow(name, "SPLIT", f"Split from its series: {st.label}", st.uid))
                    stacks.extend(ReportRow(name, "WARN", w, st.uid) for w in st.warnings)
    return {"Skipped files": skipped, "Warnings": warnings, "Stacks": stacks}


def bad_slice_row(stack: Stack, index: int, message: str, who: str = "") -> ReportRow:
    """A slice that cannot be shown: its code, what the code means and the decoder's words."""
    code = code_in(message)
    name = " · ".join(v for v in (who, stack_label(stack), f"slice {index + 1}") if v)
    source = stack.slices[index].source.display_name if 0 <= index < len(stack) else ""
    if source:
        name += f" ({source})"
    return ReportRow(name, code, f"{describe(code)}: {message}", stack.uid, index)


class LoadReportPanel(QWidget):
    """Shows the latest load report, and every slice found unreadable while viewing."""

    show_requested = Signal(str, int)  # stack uid, slice index

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary = QLabel("No study loaded yet")
        self.summary.setObjectName("sectionLabel")
        self.summary.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["File / stack", "Code", "Reason"])
        self.tree.setAlternatingRowColors(True)
        self.tree.setRootIsDecorated(True)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # paths keep their file name
        self.tree.setToolTip("Double-click a stack or slice row to show it")
        h = self.tree.header()
        h.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        h.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        h.setStretchLastSection(True)
        self.tree.setColumnWidth(0, FIRST_COLUMN_PX)
        self.tree.itemDoubleClicked.connect(self._on_double_click)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.summary)
        layout.addWidget(self.tree)
        self.reports: list[LoadReport] = []
        self._privacy = False
        self._bad: dict[tuple[str, int], tuple[Stack, str, Patient | None]] = {}
        self.patient_number: PatientNumber | None = None  # set by the window: the browser's numbering
        self._extra: dict[str, list[ReportRow]] = {}  # sections added by extensions (result objects)

    def add_report(self, report: LoadReport) -> None:
        self.reports.append(report)
        self.summary.setText(f"{report.summary()} in {report.elapsed_s:.1f} s")
        self._render()

    def add_bad_slice(self, stack: Stack, index: int, message: str, patient: Patient | None = None) -> bool:
        """Record a slice that cannot be shown (once); True when it was new."""
        key = (stack.uid, index)
        if key in self._bad:
            return False
        self._bad[key] = (stack, message, patient)
        self._render()
        return True

    def set_section(self, title: str, rows: list[ReportRow]) -> None:
        """An extension's own section (e.g. result objects that are not shown), replaced on each call."""
        self._extra[title] = list(rows)
        self._render()

    def forget_stacks(self, uids: set[str]) -> None:
        """Drop the unreadable-slice rows of stacks that were closed."""
        self._bad = {k: v for k, v in self._bad.items() if k[0] not in uids}
        self._render()

    def set_privacy(self, on: bool) -> None:
        if on != self._privacy:
            self._privacy = on
            self._render()

    def sections(self) -> dict[str, list[ReportRow]]:
        """What the panel shows now, by section."""
        number = self.patient_number
        out = report_sections(self.reports[-1], self._privacy, number) if self.reports else {}
        bad = [
            bad_slice_row(st, i, msg, patient_label(p, number(p) if number and p else 1, self._privacy))
            for (_, i), (st, msg, p) in sorted(self._bad.items(), key=lambda kv: kv[0])
        ]
        return {"Slices that cannot be shown": bad, **out, **self._extra}

    def _render(self) -> None:
        self.tree.clear()
        for title, rows in self.sections().items():
            if not rows:
                continue
            top = QTreeWidgetItem(self.tree, [f"{title} ({len(rows)})", "", ""])
            top.setIcon(0, icon("warning"))
            font = top.font(0)
            font.setBold(True)
            top.setFont(0, font)
            for row in rows:
                item = QTreeWidgetItem(top, [row.what, row.code, row.reason])
                item.setToolTip(0, row.path or row.what)
                item.setToolTip(1, describe(row.code) if row.code.startswith("E-") else row.code)
                item.setToolTip(2, row.reason)
                if row.stack_uid is not None:
                    item.setData(0, TARGET_ROLE, (row.stack_uid, row.index))
                if row.code.startswith("E-"):
                    item.setForeground(1, QBrush(QColor(WARNING_COLOR)))
            top.setExpanded(True)
        # the first column as wide as its rows need, up to half the panel (paths elide in the middle)
        self.tree.resizeColumnToContents(0)
        cap = max(FIRST_COLUMN_PX, self.tree.viewport().width() // 2)
        self.tree.setColumnWidth(0, min(max(self.tree.columnWidth(0), FIRST_COLUMN_PX), cap))

    def _on_double_click(self, item: QTreeWidgetItem, _column: int) -> None:
        target = item.data(0, TARGET_ROLE)
        if target:
            uid, index = target
            self.show_requested.emit(str(uid), int(index))

    def has_issues(self) -> bool:
        return self.tree.topLevelItemCount() > 0

    def rows(self) -> list[tuple[str, ...]]:
        return child_texts(self.tree, 3)
