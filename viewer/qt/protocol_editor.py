"""View › Hanging protocols…: a non-modal editor of the hanging-protocol table.

The list on the left is the table in matching order (the first protocol that matches a study hangs it;
Up / Down reorder). The form edits the selected protocol: its match (modality, BodyPartExamined values,
description keywords, at least N series), layout, where a prior study goes, and per viewport the series
rule, plane and window preset, and its view (zoom, rotation / flip and slab, as saved from the viewports,
or reset to fitted, unturned and thin). *Save current layout* makes a protocol of what the viewports show
now for this kind of study; *Restore built-ins* gives the defaults back. Nothing is written until *Save*;
a form that does not describe a valid protocol says why and cannot be saved. Closing the editor with
unsaved edits (its title ends in ``*``) asks Save / Discard / Cancel in a non-modal message box
(:attr:`ProtocolEditor.unsaved_prompt`, answered through :meth:`ProtocolEditor.answer_unsaved`). The
model and the file are Qt-free (:mod:`viewer.core.state.hanging`, :mod:`viewer.core.state.protocol_store`);
the window supplies the ``save`` and ``from_view`` callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from viewer.core.errors import SlicewiseError
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.reslice import SlabMode
from viewer.core.state.hanging import HangingProtocol, PriorPlacement, SeriesChoice, ViewportRule
from viewer.core.state.layout import Layout
from viewer.core.state.protocol_store import is_builtin, moved, restore_builtins, with_protocol

MODALITIES = ("*", "CT", "MR", "CR", "DX", "US", "PT", "NM", "MG", "XA", "RF")
PLANES = (Orientation.NATIVE, Orientation.AXIAL, Orientation.CORONAL, Orientation.SAGITTAL)
SERIES_TEXT = {
    SeriesChoice.MAIN: "main series",
    SeriesChoice.BONE: "bone series",
    SeriesChoice.NEXT: "next series",
}
PLANE_TEXT = {
    Orientation.NATIVE: "as acquired",
    Orientation.AXIAL: "axial",
    Orientation.CORONAL: "coronal",
    Orientation.SAGITTAL: "sagittal",
}
PRIOR_TEXT = {
    PriorPlacement.NONE: "not shown",
    PriorPlacement.SIDE_BY_SIDE: "current | prior (1×2, linked)",
    PriorPlacement.LAST_VIEWPORT: "in the last viewport",
}
HEADER_WINDOW = "header window"
DEFAULT_VIEW_TEXT = "fitted, unturned, thin"
KEEP_VIEW, RESET_VIEW = "keep", "reset"  # the View column's choices
SLAB_TEXT = {SlabMode.MIP: "MIP", SlabMode.MINIP: "MinIP", SlabMode.AVERAGE: "average"}
ERROR_STYLE = "color: #ff7b72"
OK_STYLE = "color: #8b949e"

SaveCallback = Callable[[Sequence[HangingProtocol]], str | None]  # None when saved, else why not
FromView = Callable[[str], HangingProtocol]  # raises SlicewiseError when nothing can be made


class UnsavedChoice(str, Enum):
    """The answer to "save the changes?" when the editor is closed with unsaved edits."""

    SAVE = "save"  # save, then close (stays open when the table cannot be saved, saying why)
    DISCARD = "discard"  # close, the edits lost
    CANCEL = "cancel"  # stay open, the edits kept


def view_text(rule: ViewportRule) -> str:
    """A viewport rule's view in words: 'fitted, unturned, thin' or e.g. '0.50 mm/px, 90°, mirrored,
    MIP 10 mm'."""
    if rule.default_view:
        return DEFAULT_VIEW_TEXT
    parts = ["fitted" if rule.zoom is None else f"{rule.zoom:.2f} mm/px"]
    if rule.rotation:
        parts.append(f"{90 * rule.rotation}°")
    if rule.mirror:
        parts.append("mirrored")
    if rule.slab is not None:
        parts.append(f"{SLAB_TEXT[rule.slab.mode]} {rule.slab.thickness_mm:g} mm")
    return ", ".join(parts)


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


def _combo(items: Sequence[tuple[str, object]]) -> QComboBox:
    box = QComboBox()
    for text, data in items:
        box.addItem(text, data)
    return box


def _select(box: QComboBox, data: object) -> None:
    """Select the item holding ``data`` (an enum's value: Qt keeps str enums as plain strings)."""
    box.setCurrentIndex(max(0, box.findData(data.value if isinstance(data, Enum) else data)))


