"""The only module of the Qt layer that starts threads.

Jobs run plain core functions on a ``QThread`` and report back through Qt signals (queued to the GUI
thread). Progress is throttled so a 10,000-file scan cannot flood the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, Qt, QThread, Signal

from viewer.core.dicom.model import LoadReport, Stack
from viewer.core.errors import DicomError, PacsError, StudySourceError

if TYPE_CHECKING:  # the PACS clients (pynetdicom, dicomweb-client) load only when a PACS is used
    from datetime import date

    from viewer.core.location import SourceRef, StudyLocator
    from viewer.core.pacs import (
        InstanceCache,
        PacsClient,
        RetrievedInstance,
        RetrieveReport,
        SeriesMatch,
        StudyMatch,
        StudyQuery,
    )

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.05  # at most 20 progress signals a second
PREVIEW_INTERVAL_S = 0.5  # a retrieve's growing preview: at most two a second
THUMBNAIL_SIZE = 96


def log_failure(log: logging.Logger, level: int, message: str, exc: BaseException) -> None:
    """Log ``message`` with the exception's type and stack frames but not its text.

    Exception texts from file access and decoding often hold file paths (patient names are common folder
    names), which must not reach the log; the frames only name the program's own source files.
    """
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.log(level, "%s (%s)\n%s", message, type(exc).__name__, frames.rstrip())


class _FunctionThread(QThread):
    """Runs ``fn`` once; the job object owns the signals."""

    def __init__(self, fn: Callable[[], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._fn = fn

    def run(self) -> None:
        self._fn()


class _Job(QObject):
    progress = Signal(int, int)  # done, total
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._cancel = threading.Event()
        self._last_progress = 0.0
        self._thread = _FunctionThread(self._run_guarded)
        self._thread.finished.connect(self._thread.deleteLater)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def is_running(self) -> bool:
        try:
            return self._thread.isRunning()
        except RuntimeError:  # C++ thread object already deleted
            return False

    def wait(self, ms: int = 30_000) -> bool:
        try:
            return self._thread.wait(ms)
        except RuntimeError:
            return True

    def _emit_progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last_progress >= PROGRESS_INTERVAL_S:
            self._last_progress = now
            self.progress.emit(int(done), int(total))

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:  # one handler for every worker error
            log_failure(logger, logging.ERROR, f"Background job {type(self).__name__} failed", exc)
            self.failed.emit(f"{type(exc).__name__}: {exc}")

    def _run(self) -> None:
        raise NotImplementedError


class LoadJob(_Job):
    """``load_paths`` on a worker thread; ``done`` carries the LoadReport (also when cancelled).

    ``provisional`` carries, once and early, a :class:`Stack` of the first files read (sorted among
    themselves, each slice with its own position) to show until ``done`` brings the real stacks.
    """

    done = Signal(object)
    provisional = Signal(object)

    def __init__(
        self, paths: Sequence[str | Path], parent: QObject | None = None, *, source: SourceRef | None = None
    ) -> None:
        super().__init__(parent)
        self.paths = [str(p) for p in paths]
        self.source = source  # where the study came from, when not simply these paths (a PACS)

    def _run(self) -> None:
        from viewer.core.dicom.loader import load_paths

        report: LoadReport = load_paths(
            self.paths,
            progress=self._emit_progress,
            cancel=self.is_cancelled,
            on_provisional=self.provisional.emit,
        )
        self.done.emit(report)


class ThumbnailJob(_Job):
    """Decodes the middle slice of each stack and emits ``ready(stack_uid, uint8 array)``."""

    ready = Signal(str, object)

    def __init__(self, stacks: Sequence[Stack], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.stacks = list(stacks)

    def _run(self) -> None:
        from viewer.core.dicom.volume import StackVolume

        for k, stack in enumerate(self.stacks):
            if self.is_cancelled():
                return
            try:
                vol = StackVolume(stack, cache_bytes=64 * 1024**2)
                try:
                    data = vol.get_slice(len(vol) // 2)
                    thumb = make_thumbnail(data, vol.default_window().levels, vol.invert_display)
                finally:
                    vol.close()
            except DicomError as exc:  # expected (undecodable or odd pixels): one line, no stack trace
                logger.info("No thumbnail for a stack (%s)", type(exc).__name__)
                continue
            except Exception as exc:
                log_failure(logger, logging.WARNING, "No thumbnail for a stack (decode failed)", exc)
                continue
            self.ready.emit(stack.uid, thumb)
            self._emit_progress(k + 1, len(self.stacks))


def make_thumbnail(data: np.ndarray, levels: tuple[float, float], invert: bool) -> np.ndarray:
    """Pure numpy: a uint8 image no larger than THUMBNAIL_SIZE (grey 2D or RGB 3D)."""
    step = max(1, int(np.ceil(max(data.shape[0], data.shape[1]) / THUMBNAIL_SIZE)))
    small = np.ascontiguousarray(data[::step, ::step])
    if small.ndim == 3:
        return small.astype(np.uint8)
    low, high = levels
    width = max(high - low, 1.0)
    out = np.clip((small.astype(np.float32) - low) / width, 0.0, 1.0)
    if invert:
        out = 1.0 - out
    return np.ascontiguousarray((out * 255.0).round().astype(np.uint8))


class PacsCallJob(_Job):
    """One PACS operation (echo, a query) on a worker thread: ``call(client)`` with a client made there
    by ``make_client`` (DICOMweb sessions are not shared between threads); ``done`` carries the result.

    A :class:`PacsError` is expected (server down, refused, bad answer): ``failed`` carries its message
    (it names the node, never a patient) and the log only its type.
    """

    done = Signal(object)

    def __init__(
        self,
        make_client: Callable[[], PacsClient],
        call: Callable[[PacsClient], object],
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._make_client = make_client
        self._call = call

    def _run(self) -> None:
        try:
            client = self._make_client()
            try:
                result = self._call(client)
            finally:
                client.close()
        except PacsError as exc:
            logger.info("PACS operation failed (%s)", type(exc).__name__)
            self.failed.emit(str(exc))
            return
        self.done.emit(result)


class PacsSearchJob(PacsCallJob):
    """A study query on a worker thread: ``first_page`` carries the first matches while the rest are on
    their way (when the client can tell them early), ``done`` every match."""

    first_page = Signal(object)  # list[StudyMatch]

    def __init__(
        self, make_client: Callable[[], PacsClient], query: StudyQuery, parent: QObject | None = None
    ) -> None:
        super().__init__(make_client, self._search, parent)
        self.query = query

    def _search(self, client: PacsClient) -> list[StudyMatch]:
        return client.find_studies(self.query, on_first_page=self.first_page.emit)


class PacsWorklistJob(PacsCallJob):
    """Build the AI-ordered PACS worklist (:func:`viewer.core.pacs.worklist.build_worklist`) on a worker
    thread: progress is (studies read, studies found); cancel stops after the current study; ``done``
    carries the ordered list of WorklistRows (those made so far when cancelled)."""

    def __init__(
        self,
        make_client: Callable[[], PacsClient],
        cache: InstanceCache,
        date_from: date,
        date_to: date,
        head_only: bool = True,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(make_client, self._build, parent)
        self.cache = cache
        self.date_from = date_from
        self.date_to = date_to
        self.head_only = head_only

    def _build(self, client: PacsClient) -> object:
        from viewer.core.pacs.worklist import build_worklist

        return build_worklist(
            client,
            self.cache,
            date_from=self.date_from,
            date_to=self.date_to,
            head_only=self.head_only,
            on_progress=self._emit_progress,
            cancel=self.is_cancelled,
        )


class _PreviewKind(Enum):
    """What a retrieve's preview signal is to the window."""

    FIRST = "first"  # the first image to arrive, of any series
    GROWN = "grown"  # the previewed series, more of it arrived


