"""Decoder processes for whole-volume loads on every core, and the series memory budget.

Each load thread holds one :class:`~viewer.core.dicom.worker.DecoderProcess` at a time and takes
chunks from the back of the load's queue while the slice decoder process (``isolated``) takes them
from the front (:func:`decode_chunks`). Every frame has its own time limit, a stuck or dead process
is killed and replaced by its thread alone, and cancelling kills the processes mid-frame, so no
stuck decoder outlives a load, blocks the next one or the interpreter's exit.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import mmap
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from viewer.core.constants import MAX_SERIES_BYTES, MAX_SERIES_BYTES_FRACTION_OF_RAM, PREFAULT_MIN_BYTES
from viewer.core.dicom.header import too_large_message
from viewer.core.dicom.model import SliceInfo, Stack
from viewer.core.dicom.sharedvolume import SharedTarget
from viewer.core.dicom.worker import (
    CancelFn,
    CrashRecord,
    DecodeResults,
    DecoderProcess,
    DecoderStartError,
    Items,
    decode_with_recovery,
)
from viewer.core.errors import ImageTooLargeError, LoadCancelled

logger = logging.getLogger(__name__)
POOL_MIN_SLICES = 8  # fewer compressed slices than this go to the slice decoder process only
WORKER_NICE = 5  # decoder processes run below the GUI's priority
THREAD_END_WAIT_S = 2.0  # how long a finished or cancelled load waits for its threads to stop
_IDLE: list[DecoderProcess] = []
_POOL_LOCK = threading.Lock()
_STATE = {"live": 0, "unavailable": False, "exiting": False}


def pool_workers() -> int:
    """One process per core but one (at most 8): the slice decoder process (``isolated``) takes the
    load's chunks from the front meanwhile (see :func:`decode_chunks`)."""
    return max(1, min((os.cpu_count() or 1) - 1, 8))


def acquire() -> DecoderProcess | None:
    """An idle pool process, or a new one while fewer than :func:`pool_workers` live; None when none
    can be had (all busy, start-up impossible here, or the interpreter is exiting)."""
    with _POOL_LOCK:
        while _IDLE:
            proc = _IDLE.pop()
            if proc.alive:
                return proc
            _STATE["live"] -= 1
        if _STATE["unavailable"] or _STATE["exiting"] or sys.is_finalizing():
            return None
        if _STATE["live"] >= pool_workers():
            return None
        _STATE["live"] += 1
    try:
        return DecoderProcess(nice=WORKER_NICE)
    except (DecoderStartError, OSError, RuntimeError) as exc:
        with _POOL_LOCK:
            _STATE["live"] -= 1
            quiet = _STATE["exiting"] or sys.is_finalizing()
            _STATE["unavailable"] = True
        if not quiet:
            logger.warning("Decoder processes cannot start (%s); decoding elsewhere", type(exc).__name__)
        return None


def release(proc: DecoderProcess | None) -> None:
    """Give a process back to the pool (a dead one is dropped)."""
    if proc is None:
        return
    with _POOL_LOCK:
        if proc.alive and not _STATE["exiting"]:
            _IDLE.append(proc)
            return
        _STATE["live"] -= 1
    proc.kill()


def discard(proc: DecoderProcess) -> None:
    """Kill a process that failed (stuck, dead or cancelled) and forget it."""
    proc.kill()
    with _POOL_LOCK:
        _STATE["live"] -= 1


def pool_pids() -> list[int]:
    """PIDs of the idle pool processes (tests, diagnostics)."""
    with _POOL_LOCK:
        return [p.pid for p in _IDLE if p.alive]


class _Lease:
    """One load thread's process: a :class:`ProcessSource` that replaces a failed process."""

    def __init__(self) -> None:
        self.proc: DecoderProcess | None = None

    def get(self) -> DecoderProcess | None:
        if self.proc is None or not self.proc.alive:
            if self.proc is not None:
                discard(self.proc)
            self.proc = acquire()
        return self.proc

    def discard(self, proc: DecoderProcess) -> None:
        if self.proc is proc:
            self.proc = None
        discard(proc)

    def close(self) -> None:
        release(self.proc)
        self.proc = None