class ProtocolEditor(QDialog):
    """The protocol table's editor (never modal: ``show()``, no ``exec()``)."""

    saved = Signal()

    def __init__(
        self,
        protocols: Sequence[HangingProtocol],
        presets: Sequence[str],
        save: SaveCallback,
        from_view: FromView,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("protocolEditor")
        self.setWindowTitle("Hanging protocols")
        self.setModal(False)
        self.resize(960, 540)
        self._save = save
        self._from_view = from_view
        self._presets = tuple(presets)
        self.protocols: list[HangingProtocol] = list(protocols)
        self._loading = False
        self.dirty = False
        self.unsaved_prompt: QMessageBox | None = None  # the open "save the changes?" question
        self._leaving = False  # closing after Save or Discard: no question
        self.after_close: list[Callable[[], object]] = []  # run once the editor has closed after a question

        self.list = QListWidget()
        self.list.setObjectName("protocolList")
        self.list.currentRowChanged.connect(self._show_row)
        buttons = QHBoxLayout()
        self.new_button = QPushButton("New")
        self.delete_button = QPushButton("Delete")
        self.up_button = QPushButton("Up")
        self.down_button = QPushButton("Down")
        for b in (self.new_button, self.delete_button, self.up_button, self.down_button):
            buttons.addWidget(b)
        self.new_button.clicked.connect(self.new_protocol)
        self.delete_button.clicked.connect(self.delete_protocol)
        self.up_button.clicked.connect(lambda: self.move_selected(-1))
        self.down_button.clicked.connect(lambda: self.move_selected(1))
        left = QVBoxLayout()
        order = QLabel("Protocols in matching order: the first that matches a study hangs it")
        order.setWordWrap(True)
        left.addWidget(order)
        left.addWidget(self.list, 1)
        left.addLayout(buttons)

        self.name = QLineEdit()
        self.modality = QComboBox()
        self.modality.setEditable(True)
        self.modality.addItems(MODALITIES)
        self.body_parts = QLineEdit()
        self.body_parts.setPlaceholderText("BodyPartExamined values, e.g. HEAD, BRAIN")
        self.keywords = QLineEdit()
        self.keywords.setPlaceholderText("words of the study or series description, e.g. head, brain")
        self.min_series = QSpinBox()
        self.min_series.setRange(1, 32)
        self.layout_box = _combo([(layout.value, layout.value) for layout in Layout])
        self.prior = _combo([(text, p.value) for p, text in PRIOR_TEXT.items()])
        self.viewports = QTableWidget(0, 4)
        self.viewports.setObjectName("protocolViewports")
        self.viewports.setHorizontalHeaderLabels(["Series", "Plane", "Window", "View"])
        header = self.viewports.horizontalHeader()  # the view's words are the longest: it takes the rest
        for column in range(3):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.viewports.setMinimumWidth(440)
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Modality", self.modality)
        form.addRow("Body part", self.body_parts)
        form.addRow("Keywords", self.keywords)
        form.addRow("At least … series", self.min_series)
        form.addRow("Layout", self.layout_box)
        form.addRow("Prior study", self.prior)
        form.addRow("Viewports", self.viewports)
        for edit in (self.name, self.body_parts, self.keywords):
            edit.textEdited.connect(self._edited)
        self.modality.currentTextChanged.connect(self._edited)
        self.min_series.valueChanged.connect(self._edited)
        self.prior.currentIndexChanged.connect(self._edited)
        self.layout_box.currentIndexChanged.connect(self._layout_changed)

        self.message = QLabel()
        self.message.setObjectName("protocolMessage")
        self.message.setWordWrap(True)
        self.from_view_button = QPushButton("Save current layout as protocol")
        self.from_view_button.setToolTip("A protocol for this kind of study (modality, body part or "
                                         "description), hanging it as the viewports show it now")
        self.restore_button = QPushButton("Restore built-ins")
        self.save_button = QPushButton("Save")
        self.close_button = QPushButton("Close")
        self.from_view_button.clicked.connect(self.add_from_view)
        self.restore_button.clicked.connect(self.restore_builtins)
        self.save_button.clicked.connect(self.save)
        self.close_button.clicked.connect(self.close)
        bottom = QHBoxLayout()
        for b in (self.from_view_button, self.restore_button):
            bottom.addWidget(b)
        bottom.addStretch(1)
        bottom.addWidget(self.save_button)
        bottom.addWidget(self.close_button)

        top = QHBoxLayout()
        top.addLayout(left, 1)
        top.addLayout(form, 2)
        root = QVBoxLayout(self)
        root.addLayout(top, 1)
        root.addWidget(self.message)
        root.addLayout(bottom)
        self._fill_list(0)

    # --- the list -------------------------------------------------------------------------------
    def _fill_list(self, row: int) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for p in self.protocols:
            self.list.addItem(p.name + ("  (built-in)" if is_builtin(p) else ""))
        self.list.blockSignals(False)
        if self.protocols:
            self.list.setCurrentRow(min(max(row, 0), len(self.protocols) - 1))
        self._show_row(self.list.currentRow())

    def _show_row(self, row: int) -> None:
        enabled = 0 <= row < len(self.protocols)
        for w in (self.name, self.modality, self.body_parts, self.keywords, self.min_series, self.layout_box,
                  self.prior, self.viewports, self.delete_button, self.up_button, self.down_button):
            w.setEnabled(enabled)
        if not enabled:
            return
        p = self.protocols[row]
        self._loading = True
        try:
            self.name.setText(p.name)
            self.modality.setCurrentText(p.modality)
            self.body_parts.setText(", ".join(p.body_parts))
            self.keywords.setText(", ".join(p.keywords))
            self.min_series.setValue(p.min_series)
            _select(self.layout_box, p.layout)
            _select(self.prior, p.prior)
            self._fill_viewports(p.layout, p.viewports)
        finally:
            self._loading = False
        self._say("")

    def _fill_viewports(self, layout: Layout, rules: Sequence[ViewportRule]) -> None:
        self.viewports.setRowCount(layout.viewport_count)
        windows = [(HEADER_WINDOW, None), *((name, name) for name in self._presets)]
        for k in range(layout.viewport_count):
            rule = rules[k] if k < len(rules) else ViewportRule()
            series = _combo([(text, s.value) for s, text in SERIES_TEXT.items()])
            plane = _combo([(PLANE_TEXT[o], o.value) for o in PLANES])
            window = _combo(windows)
            _select(series, rule.series)
            _select(plane, rule.orientation)
            if rule.window is not None and window.findData(rule.window) < 0:
                window.addItem(f"{rule.window} (unknown preset)", rule.window)
            _select(window, rule.window)
            view = _combo([(view_text(rule), KEEP_VIEW)] if rule.default_view else
                          [(view_text(rule), KEEP_VIEW), (DEFAULT_VIEW_TEXT, RESET_VIEW)])
            view.setToolTip("Zoom, rotation / flip and slab: Save current layout as protocol takes them from "
                            "the viewports")
            for column, box in enumerate((series, plane, window, view)):
                box.currentIndexChanged.connect(self._edited)
                self.viewports.setCellWidget(k, column, box)
        self.viewports.setVerticalHeaderLabels([str(k + 1) for k in range(layout.viewport_count)])

    def _cell(self, row: int, column: int) -> QComboBox:
        box = self.viewports.cellWidget(row, column)
        assert isinstance(box, QComboBox)
        return box

    # --- editing --------------------------------------------------------------------------------
    def form_protocol(self) -> HangingProtocol:
        """The protocol the form describes; ValueError (or SlicewiseError) saying why it is none."""
        layout = Layout(self.layout_box.currentData())
        row = self.list.currentRow()
        saved = self.protocols[row].viewports if 0 <= row < len(self.protocols) else ()
        rules = []
        for k in range(self.viewports.rowCount()):
            keep = k < len(saved) and self._cell(k, 3).currentData() == KEEP_VIEW
            view = saved[k] if keep else ViewportRule()
            rules.append(ViewportRule(
                SeriesChoice(self._cell(k, 0).currentData()),
                Orientation(self._cell(k, 1).currentData()),
                self._cell(k, 2).currentData(),
                zoom=view.zoom,
                rotation=view.rotation,
                mirror=view.mirror,
                slab=view.slab,
            ))
        return HangingProtocol(
            name=self.name.text().strip(),
            modality=self.modality.currentText().strip().upper() or "",
            layout=layout,
            viewports=tuple(rules),
            keywords=tuple(w.lower() for w in _words(self.keywords.text())),
            min_series=self.min_series.value(),
            body_parts=tuple(b.upper() for b in _words(self.body_parts.text())),
            prior=PriorPlacement(self.prior.currentData()),
        )

    def _edited(self, *_: object) -> None:
        if self._loading:
            return
        row = self.list.currentRow()
        if not 0 <= row < len(self.protocols):
            return
        try:
            p = self.form_protocol()
        except (ValueError, SlicewiseError) as exc:
            self._set_dirty(True)  # typed but not valid yet: still an edit that closing would lose
            self._say(f"Not a valid protocol: {exc}", error=True)
            return
        if p.name != self.protocols[row].name and any(
            q.name == p.name for k, q in enumerate(self.protocols) if k != row
        ):
            self._set_dirty(True)
            self._say(f"Another protocol is already called {p.name!r}", error=True)
            return
        if p != self.protocols[row]:
            self.protocols[row] = p
            self._set_dirty(True)
            item = self.list.item(row)
            item.setText(p.name + ("  (built-in)" if is_builtin(p) else ""))
        self._say("")

    def _layout_changed(self, *_: object) -> None:
        if self._loading:
            return
        row = self.list.currentRow()
        rules = self.protocols[row].viewports if 0 <= row < len(self.protocols) else ()
        self._loading = True
        try:
            self._fill_viewports(Layout(self.layout_box.currentData()), rules)
        finally:
            self._loading = False
        self._edited()

    def new_protocol(self) -> None:
        names = {p.name for p in self.protocols}
        name = next(f"New protocol {k}" for k in range(1, len(names) + 2) if f"New protocol {k}" not in names)
        self.protocols.insert(0, HangingProtocol(name, "CT", Layout.ONE, (ViewportRule(),),
                                                 keywords=("keyword",)))
        self._set_dirty(True)
        self._fill_list(0)

    def delete_protocol(self) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self.protocols):
            del self.protocols[row]
            self._set_dirty(True)
            self._fill_list(row)

    def move_selected(self, step: int) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self.protocols):
            self.protocols = list(moved(self.protocols, row, step))
            self._set_dirty(True)
            self._fill_list(min(max(row + step, 0), len(self.protocols) - 1))

    def add_from_view(self) -> None:
        """A protocol of what the viewports show now, first in the list (to be named, then saved)."""
        try:
            made = self._from_view("")
        except SlicewiseError as exc:
            self._say(str(exc), error=True)
            return
        self.protocols = list(with_protocol(self.protocols, made))
        self._set_dirty(True)
        self._fill_list(0)
        self._say(f"{made.name!r} added first: name it, check it, then Save")

    def restore_builtins(self) -> None:
        self.protocols = list(restore_builtins())
        self._set_dirty(True)
        self._fill_list(0)
        self._say("The built-in protocols are back; Save keeps them")

    def save(self) -> bool:
        if self.message.property("error"):
            return False
        error = self._save(tuple(self.protocols))
        if error:
            self._say(error, error=True)
            return False
        self._set_dirty(False)
        self._say(f"Saved ({len(self.protocols)} protocols)")
        self.saved.emit()
        return True

    # --- closing -------------------------------------------------------------------------------
    def reject(self) -> None:
        """Close, Esc and the title bar's close all end here (``QDialog.closeEvent`` calls it): with unsaved
        edits, ask first (non-modal) and stay open until answered."""
        if self.dirty and not self._leaving:
            self.ask_unsaved()
            return
        super().reject()

    def ask_unsaved(self) -> QMessageBox:
        """The non-modal "save the changes?" question (Save / Discard / Cancel), or the one already open."""
        if self.unsaved_prompt is not None:
            self.unsaved_prompt.raise_()
            return self.unsaved_prompt
        box = QMessageBox(self)
        box.setObjectName("protocolUnsaved")
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Hanging protocols")
        box.setText("Save the changes to the hanging protocols?")
        box.setInformativeText("Discard closes the editor and loses them.")
        buttons = QMessageBox.StandardButton
        box.setStandardButtons(buttons.Save | buttons.Discard | buttons.Cancel)
        box.setDefaultButton(buttons.Save)
        box.setEscapeButton(buttons.Cancel)
        box.finished.connect(lambda _r, b=box: self.answer_unsaved(_choice_of(b)))
        self.unsaved_prompt = box
        box.open()  # window-modal to the editor, never exec(): the viewer's event loop runs on
        return box

    def answer_unsaved(self, choice: UnsavedChoice) -> bool:
        """Act on the answer: Save (then close; False and open when it cannot be saved), Discard (close),
        Cancel (stay). True when the editor closed."""
        prompt, self.unsaved_prompt = self.unsaved_prompt, None
        if prompt is not None and prompt.isVisible():
            prompt.blockSignals(True)  # answered from code: the box's own finished must not answer again
            prompt.done(0)
        if prompt is not None:
            prompt.deleteLater()
        if choice is UnsavedChoice.CANCEL or (choice is UnsavedChoice.SAVE and not self.save()):
            self.after_close.clear()
            return False
        self._leaving = True
        self.close()
        callbacks, self.after_close = self.after_close, []
        for callback in callbacks:
            callback()
        return True

    # --- feedback -------------------------------------------------------------------------------
    def _set_dirty(self, dirty: bool) -> None:
        self.dirty = dirty
        self.setWindowTitle("Hanging protocols" + (" *" if dirty else ""))

    def _say(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet(ERROR_STYLE if error else OK_STYLE)
        self.message.setProperty("error", error)
        self.save_button.setEnabled(not error)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)


def _choice_of(box: QMessageBox) -> UnsavedChoice:
    """The answer a finished message box gave (closed without a button: Cancel)."""
    button = box.clickedButton()
    standard = box.standardButton(button) if button is not None else QMessageBox.StandardButton.Cancel
    if standard == QMessageBox.StandardButton.Save:
        return UnsavedChoice.SAVE
    if standard == QMessageBox.StandardButton.Discard:
        return UnsavedChoice.DISCARD
    return UnsavedChoice.CANCEL
