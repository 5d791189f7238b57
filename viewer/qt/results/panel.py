"""The "Results" dock: others' SEG, Parametric Map, SR and presentation-state objects found with the
opened images. One top row per object (its kind, description and where it applies, or why it is not
shown); SEG rows list their segments with their colours (untick to hide one), SR and presentation-state
rows their measurements, findings and regions. A double-click on a row with a slice shows that slice
(``show_requested(stack_uid, index)``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from viewer.core.codes import describe
from viewer.core.foreign.match import Placed, PlacedSeg, SliceAt
from viewer.core.foreign.model import EntryKind, ResultFailure
from viewer.qt.style import MUTED_COLOR, WARNING_COLOR
from viewer.qt.tree_items import children, top_items

TARGET_ROLE = Qt.ItemDataRole.UserRole + 1  # (stack uid, slice index) a double-click shows
SEGMENT_ROLE = Qt.ItemDataRole.UserRole + 2  # (SEG SOP Instance UID, segment number) of a segment row
STATUS_ROLE = Qt.ItemDataRole.UserRole + 3  # an object row's status (where it applies, or why not)
MAX_COLUMN_PX = 220  # a long name is elided (its tooltip has it all) rather than widening the dock
COLUMN_SLACK_PX = 48  # indentation, check box and swatch beside a row's first-column text
NOT_LOADED = "references no loaded image"
StackName = Callable[[str], str]


@dataclass(frozen=True)
class ResultRow:
    """One row under an object: what, its value, the slices it is on, a colour (segments)."""

    what: str
    value: str = ""
    slices: tuple[SliceAt, ...] = ()
    color: tuple[int, int, int] | None = None
    segment: tuple[str, int] | None = None
    tip: str = ""  # more than the columns show (a segment's type, category and algorithm)


@dataclass(frozen=True)
class ObjectRow:
    title: str
    status: str  # where it applies ("CT Head 5mm"), or why not ("references no loaded image")
    code: str = ""  # E-... when it is not shown
    rows: tuple[ResultRow, ...] = field(default_factory=tuple)


def slices_text(slices: Sequence[SliceAt]) -> str:
    """'slice 3', 'slices 3-4', 'slices 2, 5, 9' (1-based, first stack named only by the row)."""
    idx = sorted({s.index + 1 for s in slices})
    if not idx:
        return ""
    if len(idx) == 1:
        return f"slice {idx[0]}"
    if idx == list(range(idx[0], idx[-1] + 1)):
        return f"slices {idx[0]}–{idx[-1]}"
    shown = ", ".join(str(i) for i in idx[:6])
    return f"slices {shown}{'…' if len(idx) > 6 else ''}"


def object_rows(
    placed: Sequence[Placed], failures: Sequence[ResultFailure], stack_name: StackName
) -> list[ObjectRow]:
    """The panel's rows for the placed objects and the objects that could not be read."""
    out: list[ObjectRow] = []
    for p in placed:
        obj = p.obj
        stacks = sorted(
            {
                at.stack_uid
                for at in (p.layers if isinstance(p, PlacedSeg) else [s for e in p.entries for s in e.slices])
            }
        )
        if isinstance(p, PlacedSeg) and not stacks:
            stacks = sorted(p.series_stacks)  # nothing drawn: the stacks of the series it references
        status = ", ".join(stack_name(uid) for uid in stacks) if stacks else NOT_LOADED
        code = "" if p.references_loaded else "E-NO-LOADED-IMAGE"
        rows: list[ResultRow] = []
        if isinstance(p, PlacedSeg):
            title = f"{obj.kind} · {obj.description or 'segmentation'}"
            for seg in p.obj.segments:  # value: what it is (its type, else its category)
                value = seg.type if seg.type and seg.type != seg.label else seg.category
                rows.append(
                    ResultRow(
                        seg.label,
                        value,
                        tuple(p.slices_of(seg.number)),
                        seg.color,
                        (p.obj.sop_instance_uid, seg.number),
                        " · ".join(v for v in (seg.type, seg.category, seg.algorithm) if v),
                    )
                )
            if not p.obj.frames and p.references_loaded:
                rows.append(ResultRow("no segment on any slice"))
            if p.unplaced and p.references_loaded:
                rows.append(ResultRow(f"{p.unplaced} frame(s) on images that are not loaded"))
            if p.wrong_size:
                rows.append(ResultRow(f"{p.wrong_size} frame(s) not shown: mask size differs from the image"))
        else:
            name = p.obj.title + (f" ({p.obj.description})" if p.obj.description else "")
            title = f"{obj.kind} · {name}"
            for e in p.entries:
                what = f"{e.entry.group}: {e.entry.name}" if e.entry.group else e.entry.name
                value = e.entry.value if e.entry.kind is not EntryKind.IMAGE else "image"
                rows.append(ResultRow(what, value, e.slices))
        rows.extend(ResultRow(note) for note in obj.notes)
        out.append(ObjectRow(title, status, code, tuple(rows)))
    for f in failures:
        out.append(
            ObjectRow(
                f"{f.kind} · {f.display_name}",
                f"not shown: {describe(f.code)}",
                f.code,
                (ResultRow(f.reason),),
            )
        )
    return out


def _swatch(color: tuple[int, int, int]) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(*color))
    return QIcon(pixmap)


