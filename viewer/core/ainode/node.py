"""The AI node: instances in (Storage SCP or DICOMweb watcher), each series analysed once when quiet, the
result object stored back to the PACS.

- :meth:`AiNode.ingest` checks one received instance, writes it to the spool and records it in the queue
  (both durable) and only then returns: the Storage SCP answers the C-STORE after it.
- A worker thread takes each series once it has been quiet for ``quiet_s`` seconds (``release_quiet_s``
  once the sender released the association that brought its latest instances), loads it with the
  ordinary local loader, and per stack: the applicability check (out of scope: recorded as refused with
  its codes, never run), the pixels, the result key (pixel digest + model hash + preprocessing, the
  prediction cache's key), the model (or the prediction cache), the result objects (the AI Result SR
  and KOS, :func:`~viewer.core.ainode.result_object.write_result_objects`) written to the outbox, then
  stored to the PACS by C-STORE or STOW-RS. A result key already stored is never analysed or stored
  again; a store the PACS did not take is retried with backoff from the outbox, without analysing again.
- A restart reopens the queue: series a killed worker had taken are analysed again (the prediction
  cache and the result keys keep the model from running twice and the PACS from getting two objects).
- Log lines name series by a salted hash (:meth:`NodeQueue.tag`), never a UID, name, ID or path.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from viewer.core.ainode.queue import NodeQueue, ResultRow, ResultState, SeriesRow, SeriesState
from viewer.core.ainode.result_object import write_result_objects
from viewer.core.ainode.spool import Spool, name_key
from viewer.core.applicability import OutOfScopeError
from viewer.core.dicom.model import Stack
from viewer.core.errors import PacsError, SlicewiseError, StackNotSupportedError
from viewer.core.inference.engine import InferenceEngine
from viewer.core.pacs.cache import inspect_instance
from viewer.core.pacs.dicomweb import DicomWebClient
from viewer.core.pacs.dimse import DimseClient
from viewer.core.pacs.node import PacsNode
from viewer.core.pacs.protocol import PacsClient

log = logging.getLogger(__name__)
# highdicom logs the UIDs of the datasets it copies from at INFO: keep it to warnings
if logging.getLogger("highdicom").level < logging.WARNING:
    logging.getLogger("highdicom").setLevel(logging.WARNING)

DEFAULT_QUIET_S = 5.0
# once the sender released the association that brought a series' latest instances, it is due after this
# (a sender that sends one series over several associations continues within it, or the series waits the
# full quiet time again)
DEFAULT_RELEASE_QUIET_S = 0.5
POLL_S = 0.2
STORE_RETRY_FIRST_S = 5.0
STORE_RETRY_MAX_S = 300.0
KEEP_S = 24 * 3600.0  # finished series stay in the spool this long (a late instance re-analyses them whole)
PURGE_EVERY_S = 60.0


class StoreProtocol(str, Enum):
    DIMSE = "c-store"
    DICOMWEB = "stow-rs"


@dataclass(frozen=True)
class NodeConfig:
    state_dir: Path
    store_to: PacsNode
    store_via: StoreProtocol = StoreProtocol.DIMSE
    quiet_s: float = DEFAULT_QUIET_S
    release_quiet_s: float = DEFAULT_RELEASE_QUIET_S
    poll_s: float = POLL_S
    store_retry_first_s: float = STORE_RETRY_FIRST_S
    keep_s: float = KEEP_S


class Ingested(str, Enum):
    NEW = "new"
    DUPLICATE = "duplicate"  # the SOP Instance UID was already received: the first copy is kept


ClientFactory = Callable[[PacsNode, StoreProtocol], PacsClient]


def default_client(node: PacsNode, via: StoreProtocol) -> PacsClient:
    return DicomWebClient(node) if via is StoreProtocol.DICOMWEB else DimseClient(node)


class AiNode:
    def __init__(
        self, config: NodeConfig, engine: InferenceEngine, *, client_factory: ClientFactory = default_client
    ) -> None:
        self.config = config
        self.engine = engine
        self.spool = Spool(config.state_dir)
        self.queue = NodeQueue(config.state_dir / "queue.sqlite3")
        self._client_factory = client_factory
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy = threading.Lock()
        self._association_series: dict[Hashable, set[str]] = {}  # open association -> series received
        self._association_lock = threading.Lock()
        recovered = self.queue.recover()
        if recovered:
            log.info("AI node: %d series interrupted by a restart will be analysed again", recovered)

    # --- intake -----------------------------------------------------------------------------------
    def ingest(self, data: bytes, *, association: Hashable | None = None) -> Ingested:
        """Keep one Part-10 instance: checked, written to the spool and recorded, durably, before this
        returns. Raises :class:`PacsResponseError` for an unusable instance. ``association`` (any key
        of the sender's open association) lets :meth:`association_released` make its series due early."""
        head = inspect_instance(data)
        if self.queue.has_instance(head.sop_instance_uid):
            return Ingested.DUPLICATE
        name = self.spool.write_instance(head.series_uid, head.sop_instance_uid, data)
        added = self.queue.add_instance(head.sop_instance_uid, head.series_uid, head.study_uid, name)
        if added and association is not None:
            with self._association_lock:
                self._association_series.setdefault(association, set()).add(head.series_uid)
        return Ingested.NEW if added else Ingested.DUPLICATE

    def association_released(self, association: Hashable) -> None:
        """The sender ended ``association`` normally: what it sent is complete as far as it knows, so its
        series are analysed ``release_quiet_s`` from now rather than after the full quiet time."""
        with self._association_lock:
            series = self._association_series.pop(association, set())
        if series:
            self.queue.mark_released(series)

    def association_lost(self, association: Hashable) -> None:
        """``association`` was aborted or dropped: its series wait the full quiet time (the sender may
        resume)."""
        with self._association_lock:
            self._association_series.pop(association, None)

    # --- worker -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ai-node-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the worker (after the series in hand, within ``timeout_s``) and close the queue."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("AI node: the worker did not stop within %g s", timeout_s)
                return
        self.queue.close()

    def drain(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until no series is receiving or being analysed; True if so."""
        deadline = time.monotonic() + timeout_s
        busy = (SeriesState.RECEIVING, SeriesState.ANALYSING)
        while time.monotonic() < deadline:
            if not any(s.state in busy for s in self.queue.all_series()):
                return True
            time.sleep(self.config.poll_s)
        return False

    def _loop(self) -> None:
        next_purge = 0.0
        while not self._stop.is_set():
            try:
                worked = self.run_once()
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_EVERY_S
                    self.purge()
            except Exception as exc:  # a bug must not end the node silently; the series stays queued
                log.exception("AI node: worker error (%s)", type(exc).__name__)
                worked = False
            if not worked:
                self._stop.wait(self.config.poll_s)

    def purge(self, now: float | None = None) -> int:
        """Delete the spool files of series finished more than ``keep_s`` ago (and the outbox copies of
        their stored results); returns the number of series dropped. Their result keys stay: the same
        pixels sent again are received and looked at, but not stored again."""
        now = time.time() if now is None else now
        dropped = self.queue.forget_finished(now - self.config.keep_s)
        for _uid, files, outbox in dropped:
            folders = set()
            for name in files:
                path = self.spool.path(name)
                folders.add(path.parent)
                path.unlink(missing_ok=True)
            for name in outbox:
                shutil.rmtree(self.spool.result_folder(name, create=False), ignore_errors=True)
            for folder in folders:
                with contextlib.suppress(OSError):  # not empty: a new instance of the series came
                    folder.rmdir()
        if dropped:
            log.info("AI node: %d finished series removed from the spool", len(dropped))
        return len(dropped)

    def run_once(self, now: float | None = None) -> bool:
        """Process one due series (if any); True when one was processed."""
        with self._busy:
            row = self.queue.take_due(self.config.quiet_s, now, release_quiet_s=self.config.release_quiet_s)
            if row is None:
                return False
            self._process(row)
            return True

    def _process(self, row: SeriesRow) -> None:
        tag = self.queue.tag(row.series_uid)
        if row.state is SeriesState.STORE_PENDING:
            results = self.queue.results(row.series_uid)
        else:
            self.queue.count_analysis(row.series_uid)
            start = time.perf_counter()
            try:
                results = self._analyse(row, tag)
            except Exception as exc:
                log.exception("AI node: series %s failed (%s)", tag, type(exc).__name__)
                self.queue.finish_series(
                    row.series_uid, SeriesState.FAILED, f"analysis failed ({type(exc).__name__})"
                )
                return
            log.info("AI node: series %s analysed in %.2f s", tag, time.perf_counter() - start)
        for result in results:
            if result.state is ResultState.STORE_PENDING:
                self._store(result, tag)
        self._finish(row, self.queue.results(row.series_uid), tag)

    def _finish(self, row: SeriesRow, results: list[ResultRow], tag: str) -> None:
        states = {r.state for r in results}
        if ResultState.STORE_PENDING in states:
            attempts = row.attempts + 1
            delay = min(STORE_RETRY_MAX_S, self.config.store_retry_first_s * 2 ** (attempts - 1))
            self.queue.finish_series(
                row.series_uid, SeriesState.STORE_PENDING, "result not stored yet", retry_in_s=delay
            )
            log.warning("AI node: series %s result not stored; retry in %.0f s", tag, delay)
        elif ResultState.STORED in states:
            self.queue.finish_series(row.series_uid, SeriesState.DONE)
        elif states == {ResultState.REFUSED}:
            reasons = "; ".join(dict.fromkeys(r.reason for r in results))
            self.queue.finish_series(row.series_uid, SeriesState.REFUSED, reasons)
        else:
            reasons = "; ".join(dict.fromkeys(r.reason for r in results if r.reason)) or "no image stack"
            self.queue.finish_series(row.series_uid, SeriesState.FAILED, reasons)

    def _analyse(self, row: SeriesRow, tag: str) -> list[ResultRow]:
        from viewer.core.dicom.loader import load_paths

        files = [self.spool.path(name) for name in self.queue.files(row.series_uid)]
        report = load_paths(files)
        stacks = [s for s in report.all_stacks() if s.series_instance_uid == row.series_uid]
        if not stacks:
            codes = sorted({s.code for s in report.skipped})
            key = "none:" + name_key("series", row.series_uid)
            self.queue.put_result(
                key,
                row.series_uid,
                "",
                ResultState.FAILED,
                codes=tuple(codes),
                reason=f"no image stack could be read ({', '.join(codes) or 'no files'})",
            )
            log.warning("AI node: series %s has no readable stack (%s)", tag, ", ".join(codes))
            return [r for r in [self.queue.result(key)] if r is not None]
        keys = [self._analyse_stack(row, stack, tag) for stack in stacks]
        return [r for r in (self.queue.result(k) for k in keys) if r is not None]

    def _analyse_stack(self, row: SeriesRow, stack: Stack, tag: str) -> str:
        """Analyse (or refuse) one stack; returns its result key."""
        from viewer.core.dicom.volume import StackVolume

        engine = self.engine
        refused_key = "refused:" + name_key("stack", f"{stack.uid}|{engine.info.sha256}|{len(stack)}")
        try:
            engine.check_stack(stack)
        except OutOfScopeError as exc:
            return self._refuse(row, stack, refused_key, exc, tag)
        volume = StackVolume(stack)
        try:
            hu = volume.load_all()
            bad = tuple(sorted(int(i) for i in volume.bad_slices))
            if len(bad) * 2 > len(stack):
                self.queue.put_result(
                    refused_key,
                    row.series_uid,
                    stack.uid,
                    ResultState.FAILED,
                    reason=f"{len(bad)} of {len(stack)} slices could not be decoded",
                )
                log.warning("AI node: series %s: %d of %d slices undecodable", tag, len(bad), len(stack))
                return refused_key
            key = engine.cache_key(hu)
            known = self.queue.result(key)
            if known is not None and known.state is not ResultState.FAILED:
                log.info(
                    "AI node: series %s: these pixels were analysed already (%s)", tag, known.state.value
                )
                return key
            try:
                pred = engine.predict_hu(stack, hu, bad_slices=bad)
            except OutOfScopeError as exc:
                return self._refuse(row, stack, key, exc, tag)
            except (StackNotSupportedError, SlicewiseError, MemoryError, ValueError) as exc:
                self.queue.put_result(
                    key,
                    row.series_uid,
                    stack.uid,
                    ResultState.FAILED,
                    reason=f"analysis failed ({type(exc).__name__})",
                )
                log.warning("AI node: series %s analysis failed (%s)", tag, type(exc).__name__)
                return key
        finally:
            volume.close()
        folder = self.spool.result_folder(key)
        try:
            paths = write_result_objects(pred, stack, engine.info.task, folder)
        except (SlicewiseError, OSError, ValueError) as exc:
            self.queue.put_result(
                key,
                row.series_uid,
                stack.uid,
                ResultState.FAILED,
                reason=f"the result objects could not be built ({type(exc).__name__})",
                model_ran=not pred.from_cache,
            )
            log.warning("AI node: series %s: result objects not built (%s)", tag, type(exc).__name__)
            return key
        self.queue.put_result(
            key,
            row.series_uid,
            stack.uid,
            ResultState.STORE_PENDING,
            decision=pred.badge(),
            model_ran=not pred.from_cache,
            object_uid=paths[0].stem,  # the AI Result SR (files are named by SOP Instance UID)
            object_file=folder.name,
        )
        log.info(
            "AI node: series %s: %d slices, %s%s",
            tag,
            len(stack),
            pred.badge(),
            " (from the prediction cache)" if pred.from_cache else "",
        )
        return key

    def _refuse(self, row: SeriesRow, stack: Stack, key: str, exc: OutOfScopeError, tag: str) -> str:
        scope = exc.applicability
        self.queue.put_result(
            key, row.series_uid, stack.uid, ResultState.REFUSED, codes=scope.codes, reason=scope.summary()
        )
        log.info("AI node: series %s out of scope (%s): not analysed", tag, ", ".join(scope.codes))
        return key

    def _store(self, result: ResultRow, tag: str) -> None:
        paths = sorted(self.spool.result_folder(result.object_file).glob("*.dcm"))
        node, via = self.config.store_to, self.config.store_via.value
        try:
            client = self._client_factory(node, self.config.store_via)
            try:
                outcomes = client.store(paths)
            finally:
                client.close()
        except PacsError as exc:
            self.queue.record_store(result.result_key, False, f"{type(exc).__name__}: {exc}")
            log.warning("AI node: series %s: storing the result failed (%s)", tag, type(exc).__name__)
            return
        ok = bool(outcomes) and all(o.ok for o in outcomes)
        statuses = ", ".join(
            f"0x{o.status:04X}" if o.status is not None else (o.reason or "no status") for o in outcomes
        )
        if ok:
            text = f"stored by {via} ({len(outcomes)} object(s), status {statuses})"
        else:
            text = f"not all stored by {via}: " + "; ".join(
                o.reason or "refused" for o in outcomes if not o.ok
            )
        self.queue.record_store(result.result_key, ok, text)
        if ok:
            log.info("AI node: series %s: result stored (%s, %d object(s))", tag, via, len(outcomes))
        else:
            log.warning("AI node: series %s: the PACS refused the result (%s)", tag, statuses)
