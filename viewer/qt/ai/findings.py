"""Findings panel: the study decision, one row per class (study probability and, for a model with
localisation maps, the bleed volume in mL; the slice threshold and the flagged ranges in its tooltip), a
caution banner for stacks in scope with caution, and only the reason (no probability) for stacks the
applicability check refused.

Each class row has one child row per flagged range (*slices 14-16 · peak 0.63*, across the columns);
clicking a range jumps to its first slice, clicking a class row jumps to its peak slice
(``slice_requested(index)``).

The panel is narrow (:data:`~viewer.qt.style.RIGHT_DOCK_PX`, so that the image keeps 60 % of a 1366 px
screen beside the Studies dock): the number columns are as wide as their texts and the class column
takes the rest. Its texts fit at that width; a dock narrowed further elides the class names (full text
in the tooltip) rather than pushing the image aside.
"""

from __future__ import annotations

import html

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QCursor
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QToolTip,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from viewer.core.applicability import Applicability
from viewer.core.constants import INTENDED_USE
from viewer.core.inference.engine import provider_label, provider_summary
from viewer.core.inference.results import SliceRange, StackPrediction
from viewer.qt.ai.timeline import class_color
from viewer.qt.style import RIGHT_DOCK_PX
from viewer.qt.tree_items import children, content_width, top_items

SLICE_ROLE = Qt.ItemDataRole.UserRole + 1
STUDY_COLUMN = 1  # study probability
VOLUME_COLUMN = 2  # bleed volume in mL (models with localisation maps only)
PANEL_MIN_PX = 200  # narrower than this, the numbers would not fit either