class ResultsPanel(QWidget):
    show_requested = Signal(str, int)
    opacity_changed = Signal(float)
    overlay_toggled = Signal(bool)
    segment_toggled = Signal(str, int, bool)  # SEG SOP Instance UID, segment number, shown

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("resultsPanel")
        self.summary = QLabel("No SEG, SR or presentation state in the opened folders")
        self.summary.setWordWrap(True)
        self.show_box = QCheckBox("Overlays (O)")
        self.show_box.setChecked(True)
        self.show_box.setToolTip("Show segmentations and regions on the image (O)")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setToolTip("Overlay opacity (Shift+O steps it)")
        self.opacity_label = QLabel("")
        self.opacity_label.setFixedWidth(40)
        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(self.show_box)
        controls.addWidget(QLabel("Opacity"))
        controls.addWidget(self.opacity, 1)
        controls.addWidget(self.opacity_label)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Result", "Value", "Where"])
        self.tree.setToolTip("Double-click a row with a slice to show it; untick a segment to hide it")
        self.tree.itemDoubleClicked.connect(self._on_double_click)
        self.tree.itemChanged.connect(self._on_item_changed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.summary)
        layout.addLayout(controls)
        layout.addWidget(self.tree, 1)
        self.show_box.toggled.connect(self.overlay_toggled)
        self.opacity.valueChanged.connect(self._on_opacity)
        self.set_opacity(0.5)
        self._filling = False

    def set_opacity(self, value: float) -> None:
        self.opacity.setValue(round(value * 100))
        self.opacity_label.setText(f"{round(value * 100)} %")

    def _on_opacity(self, value: int) -> None:
        self.opacity_label.setText(f"{value} %")
        self.opacity_changed.emit(value / 100.0)

    def set_rows(self, objects: Sequence[ObjectRow], hidden: set[tuple[str, int]]) -> None:
        self._filling = True
        self.tree.clear()
        shown = sum(1 for o in objects if not o.code)
        self.summary.setText(
            f"{len(objects)} result object(s), {shown} on loaded images"
            if objects
            else "No SEG, SR or presentation state in the opened folders"
        )
        for obj in objects:
            # across the columns: the object, and on a line of its own where it applies (or why it is not
            # shown): on one line, the narrow dock cut every "SEG · Slicewise AI segmentation (…" before
            # the series it belongs to
            top = QTreeWidgetItem(self.tree, [f"{obj.title}\n{obj.status}"])
            top.setData(0, STATUS_ROLE, obj.status)
            top.setFirstColumnSpanned(True)
            font = top.font(0)
            font.setBold(True)
            top.setFont(0, font)
            top.setToolTip(0, f"{obj.title}\n{obj.status}")
            if obj.code:
                top.setForeground(0, QBrush(QColor(WARNING_COLOR)))
            first = next((r.slices[0] for r in obj.rows if r.slices), None)
            if first is not None:
                top.setData(0, TARGET_ROLE, (first.stack_uid, first.index))
            for row in obj.rows:
                item = QTreeWidgetItem(top, [row.what, row.value, slices_text(row.slices)])
                item.setToolTip(0, row.what)
                if row.segment is not None and not row.slices:  # described, but on no loaded image
                    for col in range(3):
                        item.setForeground(col, QBrush(QColor(MUTED_COLOR)))
                    item.setToolTip(0, f"{row.what}: no voxel on any loaded image")
                item.setToolTip(1, row.tip or row.value)
                if row.slices:
                    item.setData(0, TARGET_ROLE, (row.slices[0].stack_uid, row.slices[0].index))
                if row.color is not None:
                    item.setIcon(0, _swatch(row.color))
                if row.segment is not None:
                    item.setData(0, SEGMENT_ROLE, row.segment)
                    item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                    item.setCheckState(
                        0, Qt.CheckState.Unchecked if row.segment in hidden else Qt.CheckState.Checked
                    )
            top.setExpanded(True)
        self._fit_columns()
        self._filling = False

    def _fit_columns(self) -> None:
        """Columns as wide as the rows under the objects need (the object lines span all columns). The
        tree scrolls sideways in a narrower dock rather than widening it: tabbed with the AI findings, a
        listed SEG pushed the right dock from 264 to ~480 px, taking the image's room at 1366 x 768."""
        metrics = self.tree.fontMetrics()
        rows = [c for top in top_items(self.tree) for c in children(top)]
        for col in range(3):
            widest = max((metrics.horizontalAdvance(r.text(col)) for r in rows), default=40)
            self.tree.setColumnWidth(col, min(widest + (COLUMN_SLACK_PX if col == 0 else 16), MAX_COLUMN_PX))

    def _on_double_click(self, item: QTreeWidgetItem, _column: int) -> None:
        target = item.data(0, TARGET_ROLE)
        if target:
            uid, index = target
            self.show_requested.emit(str(uid), int(index))

    def _on_item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        segment = item.data(0, SEGMENT_ROLE)
        if self._filling or column != 0 or not segment:
            return
        uid, number = segment
        self.segment_toggled.emit(str(uid), int(number), item.checkState(0) == Qt.CheckState.Checked)

    def texts(self) -> list[tuple[str, list[tuple[str, str, str]]]]:
        """(top row text, [(what, value, where) of its rows]) for every object, top to bottom."""
        return [
            (
                f"{top.text(0).split('  —  ')[0]} | {top.data(0, STATUS_ROLE)}",
                [(c.text(0), c.text(1), c.text(2)) for c in children(top)],
            )
            for top in top_items(self.tree)
        ]

    def item_for(self, text: str) -> QTreeWidgetItem | None:
        """The first row whose first column starts with ``text``."""
        for top in top_items(self.tree):
            for item in (top, *children(top)):
                if item.text(0).startswith(text):
                    return item
        return None
