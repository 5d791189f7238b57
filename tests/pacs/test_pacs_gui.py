"""The PACS dock and node dialog against the real Orthanc: real widgets (offscreen), real jobs, real
retrieves into the cache, the study opened in the window. Every wait has a timeout."""

from __future__ import annotations

import contextlib
import logging
import stat
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTreeWidgetItem
from pytestqt.qtbot import QtBot

from tests.pacs.conftest import Loaded, controller, dimse_node, kept_sources, web_node
from tests.pacs.orthanc import PASSWORD, USER, free_port
from viewer.core.dicom.model import LoadReport, Stack
from viewer.core.pacs import DicomWebClient, StudyQuery
from viewer.core.pacs.models import RetrieveReport, SeriesMatch
from viewer.core.pacs.secrets import FileSecretStore, SecretBackend
from viewer.qt.main_window import MainWindow
from viewer.qt.pacs.nodes import NodeEntry, NodeProtocol
from viewer.qt.pacs.widgets import SERIES_ROLE

WAIT_MS = 15_000


def add_web_node(win: MainWindow, orthanc: Loaded) -> str:
    controller(win).save_node(NodeEntry(web_node(orthanc.server), NodeProtocol.DICOMWEB), "")
    return "test-orthanc"


def search(qtbot: QtBot, win: MainWindow, patient_name: str) -> None:
    panel = controller(win).panel
    panel.patient_name.setText(patient_name)
    panel.btn_search.click()
    qtbot.waitUntil(lambda: panel.btn_search.isEnabled(), timeout=WAIT_MS)


@pytest.mark.parametrize("protocol", [NodeProtocol.DIMSE, NodeProtocol.DICOMWEB])
def test_search_shows_a_first_page_then_every_study_once(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded, monkeypatch: pytest.MonkeyPatch, protocol: NodeProtocol
) -> None:
    import viewer.core.pacs.dicomweb as dicomweb_module
    import viewer.core.pacs.dimse as dimse_module

    monkeypatch.setattr(dimse_module, "PACS_FIRST_PAGE", 2)
    monkeypatch.setattr(dicomweb_module, "PACS_FIRST_PAGE", 2)
    pacs = controller(window)
    node = dimse_node(orthanc.server) if protocol is NodeProtocol.DIMSE else web_node(orthanc.server)
    pacs.save_node(NodeEntry(node, protocol), "")
    first_pages: list[int] = []
    pacs.panel.results.model().rowsInserted.connect(
        lambda *_: first_pages.append(pacs.panel.results.topLevelItemCount())
    )
    panel = pacs.panel
    panel.patient_id.setText("*")
    panel.btn_search.click()
    qtbot.waitUntil(lambda: panel.btn_search.isEnabled(), timeout=WAIT_MS)
    with DicomWebClient(web_node(orthanc.server)) as web:
        expected = sorted(m.study_uid for m in web.find_studies(StudyQuery(patient_id="*")))
    rows = [panel.results.topLevelItem(k) for k in range(panel.results.topLevelItemCount())]
    assert sorted(str(item.data(0, Qt.ItemDataRole.UserRole)) for item in rows if item) == expected
    assert panel.status.text() == f"{len(expected)} studies found"
    if protocol is NodeProtocol.DIMSE:  # C-FIND: the first page always comes first
        assert first_pages[0] == 2, first_pages


