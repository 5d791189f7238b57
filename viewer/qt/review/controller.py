"""Review sessions in the main window: Session menu, worklist dock, decision panel, keys, resume.

Every decision goes straight to the :class:`~viewer.core.review.ReviewStore` (committed before the
UI shows it). AI results arrive through :meth:`ReviewController.on_prediction`: :meth:`connect_ai`
connects the AI controller's ``prediction_ready(stack, prediction)`` signal, emitted for every result,
displayed or not (background auto-analysis included).

Each study is recorded with its source (local paths, or the PACS node it was retrieved from; see
:mod:`viewer.core.location`); a study of the worklist not open in the window is found again through
one :class:`~viewer.core.location.StudyLocator` for both (:meth:`ReviewController.reopen_study`).
"""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from viewer.core.dicom.model import LoadReport, Stack
from viewer.core.errors import ReviewStoreError, SlicewiseError
from viewer.core.inference.results import SliceRange, StackPrediction
from viewer.core.location import (
    LocalStudyLocator,
    LocatedStudy,
    SourceKind,
    SourceRef,
    StudyLocator,
    StudyLocators,
)
from viewer.core.review import ReviewSession, ReviewStore
from viewer.core.review.export import agreement_summary, export_csv, export_json
from viewer.core.review.models import Position, StudyReview, WorklistOrder
from viewer.core.undo import Command, UndoStack
from viewer.qt.actions import ActionSpec
from viewer.qt.overlays import format_date
from viewer.qt.review.widgets import (
    NewSessionDialog,
    ReviewPanel,
    SessionDialog,
    StudyLabel,
    SummaryDialog,
    WorklistPanel,
)
from viewer.qt.texts import NO_NAME
from viewer.qt.workers import LocateJob

if TYPE_CHECKING:
    from viewer.qt.ai.controller import AIController

log = logging.getLogger(__name__)

# Review keys: A / X / U mean nothing else in the viewer; "study done" needs Ctrl (no stray letter
# toggles it), says what it did in the status bar and is a step of the window's one undo history
# (Ctrl+Z, Edit › Undo: the last change, a measurement's or this).
KEY_CONFIRM, KEY_REJECT, KEY_UNCERTAIN, KEY_DONE, KEY_UNDO = "A", "X", "U", "Ctrl+Return", "Ctrl+Z"
KEY_NEXT_STUDY, KEY_PREV_STUDY = "]", "["
POSITION_SAVE_MS = 400  # the slice position is saved this long after the reader stops scrolling
LOCATE_WAIT_MS = 10_000  # how long closing the window waits for a study being fetched again


