"""Studies from a PACS in the main window: File › Query PACS… and File › PACS worklist… (two tabs of one
dock) and File › PACS nodes… (a dialog).

Every PACS operation runs as a job (:mod:`viewer.qt.workers`) with a client made on the job's thread.
Retrieved series land in the bounded :class:`~viewer.core.pacs.InstanceCache` and are then opened with
``window.open_paths`` like any folder, with their source (this node, by name and protocol, and the
series) so a review session gets them again from the PACS (:meth:`PacsController.study_locator`), not
from cache folders that eviction removes. Errors are shown in the dock (the PACS messages name the
node, never a patient); the log gets only their type.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from datetime import date
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QTabWidget

from viewer.core.errors import PacsConfigError, StudySourceError
from viewer.core.location import SourceKind, SourceRef
from viewer.core.pacs.models import SeriesMatch, StoreOutcome, StudyQuery
from viewer.core.pacs.preview import receiving_text
from viewer.core.pacs.secrets import SecretStore
from viewer.core.paths import user_data_path
from viewer.core.review.fileutil import private_dir
from viewer.qt.actions import ActionSpec
from viewer.qt.pacs.nodes import NodeEntry, NodeProtocol, NodeStore, make_client
from viewer.qt.pacs.widgets import NodeDialog, QueryPanel
from viewer.qt.pacs.worklist_panel import WorklistPanel
from viewer.qt.texts import plural
from viewer.qt.workers import PacsCallJob, PacsRetrieveJob, PacsSearchJob, PacsWorklistJob

if TYPE_CHECKING:
    from viewer.core.dicom.model import Stack
    from viewer.core.pacs import InstanceCache, PacsClient, RetrieveReport
    from viewer.core.pacs.dimse import StorageScpPool
    from viewer.core.pacs.locator import PacsStudyLocator

logger = logging.getLogger(__name__)

JOB_WAIT_MS = 10_000  # how long closing the window waits for a PACS job to stop


class PacsController(QObject):
    """Owns the PACS dock, the node dialog, the node store and the running PACS jobs of one window."""

    retrieve_finished = Signal(object)  # list[RetrieveReport]
    send_finished = Signal(object)  # list[StoreOutcome] ([] when the send failed as a whole)
    worklist_finished = Signal(object)  # list[WorklistRow] ([] when the refresh failed)

    def __init__(
        self, window: Any, secrets: SecretStore | None = None, cache: InstanceCache | None = None
    ) -> None:
        super().__init__(window)
        self.window = window
        self.nodes = NodeStore(window.settings, secrets)
        self._cache = cache
        self.panel = QueryPanel()
        self.worklist = WorklistPanel()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.panel, "Query")
        self.tabs.addTab(self.worklist, "Worklist")
        # on the left, tabbed with the Studies browser when first shown (studies come from here): the right
        # side's tabs (AI findings, worklist, review, results) keep their full titles, and neither side
        # widens past its panels
        self.dock = window.add_dock(self.tabs, "PACS", Qt.DockWidgetArea.LeftDockWidgetArea)
        self.dock.hide()
        self.dialog: NodeDialog | None = None
        self._jobs: list[Any] = []
        self._retrieve: PacsRetrieveJob | None = None
        self._search_job: PacsSearchJob | None = None
        self._worklist_job: PacsWorklistJob | None = None
        self._receivers: StorageScpPool | None = None  # C-MOVE destinations, created on first use
        self._receivers_lock = threading.Lock()
        self._closing = False

        self.panel.search_requested.connect(self.search)
        self.panel.series_requested.connect(self.list_series)
        self.panel.retrieve_requested.connect(self.retrieve)
        self.panel.cancel_requested.connect(self.cancel_retrieve)
        self.panel.edit_nodes_requested.connect(self.show_nodes)
        self.panel.send_requested.connect(self.send_ai_result)
        self.panel.send_review_requested.connect(self.send_review)
        self.worklist.refresh_requested.connect(self.refresh_worklist)
        self.worklist.cancel_requested.connect(self.cancel_worklist)
        self.worklist.open_requested.connect(self.open_from_worklist)
        window.add_action(
            ActionSpec(
                "pacs_query",
                "Query PACS…",
                self.show_query,
                section="File",
                help="Search a PACS and retrieve studies",
            )
        )
        window.add_action(
            ActionSpec(
                "pacs_worklist",
                "PACS worklist…",
                self.show_worklist,
                section="File",
                help="Today's CT heads from the PACS, AI-positive first",
            )
        )
        window.add_action(
            ActionSpec(
                "pacs_nodes",
                "PACS nodes…",
                self.show_nodes,
                section="File",
                help="Add, edit and test PACS connections",
            )
        )
        menu = window.menu("File")
        first = menu.actions()[0] if menu.actions() else None
        for action_id in ("pacs_query", "pacs_worklist", "pacs_nodes"):
            menu.insertAction(first, window.actions_registry.action(action_id))
        if first is not None:
            menu.insertSeparator(first)
        window.about_to_close.connect(self.shutdown)
        # studies in use (on screen, being retrieved, under review) are pinned in the cache: never evicted
        self._pinned: set[Path] = set()
        self._opening: set[Path] = set()  # retrieved, handed to the window, not loaded yet
        window.load_finished.connect(self._loaded)
        window.stacks_closed.connect(self.refresh_pins)
        review = getattr(window, "review_controller", None)
        if review is not None:
            review.study_changed.connect(self.refresh_pins)
        self.refresh_nodes()

    @property
    def cache(self) -> InstanceCache:
        if self._cache is None:
            from viewer.core.pacs import InstanceCache

            self._cache = InstanceCache()
        return self._cache

    # --- pins -------------------------------------------------------------------------------------
    def studies_in_use(self) -> set[Path]:
        """The cache folders of the PACS studies this window uses: open stacks retrieved from a node,
        the review session's current study (when recorded from a PACS), the retrieve running now and a
        retrieved study not loaded yet."""
        folders = set(self._opening)
        window = self.window
        for stack in window.loaded_stacks():
            source = window.stack_source(stack.uid)
            if source is not None and source.is_pacs:
                folders.add(self.cache.study_folder(source.node, stack.study_instance_uid))
        review = getattr(window, "review_controller", None)
        study = review.current_study() if review is not None else None
        if study is not None and study.source.is_pacs:
            folders.add(self.cache.study_folder(study.source.node, study.study_uid))
        job = self._retrieve
        if job is not None and job.source is not None:
            folders.add(self.cache.study_folder(job.source.node, job.study_uid))
        return folders

    def refresh_pins(self, *_args: object) -> None:
        """Pin what the window uses now in the cache, release what it no longer uses (a closed study)."""
        wanted = self.studies_in_use() if not self._closing else set()
        for folder in wanted - self._pinned:
            self.cache.pin(folder)
        for folder in self._pinned - wanted:
            self.cache.unpin(folder)
        self._pinned = wanted

    def _loaded(self, _report: object) -> None:
        self._opening.clear()  # loaded (or failed): its stacks now say whether it is in use
        self.refresh_pins()

    # --- nodes ------------------------------------------------------------------------------------
    def refresh_nodes(self) -> None:
        names = self.nodes.names()
        self.panel.set_nodes(names)
        self.worklist.set_nodes(names)
        if self.dialog is not None:
            self.dialog.node_list.clear()
            self.dialog.node_list.addItems(names)

    def show_nodes(self) -> NodeDialog:
        if self.dialog is None:
            self.dialog = NodeDialog(self.nodes.secrets.describe(), self.window)
            self.dialog.save_requested.connect(self.save_node)
            self.dialog.remove_requested.connect(self.remove_node)
            self.dialog.test_requested.connect(self.test_node)
            self.dialog.node_list.currentTextChanged.connect(self._pick_node)
            self.refresh_nodes()
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog

    def _pick_node(self, name: str) -> None:
        entry = self.nodes.get(name) if name else None
        if entry is not None and self.dialog is not None:
            self.dialog.show_entry(entry)

    def save_node(self, entry: NodeEntry, replaces: str) -> None:
        try:
            self.nodes.save(entry, replaces=replaces or None)
        except PacsConfigError as exc:
            if self.dialog is not None:
                self.dialog.set_result(str(exc), ok=False)
            return
        self.refresh_nodes()
        if self.dialog is not None:
            self.dialog.set_result(f"Saved {entry.name!r}", ok=True)

    def remove_node(self, name: str) -> None:
        self.nodes.remove(name)
        self.refresh_nodes()

    def node_kinds(self) -> dict[str, SourceKind]:
        """Each configured node's name and the protocol Slicewise uses with it."""
        return {e.name: e.source_kind for e in self.nodes.entries()}

    def study_locator(self) -> PacsStudyLocator:
        """Gets a study again from the PACS node it was retrieved from, through this window's cache (only
        what the cache evicted is retrieved again). The nodes are read now, on the GUI thread; a source
        naming a node no longer configured fails with a :class:`StudySourceError` saying so."""
        from viewer.core.pacs.locator import PacsStudyLocator

        entries = {e.name: e for e in self.nodes.entries()}

        def connect(source: SourceRef) -> PacsClient:
            entry = entries.get(source.node)
            if entry is None:
                raise StudySourceError(
                    f"PACS node “{source.node}” is no longer configured (File › PACS nodes…): the study "
                    "cannot be retrieved again"
                )
            return self._client(entry)

        return PacsStudyLocator(connect, self.cache)

    def test_node(self, entry: NodeEntry) -> PacsCallJob:
        job = self._start(entry, lambda client: client.echo())
        dialog = self.dialog

        def done(seconds: float) -> None:
            if dialog is not None:
                dialog.btn_test.setEnabled(True)
                dialog.set_result(
                    f"Connection OK ({entry.address()}): {float(seconds) * 1000:.0f} ms", ok=True
                )

        def failed(message: str) -> None:
            if dialog is not None:
                dialog.btn_test.setEnabled(True)
                dialog.set_result(f"Connection failed: {message}", ok=False)

        job.done.connect(done)
        job.failed.connect(failed)
        job.start()
        return job

    # --- query ------------------------------------------------------------------------------------
    def show_query(self) -> None:
        self._show_dock()
        self.tabs.setCurrentWidget(self.panel)
        self.panel.patient_name.setFocus()

    def show_worklist(self) -> None:
        self._show_dock()
        self.tabs.setCurrentWidget(self.worklist)

    def _show_dock(self) -> None:
        """Show the dock in front; the first time, as a tab of the Studies dock when both are on the left
        (tabbed at start-up, while the window was being laid out, Qt left copies of the tab bar drawn
        over the status bar). A dock the reader moved elsewhere (saved window state) stays there."""
        w = self.window
        left = Qt.DockWidgetArea.LeftDockWidgetArea
        browser = getattr(w, "browser_dock", None)
        if (
            browser is not None
            and not self.dock.isFloating()
            and w.dockWidgetArea(self.dock) == left
            and w.dockWidgetArea(browser) == left
            and browser not in w.tabifiedDockWidgets(self.dock)
        ):
            w.tabifyDockWidget(browser, self.dock)
        self.dock.show()
        self.dock.raise_()

    def _client(self, entry: NodeEntry) -> PacsClient:
        """A client for ``entry`` (called on worker threads); C-MOVE nodes share the window's Storage
        SCPs, started on first use and stopped with the window."""
        with self._receivers_lock:
            if entry.protocol is NodeProtocol.DIMSE_MOVE and self._receivers is None:
                from viewer.core.pacs.dimse import StorageScpPool

                self._receivers = StorageScpPool()
            receivers = self._receivers
        return make_client(entry, receivers)

    def _entry(self, name: str) -> NodeEntry | None:
        entry = self.nodes.get(name)
        if entry is None:
            self.panel.show_message(f"No PACS node named {name!r}", ok=False)
        return entry

    def _start(self, entry: NodeEntry, call: Any) -> PacsCallJob:
        job = PacsCallJob(partial(self._client, entry), call, self)
        self._track(job)
        return job

    def _track(self, job: Any) -> None:
        self._jobs.append(job)
        job.done.connect(lambda _r, j=job: self._forget(j))
        job.failed.connect(lambda _m, j=job: self._forget(j))

    def _forget(self, job: Any) -> None:
        if job in self._jobs:
            self._jobs.remove(job)

    def search(self, name: str, query: StudyQuery) -> PacsSearchJob | None:
        """Query the node on a worker thread; the table shows the first page of matches while the rest
        arrive (when the node can tell them early), then every match. Only the latest search's
        answers reach the table."""
        entry = self._entry(name)
        if entry is None:
            return None
        job = PacsSearchJob(partial(self._client, entry), query, self)
        self._track(job)
        self._search_job = job

        def current(handler: Any) -> Any:
            return lambda value: handler(value) if self._search_job is job else None

        job.first_page.connect(current(self.panel.show_first_studies))
        job.done.connect(current(self.panel.show_studies))
        job.failed.connect(
            current(lambda message: self.panel.show_message(f"Search failed: {message}", ok=False))
        )
        job.start()
        return job

    def list_series(self, name: str, study_uid: str) -> PacsCallJob | None:
        entry = self._entry(name)
        if entry is None:
            return None
        job = self._start(entry, lambda client: client.find_series(study_uid))
        job.done.connect(lambda series: self.panel.show_series(study_uid, series))
        job.failed.connect(
            lambda message: self.panel.show_message(f"Series query failed: {message}", ok=False)
        )
        job.start()
        return job

    # --- worklist ---------------------------------------------------------------------------------
    def refresh_worklist(
        self, name: str, date_from: date, date_to: date, head_only: bool = True
    ) -> PacsWorklistJob | None:
        """The CT heads of the date range with their AI results from the PACS, on a worker thread."""
        if self._worklist_job is not None:
            self.worklist.show_message("A worklist refresh is already running", ok=False)
            return None
        entry = self.nodes.get(name)
        if entry is None:
            self.worklist.show_message(f"No PACS node named {name!r}", ok=False)
            return None

        job = PacsWorklistJob(partial(self._client, entry), self.cache, date_from, date_to, head_only, self)
        self._worklist_job = job
        self._track(job)
        job.progress.connect(self.worklist.set_progress)
        job.done.connect(self._worklist_done)
        job.failed.connect(self._worklist_failed)
        self.worklist.set_running(True, "studies")
        self.worklist.show_message("Reading the worklist and its AI results…", ok=True)
        job.start()
        return job

    def cancel_worklist(self) -> None:
        if self._worklist_job is not None:
            self._worklist_job.cancel()
            self.worklist.show_message("Cancelling…", ok=True)
        elif self._retrieve is not None:
            self.cancel_retrieve()

    def _worklist_done(self, rows: list[Any]) -> None:
        job, self._worklist_job = self._worklist_job, None
        self.worklist.set_running(False)
        self.worklist.show_rows(rows)
        if job is not None and job.is_cancelled():
            self.worklist.show_message(f"Refresh cancelled: {len(rows)} studies read", ok=False)
        self.worklist_finished.emit(rows)

    def _worklist_failed(self, message: str) -> None:
        self._worklist_job = None
        self.worklist.set_running(False)
        self.worklist.show_message(f"Worklist failed: {message}", ok=False)
        self.worklist_finished.emit([])

    def open_from_worklist(self, name: str, study_uid: str) -> PacsRetrieveJob | None:
        """Retrieve the whole study by the query tab's path and open it (a study without an AI result is
        analysed on open, as any study)."""
        job = self.retrieve(name, study_uid, [])
        if job is None:
            self.worklist.show_message(self.panel.status.text(), ok=False)
            return None
        self.worklist.set_running(True, "images")  # frames: a multi-frame instance counts each
        job.progress.connect(self.worklist.set_progress)

        def finished(ok: bool) -> None:
            self.worklist.set_running(False)
            self.worklist.show_message(self.panel.status.text(), ok=ok)

        job.done.connect(lambda reports: finished(all(r.complete for r in reports) and bool(reports)))
        job.failed.connect(lambda _message: finished(False))
        self.worklist.show_message("Retrieving…", ok=True)
        return job

    # --- retrieve ---------------------------------------------------------------------------------
    def retrieve(self, name: str, study_uid: str, series: list[SeriesMatch]) -> PacsRetrieveJob | None:
        if self._retrieve is not None:
            self.panel.show_message("A retrieve is already running", ok=False)
            return None
        entry = self._entry(name)
        if entry is None:
            return None

        job = PacsRetrieveJob(partial(self._client, entry), self.cache, study_uid, series, self)
        job.source = SourceRef.pacs(entry.name, entry.source_kind, [s.series_uid for s in series])
        self._retrieve = job
        self._track(job)
        job.progress.connect(self.panel.set_progress)
        job.first_image.connect(self._first_image_arrived)
        job.preview_grown.connect(self._preview_grown)
        job.series_arrived.connect(self._series_arrived)
        job.done.connect(self._retrieved)
        job.failed.connect(self._retrieve_failed)
        self.panel.set_retrieving(True)
        self.panel.show_message("Retrieving…", ok=True)
        self.refresh_pins()  # the study being retrieved is in use from now on
        job.start()
        return job

    def cancel_retrieve(self) -> None:
        if self._retrieve is not None:
            self._retrieve.cancel()
            self.panel.show_message("Cancelling…", ok=True)

    def _first_image_arrived(self, stack: Stack) -> None:
        """Show the first image of a retrieve at once (when the viewer shows nothing yet); its series
        grows in as it arrives (:meth:`_preview_grown`) and the whole study replaces it once it has
        arrived and loaded."""
        if not self.window.show_preview(
            stack, "First image of the study while the rest arrives…", keep_place=True
        ):
            self._stop_preview()  # the reader is looking at something else: no more previews

    def _preview_grown(self, stack: Stack, arrived: int, expected: int) -> None:
        """More of the previewed series has arrived: the preview shows it, the reader's slice kept."""
        if not self.window.update_preview(stack, receiving_text(arrived, expected)):
            self._stop_preview()

    def _series_arrived(self, report: RetrieveReport) -> None:
        """A further series of the study has arrived: the browser lists it now (loaded in the
        background; what is on screen, the growing preview included, stays)."""
        job = self._retrieve
        if job is None or self._closing:
            return
        job.opened.add(report.folder)
        if job.source is not None:  # pinned until the window has loaded it (as at the retrieve's end)
            self._opening.add(self.cache.study_folder(job.source.node, job.study_uid))
        self.window.open_paths([str(report.folder)], source=job.source, show=False)

    def _stop_preview(self) -> None:
        if self._retrieve is not None:
            self._retrieve.stop_preview()

    def _retrieve_failed(self, message: str) -> None:
        self.window.end_preview()
        self._retrieve = None
        self.refresh_pins()
        self.panel.set_retrieving(False)
        self.panel.show_message(f"Retrieve failed: {message}", ok=False)

    def _retrieved(self, reports: list[RetrieveReport]) -> None:
        job, self._retrieve = self._retrieve, None
        self.panel.set_retrieving(False)
        arrived = sum(len(r.instances) for r in reports)
        failed = [f for r in reports for f in r.failed]
        cancelled = any(r.cancelled for r in reports) or not reports
        parts = [f"{plural(arrived, 'instance')} in {len(reports)} series"]
        if cancelled:
            parts.insert(0, "Retrieve cancelled")
        if failed:
            parts.append(f"{len(failed)} failed: " + "; ".join(f.reason for f in failed[:3]))
        eviction = self.cache.last_eviction
        if eviction is not None and eviction.over_budget_bytes:
            note = (
                f"PACS cache {eviction.over_budget_bytes / 1e6:.0f} MB over its budget: "
                f"{eviction.pinned_kept} studies in use are kept"
            )
            parts.append(note)
            self.window.show_status(note, 10000)
        self.panel.show_message(", ".join(parts), ok=not failed and not cancelled)
        # a cancelled retrieve keeps what arrived: it opens as far as it got (not while the window closes)
        opened = job.opened if job is not None else set()  # further series, listed as they arrived
        folders = [
            str(r.folder)
            for r in reports
            if r.instances and r.folder not in opened and not (r.cancelled and self._closing)
        ]
        if folders:
            if job is not None and job.source is not None:  # pinned until the window has loaded it
                self._opening.add(self.cache.study_folder(job.source.node, job.study_uid))
            # its end replaces the growing preview, at the reader's slice
            self.window.open_paths(folders, source=job.source if job is not None else None)
        else:
            self.window.end_preview()
        self.refresh_pins()
        self.retrieve_finished.emit(reports)

    # --- send back ---------------------------------------------------------------------------------
    def send_ai_result(self, name: str) -> PacsCallJob | None:
        """Send the shown AI result (SR + KOS, with the patient's identity: the PACS files them with the
        study) to the node ``name``; the dock lists each object's outcome. The objects are written into a
        private outbox folder that is removed once the PACS has answered."""
        ai = getattr(self.window, "ai_controller", None)
        entry = self._entry(name)
        if entry is None:
            return None
        if ai is None or ai.prediction() is None:
            self.panel.show_message("No AI result to send: analyze a stack first", ok=False)
            return None
        outbox = _new_outbox()
        paths: list[Path] = ai.export_dicom(outbox, include_identity=True)
        if not paths:
            shutil.rmtree(outbox, ignore_errors=True)
            self.panel.show_message(
                "The AI result could not be written as DICOM (see the status bar)", ok=False
            )
            return None
        return self._send_objects(entry, name, outbox, paths)

    def send_review(self, name: str) -> PacsCallJob | None:
        """Send the reader's review SR of the shown study to ``name``, with the AI result objects it
        references (so the reference resolves in the PACS), all with the patient's identity."""
        from viewer.core.errors import SlicewiseError

        review = getattr(self.window, "review_controller", None)
        ai = getattr(self.window, "ai_controller", None)
        entry = self._entry(name)
        if entry is None:
            return None
        if review is None or review.session is None or review.current_study_uid is None:
            self.panel.show_message("No review to send: open a review session and a study first", ok=False)
            return None
        outbox = _new_outbox()
        paths: list[Path] = ai.export_dicom(outbox, include_identity=True) if ai is not None else []
        try:
            paths.append(review.write_review_sr(outbox / "review-sr.dcm", include_identifiers=True))
        except (SlicewiseError, OSError, ValueError, RuntimeError, TimeoutError) as exc:
            shutil.rmtree(outbox, ignore_errors=True)
            self.panel.show_message(f"The review SR could not be written: {exc}", ok=False)
            return None
        return self._send_objects(entry, name, outbox, paths)

    def _send_objects(self, entry: NodeEntry, name: str, outbox: Path, paths: list[Path]) -> PacsCallJob:
        """Store ``paths`` (files in ``outbox``, removed once the PACS has answered) on the node; the dock
        lists each object's outcome."""

        def store(client: PacsClient) -> list[tuple[str, StoreOutcome]]:
            kinds = [_object_kind(p) for p in paths]
            return list(zip(kinds, client.store(paths), strict=True))

        job = self._start(entry, store)

        def done(outcomes: list[tuple[str, StoreOutcome]]) -> None:
            shutil.rmtree(outbox, ignore_errors=True)
            sent = sum(o.ok for _k, o in outcomes)
            lines = [f"Sent {sent} of {len(outcomes)} objects to {name}:"]
            for kind, o in outcomes:
                status = "" if o.status is None else f" (status 0x{o.status:04X})"
                lines.append(
                    f"{kind}: {'stored' if o.ok else 'refused: ' + (o.reason or 'no reason')}{status}"
                )
            self.panel.show_message("\n".join(lines), ok=sent == len(outcomes))
            self.send_finished.emit([o for _k, o in outcomes])

        def failed(message: str) -> None:
            shutil.rmtree(outbox, ignore_errors=True)
            self.panel.show_message(f"Send failed: {message}", ok=False)
            self.send_finished.emit([])

        job.done.connect(done)
        job.failed.connect(failed)
        self.panel.show_message(f"Sending {len(paths)} objects…", ok=True)
        job.start()
        return job

    def shutdown(self) -> None:
        """Cancel and wait for every PACS job (closing the window), then release the window's pins."""
        for job in list(self._jobs):
            job.cancel()
        for job in list(self._jobs):
            job.wait(JOB_WAIT_MS)
        self._closing = True
        self.refresh_pins()
        with self._receivers_lock:
            receivers, self._receivers = self._receivers, None
        if receivers is not None:
            receivers.stop_all()


def _new_outbox() -> Path:
    """A private folder for objects on their way to a PACS."""
    return Path(tempfile.mkdtemp(prefix="send-", dir=private_dir(user_data_path() / "pacs-outbox")))


def _object_kind(path: Path) -> str:
    """'SR', 'KO', 'SR (reader review)' … of a file about to be sent (its Modality), for the per-object
    status."""
    from pydicom import dcmread

    try:
        ds = dcmread(path, stop_before_pixels=True)
    except Exception:  # a file we just wrote; the store itself reports a damaged one
        return "object"
    kind = str(ds.get("Modality", "object"))
    return f"{kind} (reader review)" if "reader review" in str(ds.get("SeriesDescription", "")) else kind


def attach(
    window: Any, secrets: SecretStore | None = None, cache: InstanceCache | None = None
) -> PacsController:
    """Add the PACS dock, dialog and File menu entries to ``window`` (a MainWindow)."""
    controller = PacsController(window, secrets, cache)
    window.pacs_controller = controller  # keep a Python reference for the window's lifetime
    return controller
