"""The PACS widgets: the node editor (a non-modal dialog) and the query panel (a dock).

They hold no threads and no clients: :mod:`viewer.qt.pacs.controller` connects their signals to jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from PySide6.QtCore import Qt, Signal, SignalInstance
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt import QFlowLayout

from viewer.core.constants import PACS_DEFAULT_CALLING_AE, PACS_FIRST_PAGE
from viewer.core.errors import PacsConfigError
from viewer.core.pacs.models import SeriesMatch, StudyMatch, StudyQuery
from viewer.core.pacs.node import AuthKind, PacsNode
from viewer.qt.pacs.compact_rows import CompactRows, joined
from viewer.qt.pacs.nodes import DEFAULT_RECEIVE_PORT, NodeEntry, NodeProtocol
from viewer.qt.texts import patient_name_text, plural

STUDY_COLUMNS = ("Patient", "Patient ID", "Date", "Description", "Modality", "Series")
UID_ROLE = Qt.ItemDataRole.UserRole
SERIES_ROLE = Qt.ItemDataRole.UserRole + 1
COLUMN_CAP_PX = 140  # a PACS list's column at most this wide: longer texts end in '…' (tooltip: in full)
ELIDED_COLUMNS = (0, 3)  # patient and description: the texts that run long, given tooltips


DATE_EDIT_SLACK_PX = 26  # a line edit's frame, padding (style sheet) and text margins around a date


def date_range_row(first: QWidget, last: QWidget) -> QFlowLayout:
    """``first`` "to" ``last`` on one line, or "to" ``last`` on the next in a narrow dock."""
    row = QFlowLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(first)
    tail = QWidget()
    tail_row = QHBoxLayout(tail)
    tail_row.setContentsMargins(0, 0, 0, 0)
    tail_row.addWidget(QLabel("to"))
    tail_row.addWidget(last)
    row.addWidget(tail)
    return row


def narrow_form(form: QFormLayout) -> QFormLayout:
    """A form for a narrow dock: a label goes above its field when both do not fit side by side."""
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    return form


def _dicom_date(text: str) -> str:
    return f"{text[0:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def study_lines(texts: Sequence[str]) -> tuple[str, str]:
    """A study row in a narrow dock (:class:`~viewer.qt.pacs.compact_rows.CompactRows`): patient and ID;
    date, modality, description and series count (``texts``: the :data:`STUDY_COLUMNS`)."""
    patient, patient_id, day, description, modality, series = texts
    return joined(patient, patient_id), joined(
        day, modality, description, f"{series} series" if series else ""
    )


def series_label(s: SeriesMatch) -> str:
    """``Se 2 · Head 5mm · CT · 32 images``: what a series row says."""
    parts = [
        "" if s.series_number is None else f"Se {s.series_number}",
        s.series_description,
        s.modality,
        "" if s.num_instances is None else plural(s.num_instances, "image"),
    ]
    return " · ".join(p for p in parts if p)



NODE_NAME_CHARS = 10  # a node chooser is at least this many characters wide; longer names end in '…'


def node_chooser() -> QComboBox:
    """A node chooser that narrows with its dock (a long node name is cut, in full in the list)."""
    combo = QComboBox()
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(NODE_NAME_CHARS)
    combo.currentTextChanged.connect(combo.setToolTip)
    return combo


def set_node_names(combo: QComboBox, names: list[str]) -> None:
    """Fill a node chooser with ``names``, keeping the chosen node when it is still there."""
    current = combo.currentText()
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)


class NodeDialog(QDialog):
    """Add, edit, remove PACS nodes and test a connection. Shown with ``show()`` (never ``exec()``)."""

    save_requested = Signal(object, str)  # NodeEntry, name of the node it replaces ('' = new)
    remove_requested = Signal(str)
    test_requested = Signal(object)  # NodeEntry

    def __init__(self, secret_note: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("PACS nodes")
        self.setModal(False)
        self.node_list = QListWidget()
        self.name = QLineEdit()
        self.protocol = QComboBox()
        self.protocol.addItems([p.value for p in NodeProtocol])
        self.url = QLineEdit()
        self.url.setPlaceholderText("http://pacs:8042/dicom-web")
        self.host = QLineEdit()
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(104)
        self.called_ae = QLineEdit("ANY-SCP")
        self.calling_ae = QLineEdit(PACS_DEFAULT_CALLING_AE)
        self.receive_port = QSpinBox()
        self.receive_port.setRange(1, 65535)
        self.receive_port.setValue(DEFAULT_RECEIVE_PORT)
        self.receive_port.setToolTip(
            "C-MOVE: the port Slicewise listens on for the PACS to send to (the PACS must know the calling"
            " AE title with this computer's address and this port)"
        )
        self.auth = QComboBox()
        self.auth.addItems([a.value for a in AuthKind])
        self.username = QLineEdit()
        self.secret = QLineEdit()
        self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.secret.setPlaceholderText("password or token")
        self.btn_new = QPushButton("New")
        self.btn_save = QPushButton("Save")
        self.btn_remove = QPushButton("Remove")
        self.btn_test = QPushButton("Test connection")
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.secret_note = QLabel(secret_note)
        self.secret_note.setWordWrap(True)
        self._editing = ""

        form = self.form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Protocol", self.protocol)
        form.addRow("DICOMweb URL", self.url)
        form.addRow("Host", self.host)
        form.addRow("Port", self.port)
        form.addRow("Called AE", self.called_ae)
        form.addRow("Calling AE", self.calling_ae)
        form.addRow("Receive port", self.receive_port)
        form.addRow("Authentication", self.auth)
        form.addRow("User name", self.username)
        form.addRow("Password / token", self.secret)
        buttons = QHBoxLayout()
        for b in (self.btn_new, self.btn_save, self.btn_remove, self.btn_test):
            buttons.addWidget(b)
        right = QVBoxLayout()
        right.addLayout(form)
        right.addLayout(buttons)
        right.addWidget(self.result_label)
        right.addWidget(self.secret_note)
        right.addStretch(1)
        layout = QHBoxLayout(self)
        layout.addWidget(self.node_list, 1)
        layout.addLayout(right, 2)

        self.protocol.currentTextChanged.connect(self._show_fields)
        self.auth.currentTextChanged.connect(self._show_fields)
        self._show_fields()
        self.btn_new.clicked.connect(self.clear_form)
        self.btn_save.clicked.connect(self._save)
        self.btn_remove.clicked.connect(self._remove)
        self.btn_test.clicked.connect(self._test)

    def _show_fields(self, _text: str = "") -> None:
        """Only the fields of the chosen protocol and authentication are shown: disabled, a DICOMweb
        node's "Port 104" and "Called AE ANY-SCP" looked like its settings (the dark style draws a
        disabled field as an enabled one). Authentication is DICOMweb's (HTTP) only."""
        text = self.protocol.currentText()
        web = text == NodeProtocol.DICOMWEB.value
        auth = self.auth.currentText()
        self.form.setRowVisible(self.url, web)
        for w in (self.host, self.port, self.called_ae, self.calling_ae):
            self.form.setRowVisible(w, not web)
        self.form.setRowVisible(self.receive_port, text == NodeProtocol.DIMSE_MOVE.value)
        self.form.setRowVisible(self.auth, web)
        self.form.setRowVisible(self.username, web and auth == AuthKind.BASIC.value)
        self.form.setRowVisible(self.secret, web and auth != AuthKind.NONE.value)

    # --- form <-> entry ---------------------------------------------------------------------------
    def clear_form(self) -> None:
        self._editing = ""
        self.node_list.setCurrentRow(-1)
        for w in (self.name, self.url, self.host, self.username, self.secret):
            w.clear()
        self.port.setValue(104)
        self.receive_port.setValue(DEFAULT_RECEIVE_PORT)
        self.called_ae.setText("ANY-SCP")
        self.calling_ae.setText(PACS_DEFAULT_CALLING_AE)
        self.auth.setCurrentText(AuthKind.NONE.value)
        self.result_label.clear()

    def show_entry(self, entry: NodeEntry) -> None:
        n = entry.node
        self._editing = n.name
        self.name.setText(n.name)
        self.protocol.setCurrentText(entry.protocol.value)
        self.url.setText(n.dicomweb_url)
        self.host.setText(n.host)
        self.port.setValue(n.port)
        self.receive_port.setValue(entry.receive_port)
        self.called_ae.setText(n.called_ae)
        self.calling_ae.setText(n.calling_ae)
        self.auth.setCurrentText(n.auth.value)
        self.username.setText(n.username)
        self.secret.setText(n.secret)
        self.result_label.clear()

    def entry(self) -> NodeEntry:
        """The form as a node; :class:`PacsConfigError` says what is missing or invalid."""
        name = self.name.text().strip()
        if not name:
            raise PacsConfigError("The node needs a name")
        protocol = NodeProtocol(self.protocol.currentText())
        url = self.url.text().strip()
        host = self.host.text().strip()
        if protocol is NodeProtocol.DICOMWEB and not url:
            raise PacsConfigError(f"PACS {name!r}: DICOMweb needs a URL")
        if protocol.is_dimse and not host:
            raise PacsConfigError(f"PACS {name!r}: DIMSE needs a host")
        web = protocol is NodeProtocol.DICOMWEB  # authentication (hidden for DIMSE) is DICOMweb's only
        node = PacsNode(
            name=name,
            host=host,
            port=self.port.value(),
            called_ae=self.called_ae.text().strip(),
            calling_ae=self.calling_ae.text().strip(),
            dicomweb_url=url,
            auth=AuthKind(self.auth.currentText()) if web else AuthKind.NONE,
            username=self.username.text().strip() if web else "",
            secret=self.secret.text() if web else "",
        )
        return NodeEntry(node, protocol, self.receive_port.value())

    def set_result(self, text: str, ok: bool) -> None:
        self.result_label.setText(text)
        self.result_label.setStyleSheet("color: #6c6;" if ok else "color: #e66;")

    # --- buttons ----------------------------------------------------------------------------------
    def _save(self) -> None:
        try:
            entry = self.entry()
        except PacsConfigError as exc:
            self.set_result(str(exc), ok=False)
            return
        self.save_requested.emit(entry, self._editing)
        self._editing = entry.name

    def _remove(self) -> None:
        if self._editing:
            self.remove_requested.emit(self._editing)
            self.clear_form()

    def _test(self) -> None:
        try:
            entry = self.entry()
        except PacsConfigError as exc:
            self.set_result(str(exc), ok=False)
            return
        self.set_result("Testing…", ok=True)
        self.btn_test.setEnabled(False)
        self.test_requested.emit(entry)