def test_add_node_test_connection_and_secret_kept_out_of_settings(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded
) -> None:
    pacs = controller(window)
    dialog = pacs.show_nodes()
    server = orthanc.server
    # a DICOMweb node with basic auth, typed into the dialog
    dialog.name.setText("orthanc-web")
    dialog.protocol.setCurrentText(NodeProtocol.DICOMWEB.value)
    dialog.url.setText(server.dicomweb_url)
    dialog.auth.setCurrentText("basic")
    dialog.username.setText(USER)
    dialog.secret.setText(PASSWORD)
    dialog.btn_save.click()
    assert pacs.panel.node.findText("orthanc-web") >= 0
    dialog.btn_test.click()
    qtbot.waitUntil(lambda: dialog.btn_test.isEnabled(), timeout=WAIT_MS)
    assert dialog.result_label.text().startswith("Connection OK"), dialog.result_label.text()
    assert " ms" in dialog.result_label.text()

    # the wrong password: an authentication failure, said as such
    dialog.secret.setText("wrong-password")
    dialog.btn_test.click()
    qtbot.waitUntil(lambda: dialog.btn_test.isEnabled(), timeout=WAIT_MS)
    text = dialog.result_label.text()
    assert text.startswith("Connection failed") and ("401" in text or "authenticat" in text.lower()), text

    # a DIMSE node: C-ECHO OK, then a port where nothing listens
    dialog.btn_new.click()
    dialog.name.setText("orthanc-dimse")
    dialog.protocol.setCurrentText(NodeProtocol.DIMSE.value)
    node = dimse_node(server)
    dialog.host.setText(node.host)
    dialog.port.setValue(node.port)
    dialog.called_ae.setText(node.called_ae)
    dialog.calling_ae.setText(node.calling_ae)
    dialog.btn_test.click()
    qtbot.waitUntil(lambda: dialog.btn_test.isEnabled(), timeout=WAIT_MS)
    assert dialog.result_label.text().startswith("Connection OK"), dialog.result_label.text()
    dead = free_port()
    dialog.port.setValue(dead)
    dialog.btn_test.click()
    qtbot.waitUntil(lambda: dialog.btn_test.isEnabled(), timeout=WAIT_MS)
    text = dialog.result_label.text()
    assert text.startswith("Connection failed") and f"127.0.0.1:{dead}" in text, text

    # the password is in the 0600 secret file (no keyring backend here), never in the settings file
    window.settings.sync()
    settings_text = window.settings.path.read_text()
    assert "orthanc-web" in settings_text and server.dicomweb_url in settings_text
    assert PASSWORD not in settings_text
    secrets = pacs.nodes.secrets
    assert secrets.backend is SecretBackend.FILE and isinstance(secrets, FileSecretStore)
    assert PASSWORD in secrets.path.read_text()
    assert stat.S_IMODE(secrets.path.stat().st_mode) == 0o600
    assert "file only you can read" in dialog.secret_note.text()
    # a saved node comes back with its secret; removing it removes the secret too
    entry = pacs.nodes.get("orthanc-web")
    assert entry is not None and entry.node.secret == PASSWORD
    (listed,) = dialog.node_list.findItems("orthanc-web", Qt.MatchFlag.MatchExactly)
    dialog.node_list.setCurrentItem(listed)
    assert dialog.name.text() == "orthanc-web" and dialog.secret.text() == PASSWORD
    dialog.btn_remove.click()
    assert pacs.nodes.names() == []
    assert PASSWORD not in secrets.path.read_text()


def test_node_dialog_shows_only_the_chosen_protocols_fields(window: MainWindow) -> None:
    """Seen in the node dialog: a DICOMweb node showed "Host", "Port 104", "Called AE ANY-SCP",
    "Calling AE", "Receive port 11112" (disabled, drawn as enabled by the dark style) as if they were
    its settings, and a DIMSE node showed HTTP authentication."""
    dialog = controller(window).show_nodes()

    def shown() -> set[str]:
        fields = {
            "url": dialog.url, "host": dialog.host, "port": dialog.port, "called": dialog.called_ae,
            "calling": dialog.calling_ae, "receive": dialog.receive_port, "auth": dialog.auth,
            "user": dialog.username, "secret": dialog.secret,
        }
        return {name for name, w in fields.items() if w.isVisibleTo(dialog)}

    dialog.protocol.setCurrentText(NodeProtocol.DICOMWEB.value)
    dialog.auth.setCurrentText("none")
    assert shown() == {"url", "auth"}
    dialog.auth.setCurrentText("basic")
    assert shown() == {"url", "auth", "user", "secret"}
    dialog.username.setText(USER)
    dialog.secret.setText(PASSWORD)
    dialog.protocol.setCurrentText(NodeProtocol.DIMSE.value)
    assert shown() == {"host", "port", "called", "calling"}
    dialog.protocol.setCurrentText(NodeProtocol.DIMSE_MOVE.value)
    assert shown() == {"host", "port", "called", "calling", "receive"}
    dialog.name.setText("dimse")
    dialog.host.setText("127.0.0.1")
    node = dialog.entry().node  # the hidden DICOMweb password is not kept with a DIMSE node
    assert node.auth.value == "none" and node.username == "" and node.secret == ""


def test_search_by_wildcard_lists_study_and_series(qtbot: QtBot, window: MainWindow, orthanc: Loaded) -> None:
    pacs = controller(window)
    add_web_node(window, orthanc)
    search(qtbot, window, "SYN*")
    item = pacs.panel.study_item(orthanc.demo_study_uid)
    assert item is not None, pacs.panel.status.text()
    assert item.text(1) == "SYNTH-0001" and item.text(2) == "2026-01-01" and item.text(4) == "CT"
    item.setExpanded(True)
    qtbot.waitUntil(lambda: item.childCount() == 1, timeout=WAIT_MS)
    series = item.child(0).data(0, SERIES_ROLE)
    assert isinstance(series, SeriesMatch) and series.series_uid == orthanc.demo_series_uid
    assert item.child(0).text(0) == f"Se 2 · Head 5mm (synthetic) · CT · {len(orthanc.demo_files)} images"

    search(qtbot, window, "NOBODY*")
    assert pacs.panel.results.topLevelItemCount() == 0
    assert pacs.panel.status.text() == "0 studies found"


