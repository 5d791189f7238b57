"""AI analysis in the viewer: attaches to a MainWindow through its public extension API only.

``attach(window)`` adds the Analyze action (toolbar, AI menu, F5), the auto-analyze setting, the
execution-provider choice, a model picker, the prediction timeline under the image, the findings
dock, slider marks, N / Shift+N navigation, the on-image corner text, the study badges and a status
bar widget. Inference runs on a worker thread; results of an older request are not displayed.
"""

from __future__ import annotations

import contextlib
import html
import logging
import re
import threading
from collections import OrderedDict
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QToolButton,
    QWidget,
)

from viewer.core.constants import INTENDED_USE
from viewer.core.errors import ModelError
from viewer.core.foreign.kinds import SEG_CLASSES
from viewer.core.inference.results import StackPrediction, run_start
from viewer.core.inference.volume_reading import SHOWN_MIN_ML
from viewer.core.paths import bundled_model_path
from viewer.qt.actions import ActionSpec
from viewer.qt.ai.findings import FindingsPanel
from viewer.qt.ai.timeline import PredictionTimeline
from viewer.qt.ai.worker import AnalyzeJob
from viewer.qt.settings import private_settings

if TYPE_CHECKING:
    from viewer.core.applicability import Applicability
    from viewer.core.dicom.model import Stack
    from viewer.core.inference.engine import InferenceEngine
    from viewer.core.tasks.registry import DicomOutputs, TaskResult

log = logging.getLogger(__name__)

ANALYZE_KEY = "F5"
# the open review session recorded a result of another model for the stack on screen
_OTHER_MODEL = f"AI: the review session's result is from another model ({ANALYZE_KEY} analyzes with this one)"
NEXT_KEY = "N"  # next flagged run (its first slice)
PREV_KEY = "Shift+N"
NEXT_SLICE_KEY = "Ctrl+Down"  # next flagged slice, one by one
PREV_SLICE_KEY = "Ctrl+Up"
MARK_COLOR = "#ff7b72"
_NUMBER_AFTER_SPACE = re.compile(r" (?=\d)")  # the space before a probability: kept with its class
MAX_REMEMBERED = 64
SETTINGS_AUTO = "ai/auto_analyze"
SETTINGS_PROVIDER = "ai/provider"
SETTINGS_MODEL = "ai/model_path"
# No INT8 variant ships: on 48 fresh held-out studies it changed the flags of 49 of 1,554 slices
# (96.8 % agreement, gate 99 %; issue 10 item 8), so its settings switch is gone too.


SHORT_USE = "Research use only"


def _as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class AIStatusWidget(QWidget):
    """Status bar: provider · model · time, plus a progress bar and a cancel button while running."""

    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel("AI: idle")
        self.label.setObjectName("aiStatus")
        self.label.setToolTip(INTENDED_USE)
        # The one "research use only" notice: in the status bar, always visible (full text as tooltip).
        self.research_use = QLabel(SHORT_USE)
        self.research_use.setObjectName("aiResearchUse")
        self.research_use.setStyleSheet("color: #e3b341;")
        self.research_use.setToolTip(INTENDED_USE)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(140)
        self.progress.setMaximumHeight(14)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.cancel_button = QToolButton()
        self.cancel_button.setText("Cancel")
        self.cancel_button.setToolTip("Cancel the AI analysis")
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.cancel_button.hide()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.progress)
        layout.addWidget(self.cancel_button)
        layout.addWidget(self.label)
        layout.addWidget(self.research_use)

    def set_running(self, text: str, done: int = 0, total: int = 0) -> None:
        self.progress.show()
        self.cancel_button.show()
        self.progress.setRange(0, max(total, 0))
        self.progress.setValue(done if total else 0)
        self.label.setText(f"AI: {text}…")

    def set_idle(self, text: str) -> None:
        self.progress.hide()
        self.cancel_button.hide()
        self.label.setText(text)