class QueryPanel(QWidget):
    """Query fields, the results tree (studies, their series as children), retrieve with progress."""

    search_requested = Signal(str, object)  # node name, StudyQuery
    series_requested = Signal(str, str)  # node name, study UID
    retrieve_requested = Signal(str, str, object)  # node name, study UID, list[SeriesMatch] ([] = all)
    cancel_requested = Signal()
    send_requested = Signal(str)  # node name
    send_review_requested = Signal(str)  # node name
    edit_nodes_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.node = node_chooser()
        self.btn_nodes = QPushButton("Nodes…")
        self.patient_name = QLineEdit()
        self.patient_name.setPlaceholderText("e.g. SMITH*")
        self.patient_name.setToolTip("Patient name; * and ? are wildcards (SMITH* finds SMITH^JOHN)")
        self.patient_id = QLineEdit()
        self.date_from = QLineEdit()
        self.date_from.setPlaceholderText("YYYY-MM-DD")
        self.date_to = QLineEdit()
        self.date_to.setPlaceholderText("YYYY-MM-DD")
        for edit in (self.date_from, self.date_to):  # a whole date always fits
            edit.setFixedWidth(edit.fontMetrics().horizontalAdvance("YYYY-MM-DD") + DATE_EDIT_SLACK_PX)
        self.modality = QComboBox()
        self.modality.setEditable(True)
        self.modality.addItems(["", "CT", "MR", "CR", "DX", "US", "PT", "NM", "XA", "MG"])
        self.accession = QLineEdit()
        self.description = QLineEdit()
        self.btn_search = QPushButton("Search")
        self.btn_search.setDefault(True)
        self.results = QTreeWidget()
        self._first_page: set[str] = set()  # the studies of the first page on screen, while searching
        self.results_node = ""  # the node the listed studies are on: they are expanded and retrieved from it
        self.results.setHeaderLabels(list(STUDY_COLUMNS))
        self.results.setRootIsDecorated(True)
        self.results.setUniformRowHeights(True)
        # columns sized from the first rows (and those on screen), not from all of them: filling 1,000
        # rows took 0.07-0.13 s with Qt's default of 1,000 rows, 0.03 s so; capped (cap_columns), and in a
        # dock too narrow for them, each study on two lines instead (CompactRows)
        self.results.header().setResizeContentsPrecision(PACS_FIRST_PAGE)
        self.compact_rows = CompactRows(self.results, study_lines, COLUMN_CAP_PX)
        self.btn_retrieve = QPushButton("Retrieve")
        self.btn_retrieve.setEnabled(False)
        self.btn_cancel = QPushButton("Cancel")
        self.btn_cancel.setEnabled(False)
        self.btn_send = QPushButton("Send AI result")
        self.btn_send.setToolTip(
            "Send the shown AI result (AI Result SR and key images), with the patient's identity,"
            " to this PACS"
        )
        self.btn_send_review = QPushButton("Send review")
        self.btn_send_review.setToolTip(
            "Send the reader's review SR of the shown study, with the AI result it reviews (AI Result SR and"
            " key images), with the patient's identity, to this PACS"
        )
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m instances")
        self.progress.hide()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        node_row = QHBoxLayout()
        node_row.addWidget(self.node, 1)
        node_row.addWidget(self.btn_nodes)
        form = narrow_form(QFormLayout())
        form.addRow("PACS", node_row)
        form.addRow("Patient name", self.patient_name)
        form.addRow("Patient ID", self.patient_id)
        form.addRow("Study date", date_range_row(self.date_from, self.date_to))
        form.addRow("Modality", self.modality)
        form.addRow("Accession", self.accession)
        form.addRow("Description", self.description)
        actions = QFlowLayout()  # the buttons wrap onto a second line in a narrow dock
        actions.setContentsMargins(0, 0, 0, 0)
        for button in (self.btn_retrieve, self.btn_cancel, self.btn_send, self.btn_send_review):
            actions.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(form)
        layout.addWidget(self.btn_search)
        layout.addWidget(self.results, 1)
        layout.addLayout(actions)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

        self.btn_search.clicked.connect(self._search)
        for edit in (self.patient_name, self.patient_id, self.accession, self.description):
            edit.returnPressed.connect(self._search)
        self.btn_nodes.clicked.connect(self.edit_nodes_requested)
        self.btn_retrieve.clicked.connect(self._retrieve)
        self.btn_cancel.clicked.connect(self.cancel_requested)
        self.btn_send.clicked.connect(lambda: self._send(self.send_requested))
        self.btn_send_review.clicked.connect(lambda: self._send(self.send_review_requested))
        self.results.itemExpanded.connect(self._expanded)
        self.results.itemSelectionChanged.connect(self._selection_changed)

    # --- nodes ------------------------------------------------------------------------------------
    def set_nodes(self, names: list[str]) -> None:
        set_node_names(self.node, names)
        self.btn_search.setEnabled(bool(names))
        if not names:
            self.show_message("Add a PACS node (Nodes…) to search.", ok=True)

    # --- query ------------------------------------------------------------------------------------
    def query(self) -> StudyQuery:
        """The form as a query; ValueError names a malformed date."""

        def day(edit: QLineEdit, what: str) -> date | None:
            text = edit.text().strip()
            if not text:
                return None
            try:
                return date.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{what} date {text!r} is not YYYY-MM-DD") from None

        return StudyQuery(
            patient_name=self.patient_name.text().strip(),
            patient_id=self.patient_id.text().strip(),
            date_from=day(self.date_from, "From"),
            date_to=day(self.date_to, "To"),
            modality=self.modality.currentText().strip().upper(),
            accession_number=self.accession.text().strip(),
            study_description=self.description.text().strip(),
        )

    def _search(self) -> None:
        if not self.node.currentText():
            self.show_message("No PACS node chosen: add one with Nodes…", ok=False)
            return
        try:
            query = self.query()
        except ValueError as exc:
            self.show_message(str(exc), ok=False)
            return
        self.show_message("Searching…", ok=True)
        self._first_page = set()
        # the list is this search's answer only: another node's studies (of an earlier search) were left
        # listed under a node whose search failed, and Retrieve asked the node now chosen for them
        self.results.clear()
        self.results_node = self.node.currentText()
        self.btn_search.setEnabled(False)
        self.search_requested.emit(self.node.currentText(), query)

    def show_first_studies(self, studies: list[StudyMatch]) -> None:
        """The first page of a search's matches, while the rest are on their way (Search stays off)."""
        self.results.clear()
        self._add_study_rows(studies)
        self._first_page = {s.study_uid for s in studies}
        self.show_message(f"{len(studies)} studies so far, searching on…", ok=True)

    def show_studies(self, studies: list[StudyMatch]) -> None:
        """Every match of a search: after a first page, only the studies not listed yet are added."""
        self.btn_search.setEnabled(True)
        listed, self._first_page = self._first_page, set()
        if listed and listed == self._listed_uids():  # the first page is on screen: add the rest
            self._add_study_rows([s for s in studies if s.study_uid not in listed])
        else:
            self.results.clear()
            self._add_study_rows(studies)
        self.show_message(f"{len(studies)} studies found", ok=True)

    def _listed_uids(self) -> set[str]:
        return {
            str(item.data(0, UID_ROLE))
            for k in range(self.results.topLevelItemCount())
            if (item := self.results.topLevelItem(k)) is not None
        }

    def _add_study_rows(self, studies: list[StudyMatch]) -> None:
        items = []
        for s in studies:
            item = QTreeWidgetItem(
                [
                    patient_name_text(s.patient_name),
                    s.patient_id,
                    _dicom_date(s.study_date),
                    s.study_description,
                    "/".join(s.modalities),
                    "" if s.num_series is None else str(s.num_series),
                ]
            )
            item.setData(0, UID_ROLE, s.study_uid)
            item.setChildIndicatorPolicy(QTreeWidgetItem.ChildIndicatorPolicy.ShowIndicator)
            for col in ELIDED_COLUMNS:
                item.setToolTip(col, item.text(col))
            items.append(item)
        self.results.addTopLevelItems(items)
        self.compact_rows.fit()

    def study_item(self, study_uid: str) -> QTreeWidgetItem | None:
        for k in range(self.results.topLevelItemCount()):
            item = self.results.topLevelItem(k)
            if item is not None and item.data(0, UID_ROLE) == study_uid:
                return item
        return None

    def show_series(self, study_uid: str, series: list[SeriesMatch]) -> None:
        parent = self.study_item(study_uid)
        if parent is None:
            return
        parent.takeChildren()
        for s in sorted(series, key=lambda m: (m.series_number is None, m.series_number or 0)):
            child = QTreeWidgetItem([series_label(s)])
            child.setData(0, UID_ROLE, s.study_uid)
            child.setData(0, SERIES_ROLE, s)
            child.setToolTip(0, child.text(0))  # in full: a narrow dock cuts the image count off
            parent.addChild(child)
            child.setFirstColumnSpanned(True)  # one readable line, however narrow the dock
        parent.setChildIndicatorPolicy(QTreeWidgetItem.ChildIndicatorPolicy.DontShowIndicatorWhenChildless)
        last = parent.child(parent.childCount() - 1)
        if parent.isExpanded() and last is not None:  # the series in view (they arrived below the list's
            self.results.scrollToItem(last)  # edge, out of sight, at 1366x768)
            self.results.scrollToItem(parent)  # and the study itself, when the list is short

    def _expanded(self, item: QTreeWidgetItem) -> None:
        if item.parent() is None and item.childCount() == 0 and self.results_node:
            self.series_requested.emit(self.results_node, str(item.data(0, UID_ROLE)))

    def _selection_changed(self) -> None:
        self.btn_retrieve.setEnabled(bool(self.results.selectedItems()) and not self.btn_cancel.isEnabled())

    # --- retrieve ---------------------------------------------------------------------------------
    def _retrieve(self) -> None:
        selected = self.results.selectedItems()
        if not selected or not self.results_node:
            return
        study_uid = str(selected[0].data(0, UID_ROLE))
        series = [
            s
            for item in selected
            if isinstance(s := item.data(0, SERIES_ROLE), SeriesMatch) and s.study_uid == study_uid
        ]
        if any(item.parent() is None and item.data(0, UID_ROLE) == study_uid for item in selected):
            series = []  # the study row selected: every series
        self.retrieve_requested.emit(self.results_node, study_uid, series)

    def _send(self, signal: SignalInstance) -> None:
        if not self.node.currentText():
            self.show_message("No PACS node chosen: add one with Nodes…", ok=False)
            return
        signal.emit(self.node.currentText())

    def set_retrieving(self, running: bool) -> None:
        self.btn_cancel.setEnabled(running)
        self.btn_retrieve.setEnabled(not running and bool(self.results.selectedItems()))
        self.progress.setVisible(running)
        if running:
            self.progress.setRange(0, 0)

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def show_message(self, text: str, ok: bool) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("" if ok else "color: #e66;")
        if not ok:
            self.btn_search.setEnabled(self.node.count() > 0)