def test_bad_date_and_unreachable_node_are_shown_in_the_dock(qtbot: QtBot, window: MainWindow) -> None:
    pacs = controller(window)
    node = dimse_node_at_dead_port()
    pacs.save_node(NodeEntry(node, NodeProtocol.DIMSE), "")
    pacs.panel.date_from.setText("2026-13-01")
    pacs.panel.btn_search.click()
    assert "From date '2026-13-01' is not YYYY-MM-DD" in pacs.panel.status.text()
    pacs.panel.date_from.clear()
    search(qtbot, window, "SYN*")
    text = pacs.panel.status.text()
    assert text.startswith("Search failed: Cannot connect to the PACS at 127.0.0.1:"), text


def test_listed_studies_belong_to_the_node_they_were_found_on(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded
) -> None:
    """Seen in the dock at 1366x768: after a search on one node, choosing a node whose server is down and
    searching left the first node's studies listed under it with "Search failed: …", and Retrieve (or
    expanding a study) asked the node now chosen for them."""
    pacs = controller(window)
    panel = pacs.panel
    add_web_node(window, orthanc)
    pacs.save_node(NodeEntry(dimse_node_at_dead_port(), NodeProtocol.DIMSE), "")  # type: ignore[arg-type]
    panel.node.setCurrentText("test-orthanc")
    search(qtbot, window, "SYN*")
    study = panel.study_item(orthanc.demo_study_uid)
    assert study is not None, panel.status.text()
    panel.results.setCurrentItem(study)
    panel.node.setCurrentText("dead")  # chosen, not searched yet: the list is still test-orthanc's
    with (
        qtbot.waitSignal(pacs.retrieve_finished, timeout=WAIT_MS),
        qtbot.waitSignal(panel.retrieve_requested, timeout=WAIT_MS) as asked,
    ):
        panel.btn_retrieve.click()
    assert asked.args is not None and asked.args[0] == "test-orthanc"
    search(qtbot, window, "SYN*")  # on the dead node
    assert panel.status.text().startswith("Search failed: Cannot connect"), panel.status.text()
    assert panel.results.topLevelItemCount() == 0


def test_an_expanded_study_shows_its_series_in_view(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded
) -> None:
    """Seen at 1366x768: expanding the last study of the list added its series below the list's bottom
    edge: the study turned its arrow down and nothing else changed until the list was scrolled; in the
    narrow dock the series line was cut before its image count, with no tooltip."""
    window.resize(1366, 768)
    window.show()
    pacs = controller(window)
    pacs.show_query()
    add_web_node(window, orthanc)
    search(qtbot, window, "*")
    panel = pacs.panel
    results = panel.results
    last = results.topLevelItem(results.topLevelItemCount() - 1)
    assert last is not None and results.topLevelItemCount() >= 5
    results.scrollToItem(last)
    qtbot.waitUntil(lambda: results.viewport().rect().contains(results.visualItemRect(last)), timeout=WAIT_MS)
    last.setExpanded(True)
    qtbot.waitUntil(lambda: last.childCount() >= 1, timeout=WAIT_MS)
    child = last.child(0)
    assert results.viewport().rect().contains(results.visualItemRect(child)), results.visualItemRect(child)
    assert child.toolTip(0) == child.text(0) and child.text(0).endswith(("image", "images"))


def dimse_node_at_dead_port() -> object:
    from viewer.core.pacs.node import PacsNode

    return PacsNode("dead", host="127.0.0.1", port=free_port(), called_ae="ORTHANC", connect_timeout_s=2)


def _select_series(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded, protocol: NodeProtocol = NodeProtocol.DICOMWEB
) -> QTreeWidgetItem:
    pacs = controller(window)
    pacs.show_query()
    assert pacs.dock.isVisible()
    if protocol is NodeProtocol.DICOMWEB:
        add_web_node(window, orthanc)
    else:  # C-MOVE: Orthanc knows CLIENT_AET at scp_port (tests/pacs/orthanc.py)
        pacs.save_node(NodeEntry(dimse_node(orthanc.server), protocol, orthanc.server.scp_port), "")
    search(qtbot, window, "SYNTH*")
    study = pacs.panel.study_item(orthanc.demo_study_uid)
    assert study is not None
    study.setExpanded(True)
    qtbot.waitUntil(lambda: study.childCount() == 1, timeout=WAIT_MS)
    child = study.child(0)
    pacs.panel.results.setCurrentItem(child)
    assert pacs.panel.btn_retrieve.isEnabled()
    return child