def keep_freed_memory() -> None:
    """Decoder process start-up (glibc): keep freed decode buffers in the process.

    By default glibc unmaps each 512 x 512 frame's buffers when freed and faults them in again for
    the next frame (~380 page faults a slice, ~10 % of a JPEG 2000 decode on a virtual machine); a
    decoder holds only a few frames, so keeping that memory costs a few MB.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return
    mallopt(-1, 256 * 1024**2)  # M_TRIM_THRESHOLD
    mallopt(-3, 64 * 1024**2)  # M_MMAP_THRESHOLD


def warm_pool() -> None:
    """Start the decoder processes now (e.g. when a compressed stack opens) to hide start-up."""
    started: list[DecoderProcess] = []
    with _POOL_LOCK:
        if _STATE["unavailable"] or _STATE["exiting"]:
            return
        want = pool_workers() - _STATE["live"]
        _STATE["live"] += max(want, 0)
    for k in range(max(want, 0)):
        try:
            started.append(DecoderProcess(nice=WORKER_NICE, wait=False))
        except (DecoderStartError, OSError, RuntimeError):
            with _POOL_LOCK:
                _STATE["live"] -= want - k
            break
    for proc in started:
        try:
            proc.wait_ready()
        except DecoderStartError:
            discard(proc)
            continue
        release(proc)


_WARMING = threading.Event()


def warm_pool_async() -> None:
    """:func:`warm_pool` on a daemon thread, once per process (later calls return at once)."""
    if _WARMING.is_set() or _STATE["exiting"]:
        return
    _WARMING.set()
    threading.Thread(target=warm_pool, name="decoder-pool-start", daemon=True).start()


def pool_work(info: SliceInfo) -> bool:
    """A greyscale frame that needs a decoder (compressed, or otherwise off the fast path)."""
    from viewer.core.dicom.pixels import is_fast_path

    return not info.is_color and not is_fast_path(info)


def wants_pool(stack: Stack) -> bool:
    """A greyscale stack with enough compressed slices that load_all will use the process pool."""
    if stack.is_color or len(stack) < 2 * POOL_MIN_SLICES:
        return False
    return sum(1 for info in stack.slices if pool_work(info)) >= 2 * POOL_MIN_SLICES


def shutdown_pool() -> None:
    """Kill the idle pool processes (busy ones die with their load's cancel or at exit)."""
    with _POOL_LOCK:
        idle, _IDLE[:] = list(_IDLE), []
        _STATE["live"] -= len(idle)
        _WARMING.clear()
    for proc in idle:
        proc.kill()


def _at_exit() -> None:
    _STATE["exiting"] = True
    shutdown_pool()


atexit.register(_at_exit)


def decode_chunks(
    chunks: list[Items],
    deliver: Callable[[DecodeResults], None],
    *,
    front: Callable[[Items, CancelFn, CrashRecord], DecodeResults],
    frame_timeout: float,
    cancel: CancelFn | None = None,
    target: SharedTarget | None = None,
) -> None:
    """Decode ``chunks`` on every core and hand each chunk's results to ``deliver`` (on this thread).

    Pool threads take chunks from the back, ``front`` (the slice decoder process, or this process
    where none can run) from the front. Raises :class:`LoadCancelled` when ``cancel()`` turns true
    (checked every 0.1 s); the processes busy then are killed, not waited for. With ``target``, the
    pool processes write their slices into that shared volume (``front`` is given it by the caller).
    Every process of the load shares one :class:`~viewer.core.dicom.worker.CrashRecord` (``front``
    gets it too): a slice that killed a pool process and moves to ``front`` with the rest of its chunk
    is tried once more there, not twice.
    """
    work: deque[Items] = deque(chunks)
    crashed: CrashRecord = set()
    done: queue.SimpleQueue[DecodeResults | BaseException] = queue.SimpleQueue()
    stop = threading.Event()
    lock = threading.Lock()

    def take(back: bool) -> Items | None:
        with lock:
            if stop.is_set() or not work:
                return None
            return work.pop() if back else work.popleft()

    def pool_thread() -> None:
        lease = _Lease()
        try:
            while (chunk := take(back=True)) is not None:
                results, left = decode_with_recovery(
                    chunk,
                    lease,
                    grey_only=True,
                    frame_timeout=frame_timeout,
                    cancel=stop.is_set,
                    target=target,
                    crashed=crashed,
                )
                if results:
                    done.put(results)
                if left:  # no process for this thread: leave the rest to the others
                    with lock:
                        work.append(left)
                    return
        except LoadCancelled:
            return
        except BaseException as exc:
            done.put(exc)
        finally:
            lease.close()

    def front_thread() -> None:
        try:
            while not stop.is_set():
                chunk = take(back=False)
                if chunk is not None:
                    done.put(front(chunk, stop.is_set, crashed))
                elif any(t.is_alive() for t in pool_threads):
                    stop.wait(0.05)  # a pool thread may still hand back a chunk it cannot decode
                elif not work:
                    return
        except LoadCancelled:
            return
        except BaseException as exc:
            done.put(exc)

    pool_threads = [
        threading.Thread(target=pool_thread, name="decoder-pool-load", daemon=True)
        for _ in range(min(pool_workers(), len(chunks)))
    ]
    threads = [*pool_threads, threading.Thread(target=front_thread, name="decoder-front-load", daemon=True)]
    for thread in threads:
        thread.start()
    remaining = sum(len(c) for c in chunks)
    try:
        while remaining > 0:
            if cancel is not None and cancel():
                raise LoadCancelled("Loading cancelled")
            try:
                item = done.get(timeout=0.1)
            except queue.Empty:
                if not any(t.is_alive() for t in threads):
                    raise RuntimeError("decoder threads ended with slices left") from None
                continue
            if isinstance(item, BaseException):
                raise item
            remaining -= len(item)
            deliver(item)
    finally:
        stop.set()
        # The threads notice within POLL_S and kill their busy processes: wait for that (briefly), so
        # no decoder is still at work on (or holding a mapping of) this load's volume when we return.
        deadline = time.monotonic() + THREAD_END_WAIT_S
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))


def series_budget() -> int:
    """min(MAX_SERIES_BYTES, 25 % of physical RAM)."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return MAX_SERIES_BYTES
    return int(min(MAX_SERIES_BYTES, MAX_SERIES_BYTES_FRACTION_OF_RAM * ram))


def check_volume_budget(nbytes: int) -> None:
    limit = series_budget()
    if nbytes > limit:
        raise ImageTooLargeError(too_large_message(nbytes, limit))


def allocate_volume(shape: tuple[int, int, int], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """An uninitialised ``dtype`` array for a whole volume, its pages faulted in by one ``mmap`` call.

    Touching a fresh 300 MB array page by page costs about 0.5 s on a virtual machine (one fault per
    4 KB page); ``MAP_POPULATE`` maps the same memory about 4x faster. Elsewhere (or if the mapping
    fails) this is ``np.empty``. The array owns the mapping: it is unmapped when the array is freed.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    populate = getattr(mmap, "MAP_POPULATE", None)
    if populate is None or nbytes < PREFAULT_MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    try:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
    except (OSError, ValueError):
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)
