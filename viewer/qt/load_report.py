"""Non-modal load report: files skipped and why, stacks split, warnings."""

from __future__ import annotations

from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QHeaderView, QLabel, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from viewer.core.dicom.model import LoadReport
from viewer.qt.style import WARNING_COLOR, icon
from viewer.qt.tree_items import child_texts


def report_sections(report: LoadReport) -> dict[str, list[tuple[str, str, str]]]:
    """Rows (what, code, reason) per section: Skipped files, Warnings, Stacks (split or with warnings)."""
    skipped = [(s.path, s.code, s.reason) for s in report.skipped]
    warnings = [("", "", w) for w in report.warnings]
    stacks = []
    for st in report.all_stacks():
        name = st.series_description or "(no description)"
        if st.label:
            stacks.append((f"{name} [{st.label}]", "SPLIT", f"Split from its series: {st.label}"))
        stacks.extend((name, "WARN", w) for w in st.warnings)
    return {"Skipped files": skipped, "Warnings": warnings, "Stacks": stacks}


class LoadReportPanel(QWidget):
    """Shows the latest load report; newest load first, older loads kept below."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary = QLabel("No study loaded yet")
        self.summary.setObjectName("sectionLabel")
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["File / stack", "Code", "Reason"])
        self.tree.setAlternatingRowColors(True)
        self.tree.setRootIsDecorated(True)
        h = self.tree.header()
        h.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        h.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        h.setStretchLastSection(True)
        self.tree.setColumnWidth(0, 320)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.summary)
        layout.addWidget(self.tree)
        self.reports: list[LoadReport] = []

    def add_report(self, report: LoadReport) -> None:
        self.reports.append(report)
        self.summary.setText(f"{report.summary()} in {report.elapsed_s:.1f} s")
        self.tree.clear()
        for title, rows in report_sections(report).items():
            if not rows:
                continue
            top = QTreeWidgetItem(self.tree, [f"{title} ({len(rows)})", "", ""])
            top.setIcon(0, icon("warning"))
            font = top.font(0)
            font.setBold(True)
            top.setFont(0, font)
            for what, code, reason in rows:
                item = QTreeWidgetItem(top, [what, code, reason])
                item.setToolTip(0, what)
                item.setToolTip(2, reason)
                if code.startswith("E-"):
                    item.setForeground(1, QBrush(QColor(WARNING_COLOR)))
            top.setExpanded(True)

    def has_issues(self) -> bool:
        return self.tree.topLevelItemCount() > 0

    def rows(self) -> list[tuple[str, ...]]:
        return child_texts(self.tree, 3)
