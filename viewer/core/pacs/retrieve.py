"""The transport-independent half of a retrieve: where instances go, what counts as arrived, resume.

A transport (C-GET, C-MOVE, WADO-RS) hands every arrived instance to an :class:`InstanceSink`, which
checks it, writes it into the cache and calls the viewer back once per instance. :func:`retrieve_series`
lists what the series should hold, skips what the cache already has, runs the transport, and after a
dropped connection asks again for the missing instances only (never twice for one instance), with
backoff, up to :data:`PACS_RETRIEVE_ATTEMPTS` rounds. What still did not arrive is listed with a reason.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from viewer.core.constants import PACS_RETRIEVE_ATTEMPTS, PACS_RETRY_BACKOFF_S
from viewer.core.errors import (
    PacsAssociationRejectedError,
    PacsAuthenticationError,
    PacsCancelled,
    PacsConnectionLostError,
    PacsError,
    PacsResponseError,
)
from viewer.core.pacs.cache import InstanceCache
from viewer.core.pacs.cache_pack import PackWriter
from viewer.core.pacs.header_scan import ScannedHeader
from viewer.core.pacs.models import (
    CancelFn,
    InstanceCallback,
    InstanceFailure,
    RetrievedInstance,
    RetrieveReport,
)

logger = logging.getLogger(__name__)


class InstanceSink:
    """Collects one series' arriving instances (thread-safe: a Storage SCP or the writer threads of a
    streamed retrieve call it from theirs; ``on_instance`` is called by one thread at a time)."""

    def __init__(
        self,
        cache: InstanceCache,
        folder: Path,
        series_uid: str,
        *,
        on_instance: InstanceCallback | None = None,
        cancel: CancelFn | None = None,
    ) -> None:
        self.cache = cache
        self.folder = folder
        self.series_uid = series_uid
        self._on_instance = on_instance
        self._cancel = cancel
        self._lock = threading.Lock()
        self._callback_lock = threading.Lock()
        self.received: dict[str, RetrievedInstance] = {}
        self.failures: dict[str, str] = {}
        # failures the server sent without a usable UID (a damaged part, the tail of a dropped stream);
        # reported through the expected instances they leave missing
        self.unnamed_failures: list[str] = []
        self.duplicates = 0
        self.pack: PackWriter | None = None  # set by packed(): instances go there, not to files

    @contextlib.contextmanager
    def packed(self) -> Iterator[None]:
        """Keep the instances accepted in the block in one new pack of the series folder (a transport
        round: WADO-RS), closed when the block ends; every writer thread must have ended by then."""
        writer = self.cache.open_pack(self.folder)
        self.pack = writer
        try:
            yield
        finally:
            self.pack = None
            writer.close()

    def cancelled(self) -> bool:
        return bool(self._cancel is not None and self._cancel())

    def accept(self, data: bytes, hint_uid: str = "") -> bool:
        """Keep one Part-10 instance; False (and a listed failure) when it is unusable."""
        try:
            item = self.cache.put(self.folder, data, expect_series=self.series_uid, pack=self.pack)
        except PacsResponseError as exc:
            self.fail(hint_uid, str(exc))
            return False
        return self._arrived(item)

    def accept_dataset(self, ds: Dataset, hint_uid: str = "", *, data: bytes | None = None) -> bool:
        """Keep one instance already parsed (DICOMweb); ``data``: the bytes it was parsed from."""
        try:
            item = self.cache.put_dataset(
                self.folder, ds, expect_series=self.series_uid, data=data, pack=self.pack
            )
        except PacsResponseError as exc:
            self.fail(hint_uid, str(exc))
            return False
        return self._arrived(item)

    def accept_header(self, header: ScannedHeader, data: bytes) -> bool:
        """Keep one instance whose header was read from ``data`` (by
        :func:`~viewer.core.pacs.cache.read_header`)."""
        try:
            item = self.cache.put_header(
                self.folder, header, data, expect_series=self.series_uid, pack=self.pack
            )
        except PacsResponseError as exc:
            # named when it is one of this series' instances (a damaged one); another series' instance
            # is listed as an unusable one the server sent
            self.fail(header.sop_instance_uid if header.series_uid == self.series_uid else "", str(exc))
            return False
        return self._arrived(item)

    def _arrived(self, item: RetrievedInstance) -> bool:
        with self._lock:
            if item.sop_instance_uid in self.received:
                self.duplicates += 1
                return True
            self.received[item.sop_instance_uid] = item
            self.failures.pop(item.sop_instance_uid, None)
        if self._on_instance is not None:
            with self._callback_lock:  # one call at a time, whichever thread kept the instance
                self._on_instance(item)
        return True

    def fail(self, sop_instance_uid: str, reason: str) -> None:
        with self._lock:
            if sop_instance_uid:
                if sop_instance_uid not in self.received:
                    self.failures[sop_instance_uid] = reason
            else:
                self.unnamed_failures.append(reason)


# fetch(sop_uids or None for the whole series, sink): runs one transport round
Fetch = Callable[[Sequence[str] | None, InstanceSink], None]
_FATAL = (PacsAuthenticationError, PacsAssociationRejectedError, PacsCancelled)


def retrieve_series(
    *,
    node_name: str,
    cache: InstanceCache,
    study_uid: str,
    series_uid: str,
    expected: Sequence[str] | Callable[[Collection[str]], Sequence[str]],
    fetch: Fetch,
    on_instance: InstanceCallback | None = None,
    cancel: CancelFn | None = None,
    attempts: int = PACS_RETRIEVE_ATTEMPTS,
) -> RetrieveReport:
    """Retrieve one series into ``cache`` (see the module docstring). ``expected`` lists the SOP Instance
    UIDs the PACS says the series holds (from a C-FIND or QIDO-RS at instance level), or is a function
    that returns them given the UIDs received so far: then, when the cache holds nothing of the series
    yet, the whole series is asked for first and the list is taken only after that round (a transport
    that can tell the round brought the whole series need not list it)."""
    study_folder = cache.study_folder(node_name, study_uid)
    cache.pin(study_folder)  # before the folder is marked as being written (see InstanceCache.evict)
    try:
        folder = cache.series_folder(node_name, study_uid, series_uid)
        listing: Callable[[Collection[str]], Sequence[str]] | None = None
        if callable(expected):
            listing, listed = expected, cache.has_instances(folder)
            uids: Sequence[str] = listing(()) if listed else []
        else:
            listed, uids = True, expected
        cached = cache.cached(folder, series_uid, uids)
        report = RetrieveReport(study_uid, series_uid, folder, len(uids), cached=list(cached.values()))
        if on_instance is not None:
            for item in report.cached:
                on_instance(item)
        sink = InstanceSink(cache, folder, series_uid, on_instance=on_instance, cancel=cancel)
        missing = [uid for uid in uids if uid not in cached]
        whole = len(missing) == len(uids)
        last_error: PacsError | None = None
        delay = PACS_RETRY_BACKOFF_S
        while (missing or not listed) and report.attempts < attempts:
            report.attempts += 1
            before = len(sink.received)
            try:
                fetch(None if whole else missing, sink)
                last_error = None
            except PacsCancelled:
                report.cancelled = True
                break
            except _FATAL:
                raise
            except PacsError as exc:
                if (
                    report.attempts == 1
                    and not sink.received
                    and not isinstance(exc, PacsConnectionLostError)
                ):
                    raise  # unreachable or a bad answer, nothing came: say why now, not after retries
                last_error = exc
                logger.warning(
                    "PACS retrieve interrupted (%s); resuming the missing instances", type(exc).__name__
                )
            if not listed and listing is not None:
                uids = list(listing(list(sink.received)))
                report.expected = len(uids)
                listed = True
            whole = False
            missing = [uid for uid in uids if uid not in cached and uid not in sink.received]
            if not missing or (last_error is None and len(sink.received) == before and report.attempts > 1):
                break  # done, or a clean round that brought nothing new: asking again will not help
            if report.attempts < attempts:
                if _sleep_or_cancel(delay, sink):
                    report.cancelled = True
                    break
                delay *= 2
        report.received = [sink.received[uid] for uid in uids if uid in sink.received]
        listed_uids = set(uids)  # once, not once per instance (300 x 300 lookups took ~1 ms)
        report.received += [v for k, v in sink.received.items() if k not in listed_uids]
        if not report.cancelled:
            for uid in uids:
                if uid in cached or uid in sink.received:
                    continue
                reason = sink.failures.get(uid) or (
                    f"not received ({last_error})" if last_error is not None else "not sent by the PACS"
                )
                if uid not in sink.failures and sink.unnamed_failures:
                    reason += (
                        f"; the PACS sent {len(sink.unnamed_failures)} unusable instance(s): "
                        f"{sink.unnamed_failures[0]}"
                    )
                report.failed.append(InstanceFailure(uid, reason))
            if not uids:  # nothing to attribute them to: list them as they are
                report.failed += [InstanceFailure("", reason) for reason in sink.unnamed_failures]
        if sink.duplicates:
            logger.info("PACS retrieve: %d duplicate instances ignored", sink.duplicates)
        return report
    finally:
        cache.unpin(study_folder)
        cache.evict()


def _sleep_or_cancel(seconds: float, sink: InstanceSink) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if sink.cancelled():
            return True
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
    return sink.cancelled()