class PacsRetrieveJob(PacsCallJob):
    """Retrieve a study (every series) or some of its series into the instance cache, with progress
    (frames arrived, frames expected: an instance counts one frame until it has arrived, a multi-frame
    one its frames from then on) and cancel; ``done`` carries the list of RetrieveReports (the last one
    marked ``cancelled`` when the user stopped it).

    The study's main series (:func:`~viewer.core.pacs.preview.main_series`, chosen from the series
    query's answers: the image series with the most instances that is not a localizer) is retrieved
    first, and the series of the first image instance to arrive streams in as a preview
    (:class:`~viewer.core.pacs.preview.SeriesPreview`: headers read here, on the job's thread, never on
    the GUI thread): ``first_image`` carries a one-image Stack of it at once; ``preview_grown`` (Stack,
    frames of the series arrived, frames expected or 0) a sorted Stack of every instance of the
    series arrived so far, at most every :data:`PREVIEW_INTERVAL_S` and only once the GUI thread has
    returned from the previous one (a busy window is never flooded), and once more when the series is
    complete and other series follow. :meth:`stop_preview` (the window shows something else) ends
    them. ``series_arrived`` carries the report of each further series (not the first retrieved, not
    the previewed one) as soon as it has arrived, so the window can list it while the rest come."""

    first_image = Signal(object)  # Stack
    preview_grown = Signal(object, int, int)  # Stack, frames arrived, frames expected (0: unknown)
    series_arrived = Signal(object)  # RetrieveReport of a further series, arrived (not cancelled)
    _preview_ready = Signal(object, int, int, object)  # from the job's thread; the last: a _PreviewKind

    def __init__(
        self,
        make_client: Callable[[], PacsClient],
        cache: InstanceCache,
        study_uid: str,
        series: Sequence[SeriesMatch] = (),
        parent: QObject | None = None,
    ) -> None:
        super().__init__(make_client, self._retrieve, parent)
        self.cache = cache
        self.study_uid = study_uid
        self.series = list(series)
        self.source: SourceRef | None = None  # the node and series, recorded with the opened study
        self.opened: set[Path] = set()  # series folders the window opened while the study arrived
        self._preview_stopped = threading.Event()
        self._preview_absorbed = threading.Event()  # the GUI thread has handled the last preview
        self._preview_absorbed.set()
        self._preview_ready.connect(self._deliver_preview, Qt.ConnectionType.QueuedConnection)

    def stop_preview(self) -> None:
        """No more previews (the window does not show them): their headers are not read either."""
        self._preview_stopped.set()

    def _deliver_preview(self, stack: Stack, arrived: int, expected: int, kind: _PreviewKind) -> None:
        """On the GUI thread: hand the preview to the slots, then let the job send the next one."""
        try:
            if kind is _PreviewKind.FIRST:
                self.first_image.emit(stack)
            else:
                self.preview_grown.emit(stack, arrived, expected)
        finally:
            self._preview_absorbed.set()

    def _retrieve(self, client: PacsClient) -> list[RetrieveReport]:
        from viewer.core.pacs.preview import SeriesPreview, main_series

        reports: list[RetrieveReport] = []
        series = self.series or client.find_series(self.study_uid)
        expected = {s.series_uid: s.num_instances or 0 for s in series}
        total = sum(expected.values())
        main = main_series(series)  # None: the query did not say; the first image series arrived
        ordered = sorted(series, key=lambda s: s.series_uid != main)  # the main series first
        arrived = 0  # frames
        extra = 0  # frames beyond one of the multi-frame instances arrived
        preview: SeriesPreview | None = None
        shown = 0  # frames of the preview series in the last preview sent
        last = 0.0

        def offer(complete: bool) -> None:
            """Send the preview series as it is now: throttled, unless the series is complete."""
            nonlocal shown, last
            if preview is None or self._preview_stopped.is_set() or preview.arrived == shown:
                return
            now = time.monotonic()
            if not self._preview_absorbed.is_set():
                return  # the next instance (or the series' end) offers it again
            if not complete and now - last < PREVIEW_INTERVAL_S:
                return
            count = preview.arrived
            stack = preview.stack()
            if stack is None:
                return
            shown, last = count, now
            self._preview_absorbed.clear()
            self._preview_ready.emit(stack, count, preview.expected, _PreviewKind.GROWN)

        def on_instance(item: RetrievedInstance) -> None:
            nonlocal arrived, extra, preview, last, shown
            frames = max(1, item.frames)
            arrived += frames
            extra += frames - 1
            self._emit_progress(arrived, max(total + extra, arrived))
            if self._preview_stopped.is_set():
                return
            if preview is not None:
                if item.series_uid == preview.series_uid:
                    preview.add(item.source, frames)
                    offer(complete=False)
                return
            # The first image instance to arrive (the main series' first, unless it has no readable
            # image) is shown at once; its series grows from there.
            candidate = SeriesPreview(item.series_uid, expected.get(item.series_uid, 0))
            candidate.add(item.source, frames)
            first = candidate.stack()
            if first is None:  # an SR, a KOS, an unreadable file: the next instance may be an image
                return
            preview, last, shown = candidate, time.monotonic(), candidate.arrived
            self._preview_absorbed.clear()
            self._preview_ready.emit(first, candidate.arrived, preview.expected, _PreviewKind.FIRST)

        for s in ordered:
            if self.is_cancelled():
                break
            report = client.retrieve_series(
                self.study_uid, s.series_uid, self.cache, on_instance=on_instance, cancel=self.is_cancelled
            )
            reports.append(report)
            if report.cancelled:
                break
            previewed = preview is not None and s.series_uid == preview.series_uid
            if previewed and s is not ordered[-1]:
                # the whole series while the rest of the study arrives (after the last series the
                # loaded study follows at once: its headers are not read twice)
                offer(complete=True)
            elif not previewed and s is not ordered[0] and report.instances:
                self.series_arrived.emit(report)  # listed by the window while the rest arrive
        return reports


class LocateJob(_Job):
    """Find a study again from its recorded source (:class:`viewer.core.location.StudyLocator`: local
    files, or a retrieve from its PACS into the cache) on a worker thread; progress is (instances
    arrived, expected); ``done`` carries the :class:`~viewer.core.location.LocatedStudy`. A study that
    cannot be had (files gone, node removed, PACS down) is ``failed`` with the reason (it names the
    source, never a patient); the log gets only its type."""

    done = Signal(object)

    def __init__(
        self, locator: StudyLocator, study_uid: str, source: SourceRef, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.locator = locator
        self.study_uid = study_uid
        self.source = source

    def _run(self) -> None:
        try:
            located = self.locator.locate(
                self.study_uid, self.source, progress=self._emit_progress, cancel=self.is_cancelled
            )
        except (StudySourceError, PacsError) as exc:
            logger.info("A study could not be found again (%s)", type(exc).__name__)
            self.failed.emit(str(exc))
            return
        self.done.emit(located)
