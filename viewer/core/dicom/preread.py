"""Pixel bytes read while the header scan runs, for a whole-volume load that follows (``slicewise predict``).

The header scan is pure Python and holds the GIL; reading uncompressed pixels is a kernel copy that
does not. Done one after the other, a 1,000-slice load costs the scan plus the read; here a reader
thread reads each plain 16-bit slice (:func:`~viewer.core.dicom.pixels.read_raw_into`, the function
:meth:`StackVolume.load_all` uses, so the same values, guards and errors) into a staging volume as
soon as its header is parsed, on the other core, while the scan goes on.

Slices are staged only where nothing is unusual: single-frame, uncompressed, little endian, 16-bit
greyscale whose modality values fit int16, not in an archive, the same size and series as the first
such slice, with an InstanceNumber that gives a free slot. The slot is the slice's place by instance
number (counted from the end when instance numbers fall as the position rises, as in many head CTs),
so that the sorted stack usually finds every slice where it belongs already.

:meth:`PreRead.claim` (from ``load_all``) hands the staging memory over as the volume: it waits for
the reader, puts every staged slice at its index in the sorted stack (in place, each slice copied
once, one slice of scratch memory; nothing moves where the guess was right), gives the unused tail back to
the system, and says which slices are there; ``load_all`` reads the rest as before. A slice whose
read failed, whose header differs from the stack's, or anything else unexpected is simply not staged:
the normal path then reads it and reports what it reports. Nothing is claimed by a stack of another
size or dtype, or one that holds less than half of its slices staged.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from viewer.core.dicom.grouping import slice_normal
from viewer.core.dicom.header import HeaderRecord
from viewer.core.dicom.model import SliceInfo, SliceSource, Stack
from viewer.core.dicom.pixels import BIG_ENDIAN_TS, int16_ok, is_fast_path, read_raw_into
from viewer.core.dicom.pool import series_budget

logger = logging.getLogger(__name__)

CancelFn = Callable[[], bool]
MADV_POPULATE_WRITE = 23  # Linux >= 5.14: fault a range in at once (about 4x faster than page by page)
MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", 4)
READER_THREADS = 2  # with the scan thread, three on two cores: the reads (the longer part) on two
STALL_S = 10.0  # a claim gives up on a reader that has made no progress for this long
_PAGE = mmap.PAGESIZE


def _pixel_facts(info: SliceInfo) -> tuple[object, ...]:
    """What decides a slice's bytes and values in the volume: a staged slice is used only when the
    stack's header of it says the same."""
    return (
        info.pixel_offset,
        info.pixel_length,
        info.rows,
        info.columns,
        info.bits_allocated,
        info.bits_stored,
        info.pixel_representation,
        info.rescale_slope,
        info.rescale_intercept,
        info.transfer_syntax_uid,
        info.number_of_frames,
        info.source.frame,
    )


def stageable(info: SliceInfo) -> bool:
    """A slice the reader may stage: see the module."""
    return (
        is_fast_path(info)
        and info.source.member is None
        and info.source.frame == 0
        and info.number_of_frames == 1
        and info.bits_allocated == 16
        and info.transfer_syntax_uid != BIG_ENDIAN_TS
        and int16_ok(info)
    )


@dataclass
class _Staged:
    slot: int
    facts: tuple[object, ...]
    ok: bool = False  # read without error (set by the reader)


