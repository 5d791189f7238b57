"""Limits a decoder process puts on itself: die with the viewer, and a per-frame address-space cap.

RELIABILITY.md section 6. A decoder trusts the sizes written in the codestream; the codestream
checks refuse the known lies, and this cap stops the rest: one frame may map at most what the
process maps before it plus :func:`frame_allowance` bytes, so a runaway allocation fails (a
``MemoryError`` or a decoder error, reported as ``E-MEMORY``) instead of growing until the kernel
kills something. Linux only (``RLIMIT_AS`` is not enforced on macOS; Windows has no ``resource``).

A decoder process must not outlive the viewer (after a SIGKILL, orphans kept ~130 MB for minutes):
on Linux the kernel sends SIGKILL when the parent thread ends (``PR_SET_PDEATHSIG``, which is why
the processes are started from one thread that lives as long as the viewer, see
:func:`run_in_spawner`); everywhere a watchdog thread exits when the parent PID changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TypeVar

logger = logging.getLogger(__name__)

ADDRESS_MARGIN_BYTES = 512 * 1024**2  # decoder code paths, thread stacks and malloc arenas
FRAME_COPIES = 8  # decoded frame, int32 component planes, float32 copy, pickling buffer, ...
PARENT_POLL_S = 1.0
_PR_SET_PDEATHSIG = 1
_T = TypeVar("_T")


def frame_allowance(rows: int, columns: int, samples: int) -> int:
    """Bytes one frame's decode may map beyond what the process maps already."""
    return ADDRESS_MARGIN_BYTES + FRAME_COPIES * rows * columns * max(samples, 1) * 4


def _mapped_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def limits_supported() -> bool:
    return sys.platform.startswith("linux") and _mapped_bytes() is not None


@contextlib.contextmanager
def address_space_limit(allowance: int) -> Iterator[None]:
    """Cap this process's address space at what it maps now plus ``allowance`` bytes, for the block."""
    if not sys.platform.startswith("linux"):
        yield
        return
    import resource

    mapped = _mapped_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if mapped is None:
        yield
        return
    cap = mapped + allowance
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def die_with_parent(parent_pid: int) -> None:
    """Child start-up: end this process when ``parent_pid`` ends (see the module docstring)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # not glibc/musl: the watchdog below still runs
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(0)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent_pid:
            os._exit(0)


_SPAWN_QUEUE: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]] = queue.SimpleQueue()
_SPAWNER_LOCK = threading.Lock()
_SPAWNER: list[threading.Thread] = []


def _spawner() -> None:
    while True:
        fn, fut = _SPAWN_QUEUE.get()
        if not fut.set_running_or_notify_cancel():
            continue
        try:
            fut.set_result(fn())
        except BaseException as exc:  # handed to the caller
            fut.set_exception(exc)


def run_in_spawner(fn: Callable[[], _T], timeout: float) -> _T:
    """Run ``fn`` (a process start) on the one long-lived thread that starts every decoder process.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that started a child ends, so children started from
    short-lived threads would be killed with them. A start that has not returned within ``timeout``
    seconds raises :class:`TimeoutError` (never an endless wait), and the next call gets a new thread.
    """
    with _SPAWNER_LOCK:
        if not _SPAWNER or not _SPAWNER[0].is_alive():
            thread = threading.Thread(target=_spawner, name="decoder-spawner", daemon=True)
            thread.start()
            _SPAWNER[:] = [thread]
    fut: Future[object] = Future()
    _SPAWN_QUEUE.put((fn, fut))
    try:
        return fut.result(timeout)  # type: ignore[return-value]
    except TimeoutError:
        fut.cancel()  # still queued: it never runs
        with _SPAWNER_LOCK:
            _SPAWNER.clear()  # the thread may be stuck in this start: the next start gets a new one
        logger.warning("A decoder process did not start within %.0f s", timeout)
        raise
