"""Single-slice decoding in a child process, so a crash or hang in a C decoder never reaches the viewer.

Compressed and other non-trivial frames (JPEG family, JPEG 2000, RLE, deflate, big endian, colour) go
through C/C++/Rust decoders. RELIABILITY.md section 6: those run in a spawned child
(:class:`~viewer.core.dicom.worker.DecoderProcess`). A slice that kills its decoder process is
retried once in a fresh one, then marked bad (``E-WORKER-CRASH``); a slice that takes longer than
``DECODE_TIMEOUT_S`` is stopped and marked bad (``E-TIMEOUT``), and the rest of its chunk goes on in
a fresh process. The viewer stays up either way.

One process serves all stacks (slices are small tasks, answered in about a millisecond more than an
in-process decode). Whole-volume loads also use :mod:`viewer.core.dicom.pool`. Where no child
process can start at all (e.g. a host script without a ``__main__`` guard under spawn), decoding falls
back to this process, with a warning in the log; not at interpreter exit, when nothing is started.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading

import numpy as np

from viewer.core.constants import DECODE_TIMEOUT_S
from viewer.core.dicom.model import SliceInfo
from viewer.core.dicom.pixels import decode_frame, to_modality
from viewer.core.dicom.pool import warm_pool_async
from viewer.core.dicom.sharedvolume import SharedTarget
from viewer.core.dicom.sources import ArchiveCache
from viewer.core.dicom.worker import (
    CancelFn,
    CrashRecord,
    DecodeResults,
    DecoderProcess,
    DecoderStartError,
    Items,
    crashed_items,
    decode_task,
    decode_with_recovery,
)
from viewer.core.errors import PixelDecodeError

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()  # guards the process's creation and replacement
_CALL_LOCK = threading.Lock()  # one decode task in flight (the process decodes one frame at a time)
_PROCESS: DecoderProcess | None = None
_UNAVAILABLE = False  # no child process could start here: decode in this process
_EXITING = False  # set at interpreter exit: start nothing more
_STARTING = threading.Event()
_BULK_WANTED = threading.Event()


def _exiting() -> bool:
    return _EXITING or sys.is_finalizing()


class _SliceProcess:
    """The :class:`ProcessSource` of the one slice decoder process."""

    def get(self) -> DecoderProcess | None:
        global _PROCESS, _UNAVAILABLE
        with _LOCK:
            if _UNAVAILABLE or _exiting():
                return None
            if _PROCESS is not None and _PROCESS.alive:
                return _PROCESS
            try:
                _PROCESS = DecoderProcess()
            except (DecoderStartError, OSError, RuntimeError) as exc:
                _PROCESS = None
                if _exiting():  # a start-up that raced the interpreter's exit: nothing to report
                    return None
                _UNAVAILABLE = True
                reason = type(exc).__name__
                logger.warning(
                    "No decoder process could start (%s); decoding in the viewer's process", reason
                )
                return None
            return _PROCESS

    def discard(self, proc: DecoderProcess) -> None:
        global _PROCESS
        with _LOCK:
            if _PROCESS is proc:
                _PROCESS = None
        proc.kill()


_SOURCE = _SliceProcess()


def warm_async(*, bulk: bool = False) -> None:
    """Start the decoder process in the background (once), to hide its start-up (~0.3 s); with
    ``bulk``, start the whole-volume pool after it (not at the same time: on two cores, starting
    three processes at once delays the first slice shown)."""
    if _exiting():
        return
    if bulk:
        _BULK_WANTED.set()
        if _PROCESS is not None or _UNAVAILABLE:
            warm_pool_async()
    if _STARTING.is_set():
        return
    _STARTING.set()
    threading.Thread(target=_start_in_order, name="decoder-start", daemon=True).start()


def _start_in_order() -> None:
    _SOURCE.get()
    if _BULK_WANTED.is_set() and not _exiting():
        warm_pool_async()


def decoder_pids() -> list[int]:
    """PIDs of the running slice decoder process (tests, diagnostics)."""
    proc = _PROCESS
    return [proc.pid] if proc is not None and proc.alive else []


def shutdown() -> None:
    global _PROCESS
    with _LOCK:
        proc, _PROCESS = _PROCESS, None
        _STARTING.clear()
    if proc is not None:
        proc.kill()


def _at_exit() -> None:
    global _EXITING
    _EXITING = True
    shutdown()


atexit.register(_at_exit)


def decode_isolated(
    info: SliceInfo, archives: ArchiveCache | None = None, *, dtype: np.dtype | type = np.float32
) -> np.ndarray:
    """Like :func:`decode_frame`, but in the decoder process: modality values in ``dtype`` (float32 or
    int16, see :func:`~viewer.core.dicom.pixels.modality_dtype`) or uint8 RGB.

    Raises :class:`PixelDecodeError` for a bad frame, including one that crashes or hangs its decoder.
    """
    results = run_isolated([(0, info)], grey_only=False)
    if results is None:
        return decode_frame(info, archives=archives, dtype=dtype)
    ((_, arr, error, pending),) = results
    if error is not None or arr is None:
        raise PixelDecodeError(error or f"Cannot decode {info.source.display_name}")
    return to_modality(arr, info, dtype=dtype) if pending else arr


def run_isolated(
    items: Items,
    *,
    grey_only: bool = True,
    cancel: CancelFn | None = None,
    target: SharedTarget | None = None,
    crashed: CrashRecord | None = None,
) -> DecodeResults | None:
    """Decode ``items`` in the slice decoder process: one result per item, errors as text (``E-TIMEOUT``
    after ``DECODE_TIMEOUT_S`` for a frame, ``E-WORKER-CRASH`` after a second death). None when no
    decoder process can run here (the caller decodes in this process). With ``target`` (greyscale
    items of a whole-volume load), the process writes the slices into that shared volume. ``crashed``:
    the load's record of frames that killed a decoder process already (a pool process); such a frame
    is tried once more here, and never decoded in this process."""
    crashed = set() if crashed is None else crashed
    with _CALL_LOCK:  # one task at a time, so the time limit counts decoding, not queueing
        results, left = decode_with_recovery(
            items,
            _SOURCE,
            grey_only=grey_only,
            frame_timeout=DECODE_TIMEOUT_S,
            cancel=cancel,
            target=target,
            crashed=crashed,
        )
    skipped, left = crashed_items(left, crashed)
    results.extend(skipped)
    if left and not results:
        return None
    if left:  # the process could not be replaced mid-task: finish here
        results.extend(decode_task(left, grey_only=grey_only))
    return results
