"""One decoder process and the rules for using it: per-frame time limit, crash recovery, clean exit.

A :class:`DecoderProcess` is a spawned child that decodes the frames it is sent one by one and
answers each as soon as it is done, so the viewer knows which frame a stuck or dying decoder was
on. :func:`decode_with_recovery` gives every frame ``frame_timeout`` seconds of its own (a bad
frame in a chunk costs one time limit, not the chunk's); a frame over the limit has its process
killed and is marked ``E-TIMEOUT``; a frame whose process dies is retried once in a fresh process
(the death may have been the kernel's or a user's doing), then marked ``E-WORKER-CRASH``. The rest
of the chunk goes on in a fresh process. Killed processes are reaped at once, so nothing stuck is
left to block a later load or the interpreter's exit. A load passes one :class:`CrashRecord` to
every call, so a frame whose chunk moves to another process (one pool thread could not replace its
process, the slice decoder process takes the rest) keeps its first death, and a frame that killed a
process is never decoded in the viewer's own (:func:`crashed_items`).

Children arm a parent-death signal and a parent watchdog (:mod:`viewer.core.dicom.limits`) and
decode each frame under an address-space cap sized to that frame. Given a
:class:`~viewer.core.dicom.sharedvolume.SharedTarget`, a child writes each frame's modality values
straight into the viewer's volume and answers ``(index, None, None, False)`` (see
:mod:`viewer.core.dicom.sharedvolume`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from typing import TYPE_CHECKING, Protocol

import numpy as np

from viewer.core.constants import DECODER_START_TIMEOUT_S
from viewer.core.dicom.limits import address_space_limit, die_with_parent, frame_allowance, run_in_spawner
from viewer.core.dicom.model import SliceInfo
from viewer.core.dicom.sharedvolume import SharedTarget, write_slices
from viewer.core.errors import DicomError, LoadCancelled

if TYPE_CHECKING:
    from viewer.core.dicom.sources import ArchiveCache

logger = logging.getLogger(__name__)

# index, array, error, modality pending; (index, None, None, False): written into the shared volume
DecodeResult = tuple[int, "np.ndarray | None", "str | None", bool]
DecodeResults = list[DecodeResult]
Items = list[tuple[int, SliceInfo]]
CancelFn = Callable[[], bool]
POLL_S = 0.1  # how often a waiting caller checks ``cancel``
MODALITY_OVERFLOW = "E-INT16-OVERFLOW"  # the error of a frame whose values do not fit an int16 volume
CrashRecord = set[int]  # item indices whose decoder process has died once (see decode_with_recovery)


class DecoderStartError(RuntimeError):
    """A decoder process did not start (e.g. a host script without a ``__main__`` guard under spawn)."""


class Failure(str, Enum):
    TIMEOUT = "E-TIMEOUT"
    CRASH = "E-WORKER-CRASH"


# --- child side ------------------------------------------------------------------------------------
def _memory_message(info: SliceInfo) -> str:
    return f"Decoding {info.source.display_name} needs more memory than its frame size allows (E-MEMORY)"


def decode_one(info: SliceInfo, archives: ArchiveCache, *, grey_only: bool, index: int) -> DecodeResult:
    """Decode one frame here, errors as text (the worker side of every decoder process)."""
    from viewer.core.dicom.pixels import decode_stored

    try:
        with address_space_limit(frame_allowance(info.rows, info.columns, info.samples_per_pixel)):
            arr, pending = decode_stored(info, archives=archives)
        if grey_only and arr.ndim != 2:
            raise DicomError("colour slice in a greyscale volume")
        return (index, arr, None, pending)
    except DicomError as exc:
        if isinstance(exc.__cause__, MemoryError):
            return (index, None, _memory_message(info), False)
        return (index, None, str(exc), False)
    except MemoryError:
        return (index, None, _memory_message(info), False)
    except Exception as exc:
        return (index, None, f"Cannot decode {info.source.display_name}: {type(exc).__name__}", False)


def decode_into(
    info: SliceInfo, archives: ArchiveCache, slot: Callable[[int], np.ndarray], *, index: int
) -> DecodeResult:
    """Decode one greyscale frame and put its modality values into ``slot(index)`` (its place in the
    shared volume): ``(index, None, None, False)``, or the error as :func:`decode_one` gives it
    (:data:`MODALITY_OVERFLOW` when the values do not fit the int16 volume)."""
    from viewer.core.dicom.pixels import ModalityOverflow, to_modality

    result = decode_one(info, archives, grey_only=True, index=index)
    _, arr, _, pending = result
    if arr is None:
        return result
    out = slot(index)
    if arr.shape != out.shape:
        return (index, None, f"{info.source.display_name} has a different size from the stack", False)
    try:
        if pending:
            to_modality(arr, info, out=out)
        else:
            out[...] = arr
    except ModalityOverflow:
        return (index, None, MODALITY_OVERFLOW, False)
    return (index, None, None, False)


def decode_task(items: Items, *, grey_only: bool = True) -> DecodeResults:
    """Decode ``items`` in this process (the in-process fallback, and tests)."""
    from viewer.core.dicom.sources import ArchiveCache

    archives = ArchiveCache()
    try:
        return [decode_one(info, archives, grey_only=grey_only, index=i) for i, info in items]
    finally:
        archives.close()


def _write_chunk(
    conn: Connection, items: Items, archives: ArchiveCache, slot: Callable[[int], np.ndarray]
) -> None:
    """Decode ``items`` into the shared volume (``slot``), answering each frame as it is done."""
    for i, info in items:
        conn.send(decode_into(info, archives, slot, index=i))


def _child_main(conn: Connection, parent_pid: int, nice: int) -> None:
    die_with_parent(parent_pid)
    if nice and hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(nice)
    from viewer.core.dicom.pool import keep_freed_memory
    from viewer.core.dicom.sources import ArchiveCache

    keep_freed_memory()
    import viewer.core.dicom.pixels  # noqa: F401  (pydicom and the decoders, imported once)

    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "decode":
            _, items, grey_only, target = message
            archives = ArchiveCache()
            try:
                if target is None:
                    for i, info in items:
                        conn.send(decode_one(info, archives, grey_only=grey_only, index=i))
                else:
                    write = functools.partial(_write_chunk, conn, items, archives)
                    write_slices(recv_handle(conn), target, write)
            finally:
                archives.close()
        elif message[0] == "call":
            _, fn, args = message
            try:
                conn.send(("ok", fn(*args)))
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
        else:
            return


# --- parent side -----------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    results: DecodeResults
    failed_at: int | None = None  # index into the items sent of the frame the process failed on
    failure: Failure | None = None


class DecoderProcess:
    """A spawned decoder process (started in the constructor; :class:`DecoderStartError` if it cannot)."""

    def __init__(self, *, nice: int = 0, wait: bool = True) -> None:
        ctx = multiprocessing.get_context("spawn")  # fork is unsafe in a threaded (Qt) process
        self._conn, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(
            target=_child_main, args=(child, os.getpid(), nice), name="slicewise-decoder", daemon=True
        )
        self.pid = 0
        try:
            run_in_spawner(self._proc.start, DECODER_START_TIMEOUT_S)
        except Exception as exc:
            self._conn.close()
            raise DecoderStartError(type(exc).__name__) from exc
        finally:
            child.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = DECODER_START_TIMEOUT_S) -> None:
        """Wait for the child's start-up (imports); :class:`DecoderStartError` if it fails."""
        if self.pid:
            return
        try:
            if not self._conn.poll(timeout):
                raise DecoderStartError("timeout")
            _, pid = self._conn.recv()
        except (EOFError, OSError) as exc:
            self.kill()
            raise DecoderStartError("the process exited while starting") from exc
        except DecoderStartError:
            self.kill()
            raise
        self.pid = int(pid)

    @property
    def alive(self) -> bool:
        return self._proc.is_alive() and not self._conn.closed

    def kill(self) -> None:
        """SIGKILL and reap (a process stuck in C code ignores everything gentler)."""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self._proc.kill()
        with contextlib.suppress(OSError, ValueError, AssertionError, AttributeError):
            self._proc.join(5)
        with contextlib.suppress(OSError):
            self._conn.close()

    def _wait(self, seconds: float, cancel: CancelFn | None) -> bool:
        """True when a message (or EOF) is ready within ``seconds``; LoadCancelled if cancelled."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._conn.poll(min(remaining, POLL_S)):
                return True
            if cancel is not None and cancel():
                self.kill()  # mid-frame: the process's state is unknown, start afresh next time
                raise LoadCancelled("Loading cancelled")

    def run(
        self,
        items: Items,
        *,
        grey_only: bool,
        frame_timeout: float,
        cancel: CancelFn | None = None,
        target: SharedTarget | None = None,
    ) -> RunOutcome:
        """Decode ``items`` here; stop at the first frame that takes over ``frame_timeout`` s or kills
        the process (the process is then killed and ``failed_at`` names the frame). With ``target``,
        greyscale frames go straight into that shared volume (its descriptor is sent along; raises
        :class:`LoadCancelled`, sending nothing, once that volume is closed)."""
        results: DecodeResults = []
        try:
            if target is None:
                self._conn.send(("decode", items, grey_only, None))
            else:
                with target.sending() as fd:
                    self._conn.send(("decode", items, grey_only, target.for_child()))
                    send_handle(self._conn, fd, self.pid)
        except (OSError, ValueError):
            self.kill()
            return RunOutcome(results, 0, Failure.CRASH)
        for k in range(len(items)):
            if not self._wait(frame_timeout, cancel):
                self.kill()
                return RunOutcome(results, k, Failure.TIMEOUT)
            try:
                results.append(self._conn.recv())
            except (EOFError, OSError):
                self.kill()
                return RunOutcome(results, k, Failure.CRASH)
        return RunOutcome(results)

    def call(self, fn: Callable[..., object], *args: object, timeout: float = 60.0) -> object:
        """Run a picklable ``fn(*args)`` in the process (tests, diagnostics)."""
        self._conn.send(("call", fn, args))
        if not self._wait(timeout, None):
            self.kill()
            raise TimeoutError("the decoder process did not answer")
        kind, value = self._conn.recv()
        if kind != "ok":
            raise RuntimeError(str(value))
        return value


class ProcessSource(Protocol):
    """Where :func:`decode_with_recovery` gets a process, and gives back a failed one."""

    def get(self) -> DecoderProcess | None: ...  # None: no process can start here

    def discard(self, proc: DecoderProcess) -> None: ...


def crash_result(i: int, info: SliceInfo) -> DecodeResult:
    """The result of a frame whose decoder process died twice (or once, with none to retry it in)."""
    text = f"{info.source.display_name} could not be decoded safely and was skipped (E-WORKER-CRASH)"
    return (i, None, text, False)


def crashed_items(items: Items, crashed: CrashRecord) -> tuple[DecodeResults, Items]:
    """Split items no decoder process could take before the viewer's process decodes them: those that
    killed a decoder process already get :func:`crash_result` (decoded here, one could kill the
    viewer), the rest are returned to decode."""
    results = [crash_result(i, info) for i, info in items if i in crashed]
    return results, [(i, info) for i, info in items if i not in crashed]


def decode_with_recovery(
    items: Items,
    source: ProcessSource,
    *,
    grey_only: bool,
    frame_timeout: float,
    cancel: CancelFn | None = None,
    target: SharedTarget | None = None,
    crashed: CrashRecord | None = None,
) -> tuple[DecodeResults, Items]:
    """Decode ``items`` in processes from ``source``: (results, items left when no process could start).

    Each frame has ``frame_timeout`` seconds; see the module docstring for timeouts and crashes.
    ``target``: a shared volume the greyscale frames are written into (:meth:`DecoderProcess.run`).
    ``crashed``: the load's record of frames whose process died once, shared by every call of a load
    (added to here); items left over may be in it (see :func:`crashed_items`).
    """
    out: DecodeResults = []
    todo = list(items)
    crashed = set() if crashed is None else crashed
    while todo:
        if cancel is not None and cancel():  # e.g. a thread that waited for a process start meanwhile
            raise LoadCancelled("Loading cancelled")
        proc = source.get()
        if proc is None:
            return out, todo
        outcome = proc.run(
            todo, grey_only=grey_only, frame_timeout=frame_timeout, cancel=cancel, target=target
        )
        out.extend(outcome.results)
        if outcome.failed_at is None:
            return out, []
        source.discard(proc)
        k = outcome.failed_at
        i, info = todo[k]
        name = info.source.display_name
        if outcome.failure is Failure.TIMEOUT:
            text = f"Decoding {name} took longer than {frame_timeout:g} s and was stopped (E-TIMEOUT)"
            out.append((i, None, text, False))
            todo = todo[k + 1 :]
        elif i in crashed:
            out.append(crash_result(i, info))
            todo = todo[k + 1 :]
        else:
            crashed.add(i)
            logger.warning("A decoder process died; retrying its slice once in a fresh one")
            todo = todo[k:]
    return out, []
