"""Whole-volume loads of compressed stacks: decoder processes write the slices into a shared volume
(an anonymous memory file), and that memory is released on every path: a finished load, a cancelled
one, a decoder killed mid-chunk. Nothing is ever left in /dev/shm, in this process's descriptors, or in
a decoder's mappings."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.factories import compress_files, write_ct_series
from viewer.core.dicom import isolated, pool
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import Stack
from viewer.core.dicom.pixels import decode_frame
from viewer.core.dicom.sharedvolume import MEMFD_NAME, SharedVolume
from viewer.core.dicom.volume import StackVolume
from viewer.core.dicom.worker import DecoderProcess, DecoderStartError
from viewer.core.errors import LoadCancelled

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(os, "mkfifo"), reason="memfd, /proc, named pipes"
)
WAIT_S = 60.0
STUCK_S = 1.0


def _rle_stack(folder: Path, n: int) -> Stack:
    compress_files(write_ct_series(folder, n, rows=32, columns=32))
    (stack,) = load_paths([folder]).all_stacks()
    return stack


def _stuck(path: Path) -> None:
    """Replace a slice's file with a named pipe: reading it blocks forever, like a stuck decoder."""
    path.unlink()
    os.mkfifo(path)


def _memfd_maps(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/maps") as fh:
            return sum(1 for line in fh if MEMFD_NAME in line)
    except OSError:  # the process is gone
        return 0


def _memfd_fds(pid: int | str = "self") -> int:
    count = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                count += MEMFD_NAME in os.readlink(f"/proc/{pid}/fd/{fd}")
    return count


def _children() -> list[int]:
    """This process's live child processes (the decoder processes)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == os.getpid() and fields[0] != "Z":
                    out.append(int(entry))
    return out


def _shm_names() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _assert_released(shm_before: set[str]) -> None:
    gc.collect()
    assert _memfd_fds() == 0
    assert _memfd_maps() == 0
    assert all(_memfd_maps(pid) == 0 and _memfd_fds(pid) == 0 for pid in _children())
    assert _shm_names() <= shm_before


def test_decoders_write_into_a_shared_volume_released_with_the_array(tmp_path: Path) -> None:
    shm_before = _shm_names()
    stack = _rle_stack(tmp_path / "rle", 24)
    with StackVolume(stack) as vol:
        volume = vol.load_all()
        assert vol.bad_slices == {}
    assert volume.dtype == np.int16
    reference = np.stack([decode_frame(info, dtype=np.int16) for info in stack.slices])
    assert np.array_equal(volume, reference)
    assert _memfd_maps() >= 1  # the volume is the shared mapping the decoders wrote into
    assert _memfd_fds() == 1  # the mapping's own (Python's mmap keeps one); the one decoders got is closed
    assert all(_memfd_maps(pid) == 0 for pid in _children())  # decoders map it only per chunk
    del volume
    _assert_released(shm_before)


def test_a_cancelled_load_leaves_no_shared_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shm_before = _shm_names()
    stack = _rle_stack(tmp_path / "rle", 16)
    for info in stack.slices[8:]:
        _stuck(info.source.path)
    monkeypatch.setattr(isolated, "DECODE_TIMEOUT_S", 600.0)
    seen_mapped = threading.Event()

    def cancel() -> bool:  # cancel once a decoder is stuck with the volume mapped
        if not seen_mapped.is_set() and any(_memfd_maps(pid) for pid in _children()):
            seen_mapped.set()
            return False
        return seen_mapped.is_set()

    with StackVolume(stack) as vol:
        try:
            vol.load_all(cancel=cancel)
        except LoadCancelled:
            pass
        else:
            pytest.fail("the load was not cancelled")
    assert seen_mapped.is_set()
    _assert_released(shm_before)


@dataclass
class _KilledLoad:
    """What :func:`_load_killing_the_stuck_decoder` saw."""

    volume: np.ndarray
    killed: list[int]
    bad_slices: dict[int, str]


def _load_killing_the_stuck_decoder(
    stack: Stack, before_kill: Callable[[], None] = lambda: None
) -> _KilledLoad:
    """Load ``stack`` (slice 21 stuck) on a thread, SIGKILL each decoder that holds the volume for
    STUCK_S once every other chunk is in (it is stuck on slice 21: the others take milliseconds a chunk),
    up to 6, calling ``before_kill`` first; the load must end without an error."""
    done = [0]
    result: dict[str, np.ndarray | BaseException] = {}

    def load(vol: StackVolume) -> None:
        try:
            result["volume"] = vol.load_all(progress=lambda k, n: done.__setitem__(0, k))
        except BaseException as exc:
            result["error"] = exc

    killed: list[int] = []
    with StackVolume(stack) as vol:
        thread = threading.Thread(target=load, args=(vol,), daemon=True)
        thread.start()
        deadline = time.monotonic() + WAIT_S
        mapped_since: dict[int, float] = {}
        while thread.is_alive() and len(killed) < 6 and time.monotonic() < deadline:
            now = time.monotonic()
            mapped = {pid for pid in _children() if pid not in killed and _memfd_maps(pid)}
            mapped_since = {pid: mapped_since.get(pid, now) for pid in mapped}
            for pid, since in mapped_since.items():
                if done[0] >= 20 and now - since >= STUCK_S:
                    before_kill()
                    os.kill(pid, signal.SIGKILL)  # retried in a fresh process, then skipped
                    killed.append(pid)
            time.sleep(0.05)
        thread.join(WAIT_S)
        assert not thread.is_alive() and "error" not in result
        bad = dict(vol.bad_slices)
    volume = result.pop("volume")
    assert isinstance(volume, np.ndarray)
    return _KilledLoad(volume, killed, bad)


def test_a_decoder_killed_mid_chunk_leaves_no_shared_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shm_before = _shm_names()
    stack = _rle_stack(tmp_path / "rle", 24)
    _stuck(stack.slices[21].source.path)
    monkeypatch.setattr(isolated, "DECODE_TIMEOUT_S", 600.0)
    load = _load_killing_the_stuck_decoder(stack)
    assert len(load.killed) >= 2
    assert list(load.bad_slices) == [21] and "E-WORKER-CRASH" in load.bad_slices[21]
    good = [i for i in range(24) if i != 21]
    assert [int(load.volume[i, 0, 0]) for i in good] == good
    del load
    _assert_released(shm_before)


class _FailingStarts:
    """Fault injection: decoder process starts fail once ``armed`` (as a start does where the system has
    no memory or process slots left); processes started before are real."""

    def __init__(self, real: type[DecoderProcess]) -> None:
        self.real = real
        self.armed = threading.Event()

    def __call__(self, *, nice: int = 0, wait: bool = True) -> DecoderProcess:
        if self.armed.is_set():
            raise DecoderStartError("injected: no process can start")
        return self.real(nice=nice, wait=wait)


def test_a_slice_that_killed_a_pool_decoder_is_tried_once_more_after_its_chunk_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slice 21 kills its pool process; no pool process can replace it, so the rest of the chunk goes to
    the slice decoder process, which must try slice 21 once more, not twice (the crash record was
    lost with the hand-off: a third try, a third killed decoder)."""
    stack = _rle_stack(tmp_path / "rle", 24)
    _stuck(stack.slices[21].source.path)
    monkeypatch.setattr(isolated, "DECODE_TIMEOUT_S", 600.0)
    monkeypatch.setattr(pool, "pool_workers", lambda: 1)  # one pool thread: it takes the last chunk
    failing = _FailingStarts(pool.DecoderProcess)
    monkeypatch.setattr(pool, "DecoderProcess", failing)
    monkeypatch.setitem(pool._STATE, "unavailable", False)  # the failed start sets it: restored after
    pool.shutdown_pool()
    pool.warm_pool()  # the one pool process, idle before the load starts
    assert len(pool.pool_pids()) == 1
    load = _load_killing_the_stuck_decoder(stack, before_kill=failing.armed.set)  # no start after a kill
    assert list(load.bad_slices) == [21] and "E-WORKER-CRASH" in load.bad_slices[21]
    assert len(load.killed) == 2  # once in the pool process, once in the slice decoder process
    good = [i for i in range(24) if i != 21]
    assert [int(load.volume[i, 0, 0]) for i in good] == good


def test_a_closed_volume_is_never_written_through_its_old_descriptor_number(tmp_path: Path) -> None:
    """A load thread that sends its chunk after the load ended (cancelled while it waited for a process
    start or for the slice decoder process, longer than the load waits for its threads) sent the
    volume's descriptor *number*, closed by then and reused by whatever was opened next: here the next
    load's volume, into which the decoder wrote the old stack's slices (silently wrong pixels; a
    read-write file such as the review store's would have been overwritten too)."""
    stack = _rle_stack(tmp_path / "rle", 4)
    items = [(i, info) for i, info in enumerate(stack.slices)]
    old = SharedVolume((4, 32, 32), np.int16)
    stale = old.target
    old.close()
    new = SharedVolume((4, 32, 32), np.int16)  # the next load's volume
    new.array[...] = 7
    assert new.target.fd == stale.fd  # the lowest free number: the one just closed
    proc = DecoderProcess()
    try:
        with pytest.raises(LoadCancelled):
            proc.run(items, grey_only=True, frame_timeout=30.0, target=stale)
        assert proc.alive  # nothing was sent: the process goes on
    finally:
        proc.kill()
        new.close()
    assert (new.array == 7).all()