class AIController(QObject):
    """Owns the AI widgets, actions, engine and analysis jobs of one MainWindow."""

    prediction_shown = Signal(object)  # StackPrediction now displayed (None when cleared)
    # every result, displayed or not (background auto-analysis included): (Stack, StackPrediction)
    prediction_ready = Signal(object, object)
    analysis_failed = Signal(str)  # message shown to the user (not supported, model error, ...)
    # a model of another task than slice classification (e.g. segmentation): its DICOM objects (a SEG),
    # written de-identified into the AI results folder, as the scan's ResultFiles for the Results overlay
    task_objects_ready = Signal(object)

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window = window
        self.settings = private_settings()
        self._engine: InferenceEngine | None = None
        self._engine_key: tuple[str, str] | None = None
        self._engine_lock = threading.Lock()
        self._request_id = 0
        self._job: AnalyzeJob | None = None
        self._jobs: list[AnalyzeJob] = []
        # stack uid -> (the Stack analysed, its result); a reopened changed copy is a different Stack
        self._predictions: OrderedDict[str, tuple[Stack, StackPrediction]] = OrderedDict()
        self._refused: OrderedDict[str, tuple[Stack, Applicability]] = OrderedDict()  # out of scope
        self._queue: list[Stack] = []  # background analyses (auto-analyze of every opened CT stack)
        self._shown: StackPrediction | None = None
        # a review session's result to bring back for the stack on screen once the running job ends
        self._restore_next: tuple[Stack, str] | None = None

        self.timeline = PredictionTimeline()
        self.findings = FindingsPanel()
        self.status = AIStatusWidget()
        window.add_panel_below_image(self.timeline)
        self.timeline.hide()  # shown with a CT stack (no empty strip under an empty view)
        self.dock = window.add_dock(self.findings, "AI findings")
        window.add_status_widget(self.status)
        self._build_actions()

        self.timeline.slice_requested.connect(window.set_slice)
        self.findings.slice_requested.connect(window.set_slice)
        self.status.cancel_requested.connect(self.cancel)
        window.stack_shown.connect(self._on_stack_shown)
        window.load_finished.connect(self._on_load_finished)
        window.slice_changed.connect(self._on_slice_changed)
        window.about_to_close.connect(self.shutdown)
        stack = window.current_stack()
        if stack is not None:
            self._on_stack_shown(stack)

    # --- settings ----------------------------------------------------------------------------------
    @property
    def auto_analyze(self) -> bool:
        return _as_bool(self.settings.value(SETTINGS_AUTO, False))

    def set_auto_analyze(self, on: bool) -> None:
        self.settings.setValue(SETTINGS_AUTO, bool(on))
        self.settings.sync()
        if self.auto_action.isChecked() != on:
            self.auto_action.setChecked(on)
        if on:
            stack = self.window.current_stack()
            if stack is not None and not self._known(stack) and self._job is None:
                self._maybe_auto(stack)
            self._enqueue(self.window.loaded_stacks())
        else:
            self._queue.clear()

    @property
    def provider(self) -> str:
        value = str(self.settings.value(SETTINGS_PROVIDER, "auto") or "auto")
        return value if value in ("auto", "cpu", "cuda") else "auto"

    def set_provider(self, provider: str) -> None:
        self.settings.setValue(SETTINGS_PROVIDER, provider)
        self.settings.sync()
        action = self._provider_actions.get(provider)
        if action is not None and not action.isChecked():
            action.setChecked(True)

    def model_path(self) -> Path:
        custom = str(self.settings.value(SETTINGS_MODEL, "") or "")
        if custom:
            return Path(custom)
        return bundled_model_path()

    def set_model_path(self, path: Path | None) -> None:
        self.settings.setValue(SETTINGS_MODEL, "" if path is None else str(path))
        self.settings.sync()
        self._predictions.clear()
        self._refused.clear()
        stack = self.window.current_stack()
        if stack is not None:
            self._clear_display(stack.uid)

    # --- actions -----------------------------------------------------------------------------------
    def _build_actions(self) -> None:
        w = self.window
        menu = w.menu("AI")
        add = w.add_action
        self.analyze_action = add(ActionSpec(
            "ai_analyze", "Analyze", self.analyze, (ANALYZE_KEY,), "AI",
            help="AI: analyze the current stack", tip=f"Run the AI model on the current stack. {SHORT_USE}"))
        self.analyze_action.setStatusTip(f"Analyze the current stack with the AI model ({ANALYZE_KEY})")
        self.cancel_action = add(ActionSpec("ai_cancel", "Cancel analysis", self.cancel, (), "AI"))
        self.cancel_action.setEnabled(False)
        self.next_action = add(ActionSpec("ai_next_run", "Next flagged run", self.next_run, (NEXT_KEY,), "AI",
                                          help="AI: first slice of the next flagged run"))
        self.prev_action = add(ActionSpec(
            "ai_previous_run", "Previous flagged run", self.previous_run, (PREV_KEY,), "AI",
            help="AI: first slice of the previous flagged run"))
        self.next_slice_action = add(ActionSpec(
            "ai_next_slice", "Next flagged slice", self.next_flagged, (NEXT_SLICE_KEY,), "AI",
            help="AI: next flagged slice, one by one"))
        self.prev_slice_action = add(ActionSpec(
            "ai_previous_slice", "Previous flagged slice", self.previous_flagged, (PREV_SLICE_KEY,), "AI",
            help="AI: previous flagged slice, one by one"))
        self.auto_action = QAction("Analyze every opened CT stack automatically", self)
        self.auto_action.setCheckable(True)
        self.auto_action.setChecked(self.auto_analyze)
        self.auto_action.toggled.connect(self.set_auto_analyze)
        menu.addAction(self.analyze_action)
        menu.addAction(self.cancel_action)
        menu.addSeparator()
        menu.addActions([self.next_action, self.prev_action, self.next_slice_action, self.prev_slice_action])
        menu.addSeparator()
        menu.addAction(self.auto_action)
        provider_menu = menu.addMenu("Execution provider")
        group = QActionGroup(self)
        group.setExclusive(True)
        self._provider_actions: dict[str, QAction] = {}
        for key, label in (
            ("auto", "Automatic (CUDA if available, else CPU)"),
            ("cpu", "CPU"),
            ("cuda", "CUDA"),
        ):
            action = QAction(label, self)
            action.setCheckable(True)
            action.setChecked(key == self.provider)
            action.triggered.connect(lambda _=False, k=key: self.set_provider(k))
            group.addAction(action)
            provider_menu.addAction(action)
            self._provider_actions[key] = action
        menu.addSeparator()
        self.export_dicom_action = add(ActionSpec(
            "ai_export_dicom", "Export AI results as DICOM…", self._export_dicom_dialog, (), "AI",
            help="AI: write the shown result as an AI Result SR and key images (KOS)"))
        self.dicom_identity_action = QAction("DICOM AI results carry patient identity (for the PACS)", self)
        self.dicom_identity_action.setCheckable(True)
        menu.addAction(self.export_dicom_action)
        menu.addAction(self.dicom_identity_action)
        menu.addSeparator()
        load_model = QAction("Load model…", self)
        load_model.triggered.connect(self._choose_model)
        bundled = QAction("Use the bundled model", self)
        bundled.triggered.connect(lambda: self.set_model_path(None))
        about = QAction("About the AI model…", self)
        about.triggered.connect(self._about_model)
        menu.addAction(load_model)
        menu.addAction(bundled)
        menu.addAction(about)
        w.toolbar.addAction(self.analyze_action)

    # --- engine ------------------------------------------------------------------------------------
    def _engine_for(self, key: tuple[str, str]) -> InferenceEngine:
        """Runs on the worker thread: reuse the engine, or create it for ``(model path, provider)``.

        The key is read from the settings on the GUI thread (QSettings is not shared across threads).
        """
        with self._engine_lock:
            if self._engine is not None and self._engine_key == key:
                return self._engine
            path = Path(key[0])
            if not path.is_file():
                raise ModelError(
                    "No AI model found (the bundled model is missing); choose one with AI > Load model…"
                    if key[0] == str(bundled_model_path())
                    else f"Model file not found: {path.name}"
                )
            from viewer.core.inference.engine import InferenceEngine

            engine = InferenceEngine(path, provider=key[1])
            self._engine, self._engine_key = engine, key
            return engine

    @property
    def engine(self) -> InferenceEngine | None:
        return self._engine

    # --- analysis ----------------------------------------------------------------------------------
    def analyze(self) -> None:
        """Analyze the stack on screen now (a background analysis of another stack waits its turn)."""
        stack = self.window.current_stack()
        if stack is None:
            self.window.show_status("AI: open a stack first")
            return
        self._queue = [s for s in self._queue if s.uid != stack.uid]
        running = self._job
        if running is not None and running.stack.uid != stack.uid and self.auto_analyze:
            self._queue.insert(0, running.stack)  # resumed (from the cache or afresh) afterwards
        self.cancel(quiet=True, clear_queue=False)
        self._start(stack)

    def restore(self, stack: Stack, model_sha256: str) -> None:
        """Bring back the result a review session recorded for ``stack`` (on screen) by ``model_sha256``:
        analysed again as Analyze does (off the GUI thread; the result cache, keyed by these pixels and
        the model's hash, makes it fast). The job stops before reading any pixel when the loaded model is
        another one, so no result of another model is shown for the recorded one."""
        current = self.window.current_stack()
        if current is not stack or not _eligible(stack) or self._known(stack):
            return
        if self._job is not None and self._job.stack.uid == stack.uid:
            return  # already running (Analyze, auto-analysis or the background queue)
        if self._engine is not None and self._engine.info.sha256 != model_sha256:
            self._clear_display(stack.uid, _OTHER_MODEL)
            return
        if self._job is not None:  # another stack's analysis (the reader's or the background's) goes on
            self._restore_next = (stack, model_sha256)
            return
        self._start(stack, require_model=model_sha256)

    def _start(self, stack: Stack, require_model: str | None = None) -> None:
        self._request_id += 1
        rid = self._request_id
        key = (str(self.model_path()), self.provider)
        shown = self.window.current_volume()
        shown = shown if shown is not None and getattr(shown, "stack", None) is stack else None
        job = AnalyzeJob(rid, lambda: self._engine_for(key), stack, parent=self, shown_volume=shown,
                         require_model=require_model)
        job.stage.connect(self._on_stage)
        job.succeeded.connect(lambda r, p, s=stack: self._on_succeeded(r, p, s))
        job.out_of_scope.connect(lambda r, a, s=stack: self._on_out_of_scope(r, a, s))
        job.not_supported.connect(self._on_not_supported)
        job.model_failed.connect(self._on_model_failed)
        job.cancelled.connect(self._on_cancelled)
        job.other_model.connect(self._on_other_model)
        job.failed.connect(lambda message, r=rid: self._on_model_failed(r, message))
        job._thread.finished.connect(lambda j=job: self._forget(j))
        self._job = job
        self._jobs.append(job)
        self.cancel_action.setEnabled(True)
        self.status.set_running("starting")
        job.start()

    def cancel(self, quiet: bool = False, clear_queue: bool = True) -> None:
        """Stop the running analysis (and, by default, the queued background analyses)."""
        if clear_queue:
            self._queue.clear()
            self._restore_next = None
        if self._job is not None:
            self._job.cancel()
            self._job = None
            if not quiet:
                self.status.set_idle("AI: analysis cancelled")
                self.window.show_status("AI analysis cancelled")
        self.cancel_action.setEnabled(False)

    def queued(self) -> list[str]:
        """Stack uids waiting for a background analysis."""
        return [s.uid for s in self._queue]

    def is_running(self) -> bool:
        return any(j.is_running() for j in self._jobs)

    def wait(self, ms: int = 30_000) -> bool:
        """Wait for every job's thread to end (tests, shutdown)."""
        return all(j.wait(ms) for j in list(self._jobs))

    def shutdown(self) -> None:
        self.cancel(quiet=True)
        for job in list(self._jobs):
            job.cancel()
            job.wait(10_000)

    def _forget(self, job: AnalyzeJob) -> None:
        if job in self._jobs:
            self._jobs.remove(job)

    def _pump(self) -> None:
        """Start the next queued background analysis when nothing runs (a session's result waiting to be
        brought back for the stack on screen first)."""
        waiting, self._restore_next = self._restore_next, None
        if waiting is not None and self._job is None:
            self.restore(*waiting)
        while self._job is None and self._queue:
            stack = self._queue.pop(0)
            if not self._known(stack):
                self._start(stack)

    def _job_done(self) -> None:
        self._job = None
        self.cancel_action.setEnabled(False)
        QTimer.singleShot(0, self._pump)

    def _on_load_finished(self, report: Any) -> None:
        if self.auto_analyze:
            self._enqueue(report.all_stacks())

    def _enqueue(self, stacks: list[Stack]) -> None:
        running = self._job.stack.uid if self._job is not None else None
        queued = set(self.queued())
        for stack in stacks:
            if (
                _eligible(stack)
                and not self._known(stack)
                and stack.uid != running
                and stack.uid not in queued
            ):
                self._queue.append(stack)
                queued.add(stack.uid)
        QTimer.singleShot(0, self._pump)

    def _known(self, stack: Stack) -> bool:
        """A result (or a refusal) is already held for this very stack."""
        held = self._predictions.get(stack.uid) or self._refused.get(stack.uid)
        return held is not None and held[0] == stack

    def _current(self, rid: int) -> bool:
        return rid == self._request_id and self._job is not None

    def _on_stage(self, rid: int, stage: str, done: int, total: int) -> None:
        if self._current(rid):
            extra = f" ({len(self._queue)} more queued)" if self._queue else ""
            self.status.set_running(stage + extra, done, total)

    def _on_succeeded(self, rid: int, prediction: TaskResult, stack: Stack) -> None:
        if not isinstance(prediction, StackPrediction):
            self._on_task_result(rid, prediction, stack)
            return
        self._remember(stack, prediction)
        self._write_dicom_in_background(stack, prediction)
        self.window.set_stack_badge(prediction.stack_uid, prediction.badge())
        self.prediction_ready.emit(stack, prediction)  # the review session records it, shown or not
        if rid != self._request_id or self._job is None:
            return  # an older or cancelled request: kept for when that stack is shown again, not shown now
        self._job_done()
        stack = self.window.current_stack()
        if stack is not None and stack.uid == prediction.stack_uid:
            self._display(prediction)
        elif not self._queue:
            self.status.set_idle("AI: idle")

    def _on_task_result(self, rid: int, result: TaskResult, stack: Stack) -> None:
        """A result of another task (segmentation): its DICOM objects are written in the helper process
        and shown by the Results overlay (:attr:`task_objects_ready`); the status bar gives the summary."""
        from viewer.core.airesults import process
        from viewer.core.tasks import task_named

        engine = self._engine
        if engine is None:
            return
        task = task_named(engine.info.task)
        text = f"AI {task.description}: {_headline(task.summary(result))}"
        if rid == self._request_id and self._job is not None:
            self._job_done()
            self.status.set_idle(f"AI: {engine.info.label}")
        self.window.show_status(text, 10_000)

        try:
            future = process.submit(task.dicom_outputs, result, stack, ai_results_dir(), False)  # type: ignore[arg-type]
            future.add_done_callback(self._show_objects)
        except (OSError, RuntimeError) as exc:
            log.warning("The AI result objects could not be written (%s)", type(exc).__name__)

    def _show_objects(self, future: Future[list[Path]], sop_classes: frozenset[str] | None = None) -> None:
        """On the helper's callback thread: hand the written objects (those of ``sop_classes``, all when
        None) to the Results overlay (:attr:`task_objects_ready`)."""
        try:
            paths = future.result()
        except Exception as exc:  # logged by type only (messages may carry paths)
            log.warning("The AI result objects could not be written (%s)", type(exc).__name__)
            return
        from viewer.core.dicom.loader import load_paths

        files = [
            f
            for f in load_paths(paths).result_files
            if sop_classes is None or f.sop_class_uid in sop_classes
        ]
        if files:
            with contextlib.suppress(RuntimeError):  # the window closed meanwhile
                self.task_objects_ready.emit(files)

    def _on_out_of_scope(self, rid: int, applicability: Applicability, stack: Stack) -> None:
        """The applicability check refused the stack: no probabilities anywhere, the reason instead."""
        self._refused[stack.uid] = (stack, applicability)
        while len(self._refused) > MAX_REMEMBERED:
            self._refused.popitem(last=False)
        self.window.set_stack_badge(stack.uid, "AI: out of scope")
        if rid != self._request_id or self._job is None:
            return
        self._job_done()
        current = self.window.current_stack()
        if current is not None and current.uid == stack.uid:
            self._show_refusal(applicability)
        elif not self._queue:
            self.status.set_idle("AI: idle")

    def _show_refusal(self, applicability: Applicability) -> None:
        self._clear_display(None)
        message = f"AI not run: {applicability.summary()}"
        self.timeline.set_prediction(None, message)
        self.findings.set_refusal(applicability)
        self.window.set_title_badge("AI: out of scope")
        self.window.set_image_corner_text(
            "ai", "<span style='color:#e3b341'><b>AI</b>: out of scope (not analysed)</span>"
        )
        self.status.set_idle("AI: out of scope")
        self.status.label.setToolTip(applicability.summary())
        self.window.show_status(message, 10_000)
        self.analysis_failed.emit(message)

    def _on_not_supported(self, rid: int, reason: str) -> None:
        if rid != self._request_id or self._job is None:
            return
        uid = self._job.stack.uid
        self._job_done()
        self._finish_with_message(f"AI cannot analyze this stack: {reason}", uid)

    def _on_model_failed(self, rid: int, message: str) -> None:
        if rid != self._request_id or self._job is None:
            return
        uid = self._job.stack.uid
        self._job_done()
        if "model" in message.lower() and ("not found" in message or "No AI model" in message):
            self._queue.clear()  # no model: every queued analysis would fail the same way
        self._finish_with_message(f"AI analysis failed: {message}", uid)

    def _on_cancelled(self, rid: int) -> None:
        if rid == self._request_id and self._job is not None:
            self._job_done()
            self.status.set_idle("AI: analysis cancelled")
        self.cancel_action.setEnabled(self._job is not None)

    def _on_other_model(self, rid: int, _sha256: str) -> None:
        """The session's result was made by another model than the loaded one: not shown, and not
        replaced by this model's analysis unless the reader asks (Analyze)."""
        if rid != self._request_id or self._job is None:
            return
        uid = self._job.stack.uid
        self._job_done()
        self.status.set_idle("AI: idle")
        current = self.window.current_stack()
        if current is not None and current.uid == uid:
            self._clear_display(uid, _OTHER_MODEL)

    def _finish_with_message(self, message: str, stack_uid: str) -> None:
        self.cancel_action.setEnabled(False)
        self.status.set_idle("AI: —")
        current = self.window.current_stack()
        if current is None or current.uid != stack_uid:
            return  # the user has moved on to another stack: do not put the message on it
        self.status.label.setToolTip(message)
        self.timeline.set_prediction(None, message)
        self.findings.set_prediction(None, message)
        self.window.show_status(message, 10_000)
        self.analysis_failed.emit(message)

    def _remember(self, stack: Stack, prediction: StackPrediction) -> None:
        self._refused.pop(stack.uid, None)
        self._predictions[prediction.stack_uid] = (stack, prediction)
        self._predictions.move_to_end(prediction.stack_uid)
        while len(self._predictions) > MAX_REMEMBERED:
            self._predictions.popitem(last=False)

    # --- AI results as DICOM -----------------------------------------------------------------------
    def _write_dicom_in_background(self, stack: Stack, prediction: StackPrediction) -> None:
        """Analyze writes the AI SR + KOS, de-identified, into the "AI results" folder beside the cache,
        in the helper process of :mod:`viewer.core.airesults.process` (highdicom's first use holds the
        GIL for about a second: on a thread here it froze the event loop); nothing waits for it."""
        from viewer.core.airesults import process

        def done(future: Future[list[Path]]) -> None:
            exc = future.exception() if not future.cancelled() else None
            if exc is not None:  # logged by type only (messages may carry paths)
                log.warning("The AI DICOM objects could not be written (%s)", type(exc).__name__)
            elif prediction.maps is not None:  # the localisation maps' SEG: shown by the Results overlay
                self._show_objects(future, SEG_CLASSES)

        try:
            future = process.submit(self._dicom_writer(), prediction, stack, ai_results_dir(), False)
            future.add_done_callback(done)
        except (OSError, RuntimeError) as exc:
            log.warning("The AI DICOM objects could not be written (%s)", type(exc).__name__)

    def export_dicom(self, folder: Path | None = None, *, include_identity: bool | None = None) -> list[Path]:
        """Write the shown result's AI SR + KOS into ``folder`` (the AI results folder by default);
        de-identified unless ``include_identity`` (default: the identity toggle of the AI menu)."""
        from viewer.core.airesults import process
        from viewer.core.errors import SlicewiseError

        prediction = self._shown
        entry = self._predictions.get(prediction.stack_uid) if prediction is not None else None
        if prediction is None or entry is None:
            self.window.show_status("No AI result to export: analyze a stack first", 5000)
            return []
        identity = self.dicom_identity_action.isChecked() if include_identity is None else include_identity
        try:  # in the helper process (see _write_dicom_in_background); the GIL stays free meanwhile
            writer = self._dicom_writer()
            future = process.submit(writer, prediction, entry[0], folder or ai_results_dir(), identity)
            paths = future.result(timeout=process.RESULT_TIMEOUT_S)
        except (SlicewiseError, OSError, ValueError, RuntimeError, TimeoutError) as exc:
            log.warning("AI DICOM export failed (%s)", type(exc).__name__)
            self.window.show_status(f"AI DICOM export failed ({type(exc).__name__})", 8000)
            return []
        self.window.show_status(
            f"Wrote {len(paths)} DICOM AI object(s)" + ("" if identity else " (de-identified)"), 5000
        )
        return paths

    def _dicom_writer(self) -> DicomOutputs:
        """The DICOM writer of the model's task (viewer.core.tasks registry)."""
        from viewer.core.tasks import DEFAULT_TASK, task_named

        engine = self._engine
        return task_named(engine.info.task if engine is not None else DEFAULT_TASK).dicom_outputs

    def _export_dicom_dialog(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        start = str(self.window.export_dir())
        folder = QFileDialog.getExistingDirectory(self.window, "Export AI results as DICOM", start)
        if folder:
            self.export_dicom(Path(folder))

    # --- display -----------------------------------------------------------------------------------
    def prediction(self) -> StackPrediction | None:
        """The prediction on screen."""
        return self._shown

    def _display(self, prediction: StackPrediction) -> None:
        self._shown = prediction
        w = self.window
        self.timeline.set_prediction(prediction)
        self.timeline.set_current_slice(w.current_slice())
        self.findings.set_prediction(prediction)
        w.set_slice_marks("ai", prediction.flagged_slices(), MARK_COLOR)
        w.set_title_badge(prediction.badge())
        w.set_stack_badge(prediction.stack_uid, prediction.badge())
        from viewer.core.inference.engine import provider_label

        timing = "cached" if prediction.from_cache else f"{prediction.elapsed_s:.2f} s"
        self.status.set_idle(
            f"AI: {provider_label(prediction.provider)} · {prediction.model_name} {prediction.model_version}"
            f" · {timing}"
        )
        tip = prediction.intended_use
        scope = prediction.applicability
        if scope is not None and scope.cautioned:
            tip = f"{scope.summary()}\n{tip}"
        if prediction.provider_note:
            tip += "\n" + prediction.provider_note
        self.status.label.setToolTip(tip)
        self._update_corner(w.current_slice())
        self.prediction_shown.emit(prediction)

    def _clear_display(self, stack_uid: str | None, message: str = "") -> None:
        self._shown = None
        self.timeline.set_prediction(None, message)
        self.findings.set_prediction(None, message)
        self.window.set_slice_marks("ai", [], MARK_COLOR)
        self.window.set_title_badge("")
        self.window.set_image_corner_text("ai", "")
        self.prediction_shown.emit(None)

    def _update_corner(self, index: int) -> None:
        pred = self._shown
        if pred is None or not 0 <= index < pred.num_slices:
            self.window.set_image_corner_text("ai", "")
            return
        row = pred.slice_probs[index]
        above = [
            (name, float(row[k])) for k, name in enumerate(pred.class_names) if row[k] >= pred.thresholds[k]
        ]
        above.sort(key=lambda item: item[1], reverse=True)
        colour = "#ff7b72" if pred.study_positive else "#8b949e"
        # a class and its probability stay on one line ("subdural 0.97", never "0.97" alone under it)
        badge = _NUMBER_AFTER_SPACE.sub("&nbsp;", html.escape(pred.badge()))
        study = f"<span style='color:{colour}'><b>AI study</b>: {badge}</span>"
        if above:
            items = ", ".join(f"{html.escape(n)}&nbsp;{p:.2f}" for n, p in above)
            text = f"<span style='color:#ff7b72'>slice flags: {items}</span>"
        else:
            text = "<span style='color:#8b949e'>slice: none above threshold</span>"
        scope = pred.applicability
        cautioned = scope is not None and scope.cautioned
        caution = "<br><span style='color:#e3b341'>⚠ in scope with caution</span>" if cautioned else ""
        # a small viewport: one line, the study decision and its top class (the slice's flags are in the
        # timeline and the slider marks, everything in the AI dock and in the line's tooltip)
        compact = f"<span style='color:{colour}'><b>AI</b>: {badge}</span>" + (
            " <span style='color:#e3b341'>⚠</span>" if cautioned else ""
        )
        self.window.set_image_corner_text("ai", f"{study}<br>{text}{caution}", compact)

    def _on_slice_changed(self, index: int) -> None:
        self.timeline.set_current_slice(index)
        self._update_corner(index)

    def _on_stack_shown(self, stack: Stack) -> None:
        # the probability strip only where the model can apply (greyscale CT): no empty 190 px strip
        self.timeline.setVisible((stack.modality or "").upper() == "CT" and not stack.is_color)
        known = self._predictions.get(stack.uid)
        if known is not None and known[0] == stack:
            self._display(known[1])
            return
        refused = self._refused.get(stack.uid)
        if refused is not None and refused[0] == stack:
            self._show_refusal(refused[1])
            return
        # The prediction cache is keyed by the pixels: a cached result is found by the analysis job
        # (after decoding), never by UIDs, so a changed copy with the same UIDs is analysed afresh.
        self._clear_display(stack.uid)
        self._maybe_auto(stack)

    def _maybe_auto(self, stack: Stack) -> None:
        if not (self.auto_analyze and _eligible(stack)):
            return
        if self._job is not None and self._job.stack.uid == stack.uid:
            return  # already running (e.g. from the background queue)
        self.analyze()

    # --- navigation --------------------------------------------------------------------------------
    def next_flagged(self) -> None:
        """Ctrl+Down: the next flagged slice."""
        self._jump(+1, by_run=False)

    def previous_flagged(self) -> None:
        self._jump(-1, by_run=False)

    def next_run(self) -> None:
        """N: the first slice of the next run of flagged slices."""
        self._jump(+1, by_run=True)

    def previous_run(self) -> None:
        """Shift+N: the first slice of the previous run."""
        self._jump(-1, by_run=True)

    def _jump(self, direction: int, *, by_run: bool) -> None:
        pred = self._shown
        if pred is None:
            self.window.show_status(f"AI: no analysis for this stack ({ANALYZE_KEY} analyzes it)")
            return
        current = self.window.current_slice()
        if by_run:
            target = run_start(pred.flagged_runs(), current, direction)
        else:
            flagged = pred.flagged_slices()
            after = [i for i in flagged if (i > current if direction > 0 else i < current)]
            target = (after[0] if direction > 0 else after[-1]) if after else None
        if target is None:
            what = "run" if by_run else "slice"
            self.window.show_status(f"AI: no further flagged {what}" if pred.flagged_slices()
                                    else "AI: no flagged slices")
            return
        self.window.set_slice(target)

    # --- dialogs -----------------------------------------------------------------------------------
    def _choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Load ONNX model", "", "ONNX models (*.onnx)")
        if not path:
            return
        from viewer.core.inference.engine import load_model_info

        try:
            info = load_model_info(path)
        except ModelError as exc:
            QMessageBox.warning(self.window, "Model not usable", str(exc))
            return
        self.set_model_path(Path(path))
        self.window.show_status(f"AI model: {info.label}")

    def _about_model(self) -> None:
        engine = self._engine
        if engine is None:
            path = self.model_path()
            if not path.is_file():
                QMessageBox.information(self.window, "AI model", f"No model loaded.\n\n{INTENDED_USE}")
                return
            from viewer.core.inference.engine import load_model_info

            try:
                info = load_model_info(path)
            except ModelError as exc:
                QMessageBox.warning(self.window, "Model not usable", str(exc))
                return
            provider_text = "not started"
        else:
            info = engine.info
            from viewer.core.inference.engine import provider_label

            provider_text = provider_label(engine.provider) + (
                f" ({engine.provider_note})" if engine.provider_note else ""
            )
        thresholds = ", ".join(f"{n} {t:.3f}" for n, t in zip(info.class_names, info.thresholds))
        study_thr = (
            ", ".join(f"{n} {t:.3f}" for n, t in zip(info.class_names, info.study_thresholds))
            if info.study_thresholds
            else "not recorded (the slice thresholds are used)"
        )
        trained = "recorded" if info.trained_range is not None else "not recorded (every result is cautioned)"
        text = (
            f"<b>{html.escape(info.label)}</b><br>SHA-256 {info.sha256[:16]}…<br>"
            f"Provider: {html.escape(provider_text)}<br>Slice thresholds: {html.escape(thresholds)}<br>"
            f"Study thresholds: {html.escape(study_thr)}<br>Trained range: {html.escape(trained)}<br>"
            f"Threshold policy: {html.escape(info.threshold_policy)}<br>"
            f"Training data: {html.escape(info.train_data)}<br><br>"
            f"<b style='color:#e3b341'>{html.escape(info.intended_use)}</b>"
        )
        box = QMessageBox(self.window)
        box.setWindowTitle("AI model")
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setText(text)
        box.open()


def _headline(summary: dict[str, object]) -> str:
    """One line of a task's ``predict`` summary: its volumes in mL where it has them."""
    volumes = summary.get("volumes_ml")
    if not isinstance(volumes, dict):
        return "done"
    found = [
        f"{name} {'< 0.1' if v < SHOWN_MIN_ML else f'{v:.1f}'} mL"
        for name, v in volumes.items()
        if isinstance(v, int | float) and v > 0
    ]
    return ", ".join(found) if found else "nothing found"


def ai_results_dir() -> Path:
    """Where Analyze writes the DICOM AI objects: "ai-results" beside the prediction cache (0700)."""
    from viewer.core.paths import user_data_path
    from viewer.core.review.fileutil import private_dir

    return private_dir(user_data_path() / "ai-results")


def _eligible(stack: Stack) -> bool:
    """Worth an automatic analysis: a greyscale CT stack (the model's own checks come later)."""
    return (stack.modality or "").upper() == "CT" and not stack.is_color and len(stack) > 1


def attach(window: Any) -> AIController:
    """Add the AI analysis UI to ``window`` (a MainWindow) and return its controller."""
    controller = AIController(window)
    window.ai_controller = controller  # keep a Python reference for the window's lifetime
    return controller