class ResumeBanner(QWidget):
    """Non-modal offer to resume the last session where the reader stopped."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.btn_resume = QPushButton("Resume")
        self.btn_dismiss = QPushButton("Dismiss")
        row = QHBoxLayout()
        row.addWidget(self.btn_resume)
        row.addWidget(self.btn_dismiss)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.label)
        layout.addLayout(row)
        self.btn_dismiss.clicked.connect(self.hide)
        self.hide()


class ReviewController(QObject):
    """Owns the open review session of one window and keeps the review widgets in sync with it."""

    session_changed = Signal(object)  # ReviewSession or None
    study_changed = Signal(object)  # StudyReview or None (the study under review)

    def __init__(self, window: Any, store: ReviewStore | None = None) -> None:
        super().__init__(window)
        self.window = window
        self._store = store
        self.session: ReviewSession | None = None
        self.current_study_uid: str | None = None
        self._pending: dict[str, tuple[Stack | None, StackPrediction]] = {}  # study uid -> latest result
        self._pending_position: Position | None = None
        self._resume_id: str | None = None
        self._store_note = ""
        self._locate_job: LocateJob | None = None
        self._ai: AIController | None = None  # connect_ai: brings back the session's AI results

        self.worklist = WorklistPanel()
        self.panel = ReviewPanel()
        self.banner = ResumeBanner()
        self.status = QLabel("")
        holder = QWidget()
        lay = QVBoxLayout(holder)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.banner)
        lay.addWidget(self.worklist, 1)
        self.worklist_dock = window.add_dock(holder, "Worklist")
        self.review_dock = window.add_dock(self.panel, "Review")
        window.add_status_widget(self.status)

        self._choice: dict[str, bool] = {}  # study uid -> the reader's answer to "add to session?"
        self.add_prompt: QMessageBox | None = None  # the open "add to session?" question
        self._asking: list[str] = []  # the study uids it asks about
        self._position_timer = QTimer(self)
        self._position_timer.setSingleShot(True)
        self._position_timer.setInterval(POSITION_SAVE_MS)
        self._position_timer.timeout.connect(self.save_position)

        self.worklist.study_activated.connect(self.go_to_study)
        self.worklist.order_changed.connect(lambda _o: self.refresh())
        self.panel.decision_requested.connect(self.set_decision)
        self.panel.jump_requested.connect(self._jump)
        self.panel.add_finding_requested.connect(self.add_finding)
        self.panel.correction_requested.connect(self.correct_finding)
        self.panel.remove_finding_requested.connect(self.remove_finding)
        self.panel.note_changed.connect(self._on_note)
        self.panel.impression_changed.connect(self._on_impression)
        self.panel.done_toggled.connect(self.set_done)
        self.banner.btn_resume.clicked.connect(self._resume_clicked)

        window.stack_shown.connect(self._on_stack_shown)
        window.slice_changed.connect(self._on_slice_changed)
        window.load_finished.connect(self._on_load_finished)
        window.about_to_close.connect(self.shutdown)
        window.privacy_changed.connect(lambda _on: self._update_worklist())
        self._build_menu()
        if store is not None:
            self._announce_store(store)
        self._update_ui()

    # --- store ---------------------------------------------------------------------------------------
    @property
    def store(self) -> ReviewStore:
        if self._store is None:
            self._store = ReviewStore.shared()
            self._announce_store(self._store)
        return self._store

    def _announce_store(self, store: ReviewStore) -> None:
        """Say at once why the store is read-only, and keep its warnings (a lost change, a file kept
        aside) on the review panel for the whole run."""
        self._store_note = "\n".join(w.message for w in store.warnings)
        for w in store.warnings:
            log.warning("Review store warning %s", w.code.value)
        self._message(store.read_only_reason or self._store_note)

    def _message(self, text: str) -> None:
        note = self._store_note
        self.panel.set_message("\n".join(t for t in dict.fromkeys((note, text)) if t))
        if text:
            self.window.show_status(text, 10000)

    def _guard(self, action: str, fn: Any, *args: Any) -> bool:
        """Run a store write; on failure say so loudly (the decision was NOT saved)."""
        try:
            fn(*args)
        except (ReviewStoreError, ValueError) as exc:
            log.warning("Review change failed: %s", type(exc).__name__)
            self._message(f"Not saved ({action}): {exc}")
            return False
        return True

    # --- menu ----------------------------------------------------------------------------------------
    def _build_menu(self) -> None:
        menu = self.window.menu("Session")
        add = self.window.add_action
        self.act_new = add(ActionSpec("review_new", "New session…", self.new_session_dialog, (), "Review"))
        self.act_open = add(ActionSpec("review_open", "Open session…", self.open_session_dialog, (),
                                       "Review"))
        self.act_rename = add(ActionSpec("review_rename", "Rename session…", self.rename_session_dialog, (),
                                         "Review"))
        self.act_close = add(ActionSpec("review_close", "Close session",
                                        lambda: self.close_session(forget=True), (), "Review"))
        self.act_add_loaded = add(ActionSpec(
            "review_add_loaded", "Add open studies to session", self.add_loaded_studies, (), "Review",
            tip="Add every study open in the viewer to the review session"))
        self.act_confirm = add(ActionSpec("review_confirm", "Confirm finding",
                                          lambda: self._decide_key("confirmed"), (KEY_CONFIRM,), "Review",
                                          help="Review: confirm the selected AI finding"))
        self.act_reject = add(ActionSpec("review_reject", "Reject finding",
                                         lambda: self._decide_key("rejected"), (KEY_REJECT,), "Review",
                                         help="Review: reject the selected AI finding"))
        self.act_uncertain = add(ActionSpec("review_uncertain", "Finding uncertain",
                                            lambda: self._decide_key("uncertain"), (KEY_UNCERTAIN,), "Review",
                                            help="Review: mark the selected finding uncertain"))
        self.act_done = add(ActionSpec("review_done", "Study done / not done", self._done_key, (KEY_DONE,),
                                       "Review", help="Review: mark the study done / not done"))
        self.act_next_study = add(ActionSpec("review_next_study", "Next unreviewed study",
                                             lambda: self.step_study(1), (KEY_NEXT_STUDY,), "Review",
                                             help="Review: next unreviewed study"))
        self.act_prev_study = add(ActionSpec("review_previous_study", "Previous unreviewed study",
                                             lambda: self.step_study(-1), (KEY_PREV_STUDY,), "Review",
                                             help="Review: previous unreviewed study"))
        self.act_csv = add(ActionSpec("review_csv", "Export decisions (CSV)…",
                                      lambda: self._export_dialog("csv"),
                                      (), "Review"))
        self.act_json = add(ActionSpec("review_json", "Export session (JSON)…",
                                       lambda: self._export_dialog("json"), (), "Review"))
        self.act_sr = add(ActionSpec("review_sr", "Export DICOM SR for this study…",
                                     lambda: self._export_dialog("sr"), (), "Review"))
        self.act_summary = add(ActionSpec("review_summary", "AI vs reader summary…", self._summary_dialog, (),
                                          "Review"))
        self.act_identifiers = add(ActionSpec("review_identifiers",
                                              "Include identifiers and notes in exports",
                                              lambda: None, (), "Review", checkable=True))
        menu.addActions([self.act_new, self.act_open, self.act_rename, self.act_close, self.act_add_loaded])
        menu.addSeparator()
        menu.addActions([self.act_confirm, self.act_reject, self.act_uncertain, self.act_done,
                         self.act_next_study, self.act_prev_study])
        menu.addSeparator()
        menu.addActions([self.act_csv, self.act_json, self.act_sr, self.act_summary, self.act_identifiers])

    # --- sessions ------------------------------------------------------------------------------------
    def new_session(self, name: str, reader: str = "") -> ReviewSession | None:
        self.close_session()
        try:
            session = self.store.create_session(name, reader)
        except ReviewStoreError as exc:
            self._message(str(exc))
            return None
        self._set_session(session)
        return session

    def open_session(self, session_id: str) -> ReviewSession | None:
        if self.session is not None and self.session.id == session_id:
            return self.session
        self.close_session()
        try:
            session = self.store.open_session(session_id)
        except ReviewStoreError as exc:
            self._message(str(exc))
            return None
        self._set_session(session)
        return session

    def _set_session(self, session: ReviewSession) -> None:
        self.session = session
        self.current_study_uid = None
        self._message(session.read_only_reason)
        self.banner.hide()
        stack = self.window.current_stack()
        if stack is not None:
            self._enter_stack(stack, add=True)  # the study on screen when the session was opened
            self._restore_ai(stack)
        if not session.read_only:  # results that arrived before the session opened, shown or not
            for held_stack, prediction in list(self._pending.values()):
                self._record(held_stack, prediction)
            self._pending.clear()
        self.session_changed.emit(session)
        self._update_ui()

    def rename_session(self, name: str) -> bool:
        if self.session is None:
            return False
        ok = self._guard("rename", self.store.rename_session, self.session.id, name)
        self._update_ui()
        return ok

    def close_session(self, *, forget: bool = False) -> None:
        """Close the open session; ``forget``: the reader closed it on purpose, so no resume offer."""
        if self.session is None:
            return
        self.panel.flush_text()
        if self._position_timer.isActive():
            self.save_position()
        if forget and not self.session.read_only:
            with contextlib.suppress(ReviewStoreError):
                self.store.forget_last_session(self.session.id)
        self.session.close()
        self.session = None
        self.current_study_uid = None
        self._message("")
        self.session_changed.emit(None)
        self._update_ui()

    def shutdown(self) -> None:
        """Window closing: stop fetching a study, flush the text fields and the position, release the
        session lock."""
        job, self._locate_job = self._locate_job, None
        if job is not None:
            job.cancel()
            job.wait(LOCATE_WAIT_MS)
        self.close_session()

    def new_session_dialog(self) -> None:
        dlg = NewSessionDialog(self.window)
        if dlg.exec():
            self.new_session(dlg.name.text(), dlg.reader.text())

    def open_session_dialog(self) -> None:
        sessions = self.store.list_sessions()
        if not sessions:
            self.new_session_dialog()
            return
        dlg = SessionDialog(sessions, self.window)
        if dlg.exec() and dlg.chosen_id:
            self.open_session(dlg.chosen_id)

    def rename_session_dialog(self) -> None:
        if self.session is None:
            return
        name, ok = QInputDialog.getText(self.window, "Rename session", "Session name",
                                        text=self.session.info.name)
        if ok and name.strip():
            self.rename_session(name)

    # --- resume --------------------------------------------------------------------------------------
    def offer_resume(self) -> bool:
        """Show a non-modal 'resume' offer for the last session; False when there is none."""
        try:
            sid = self.store.last_session_id()
        except ReviewStoreError:
            return False
        if sid is None or self.session is not None:
            return False
        info = self.store.session_info(sid)
        self._resume_id = sid
        self.banner.label.setText(f"Resume review session “{info.name}” ({info.progress} done) "
                                  "where you stopped?")
        self.banner.show()
        self.worklist_dock.show()
        self.worklist_dock.raise_()  # visible on start, not behind the AI findings tab
        return True

    def _resume_clicked(self) -> None:
        if self._resume_id:
            self.resume(self._resume_id)

    def resume(self, session_id: str | None = None) -> bool:
        """Open the session (default: the last one) at the study, stack and slice where the reader stopped."""
        sid = session_id or self.store.last_session_id()
        if sid is None:
            return False
        session = self.open_session(sid)
        self.banner.hide()
        if session is None:
            return False
        pos = session.last_position()
        if pos is None:
            return True
        self._pending_position = pos
        if not self._apply_pending_position():
            try:
                study = session.study(pos.study_uid)
            except ReviewStoreError:
                return True
            self.reopen_study(study)
        return True

    def _apply_pending_position(self) -> bool:
        pos = self._pending_position
        if pos is None:
            return False
        stacks = self.window.loaded_stacks()
        target = next((s for s in stacks if s.uid == pos.stack_uid), None)
        index = pos.slice_index
        key = pos.slice_key
        if key is not None:  # the slice by UIDs: the same image however the study was opened again
            found = [(s, s.index_of(key)) for s in stacks if s.study_instance_uid == pos.study_uid]
            hits = [(s, k) for s, k in found if k is not None]
            hit = next(((s, k) for s, k in hits if s.uid == pos.stack_uid), hits[0] if hits else None)
            if hit is not None:
                target, index = hit[0], int(hit[1])
        if target is None:  # not analysed yet, or the stack was not found: the study's first stack
            target = next((s for s in stacks if s.study_instance_uid == pos.study_uid), None)
            index = 0
        if target is None:
            return False
        index = min(index, len(target) - 1)
        self._pending_position = None
        current = self.window.current_stack()
        if current is None or current.uid != target.uid:
            self._show_for_review(target)
        self.window.set_slice(index)
        return True

    def _show_for_review(self, stack: Stack) -> None:
        """Show ``stack``, the study under review. When another viewport shows another study (the previous
        one of the worklist, often another patient: the bone window beside the brain window kept it), the
        study is hung by its protocol so that no viewport keeps it; ``stack`` ends in the active one."""
        w = self.window
        shown = {
            ctx.stack.study_instance_uid
            for vp in w.state.viewports
            if vp.stack_key and (ctx := w.stack_context(vp.stack_key)) is not None
        }
        hanging = getattr(w, "hanging", None)
        if shown - {stack.study_instance_uid} and hanging is not None:
            hanging.hang(stack.uid)
        current = w.current_stack()
        if current is None or current.uid != stack.uid:
            w.show_stack(stack.uid)

    # --- window events -------------------------------------------------------------------------------
    def _on_load_finished(self, report: LoadReport) -> None:
        """Studies opened while a session is open join it only when the reader says so."""
        session = self._writable()
        if session is not None:
            new = list(dict.fromkeys(
                st.study_instance_uid for st in report.all_stacks()
                if st.study_instance_uid not in self._choice and st.study_instance_uid not in self._asking
                and not self._in_session(st.study_instance_uid)
            ))
            if new:
                self._ask_add(new)
        self._apply_pending_position()
        self._update_ui()

    def _in_session(self, study_uid: str) -> bool:
        if self.session is None:
            return False
        try:
            self.session.study(study_uid)
        except ReviewStoreError:
            return False
        return True

    def _ask_add(self, study_uids: list[str]) -> None:
        """Non-modal question: add the newly opened studies to the session, or just view them. Studies
        opened while it is open join the question (it is asked again for all of them, unanswered: closing
        it must not count as "Just view")."""
        study_uids = list(dict.fromkeys([*self._asking, *study_uids]))
        if self.add_prompt is not None:
            old, self.add_prompt = self.add_prompt, None
            old.finished.disconnect()
            old.close()
        box = QMessageBox(self.window)
        box.setWindowTitle("Review session")
        n = len(study_uids)
        name = self.session.info.name if self.session is not None else ""
        box.setText(f"Add the {n} newly opened {'study' if n == 1 else 'studies'} to the review session "
                    f"“{name}”?")
        box.setInformativeText("“Just view” keeps them out of the worklist; Session › Add open studies "
                               "to session adds them later.")
        add = box.addButton("Add to session", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Just view", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(add)
        box.finished.connect(
            lambda _r, b=box, a=add, u=study_uids: self._answer_add(u, b.clickedButton() is a))
        self.add_prompt = box
        self._asking = study_uids
        box.open()

    def _answer_add(self, study_uids: list[str], add: bool) -> None:
        self.add_prompt = None
        self._asking = []
        for uid in study_uids:
            self._choice[uid] = add
        if add:
            self._add_studies(study_uids)
        else:
            self.window.show_status("Review: opened for viewing only (not added to the session)", 6000)
        self._update_ui()

    def add_loaded_studies(self) -> int:
        """Session › Add open studies to session: every study open in the viewer; returns how many."""
        uids = list(dict.fromkeys(s.study_instance_uid for s in self.window.loaded_stacks()))
        for uid in uids:
            self._choice[uid] = True
        added = self._add_studies(uids)
        noun = "study" if added == 1 else "studies"
        self.window.show_status(f"Review: {added} {noun} added to the session")
        self._update_ui()
        return added

    def _add_studies(self, study_uids: list[str]) -> int:
        session = self._writable()
        if session is None:
            return 0
        added = 0
        for uid in study_uids:
            source = self._study_source(uid)
            if self._guard("add study", partial(session.add_study, uid, source=source)):
                added += 1
            pending = self._pending.pop(uid, None)
            if pending is not None:
                self._record(pending[0], pending[1])
        return added

    def _on_stack_shown(self, stack: Stack) -> None:
        self._enter_stack(stack)
        self._restore_ai(stack)
        self._update_ui()

    def _restore_ai(self, stack: Stack) -> None:
        """The session holds an AI result for this very stack (e.g. after resuming in a new run): the AI
        controller brings it back (from its result cache, keyed by the pixels and the model's hash; only
        for the model that made it), so the reader sees the findings being reviewed."""
        ai = self._ai
        if ai is None or self.session is None:
            return
        try:
            recorded = self.session.study(stack.study_instance_uid).ai
        except ReviewStoreError:
            return
        if recorded is not None and recorded.stack_uid == stack.uid:
            ai.restore(stack, recorded.model_sha256)

    def _enter_stack(self, stack: Stack, *, add: bool = False) -> None:
        """The study of ``stack`` is on screen; it joins the session when ``add`` (the session was just
        opened on it) or when it is in the session already (new source paths are merged)."""
        previous = self.current_study_uid
        uid = stack.study_instance_uid
        if previous != uid:
            self.panel.flush_text()
        self.current_study_uid = uid
        self.panel.set_slice_count(len(stack))
        self.panel.set_current_slice(self.window.current_slice())
        if self.session is None or self.session.read_only:
            return
        if not (add or self._choice.get(uid) or self._in_session(uid)):
            return
        session, source = self.session, self._stack_source(stack)
        self._guard("add study", partial(session.add_study, uid, source=source))
        pending = self._pending.pop(uid, None)
        if pending is not None:
            self._record(pending[0], pending[1])

    def _on_slice_changed(self, index: int) -> None:
        self.panel.set_current_slice(index)
        if self.session is not None and not self.session.read_only:
            self._position_timer.start()

    def save_position(self) -> None:
        self._position_timer.stop()
        stack = self.window.current_stack()
        if self.session is None or self.session.read_only or stack is None:
            return
        index = self.window.current_slice()
        key = stack.slice_key(index) if 0 <= index < len(stack) else None
        self._guard("position", self.session.set_last_position, stack.study_instance_uid, stack.uid, index,
                    key)

    # --- AI results ----------------------------------------------------------------------------------
    def connect_ai(self, ai_controller: AIController) -> None:
        """Receive every prediction the AI controller makes, displayed or not, with its own stack."""
        ai_controller.prediction_ready.connect(self.on_prediction)
        self._ai = ai_controller
        stack = self.window.current_stack()
        if stack is not None:
            self._restore_ai(stack)

    def on_prediction(self, stack: Stack | None, prediction: StackPrediction) -> None:
        """An AI result for ``stack``: recorded in the open session (kept until one is opened)."""
        if prediction is None:
            return
        uid = prediction.study_instance_uid
        if self.session is None or self.session.read_only or not self._in_session(uid):
            self._pending[uid] = (stack, prediction)  # recorded when the study joins a session
            if self.session is None:
                self.window.show_status("Open a review session (Session menu) to review this AI result", 5000)
            return
        self._record(stack, prediction)
        self._update_ui()

    def _record(self, stack: Stack | None, prediction: StackPrediction) -> None:
        assert self.session is not None
        try:
            existing = self.session.study(prediction.study_instance_uid).ai
        except ReviewStoreError:
            existing = None
        if (existing is not None and existing.model_sha256 == prediction.model_sha256
                and existing.stack_uid == prediction.stack_uid):
            return  # the same result shown again (cache): nothing new to record
        source = self._stack_source(stack) if stack is not None else SourceRef.local(())
        session = self.session
        self._guard("AI result", lambda: session.record_ai_result(
            prediction, source=source, sop_class_uid=_sop_class_uid(stack)))

    # --- decisions -----------------------------------------------------------------------------------
    def _writable(self) -> ReviewSession | None:
        if self.session is None or self.session.read_only:
            return None
        return self.session

    def current_study(self) -> StudyReview | None:
        if self.session is None or self.current_study_uid is None:
            return None
        try:
            return self.session.study(self.current_study_uid)
        except ReviewStoreError:
            return None

    def set_decision(self, finding_id: int, decision: str) -> None:
        session = self._writable()
        if session is None:
            return
        if self._guard("decision", session.set_decision, finding_id, decision):
            self._update_ui()
            self.panel.select_finding(finding_id)
            self.panel.select_next()

    def decide_selected(self, decision: str) -> bool:
        """Key A / X / U: decide the selected finding of the current study."""
        if self._writable() is None or self.panel.study() is None:
            return False
        return self.panel.request_decision(decision)

    def _decide_key(self, decision: str) -> None:
        """Keys A / X / U: decide the selected finding; otherwise say why nothing happened."""
        if self.decide_selected(decision):
            return
        if self.session is None:
            self.window.show_status("Review: no session open (Session › New session…)")
        elif self.session.read_only:
            self.window.show_status("Review: the session is read-only")
        else:
            self.window.show_status("Review: select a finding first")

    def _done_key(self) -> None:
        study = self.current_study()
        if self._writable() is None or study is None:
            self.window.show_status("Review: no study under review")
            return
        self.set_done(not study.done)

    def _done_command(self, uid: str, before: bool, after: bool) -> Command:
        """The undo step of a "study done" change (in this session only: False once it is closed)."""
        session = self._writable()

        def put(done: bool) -> bool:
            if session is None or self._writable() is not session:
                return False
            ok = self._guard("undo", session.set_done, uid, done)
            self._update_ui()
            return ok

        state = "done" if after else "not done"
        return Command(f"study marked {state}", lambda: put(before), lambda: put(after))

    def add_finding(self, class_name: str, start: int, stop: int) -> None:
        session = self._writable()
        if session is None or self.current_study_uid is None:
            return
        self._guard("add finding", session.add_reader_finding, self.current_study_uid, class_name,
                    SliceRange(start, stop))
        self._update_ui()

    def correct_finding(self, finding_id: int, class_name: str, start: int, stop: int) -> None:
        session = self._writable()
        if session is None:
            return
        study = self.current_study()
        original = study.finding(finding_id).class_name if study else None
        corrected_class = None if class_name == original else class_name
        self._guard("correction", lambda: session.set_correction(
            finding_id, corrected_class=corrected_class, corrected_range=SliceRange(start, stop)))
        self._update_ui()

    def remove_finding(self, finding_id: int) -> None:
        session = self._writable()
        if session is not None:
            self._guard("remove finding", session.remove_reader_finding, finding_id)
            self._update_ui()

    def _on_note(self, text: str) -> None:
        session = self._writable()
        study = self.panel.study()
        if session is not None and study is not None:
            self._guard("note", session.set_note, study.study_uid, text)

    def _on_impression(self, text: str) -> None:
        session = self._writable()
        study = self.panel.study()
        if session is not None and study is not None:
            self._guard("impression", session.set_impression, study.study_uid, text)
            self._update_worklist()

    def set_done(self, done: bool) -> None:
        session = self._writable()
        study = self.current_study()
        if session is None or self.current_study_uid is None:
            return
        self.panel.flush_text()
        before = study.done if study is not None else False
        if self._guard("done", session.set_done, self.current_study_uid, done):
            history = getattr(self.window, "undo_stack", None)
            if before != done and isinstance(history, UndoStack):
                history.push(self._done_command(self.current_study_uid, before, done))
            state = "done" if done else "not done"
            self.window.show_status(f"Review: study marked {state} ({KEY_UNDO} undoes)", 8000)
        self._update_ui()

    # --- navigation ----------------------------------------------------------------------------------
    @property
    def order(self) -> WorklistOrder:
        return "ai_first" if self.worklist.order == "ai_first" else "original"

    def step_study(self, step: int) -> str | None:
        """Keys ] and [: go to the next / previous study not marked done."""
        if self.session is None:
            return None
        uid = self.session.next_unreviewed(self.current_study_uid, step, self.order)
        if uid is not None:
            self.go_to_study(uid)
        return uid

    def go_to_study(self, study_uid: str) -> None:
        """Show a study of the worklist: its analysed stack if loaded, else get it again from its source
        (its files, or its PACS) and load it."""
        if self.session is None:
            return
        try:
            study = self.session.study(study_uid)
        except ReviewStoreError as exc:
            self._message(str(exc))
            return
        stacks = [s for s in self.window.loaded_stacks() if s.study_instance_uid == study_uid]
        if stacks:
            preferred = next((s for s in stacks if study.ai and s.uid == study.ai.stack_uid), stacks[0])
            self._show_for_review(preferred)
        elif not study.source.is_empty:
            self.panel.flush_text()
            self.current_study_uid = study_uid
            self._pending_position = Position(study_uid, study.ai.stack_uid if study.ai else "", 0, "")
            self.reopen_study(study)
        self._update_ui()

    # --- sources -------------------------------------------------------------------------------------
    def _stack_source(self, stack: Stack) -> SourceRef:
        source = self.window.stack_source(stack.uid)
        return source if source is not None else SourceRef.local(())

    def _study_source(self, study_uid: str) -> SourceRef:
        """The source of a study open in the window (its stacks' sources merged)."""
        source = SourceRef.local(())
        for stack in self.window.loaded_stacks():
            if stack.study_instance_uid == study_uid:
                source = source.merged(self._stack_source(stack))
        return source

    def study_locator(self) -> StudyLocator:
        """Local files, and the PACS nodes of this window's PACS controller (when it has one)."""
        locators: dict[SourceKind, StudyLocator] = {SourceKind.LOCAL: LocalStudyLocator()}
        pacs = getattr(self.window, "pacs_controller", None)
        if pacs is not None:
            remote = pacs.study_locator()
            locators.update({SourceKind.DICOMWEB: remote, SourceKind.DIMSE: remote})
        return StudyLocators(locators)

    def _recorded_source(self, study: StudyReview) -> SourceRef:
        """``study.source``; a local source that is really a PACS study's cache folders (recorded so by
        versions before sources were) becomes that PACS source, so eviction no longer loses it."""
        pacs = getattr(self.window, "pacs_controller", None)
        if pacs is None or study.source.is_pacs:
            return study.source
        from viewer.core.pacs.locator import pacs_source_of_cache_paths

        upgraded = pacs_source_of_cache_paths(study.source, study.study_uid, pacs.cache, pacs.node_kinds())
        return upgraded or study.source

    def reopen_study(self, study: StudyReview) -> LocateJob | None:
        """Get a study of the session again from where it came from, in the background (files still
        there, or a retrieve from its PACS through the cache), then open it; what went wrong is shown on
        the review panel and the status bar."""
        if self._locate_job is not None:
            self._message("Still getting another study: wait for it, then try again")
            return None
        source = self._recorded_source(study)
        job = LocateJob(self.study_locator(), study.study_uid, source, self)
        self._locate_job = job
        if source.is_pacs:
            self.window.show_status(f"Review: getting the study from {source.describe()}…", 0)
            job.progress.connect(
                lambda done, total: self.window.show_status(
                    f"Review: getting the study from {source.describe()}: {done}/{total} instances", 0))
        job.done.connect(self._located)
        job.failed.connect(self._locate_failed)
        job.start()
        return job

    def _located(self, located: LocatedStudy) -> None:
        self._locate_job = None
        if located.problems:
            more = f" (and {len(located.problems) - 2} more)" if len(located.problems) > 2 else ""
            self._message("Review: the study was opened with gaps: " + "; ".join(located.problems[:2]) + more)
        if located.cancelled or not located.paths:
            return
        self.window.open_paths(list(located.paths), source=located.source)

    def _locate_failed(self, message: str) -> None:
        self._locate_job = None
        self._pending_position = None
        self._message(f"Review: the study cannot be opened again: {message}")

    def _jump(self, index: int) -> None:
        self.window.set_slice(index)

    # --- display -------------------------------------------------------------------------------------
    def refresh(self) -> None:
        self._update_ui()

    def _update_worklist(self) -> None:
        if self.session is None:
            self.worklist.clear_session()
            return
        labels = self._study_labels()
        self.worklist.set_studies(self.session.worklist(self.order), self.current_study_uid, labels)
        self.panel.set_label(labels.get(self.current_study_uid) if self.current_study_uid else None)

    def _study_labels(self) -> dict[str, StudyLabel]:
        """Patient (behind the privacy toggle), date, description and modality of the open studies."""
        labels: dict[str, StudyLabel] = {}
        patients: list[str] = []
        hide = self.window.privacy_mode()
        for stack in self.window.loaded_stacks():
            uid = stack.study_instance_uid
            if uid in labels:
                continue
            ctx = self.window.stack_context(stack.uid)
            patient = study = None
            if ctx is not None:
                patient, study = ctx.patient, ctx.study
            key = f"{patient.patient_id}|{patient.name}" if patient is not None else ""
            if key not in patients:
                patients.append(key)
            if hide:
                who = f"Patient {patients.index(key) + 1}"
            elif patient is not None:
                who = patient.name.replace("^", " ").strip() or patient.patient_id or NO_NAME
            else:
                who = "—"
            labels[uid] = StudyLabel(
                patient=who,
                date=format_date(study.date) if study is not None else "",
                description=study.description if study is not None else "",
                modality=stack.modality or "",
            )
        return labels

    def _update_ui(self) -> None:
        session = self.session
        for a in (self.act_rename, self.act_close, self.act_csv, self.act_json, self.act_summary):
            a.setEnabled(session is not None)
        self.act_sr.setEnabled(session is not None and self.current_study_uid is not None)
        if session is None:
            self.status.setText("")
            self.worklist.clear_session()
            self.panel.set_study(None)
            self.study_changed.emit(None)
            return
        try:
            info = session.info
            self.status.setText(f"Review: {info.name} {info.progress}" + (" (read-only)" if session.read_only
                                                                             else ""))
            self._update_worklist()
            study = self.current_study()
        except ReviewStoreError as exc:
            self._message(str(exc))
            return
        self.panel.set_study(study, read_only=session.read_only)
        self.study_changed.emit(study)

    # --- exports -------------------------------------------------------------------------------------
    def _export_dialog(self, kind: str) -> None:
        if self.session is None:
            return
        suffix = {"csv": "CSV (*.csv)", "json": "JSON (*.json)", "sr": "DICOM (*.dcm)"}[kind]
        default = f"review.{'dcm' if kind == 'sr' else kind}"
        start = self.window.export_dir() / default
        path, _ = QFileDialog.getSaveFileName(self.window, "Export", str(start), suffix)
        if path:
            self.export(kind, Path(path))
            self.window.settings.export_folder = str(Path(path).parent)

    def export(self, kind: str, path: Path) -> Path | None:
        """Write an export ('csv', 'json' or 'sr' for the current study); de-identified unless opted in."""
        if self.session is None:
            return None
        full = self.act_identifiers.isChecked()
        try:
            if kind == "csv":
                out = export_csv(self.session, path, include_identifiers=full, include_free_text=full)
            elif kind == "json":
                out = export_json(self.session, path, include_identifiers=full, include_free_text=full)
            elif kind == "sr":
                out = self.write_review_sr(path, include_identifiers=full)
            else:
                return None
        except (SlicewiseError, OSError, ValueError, RuntimeError, TimeoutError) as exc:
            self._message(f"Export failed: {exc}")
            return None
        self.window.show_status("Exported" + ("" if full else " (de-identified)"), 5000)
        return out

    def write_review_sr(self, path: Path, *, include_identifiers: bool) -> Path:
        """Write the reader's review SR of the current study to ``path``, built in the helper process
        (highdicom's first use holds the GIL for a second). Raises ReviewStoreError without a study or
        an AI result, or the helper's error."""
        from viewer.core.airesults import process

        if self.session is None or self.current_study_uid is None:
            raise ReviewStoreError("No study of a review session is shown")
        study = self.session.study(self.current_study_uid)
        source = _first_header(self.window.current_stack()) if include_identifiers else None
        future = process.call_named(
            "viewer.core.review.sr:write_study_sr",
            study,
            self.session.info.reader,
            Path(path),
            include_identifiers,
            source,
        )
        return Path(str(future.result(timeout=process.RESULT_TIMEOUT_S)))

    def _summary_dialog(self) -> SummaryDialog | None:
        if self.session is None:
            return None
        dialog = SummaryDialog(agreement_summary(self.session), self.window)
        dialog.open()
        return dialog


def _sop_class_uid(stack: Stack | None) -> str:
    """The SOP Class UID of the stack's images (from the first file header; CT Image Storage if unknown)."""
    from viewer.core.review.store import CT_IMAGE_STORAGE

    header = _first_header(stack)
    value = getattr(header, "SOPClassUID", None) if header is not None else None
    return str(value) if value else CT_IMAGE_STORAGE


def _first_header(stack: Stack | None) -> Any:
    if stack is None or not stack.slices:
        return None
    src = stack.slices[0].source
    if src.member is not None:
        return None
    try:
        import pydicom

        return pydicom.dcmread(src.path, stop_before_pixels=True)
    except Exception:
        log.debug("Could not read the first header of a stack for the review export")
        return None


def attach(window: Any, store: ReviewStore | None = None, *, offer_resume: bool = True) -> ReviewController:
    """Add the review UI to ``window`` (a MainWindow) and return its controller."""
    controller = ReviewController(window, store)
    window.review_controller = controller  # keep a Python reference for the window's lifetime
    ai = getattr(window, "ai_controller", None)
    if ai is not None and hasattr(ai, "prediction_ready"):
        controller.connect_ai(ai)
    if offer_resume:
        QTimer.singleShot(0, controller.offer_resume)
    return controller