class FindingsPanel(QWidget):
    """Standalone widget: ``set_prediction``; emits ``slice_requested(int)``."""

    slice_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("aiFindings")
        self.setMinimumWidth(PANEL_MIN_PX)
        self._prediction: StackPrediction | None = None
        self.badge = QLabel("No analysis for this stack")
        self.badge.setObjectName("aiBadge")
        self.badge.setWordWrap(True)
        self.badge.setStyleSheet("font-weight: bold;")
        self.banner = QLabel("")  # applicability: caution (yellow) or out of scope (the reason)
        self.banner.setObjectName("aiScopeBanner")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(
            "background: #3b2e00; color: #e3b341; border: 1px solid #e3b341; padding: 3px; font-size: 8pt;"
        )
        self.banner.hide()
        self.details = QLabel("")
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.setWordWrap(True)
        self.details.setStyleSheet("color: #8b949e; font-size: 8pt;")
        self.tree = QTreeWidget()
        self.tree.setColumnCount(3)
        # Short headers (explained in their tooltips) so that all columns fit the default dock.
        self.tree.setHeaderLabels(["Class", "Study", "mL"])
        for col, tip in enumerate(
            (
                "Finding class, with one row per run of slices at or above the model's slice threshold "
                "for the class (the dashed line in the timeline; the class's tooltip gives it) and the "
                "run's highest slice probability; click a class to go to its peak slice, a run to its "
                "first slice",
                "Study-level probability (bold: positive at the study threshold)",
                "Bleed volume from the localisation map: voxels at or above the map threshold x voxel size "
                "(any: the union of the subtypes); research use, synthetic training data",
            )
        ):
            self.tree.headerItem().setToolTip(col, tip)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # the class takes what is left
        self.tree.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.tree.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.tree.setRootIsDecorated(True)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.itemClicked.connect(self._clicked)
        self.tree.itemActivated.connect(self._clicked)
        # why CUDA is not used: one short line (the provider and the reason in a few words); the full
        # note (the library error) in its tooltip and behind its "details" link
        self.provider_line = QLabel("")
        self.provider_line.setObjectName("aiProviderNote")
        self.provider_line.setTextFormat(Qt.TextFormat.RichText)
        self.provider_line.setStyleSheet("color: #8b949e; font-size: 8pt;")
        self.provider_line.setTextInteractionFlags(Qt.TextInteractionFlag.LinksAccessibleByMouse)
        self.provider_line.linkActivated.connect(self._show_provider_details)
        self.provider_line.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.badge)
        layout.addWidget(self.banner)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.details)
        layout.addWidget(self.provider_line)

    def sizeHint(self) -> QSize:
        """:data:`~viewer.qt.style.RIGHT_DOCK_PX` wide (the dock's first width), whatever the texts."""
        return QSize(RIGHT_DOCK_PX, super().sizeHint().height())

    @property
    def prediction(self) -> StackPrediction | None:
        return self._prediction

    def set_refusal(self, applicability: Applicability) -> None:
        """The stack is out of scope: say why, show no probability."""
        self._prediction = None
        self.tree.clear()
        self.badge.setText("AI not run: out of scope")
        reasons = [r for r in applicability.reasons if r.scope is applicability.scope]
        self.banner.setText(
            "<br>".join(f"{html.escape(r.message)} <small>[{r.code.value}]</small>" for r in reasons)
        )
        self.banner.show()
        self.details.setText("")
        self._set_provider_note("", "")

    def set_prediction(self, prediction: StackPrediction | None, message: str = "") -> None:
        self._prediction = prediction
        self.tree.clear()
        self.banner.hide()
        if prediction is None:
            self.badge.setText(message or "No analysis for this stack")
            self.details.setText("")
            self._set_provider_note("", "")
            return
        self.badge.setText(prediction.badge())
        volumes = prediction.volume_readings()  # {} without localisation maps: the column is hidden
        self.tree.setColumnHidden(VOLUME_COLUMN, not volumes)
        scope = prediction.applicability
        if scope is not None and scope.cautioned:
            cautions = [r for r in scope.reasons if r.scope is scope.scope]
            self.banner.setText(
                "⚠ <b>In scope with caution</b>: "
                + "; ".join(f"{html.escape(r.message)} <small>[{r.code.value}]</small>" for r in cautions)
            )
            self.banner.show()
        for k, finding in enumerate(prediction.findings):
            ranges = ", ".join(str(r) for r in finding.flagged_ranges) or "none"
            volume = volumes.get(finding.class_name)  # "12.3", "< 0.1", "–" (map below threshold) ...
            row = QTreeWidgetItem(
                [finding.class_name, f"{finding.study_prob:.2f}", "" if volume is None else volume.text]
            )
            if volume is not None:
                row.setToolTip(VOLUME_COLUMN, f"{finding.class_name}: {volume.note}")
            row.setData(0, SLICE_ROLE, finding.peak_slice)
            row.setToolTip(
                0,
                f"{finding.class_name}: peak at slice {finding.peak_slice + 1} "
                f"(p = {finding.peak_prob:.2f}); flagged slices {ranges} "
                f"(slice threshold {finding.threshold:.3f}); click to go",
            )
            row.setForeground(0, QBrush(QColor(class_color(finding.class_name, k))))
            if finding.positive:
                font = row.font(0)
                font.setBold(True)
                for col in range(VOLUME_COLUMN + 1):
                    row.setFont(col, font)
            for r in finding.flagged_ranges:
                peak = _range_peak(prediction, k, r)
                child = QTreeWidgetItem([f"slices {r} · peak {peak:.2f}"])
                child.setData(0, SLICE_ROLE, r.start)
                child.setToolTip(0, f"Go to slice {r.start + 1}")
                row.addChild(child)
            self.tree.addTopLevelItem(row)
            row.setExpanded(True)
            for child in children(row):
                child.setFirstColumnSpanned(True)  # a range row reads across the number columns
        self._fit_number_columns()
        source = " (cached)" if prediction.from_cache else ""
        self._set_provider_note(prediction.provider, prediction.provider_note)
        note = ""
        if prediction.bad_slices:
            note += (
                f"<br><span style='color:#e3b341'>{len(prediction.bad_slices)} slice(s) could not be decoded "
                "and were analysed as blank</span>"
            )
        run = (
            f"{prediction.model_name} {prediction.model_version}",
            prediction.model_sha256[:12],
            provider_label(prediction.provider),
            f"{prediction.elapsed_s:.2f} s{source}",
        )
        # a narrow dock wraps between the parts, never inside one ("0.63" above a lone "s")
        self.details.setText(" · ".join(html.escape(part).replace(" ", "&nbsp;") for part in run) + note)
        self.details.setToolTip(prediction.intended_use or INTENDED_USE)

    def _set_provider_note(self, provider: str, note: str) -> None:
        summary = provider_summary(provider, note)
        self.provider_line.setVisible(bool(summary))
        self.provider_line.setText(
            f"{html.escape(summary)} · <a href='details' style='color:#58a6ff'>details</a>" if summary else ""
        )
        self.provider_line.setToolTip(note)

    def _show_provider_details(self, _link: str = "") -> None:
        """The "details" link: the full note (why CUDA is not used, the library error) as a tooltip."""
        QToolTip.showText(QCursor.pos(), self.provider_line.toolTip(), self.provider_line)

    def _fit_number_columns(self) -> None:
        """The study and volume columns as wide as their texts; the class column takes the rest."""
        for col in (STUDY_COLUMN, VOLUME_COLUMN):
            self.tree.setColumnWidth(col, content_width(self.tree, col))

    def range_items(self, class_name: str) -> list[QTreeWidgetItem]:
        """The clickable range rows of one class (for tests and keyboard navigation)."""
        for top in top_items(self.tree):
            if top.text(0) == class_name:
                return children(top)
        return []

    def _clicked(self, item: QTreeWidgetItem, column: int = 0) -> None:
        index = item.data(0, SLICE_ROLE)
        if index is not None:
            self.slice_requested.emit(int(index))


def _range_peak(prediction: StackPrediction, k: int, r: SliceRange) -> float:
    return float(prediction.slice_probs[r.start : r.stop + 1, k].max())