@pytest.mark.parametrize("protocol", list(NodeProtocol))
def test_retrieve_series_shows_progress_and_opens_the_study(
    qtbot: QtBot,
    window: MainWindow,
    orthanc: Loaded,
    protocol: NodeProtocol,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    pacs = controller(window)
    _select_series(qtbot, window, orthanc, protocol)
    with qtbot.waitSignal(window.load_finished, timeout=WAIT_MS) as loaded:
        pacs.panel.btn_retrieve.click()
        job = pacs._retrieve
        assert job is not None
        assert pacs.panel.progress.isVisible() and pacs.panel.btn_cancel.isEnabled()
    n = len(orthanc.demo_files)
    assert (pacs.panel.progress.value(), pacs.panel.progress.maximum()) == (n, n)
    report = loaded.args[0]
    assert [len(s.slices) for s in report.all_stacks()] == [n] and not report.skipped
    assert window.current_stack() is not None
    assert pacs.panel.status.text() == f"{n} instances in 1 series"
    # C-MOVE went through the window's own Storage SCP, still listening for the next retrieve
    assert (pacs._receivers is not None) is (protocol is NodeProtocol.DIMSE_MOVE)
    assert not pacs.panel.progress.isVisible() and not pacs.panel.btn_cancel.isEnabled()
    # the files are in the bounded cache, under names without patient data or UIDs
    assert len(kept_sources(pacs.cache.root)) == n
    files = sorted(pacs.cache.root.rglob("*"))
    assert all("SYNTH" not in str(f) and orthanc.demo_study_uid not in str(f) for f in files)
    # search, series query and retrieve logged no patient name or ID
    assert caplog.records and not [r for r in caplog.records if "SYNTH" in r.getMessage()]


def test_closing_the_window_mid_retrieve_stops_the_job(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded
) -> None:
    pacs = controller(window)
    _select_series(qtbot, window, orthanc)
    pacs.panel.btn_retrieve.click()
    job = pacs._retrieve
    assert job is not None and job.is_running()
    window.close()  # about_to_close -> cancel and wait (bounded)
    assert job.is_cancelled() and job.wait(WAIT_MS) and not job.is_running()


def test_cancel_mid_retrieve_stops_it_and_keeps_what_arrived(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded
) -> None:
    pacs = controller(window)
    _select_series(qtbot, window, orthanc)
    opened: list[LoadReport] = []
    window.load_finished.connect(opened.append)
    with qtbot.waitSignal(pacs.retrieve_finished, timeout=WAIT_MS) as finished:
        pacs.panel.btn_retrieve.click()
        job = pacs._retrieve
        assert job is not None
        # the Cancel button's action, run on the first arrived instance (in the job's thread, so the
        # retrieve cannot have finished before it)
        job.progress.connect(lambda _d, _t: job.cancel(), Qt.ConnectionType.DirectConnection)
    reports: list[RetrieveReport] = finished.args[0]
    assert len(reports) == 1 and reports[0].cancelled
    assert 1 <= len(reports[0].instances) < len(orthanc.demo_files)
    assert pacs.panel.status.text().startswith("Retrieve cancelled")
    assert not pacs.panel.btn_cancel.isEnabled()
    # what arrived before the cancel stays on screen: it opens as far as it got
    qtbot.waitUntil(lambda: bool(opened), timeout=WAIT_MS)
    (stack,) = opened[0].all_stacks()
    assert len(stack) == len(reports[0].instances) and window.current_stack() is not None
    assert window._preview is None and not window.is_loading()


@pytest.mark.parametrize("protocol", list(NodeProtocol))
def test_a_retrieved_series_streams_into_the_preview(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded, monkeypatch: pytest.MonkeyPatch, protocol: NodeProtocol
) -> None:
    """While a series arrives the preview grows (sorted by position, the window showing each size), the
    reader's slice kept by position across each update and into the loaded series; by DICOMweb, C-GET
    and C-MOVE (into the viewer's Storage SCP). The 0.5 s throttle is off here (the demo series arrives
    in a fraction of a second) and the retrieve's thread waits, at each instance, until the window has
    taken the last preview (the job's own gate then lets the next one go), so every size is seen
    whatever the machine's speed."""
    import threading

    from PySide6.QtCore import QTimer

    import viewer.qt.workers as workers
    from viewer.core.geometry.stack import slice_position_mm

    monkeypatch.setattr(workers, "PREVIEW_INTERVAL_S", 0.0)
    monkeypatch.setattr(workers, "PROGRESS_INTERVAL_S", 0.0)
    taken = threading.Event()  # set once the window's slot for the last preview has returned
    pacs = controller(window)
    _select_series(qtbot, window, orthanc, protocol)
    n = len(orthanc.demo_files)
    view = window.view
    places: list[float] = []  # the reader's position (mm) before each update
    sizes: list[int] = []
    problems: list[str] = []

    def here() -> float:
        assert view.context is not None
        position = slice_position_mm(view.context.stack, view.index)
        assert position is not None
        return position

    def first(stack: Stack) -> None:  # after the controller's slot: the window shows it
        sizes.append(len(stack))
        places.append(here())
        QTimer.singleShot(0, taken.set)  # after the job's own handler has returned too

    def arrived(done: int, _total: int) -> None:  # in the retrieve's thread, before its next preview
        if done >= 2 and taken.wait(WAIT_MS / 1000):
            taken.clear()

    def grown(stack: Stack, arrived: int, expected: int) -> None:
        sizes.append(len(stack))
        positions = [slice_position_mm(stack, k) for k in range(len(stack))]
        if positions != sorted(p for p in positions if p is not None):
            problems.append(f"not sorted by position: {positions}")
        if view.count() != len(stack) or window.current_stack() is not None:
            problems.append(f"the view shows {view.count()} slices, not the {len(stack)}-slice preview")
        if abs(here() - places[-1]) > 1e-6:
            problems.append(f"the reader's slice moved from {places[-1]} to {here()} mm")
        if window.statusBar().currentMessage() != f"Receiving… {arrived} of {expected} slices":
            problems.append(f"status {window.statusBar().currentMessage()!r}")
        view.set_index(len(stack) // 3)  # the reader scrolls (the loaded series would open at slice 0)
        places.append(here())
        QTimer.singleShot(0, taken.set)

    with qtbot.waitSignal(window.load_finished, timeout=WAIT_MS):
        pacs.panel.btn_retrieve.click()
        job = pacs._retrieve
        assert job is not None
        job.first_image.connect(first)
        job.preview_grown.connect(grown)
        job.progress.connect(arrived, Qt.ConnectionType.DirectConnection)
    assert not problems, problems
    # the first image, then a preview one instance bigger each time; the last holds the whole series
    assert sizes == list(range(1, n + 1)), sizes
    loaded = window.current_stack()
    assert loaded is not None and len(loaded) == n and window._preview is None
    assert abs(here() - places[-1]) < 1e-6  # the loaded series opened where the reader was


def _upload_study_with_a_scout_first(orthanc: Loaded, folder: Path) -> tuple[str, str]:
    """A study of three CT series, numbered in the order a scanner stores them: a 2-image topogram
    (LOCALIZER), a 2-image dose report, the 8-slice head series. Returns (study UID, head series UID)."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    from tests.factories import write_ct_series

    study = generate_uid()
    series = [
        write_ct_series(
            folder / description, n, rows=32, columns=32, study_uid=study, patient_name="STREAM^MAIN",
            series_description=description,
        )
        for description, n in (("Topogram 0.6 T20s", 2), ("Dose Report", 2), ("Head 5mm", 8))
    ]
    topogram, _dose, head = series
    for number, paths in enumerate(series, start=1):
        for path in paths:
            ds = dcmread(path)
            ds.SeriesNumber = number
            if paths is topogram:
                ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            ds.save_as(path, enforce_file_format=True)
    orthanc.server.upload([path for paths in series for path in paths])
    return study, str(dcmread(head[0], stop_before_pixels=True).SeriesInstanceUID)


def test_the_main_series_is_retrieved_first_and_streams(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The series query said which series is the main one (the most instances, not a localizer): it is
    retrieved first, though the topogram and the dose report come first in the query's answer, so its
    first slice is the first image on screen and it grows to the whole series (the reader never watches
    the topogram); the loaded study opens on it where the reader was. The retrieve's thread waits, at
    each instance, until the window has taken the last preview (the job's gate)."""
    import viewer.qt.workers as workers
    from viewer.core.geometry.stack import slice_position_mm

    monkeypatch.setattr(workers, "PREVIEW_INTERVAL_S", 0.0)
    monkeypatch.setattr(workers, "PROGRESS_INTERVAL_S", 0.0)
    study, main = _upload_study_with_a_scout_first(orthanc, tmp_path)
    try:
        with DicomWebClient(web_node(orthanc.server)) as web:  # what the query answers, in stored order
            series = sorted(web.find_series(study), key=lambda s: s.series_number or 0)
        assert [s.num_instances for s in series] == [2, 2, 8] and series[-1].series_uid == main
        pacs = controller(window)
        pacs.show_query()
        add_web_node(window, orthanc)
        view = window.view
        events: list[tuple[str, str, int]] = []  # (signal, series shown by the view, slices)
        problems: list[str] = []
        places: list[float | None] = []  # the reader's position (mm) after each growth

        def here() -> float | None:
            return slice_position_mm(view.context.stack, view.index) if view.context is not None else None

        def shown() -> str:
            return view.context.stack.series_instance_uid if view.context is not None else ""

        def first(stack: Stack) -> None:
            events.append(("first", shown(), len(stack)))

        def grown(stack: Stack, arrived: int, expected: int) -> None:
            events.append(("grown", shown(), len(stack)))
            if view.count() != len(stack) or window.current_stack() is not None or expected != 8:
                problems.append(f"the view shows {view.count()} slices, not the {len(stack)}-slice preview")
            view.set_index(len(stack) // 3)  # the reader scrolls
            places.append(here())

        with qtbot.waitSignal(pacs.retrieve_finished, timeout=WAIT_MS):
            job = pacs.retrieve("test-orthanc", study, series)
            assert job is not None
            job.first_image.connect(first)
            job.preview_grown.connect(grown)
            gate = job._preview_absorbed  # set once the window's slots for the last preview returned
            job.progress.connect(lambda *_: gate.wait(WAIT_MS / 1000), Qt.ConnectionType.DirectConnection)
        # the further series are listed as they arrive (each its own load); the main series loads last
        qtbot.waitUntil(
            lambda: not window.is_loading() and window.current_stack() is not None, timeout=WAIT_MS
        )
        assert not problems, problems
        assert events == [("first", main, 1)] + [("grown", main, m) for m in range(2, 9)], events
        loaded = window.current_stack()
        assert loaded is not None and loaded.series_instance_uid == main and len(loaded) == 8
        assert places[-1] is not None and here() == places[-1]  # opened where the reader was
    finally:
        orthanc.server.delete_study(study)


def _upload_study_with_a_multi_frame_series(orthanc: Loaded, folder: Path) -> tuple[str, str, str, str, int]:
    """A study of three series: an 8-slice head CT (the main series), a 3-slice bone series and one
    enhanced MR instance of several frames (pydicom's J2K lossless file, re-labelled into the study).
    Returns (study UID, head, bone, multi-frame series UIDs, frames of the multi-frame instance)."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    from tests.factories import CANARY_ID, write_ct_series

    study = generate_uid()
    head = write_ct_series(
        folder / "head", 8, rows=32, columns=32, study_uid=study, patient_name="STREAM^MORE"
    )
    bone = write_ct_series(
        folder / "bone", 3, rows=32, columns=32, study_uid=study, patient_name="STREAM^MORE",
        series_description="Bone 1mm",
    )
    mf = dcmread(get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))
    mf.StudyInstanceUID = study
    mf.SeriesInstanceUID = generate_uid()
    mf.SOPInstanceUID = mf.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    mf.PatientName, mf.PatientID = "STREAM^MORE", CANARY_ID
    mf_path = folder / "mf.dcm"
    mf.save_as(mf_path, enforce_file_format=True)
    orthanc.server.upload([*head, *bone, mf_path])
    uid = [str(dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID) for paths in (head, bone)]
    return study, uid[0], uid[1], str(mf.SeriesInstanceUID), int(mf.NumberOfFrames)


@pytest.mark.parametrize("protocol", [NodeProtocol.DICOMWEB, NodeProtocol.DIMSE])
def test_further_series_are_listed_as_they_arrive_and_progress_counts_frames(
    qtbot: QtBot,
    window: MainWindow,
    orthanc: Loaded,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    protocol: NodeProtocol,
) -> None:
    """While a study arrives, its main series streams into the preview and each further series is listed
    in the browser as soon as it has arrived (the preview stays on screen, the retrieve still running);
    the end loads only the main series, shown where the reader is; every series is listed once. The
    progress counts frames: the multi-frame instance counts its frames, not one. The retrieve's thread
    waits, after each further series, until the browser lists it (a gate, so no timing decides)."""
    import threading

    import viewer.qt.workers as workers

    monkeypatch.setattr(workers, "PROGRESS_INTERVAL_S", 0.0)
    study, head, bone, multi, frames = _upload_study_with_a_multi_frame_series(orthanc, tmp_path)
    try:
        with DicomWebClient(web_node(orthanc.server)) as web:
            series = web.find_series(study)
        assert sorted(s.num_instances or 0 for s in series) == [1, 3, 8]
        window.settings.hang_on_open = False  # the loaded main series replaces its preview (no protocol)
        pacs = controller(window)
        pacs.show_query()
        if protocol is NodeProtocol.DICOMWEB:
            name = add_web_node(window, orthanc)
        else:
            pacs.save_node(NodeEntry(dimse_node(orthanc.server), protocol), "")
            name = "test-orthanc"
        listed = threading.Condition()
        seen: list[tuple[frozenset[str], bool, bool]] = []  # (series listed, retrieving, preview shown)
        progress: list[tuple[int, int]] = []

        def loaded(_report: LoadReport) -> None:
            with listed:
                shown = window._preview is not None and window.view.volume is window._preview
                uids = frozenset(s.series_instance_uid for s in window.loaded_stacks())
                seen.append((uids, pacs._retrieve is not None, shown))
                listed.notify_all()

        def arrived(report: RetrieveReport) -> None:  # in the retrieve's thread: wait until it is listed
            with listed:
                listed.wait_for(
                    lambda: any(report.series_uid in uids for uids, _r, _p in seen), WAIT_MS / 1000
                )

        window.load_finished.connect(loaded)
        with qtbot.waitSignal(pacs.retrieve_finished, timeout=WAIT_MS):
            job = pacs.retrieve(name, study, series)
            assert job is not None
            job.series_arrived.connect(arrived, Qt.ConnectionType.DirectConnection)
            job.progress.connect(lambda done, total: progress.append((done, total)))
        qtbot.waitUntil(
            lambda: not window.is_loading() and window.current_stack() is not None, timeout=WAIT_MS
        )
        # the two further series, each listed while the retrieve ran and the main series' preview showed
        assert len(seen) == 3, seen
        (first, *_), (second, *_), (end, *_) = seen
        assert len(first) == 1 and first < {bone, multi} and second == {bone, multi}, seen
        assert [(r, p) for _u, r, p in seen[:2]] == [(True, True), (True, True)], seen
        assert end == {head, bone, multi}  # the end: the main series joins
        stacks = window.loaded_stacks()
        assert sorted(len(s) for s in stacks) == sorted([3, frames, 8])  # each series once, a frame a slice
        current = window.current_stack()
        assert current is not None and current.series_instance_uid == head and window._preview is None
        assert progress[-1] == (8 + 3 + frames, 8 + 3 + frames), progress[-3:]
    finally:
        orthanc.server.delete_study(study)


def test_secrets_never_in_settings_with_a_token(window: MainWindow, tmp_path: Path) -> None:
    from viewer.core.pacs.node import AuthKind, PacsNode

    pacs = controller(window)
    node = PacsNode(
        "token-node",
        dicomweb_url="https://pacs.example/dicom-web",
        auth=AuthKind.BEARER,
        secret="tok-123-secret",
    )
    pacs.save_node(NodeEntry(node, NodeProtocol.DICOMWEB), "")
    window.settings.sync()
    assert "tok-123-secret" not in window.settings.path.read_text()
    assert "token-node" in window.settings.path.read_text()
    entry = pacs.nodes.get("token-node")
    assert entry is not None and entry.node.secret == "tok-123-secret"


def _open_bleed_study(qtbot: QtBot, window: MainWindow, tmp_path: Path) -> None:
    """The window's AI on the tiny test model, and a 12-slice head CT that it flags (slices 5-6) shown."""
    from tests.core.inference_models import build_model, write_bleed_series

    ai = window.ai_controller
    assert ai is not None
    ai.set_model_path(build_model(tmp_path / "tiny.onnx"))
    ai.set_provider("cpu")
    write_bleed_series(tmp_path / "head", 12, (5, 6))
    with qtbot.waitSignal(window.load_finished, timeout=WAIT_MS):
        window.open_paths([tmp_path / "head"])
    qtbot.waitUntil(lambda: window.current_stack() is not None, timeout=WAIT_MS)


def test_send_ai_result_back_lists_each_object(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded, tmp_path: Path
) -> None:
    """Analyze a stack with the real (tiny) model, send its AI SR + KOS to Orthanc by STOW-RS: each
    object's outcome is listed and Orthanc holds them, filed with the study (identity included)."""
    pacs = controller(window)
    ai = window.ai_controller
    assert ai is not None
    add_web_node(window, orthanc)
    pacs.panel.btn_send.click()  # nothing analysed yet
    assert pacs.panel.status.text() == "No AI result to send: analyze a stack first"

    _open_bleed_study(qtbot, window, tmp_path)
    ai.analyze()
    qtbot.waitUntil(lambda: ai.prediction() is not None, timeout=WAIT_MS)
    study_uid = window.current_stack().study_instance_uid  # type: ignore[union-attr]
    try:
        with qtbot.waitSignal(pacs.send_finished, timeout=WAIT_MS) as sent:
            pacs.panel.btn_send.click()
        outcomes = sent.args[0]
        assert len(outcomes) >= 1 and all(o.ok for o in outcomes), pacs.panel.status.text()
        lines = pacs.panel.status.text().splitlines()
        assert lines[0] == f"Sent {len(outcomes)} of {len(outcomes)} objects to test-orthanc:"
        assert "SR: stored (status 0x0000)" in lines
        for o in outcomes:  # in the PACS, in the analysed study
            assert orthanc.server.lookup(o.sop_instance_uid, "Instance")
        with DicomWebClient(web_node(orthanc.server)) as web:
            assert [m.study_uid for m in web.find_studies(StudyQuery(study_uid=study_uid))] == [study_uid]
        assert not any((Path(window.settings.path).parent / "pacs-outbox").rglob("*.dcm"))  # cleaned up
    finally:
        with contextlib.suppress(Exception):
            orthanc.server.delete_study(study_uid)


def test_send_review_sends_the_review_sr_with_the_ai_result_it_references(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded, tmp_path: Path
) -> None:
    """A reviewed study: Send review stores the reader's review SR and the AI SR + KOS it references in
    the PACS (identity included, the review SR's evidence naming the stored AI SR)."""
    pacs = controller(window)
    ai, review = window.ai_controller, window.review_controller
    assert ai is not None and review is not None
    add_web_node(window, orthanc)
    pacs.panel.btn_send_review.click()  # no session yet
    assert pacs.panel.status.text() == "No review to send: open a review session and a study first"

    _open_bleed_study(qtbot, window, tmp_path)
    assert review.new_session("PACS review") is not None
    ai.analyze()
    qtbot.waitUntil(lambda: (s := review.current_study()) is not None and s.ai is not None, timeout=WAIT_MS)
    study_uid = window.current_stack().study_instance_uid  # type: ignore[union-attr]
    try:
        with qtbot.waitSignal(pacs.send_finished, timeout=WAIT_MS) as sent:
            pacs.panel.btn_send_review.click()
        outcomes = sent.args[0]
        assert len(outcomes) >= 2 and all(o.ok for o in outcomes), pacs.panel.status.text()
        lines = pacs.panel.status.text().splitlines()
        assert "SR (reader review): stored (status 0x0000)" in lines and "SR: stored (status 0x0000)" in lines
        stored = {o.sop_instance_uid for o in outcomes}
        srs = []
        for uid in stored:
            instance = orthanc.server.lookup(uid, "Instance")
            data = orthanc.server.request("GET", f"/instances/{instance}/simplified-tags")
            assert data["StudyInstanceUID"] == study_uid  # filed with the analysed study
            if data.get("Modality") == "SR":
                srs.append(data)
        (reader_sr,) = [d for d in srs if "reader review" in d.get("SeriesDescription", "")]
        (ai_sr,) = [d for d in srs if d is not reader_sr]
        evidence = [
            inst["ReferencedSOPInstanceUID"]
            for item in reader_sr["CurrentRequestedProcedureEvidenceSequence"]
            for series in item["ReferencedSeriesSequence"]
            for inst in series["ReferencedSOPSequence"]
        ]
        assert ai_sr["SOPInstanceUID"] in evidence  # the review's reference resolves in the PACS
    finally:
        with contextlib.suppress(Exception):
            orthanc.server.delete_study(study_uid)


def test_the_first_image_is_shown_while_the_study_arrives(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded
) -> None:
    """The retrieve job hands over the first image instance as soon as it is in the cache (before the
    study is complete); the window shows it as a preview until the study is loaded."""
    from pydicom import dcmread

    from viewer.qt.workers import PacsRetrieveJob

    pacs = controller(window)
    add_web_node(window, orthanc)
    entry = pacs.nodes.get("test-orthanc")
    assert entry is not None
    job = PacsRetrieveJob(lambda: pacs._client(entry), pacs.cache, orthanc.demo_study_uid, [], window)
    seen: list[tuple[object, bool, int]] = []
    progress: list[int] = []
    job.progress.connect(lambda done, _total: progress.append(done))
    job.first_image.connect(
        lambda stack: seen.append((stack, window.show_preview(stack, "First image"), len(progress)))
    )
    with qtbot.waitSignal(job.done, timeout=WAIT_MS):
        job.start()
    assert len(seen) == 1
    stack, shown, arrived_before = seen[0]
    uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in orthanc.demo_files}
    assert len(stack.slices) == 1 and stack.slices[0].sop_instance_uid in uids  # type: ignore[attr-defined]
    assert shown and arrived_before < len(orthanc.demo_files)  # shown before the study had arrived
    assert window.view.volume is not None and window.current_stack() is None  # a preview, not a stack
    window.end_preview()
    assert window.view.volume is None
