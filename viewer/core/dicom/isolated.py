"""Single-slice decoding in a child process, so a crash or hang in a C decoder never reaches the viewer.

Compressed and other non-trivial frames (JPEG family, JPEG 2000, RLE, deflate, big endian, colour) go
through pydicom's and pylibjpeg's C/C++/Rust decoders. RELIABILITY.md section 6: those run in a spawned
child. A slice that kills its decoder process is retried once in a fresh one (the crash may have been
another slice's), then marked bad (``E-WORKER-CRASH``); one that takes longer than
``DECODE_TIMEOUT_S`` is stopped and marked bad (``E-TIMEOUT``). The viewer stays up either way.

One process serves all stacks (slices are small tasks, answered in about a millisecond more than an
in-process decode). Whole-volume loads use :mod:`viewer.core.dicom.pool` instead. Where no child
process can start at all (e.g. a host script without a ``__main__`` guard under spawn), decoding falls
back to this process, with a warning in the log.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from viewer.core.constants import DECODE_TIMEOUT_S, DECODER_START_TIMEOUT_S
from viewer.core.dicom.model import SliceInfo
from viewer.core.dicom.pixels import decode_frame, to_modality
from viewer.core.dicom.pool import DecodeResults, decode_task, keep_freed_memory, warm_pool_async, warm_worker
from viewer.core.dicom.sources import ArchiveCache
from viewer.core.errors import PixelDecodeError

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()  # guards the executor's creation and replacement
_CALL_LOCK = threading.Lock()  # one decode task in flight (the process has one worker)
_EXECUTOR: ProcessPoolExecutor | None = None
_UNAVAILABLE = False  # no child process could start here: decode in this process
_STARTING = threading.Event()
_BULK_WANTED = threading.Event()


def _executor() -> ProcessPoolExecutor | None:
    """The running decoder process (started and checked on first use), or None when unavailable."""
    global _EXECUTOR, _UNAVAILABLE
    with _LOCK:
        if _UNAVAILABLE:
            return None
        if _EXECUTOR is not None and not getattr(_EXECUTOR, "_broken", False):
            return _EXECUTOR
        ctx = multiprocessing.get_context("spawn")  # fork is unsafe in a threaded (Qt) process
        executor = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=keep_freed_memory)
        try:
            executor.submit(warm_worker).result(timeout=DECODER_START_TIMEOUT_S)
        except Exception as exc:
            _stop(executor)
            _UNAVAILABLE = True
            logger.warning(
                "No decoder process could start (%s); decoding in the viewer's process", type(exc).__name__
            )
            return None
        _EXECUTOR = executor
        return executor


def warm_async(*, bulk: bool = False) -> None:
    """Start the decoder process in the background (once), to hide its start-up (~0.3 s); with
    ``bulk``, start the whole-volume pool after it (not at the same time: on two cores, starting
    three processes at once delays the first slice shown)."""
    if bulk:
        _BULK_WANTED.set()
        if _EXECUTOR is not None or _UNAVAILABLE:
            warm_pool_async()
    if _STARTING.is_set():
        return
    _STARTING.set()
    threading.Thread(target=_start_in_order, name="decoder-start", daemon=True).start()


def _start_in_order() -> None:
    _executor()
    if _BULK_WANTED.is_set():
        warm_pool_async()


def _stop(executor: ProcessPoolExecutor) -> None:
    """Shut ``executor`` down without waiting, killing its process (it may be stuck in a decoder)."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # already gone
            proc.kill()


def _discard(executor: ProcessPoolExecutor) -> None:
    global _EXECUTOR
    with _LOCK:
        if _EXECUTOR is executor:
            _EXECUTOR = None
    _stop(executor)


def shutdown() -> None:
    global _EXECUTOR
    with _LOCK:
        executor, _EXECUTOR = _EXECUTOR, None
        _STARTING.clear()
    if executor is not None:
        _stop(executor)


atexit.register(shutdown)


def decode_isolated(info: SliceInfo, archives: ArchiveCache | None = None) -> np.ndarray:
    """Like :func:`decode_frame`, but in the decoder process: float32 modality values or uint8 RGB.

    Raises :class:`PixelDecodeError` for a bad frame, including one that crashes or hangs its decoder.
    """
    results = run_isolated([(0, info)], grey_only=False)
    if results is None:
        return decode_frame(info, archives=archives)
    ((_, arr, error, pending),) = results
    if error is not None or arr is None:
        raise PixelDecodeError(error or f"Cannot decode {info.source.display_name}")
    return to_modality(arr, info) if pending else arr


def run_isolated(items: list[tuple[int, SliceInfo]], *, grey_only: bool = True) -> DecodeResults | None:
    """:func:`decode_task` in the decoder process (None when no decoder process can run here).

    A decoder process that dies is replaced and the task retried once; a second death, or a task
    over ``DECODE_TIMEOUT_S`` per slice, raises :class:`PixelDecodeError` (``E-WORKER-CRASH``,
    ``E-TIMEOUT``) naming the first file.
    """
    name = items[0][1].source.display_name if items else "?"
    for attempt in (1, 2):
        # One task at a time, so the time limit counts decoding, not queueing; and no caller can
        # submit to a process that another caller is replacing.
        with _CALL_LOCK:
            executor = _executor()
            if executor is None:
                return None
            try:
                future = executor.submit(decode_task, items, grey_only=grey_only)
                return future.result(timeout=DECODE_TIMEOUT_S * max(1, len(items)))
            except FutureTimeout:
                _discard(executor)
                raise PixelDecodeError(
                    f"Decoding {name} took longer than {DECODE_TIMEOUT_S:g} s and was stopped (E-TIMEOUT)"
                ) from None
            except BrokenProcessPool:
                _discard(executor)
                if attempt == 1:
                    logger.warning("The slice decoder process died; retrying once in a fresh one")
                    continue
                raise PixelDecodeError(
                    f"{name} could not be decoded safely and was skipped (E-WORKER-CRASH)"
                ) from None
    raise AssertionError("unreachable")