def _madvise() -> Callable[[int, int, int], int] | None:
    """libc ``madvise`` (ctypes releases the GIL while it runs), or None where there is none."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


class PreRead:
    """The staging volume and its reader thread (see the module). Thread-safe: :meth:`offer` and
    :meth:`finish` come from the scan's calling thread, :meth:`claim` from a load."""

    def __init__(self, files: int) -> None:
        self.files = files  # sources discovered: the most slices there can be staged
        self._lock = threading.Lock()
        self._staged: dict[SliceSource, _Staged] = {}
        self._used: set[int] = set()
        self._pending: list[SliceInfo] = []  # waiting until the instance-number direction is known
        self._descending: bool | None = None
        self._key: tuple[object, ...] | None = None  # series and size of the first stageable slice
        self._buf: mmap.mmap | None = None
        self._volume: np.ndarray | None = None
        self._queue: queue.SimpleQueue[SliceInfo | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._running = 0  # reader threads not yet ended
        self._done = threading.Event()
        self._progress = time.monotonic()
        self._stop = False
        self._finished = False
        self._claimed = False
        self._madvise = _madvise()

    @property
    def claimed(self) -> bool:
        """True once a stack took the staging memory (or it was released)."""
        return self._claimed

    # --- the scan side ---------------------------------------------------------------------------
    def offer(self, records: Sequence[HeaderRecord]) -> None:
        """Stage what can be staged of a chunk of scanned records (cheap; the reads run on the reader)."""
        if self._finished or self._stop:
            return
        for rec in records:
            info = rec.info
            if info.instance_number is None or not stageable(info):
                continue
            key = (rec.patient_id, rec.study_uid, rec.series_uid, info.rows, info.columns, info.orientation)
            if self._key is None:
                if not self._start(info):
                    self._stop = True
                    return
                self._key = key
            if key == self._key:
                self._pending.append(info)
        if self._descending is None:
            self._descending = self._direction(self._pending)
            if self._descending is None:
                return  # not yet known: wait for more records (or finish)
        pending, self._pending = self._pending, []
        for info in pending:
            self._stage(info)

    def finish(self) -> None:
        """The scan is over: stage what is pending and let the reader end after the last read."""
        if self._finished:
            return
        if self._pending and not self._stop:
            if self._descending is None:
                self._descending = False
            pending, self._pending = self._pending, []
            for info in pending:
                self._stage(info)
        self._finished = True
        if not self._threads:
            self._done.set()
        for _ in self._threads:
            self._queue.put(None)

    def _start(self, info: SliceInfo) -> bool:
        """Map the staging memory (virtual: each slot is faulted in when its slice is read) and start
        the reader; False where that cannot be (no anonymous mappings here, over the memory budget)."""
        nbytes = self.files * info.rows * info.columns * 2
        if nbytes <= 0 or nbytes > series_budget() or not hasattr(mmap, "MAP_ANONYMOUS"):
            return False
        try:  # 4 KB pages: huge pages fault in 3x faster when free, 5-10x slower when the kernel must
            # compact memory for them (measured: 500 MB in 0.05 s or 0.6-1.1 s of CPU, against 0.18 s)
            self._buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except (OSError, ValueError):
            return False
        self._volume = np.frombuffer(self._buf, dtype=np.int16).reshape(self.files, info.rows, info.columns)
        self._running = READER_THREADS
        for k in range(READER_THREADS):
            thread = threading.Thread(
                target=self._read_loop, args=(self._volume,), name=f"dicom-preread-{k}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return True

    @staticmethod
    def _direction(infos: Sequence[SliceInfo]) -> bool | None:
        """True when instance numbers fall as the position along the slice normal rises (then the
        sorted stack, ascending by position, holds them in falling order); None until two slices
        with different instance numbers and positions are known."""
        first = infos[0] if infos else None
        if first is None or first.position is None or first.orientation is None:
            return False if first is not None else None
        normal = slice_normal(first.orientation)
        if normal is None:
            return False
        at = float(np.dot(first.position, normal))
        for info in infos[1:]:
            if info.position is None or info.instance_number == first.instance_number:
                continue
            step = float(np.dot(info.position, normal)) - at
            if abs(step) > 1e-6:
                assert info.instance_number is not None and first.instance_number is not None
                return (step > 0) != (info.instance_number > first.instance_number)
        return None

    def _stage(self, info: SliceInfo) -> None:
        assert info.instance_number is not None
        slot = self.files - info.instance_number if self._descending else info.instance_number - 1
        if not 0 <= slot < self.files or info.source in self._staged:
            return
        with self._lock:
            if slot in self._used:
                return  # two slices with one instance number: the second is read by load_all
            self._used.add(slot)
            self._staged[info.source] = _Staged(slot, _pixel_facts(info))
        self._queue.put(info)

    # --- the reader ------------------------------------------------------------------------------
    def _read_loop(self, volume: np.ndarray) -> None:
        base = volume.ctypes.data
        slot_bytes = volume[0].nbytes
        end = -(-volume.nbytes // _PAGE) * _PAGE
        try:
            while True:
                info = self._queue.get()
                if info is None or self._stop:
                    break
                entry = self._staged.get(info.source)
                if entry is None:  # released meanwhile
                    break
                madvise = self._madvise
                if madvise is not None:  # fault the slot in at once, as MAP_POPULATE does
                    start = (base + entry.slot * slot_bytes) // _PAGE * _PAGE
                    stop = min(-(-(base + (entry.slot + 1) * slot_bytes) // _PAGE) * _PAGE, base + end)
                    if madvise(start, stop - start, MADV_POPULATE_WRITE) != 0:
                        self._madvise = None  # an older kernel: pages fault in as they are read
                try:
                    entry.ok = read_raw_into(info, volume[entry.slot])
                except Exception:  # the normal path reads it again and reports what it reports
                    entry.ok = False
                self._progress = time.monotonic()
        finally:
            with self._lock:
                self._running -= 1
                if not self._running:
                    self._done.set()

    # --- the load side ---------------------------------------------------------------------------
    def claim(
        self, stack: Stack, dtype: np.dtype, cancel: CancelFn | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(volume, staged) for ``stack``: its staging memory as the (S, rows, cols) int16 volume, sorted,
        and a bool array of the slices in it; the others are uninitialised, to be read by the caller.
        None (nothing changes) when this stack cannot use the staged slices; after a claim, None."""
        n = len(stack)
        if self._claimed or self._volume is None or dtype != np.int16 or not 0 < n <= self.files:
            return None
        if self._volume.shape[1:] != (stack.rows, stack.columns):
            return None
        found = [self._staged.get(info.source) for info in stack.slices]
        if 2 * sum(1 for entry in found if entry is not None) < n:
            return None
        if not self._wait(cancel):
            return None
        with self._lock:
            if self._claimed or self._volume is None:
                return None
            self._claimed = True
            volume, buf = self._volume, self._buf
            self._volume = self._buf = None
        assert buf is not None
        source_of = [-1] * n  # source_of[i]: the slot slice i is in (-1: not staged)
        staged = np.zeros(n, dtype=bool)
        for i, (info, entry) in enumerate(zip(stack.slices, found, strict=True)):
            if entry is not None and entry.ok and entry.facts == _pixel_facts(info):
                source_of[i] = entry.slot
                staged[i] = True
        _permute(volume, source_of)
        self._give_back(buf, n * volume[0].nbytes)
        self._staged.clear()
        return volume[:n], staged

    def _wait(self, cancel: CancelFn | None) -> bool:
        """Wait for the reader's last read: False if cancelled (the caller then raises) or stalled."""
        while not self._done.wait(0.05):
            if cancel is not None and cancel():
                return False
            if time.monotonic() - self._progress > STALL_S:
                logger.warning("Reading pixels during the scan stalled; they are read again")
                self.release()
                return False
        return True

    def _give_back(self, buf: mmap.mmap, used: int) -> None:
        """Return the staging memory past the volume's end to the system (it stays mapped, unused)."""
        start = -(-used // _PAGE) * _PAGE
        if start < len(buf):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                buf.madvise(MADV_DONTNEED, start, len(buf) - start)

    def release(self) -> None:
        """Stop the reader and drop the staging memory (idempotent; a claimed volume is not affected)."""
        self._stop = True
        with self._lock:
            self._claimed = True
            self._volume = self._buf = None  # unmapped once the reader lets go of it
            self._staged.clear()
        if not self._finished:
            self._finished = True
            for _ in self._threads:
                self._queue.put(None)
        if not self._threads:
            self._done.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the reader thread to end (tests); True when it has."""
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)


def _permute(volume: np.ndarray, source_of: Sequence[int]) -> None:
    """Move slices in place so that slice ``i`` (``i < len(source_of)``) holds what slot ``source_of[i]``
    holds now (-1: not staged, left as it is). Each slice is copied once: chains first (starting where
    the content is needed by no other slice), then the cycles left, with one slice of scratch memory."""
    pending = {i for i, slot in enumerate(source_of) if slot >= 0 and slot != i}
    sources = {source_of[i] for i in pending}  # slots whose content another slice still needs
    for head in [i for i in pending if i not in sources]:
        i = head
        while i in pending:  # slot i's content is needed by nobody now: fill it, then its source's slot
            slot = source_of[i]
            volume[i] = volume[slot]
            pending.discard(i)
            i = slot
    while pending:  # cycles
        start = min(pending)
        scratch = volume[start].copy()
        i = start
        while True:
            pending.discard(i)
            slot = source_of[i]
            if slot == start:
                volume[i] = scratch
                break
            volume[i] = volume[slot]
            i = slot
