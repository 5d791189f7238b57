"""StackVolume: lazy, cached, prefetching access to a stack's pixels, and a fast whole-volume load."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import numpy as np

from viewer.core.constants import SLICE_CACHE_BYTES, WINDOW_PRESETS, Window
from viewer.core.dicom import isolated
from viewer.core.dicom.isolated import decode_isolated, run_isolated
from viewer.core.dicom.isolated import warm_async as warm_decoders
from viewer.core.dicom.model import SliceInfo, Stack
from viewer.core.dicom.pixels import (
    ModalityOverflow,
    decode_frame,
    is_fast_path,
    modality_dtype,
    read_raw,
    read_raw_into,
    to_modality,
)
from viewer.core.dicom.pool import (
    POOL_MIN_SLICES,
    allocate_volume,
    check_volume_budget,
    decode_chunks,
    pool_work,
    wants_pool,
)
from viewer.core.dicom.preread import PreRead
from viewer.core.dicom.sharedvolume import SharedTarget, SharedVolume, shared_volumes_supported
from viewer.core.dicom.sources import ArchiveCache
from viewer.core.dicom.worker import MODALITY_OVERFLOW, CrashRecord, DecodeResults, Items, decode_task
from viewer.core.dicom.worker import CancelFn as WorkerCancelFn
from viewer.core.errors import DicomError, LoadCancelled, PixelDecodeError

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
READ_THREADS = 4  # uncompressed load_all: I/O and numpy casts release the GIL
POOL_CHUNK = 4  # compressed slices per process-pool task
PREFETCH_MAX_SLICES = 96  # one prefetch call decodes at most this many slices (and 80 % of the cache)


def _failure_reason(exc: Exception) -> str:
    """Our errors carry a human reason; anything else is named by type (its text may hold paths)."""
    return str(exc) if isinstance(exc, DicomError) else type(exc).__name__


CT_DEFAULT_WINDOW = WINDOW_PRESETS["brain"]  # a CT without a header window: Slicewise reads head CT


class StackVolume:
    """Pixels of one :class:`Stack`, decoded on demand (thread-safe).

    ``get_slice`` returns read-only arrays shared with the cache: copy before modifying. Greyscale
    modality values come in :attr:`dtype`, decided once from the headers of the whole stack
    (:func:`~viewer.core.dicom.pixels.modality_dtype`): int16 for nearly all CT (half the memory of
    float32, the same values), float32 where slope/intercept or the stored range need it. Should a
    slice's values turn out not to fit int16 after all (a 16-bit value at the extreme of its range),
    the volume switches to float32 for good, so one volume never mixes the two.
    """

    def __init__(
        self, stack: Stack, *, cache_bytes: int = SLICE_CACHE_BYTES, preread: PreRead | None = None
    ) -> None:
        self.stack = stack
        self._preread = preread  # slices read during the scan (load_paths(whole_volume=True))
        self.cache_bytes = int(cache_bytes)
        self.bad_slices: dict[int, str] = {}
        first = stack.slices[0] if stack.slices else None
        self.invert_display = bool(first is not None and first.photometric == "MONOCHROME1")
        self.dtype: np.dtype = modality_dtype(stack.slices)
        self._overflowed = False  # a slice did not fit int16: switch to float32 (see _promote)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_used = 0
        self._lock = threading.Lock()
        self._inflight: dict[int, threading.Event] = {}
        self._archives = ArchiveCache()
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slice-prefetch")
        self._requester = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slice-request")
        self._request_seqs: dict[Hashable, int] = {}  # requester -> its latest request's number
        self._generation = 0
        self._closed = False
        if stack.slices and not is_fast_path(stack.slices[0]):
            # Hide the decoder processes' start-up behind browsing: the slice decoder first, then
            # (for a compressed greyscale stack) the whole-volume pool.
            warm_decoders(bulk=wants_pool(stack))

    def __len__(self) -> int:
        return len(self.stack.slices)

    def __enter__(self) -> StackVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- single slices ---------------------------------------------------------------------------
    def _check_index(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(f"slice {i} out of range 0..{len(self) - 1}")
        return i

    def cached(self, i: int) -> np.ndarray | None:
        """The slice if it is already decoded, else None (never decodes)."""
        with self._lock:
            return self._cache.get(i)

    def get_slice(self, i: int) -> np.ndarray:
        """(rows, cols) modality values in :attr:`dtype`, or uint8 (rows, cols, 3) RGB;
        PixelDecodeError if bad."""
        i = self._check_index(i)
        while True:
            with self._lock:
                hit = self._cache.get(i)
                if hit is not None:
                    self._cache.move_to_end(i)
                    return hit
                if i in self.bad_slices:
                    raise PixelDecodeError(self.bad_slices[i])
                event = self._inflight.get(i)
                if event is None:
                    event = threading.Event()
                    self._inflight[i] = event
                    break
            event.wait()  # another thread decodes this slice: use its result
        try:
            arr = self._decode(self.stack.slices[i])
            if self._overflowed:
                self._promote()
            arr.flags.writeable = False
            self._store(i, arr)  # before waiters wake, so they find it in the cache
        except Exception as exc:
            message = str(exc) if isinstance(exc, DicomError) else f"Cannot decode: {type(exc).__name__}"
            with self._lock:
                self.bad_slices[i] = message
            if isinstance(exc, PixelDecodeError):
                raise
            raise PixelDecodeError(message) from exc
        finally:
            with self._lock:
                self._inflight.pop(i, None)
            event.set()
        return arr

    def _decode(self, info: SliceInfo) -> np.ndarray:
        first = self.stack.slices[0]
        if (info.rows, info.columns) != (first.rows, first.columns):
            raise PixelDecodeError(f"{info.source.display_name} has a different size from the stack")
        dtype = self.dtype
        try:
            if is_fast_path(info):  # plain bytes into numpy: no decoder involved
                return decode_frame(info, archives=self._archives, dtype=dtype)
            return decode_isolated(info, self._archives, dtype=dtype)  # C decoders run in a child process
        except ModalityOverflow:
            if dtype == np.float32:
                raise
            self._overflowed = True
            return self._decode(info) if self.dtype == np.float32 else self._decode_float(info)

    def _decode_float(self, info: SliceInfo) -> np.ndarray:
        if is_fast_path(info):
            return decode_frame(info, archives=self._archives)
        return decode_isolated(info, self._archives)

    def _modality(self, arr: np.ndarray, info: SliceInfo, out: np.ndarray) -> None:
        """:func:`to_modality` into ``out``; a slice that does not fit an int16 ``out`` sets the flag
        that makes :meth:`load_all` start again in float32."""
        try:
            to_modality(arr, info, out=out)
        except ModalityOverflow:
            if out.dtype == np.float32:
                raise
            self._overflowed = True

    def _promote(self) -> None:
        """Switch this volume to float32 for good (the int16 slices in the cache are dropped)."""
        with self._lock:
            if self.dtype == np.float32:
                return
            self.dtype = np.dtype(np.float32)
            self._cache.clear()
            self._cache_used = 0
        logger.warning("A slice's modality values do not fit int16: this stack is kept as float32")

    def _store(self, i: int, arr: np.ndarray) -> None:
        if arr.nbytes > self.cache_bytes:
            return
        with self._lock:
            if self._closed or i in self._cache:
                return  # after close() a late reader (e.g. a thumbnail) gets its slice, the cache stays empty
            if arr.ndim == 2 and arr.dtype != self.dtype:
                return  # decoded as int16 just before the volume switched to float32
            self._cache[i] = arr
            self._cache_used += arr.nbytes
            while self._cache_used > self.cache_bytes and self._cache:
                _, old = self._cache.popitem(last=False)
                self._cache_used -= old.nbytes

    # --- asynchronous requests: the GUI thread never waits for a decoder --------------------------
    def needs_decoder(self, i: int) -> bool:
        """True unless slice ``i`` is plain stored bytes (a file or zip member read in a millisecond or
        two, no decoder involved)."""
        return not is_fast_path(self.stack.slices[self._check_index(i)])

    def request_slice(
        self, i: int, callback: Callable[[int], None], *, requester: Hashable = None
    ) -> np.ndarray | None:
        """The slice if it is decoded already (never decodes here); else None, and it is decoded on this
        volume's request thread, which then calls ``callback(i)`` (from that thread) once the slice is
        in the cache or in :attr:`bad_slices`. A newer request of the same ``requester`` (each viewport
        showing this volume is one) supersedes its older ones not yet started; other requesters' stand.
        """
        i = self._check_index(i)
        hit = self.cached(i)
        if hit is not None or self._closed:
            return hit
        with self._lock:
            seq = self._request_seqs.get(requester, 0) + 1
            self._request_seqs[requester] = seq
        with contextlib.suppress(RuntimeError):  # closed concurrently
            self._requester.submit(self._request_run, i, requester, seq, callback)
        return None

    def _request_run(self, i: int, requester: Hashable, seq: int, callback: Callable[[int], None]) -> None:
        if self._closed or (seq != self._request_seqs.get(requester) and self.cached(i) is None):
            return  # superseded before it started: the requester's newer request is what it waits for
        with contextlib.suppress(DicomError):  # recorded in bad_slices
            self.get_slice(i)
        if not self._closed:
            callback(i)

    def nearest_cached(self, i: int, reach: int = 64) -> int | None:
        """The decoded slice nearest to ``i`` (within ``reach``; ``i`` itself first), else None."""
        n = len(self)
        with self._lock:
            for step in range(reach + 1):
                for j in (i - step, i + step) if step else (i,):
                    if 0 <= j < n and j in self._cache:
                        return j
        return None

    # --- prefetch --------------------------------------------------------------------------------
    def _slice_bytes(self) -> int:
        if not self.stack.slices:
            return 1
        first = self.stack.slices[0]
        per_pixel = 3 if self.stack.is_color else self.dtype.itemsize
        return max(first.rows * first.columns * per_pixel, 1)

    def prefetch(self, i: int) -> None:
        """Decode around ``i`` (i, i+1, i-1, i+2, ...) in the background; a newer call cancels this one."""
        if self._closed or not len(self):
            return
        i = min(max(i, 0), len(self) - 1)
        with self._lock:
            self._generation += 1
            generation = self._generation
        try:
            self._prefetcher.submit(self._prefetch_run, i, generation)
        except RuntimeError:  # closed concurrently
            return

    def prefetch_reach(self, centre: int) -> list[int]:
        """The slices one :meth:`prefetch` call around ``centre`` decodes, in its order (centre, +1, -1,
        +2, ...): at most PREFETCH_MAX_SLICES and 80 % of the cache. Progress displays count these, not
        the whole stack, which one prefetch may not reach."""
        n = len(self)
        if not n:
            return []
        centre = min(max(centre, 0), n - 1)
        budget = max(1, int(0.8 * self.cache_bytes // self._slice_bytes()))
        budget = min(budget, n, PREFETCH_MAX_SLICES)
        out: list[int] = []
        step = 0
        while len(out) < budget and step <= n:
            for idx in (centre + step, centre - step) if step else (centre,):
                if 0 <= idx < n and len(out) < budget:
                    out.append(idx)
            step += 1
        return out

    def _prefetch_run(self, centre: int, generation: int) -> None:
        for idx in self.prefetch_reach(centre):
            if self._closed or self._generation != generation:
                return
            if self.cached(idx) is not None or idx in self.bad_slices:
                continue
            with contextlib.suppress(DicomError):  # recorded in bad_slices
                self.get_slice(idx)

    # --- whole volume ----------------------------------------------------------------------------
    def load_all(self, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> np.ndarray:
        """(S, rows, cols) modality values in :attr:`dtype` (int16 or float32) of a greyscale stack; bad
        slices filled with the stack minimum.

        Uncompressed slices are read straight into the preallocated array by a few threads;
        compressed ones are decoded by a process pool using every core. Raises
        :class:`LoadCancelled` when ``cancel()`` turns true (checked at least every 0.1 s).
        """
        if self.stack.is_color:
            raise DicomError("A colour stack cannot be loaded as a greyscale volume")
        n = len(self)
        if n == 0:
            return np.zeros((0, 0, 0), dtype=self.dtype)
        rows, cols = self.stack.rows, self.stack.columns
        check_volume_budget(n * rows * cols * self.dtype.itemsize)
        claimed = self._claim_preread(cancel)
        shared = None if claimed is not None else self._shared_volume((n, rows, cols))
        try:
            out = self._load_into(claimed, shared, progress, cancel)
        finally:
            if shared is not None:
                shared.close()
        if self._overflowed and out.dtype != np.float32:
            del out, shared  # a slice did not fit int16: the whole volume again, as float32
            self._promote()
            return self.load_all(progress, cancel)
        return out

    def _shared_volume(self, shape: tuple[int, int, int]) -> SharedVolume | None:
        """The volume in shared memory when decoder processes will fill it (enough slices for the
        pool, see :mod:`~viewer.core.dicom.sharedvolume`); None where that is not possible here."""
        if not shared_volumes_supported():
            return None
        if sum(1 for info in self.stack.slices if pool_work(info)) < POOL_MIN_SLICES:
            return None
        try:
            return SharedVolume(shape, self.dtype)
        except (OSError, ValueError) as exc:  # e.g. no memfd here, or too many open files
            logger.info("No shared volume (%s); decoded slices are sent back", type(exc).__name__)
            return None

    def _load_into(
        self,
        claimed: tuple[np.ndarray, np.ndarray] | None,
        shared: SharedVolume | None,
        progress: ProgressFn | None,
        cancel: CancelFn | None,
    ) -> np.ndarray:
        """:meth:`load_all`'s work, into the preread, shared or a fresh volume."""
        n = len(self)
        rows, cols = self.stack.rows, self.stack.columns
        if claimed is not None:
            out, staged = claimed
        else:
            out = shared.array if shared is not None else allocate_volume((n, rows, cols), self.dtype)
            staged = None
        good = np.zeros(n, dtype=bool)
        todo_fast: list[int] = []
        todo_slow: list[int] = []
        for i, info in enumerate(self.stack.slices):
            if staged is not None and staged[i] and i not in self.bad_slices:
                good[i] = True  # read during the scan, by the same read_raw_into as below
                continue
            hit = self.cached(i)
            if hit is not None:
                out[i] = hit
                good[i] = True
            elif i in self.bad_slices:
                continue
            elif (info.rows, info.columns) != (rows, cols):
                self.bad_slices[i] = f"{info.source.display_name} has a different size from the stack"
            elif is_fast_path(info):
                todo_fast.append(i)
            else:
                todo_slow.append(i)
        counter = [int(good.sum()) + len(self.bad_slices)]

        def tick(k: int) -> None:
            counter[0] += k
            if progress is not None:
                progress(min(counter[0], n), n)

        tick(0)
        if todo_fast:
            self._load_threads(todo_fast, out, good, tick, cancel, self._read_into)
        if todo_slow:
            use_pool = len(todo_slow) >= POOL_MIN_SLICES
            if use_pool:
                target = shared.target if shared is not None else None
                self._load_pool(todo_slow, out, good, tick, cancel, target)
            else:
                self._load_threads(todo_slow, out, good, tick, cancel, self._decode_into)
        if self._overflowed and out.dtype != np.float32:
            return out  # load_all starts again in float32
        bad = [i for i in range(n) if not good[i]]
        if bad:
            fill = min((out[i].min() for i in np.flatnonzero(good)), default=0)
            for i in bad:
                out[i] = fill
        return out

    def _claim_preread(self, cancel: CancelFn | None) -> tuple[np.ndarray, np.ndarray] | None:
        """The scan's staged slices as this volume (see :mod:`~viewer.core.dicom.preread`), or None."""
        if self._preread is None:
            return None
        claimed = self._preread.claim(self.stack, self.dtype, cancel)
        self._preread = None  # claimed once, or not at all
        self._check_cancel(cancel)
        return claimed

    def _check_cancel(self, cancel: CancelFn | None, futures: set[Future[object]] | None = None) -> None:
        if cancel is not None and cancel():
            for fut in futures or ():
                fut.cancel()
            raise LoadCancelled("Loading cancelled")

    def _read_into(self, i: int, out: np.ndarray) -> None:
        info = self.stack.slices[i]
        try:
            if read_raw_into(info, out[i]):
                return
        except ModalityOverflow:
            self._overflowed = True
            return
        self._modality(read_raw(info, self._archives), info, out[i])

    def _decode_into(self, i: int, out: np.ndarray) -> None:
        out[i] = self._decode(self.stack.slices[i])

    def _load_threads(
        self,
        idx: list[int],
        out: np.ndarray,
        good: np.ndarray,
        tick: Callable[[int], None],
        cancel: CancelFn | None,
        fn: Callable[[int, np.ndarray], None],
    ) -> None:
        chunks = [idx[k : k + 8] for k in range(0, len(idx), 8)]
        stop = threading.Event()

        def work(chunk: list[int]) -> list[tuple[int, str | None]]:
            result: list[tuple[int, str | None]] = []
            for i in chunk:
                if stop.is_set():
                    break
                try:
                    fn(i, out)
                    result.append((i, None))
                except Exception as exc:
                    result.append((i, _failure_reason(exc)))
            return result

        with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="slice-read") as pool:
            pending: set[Future[object]] = {pool.submit(work, c) for c in chunks}
            try:
                while pending:
                    finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        self._collect(fut.result(), good)  # type: ignore[arg-type]
                        tick(len(fut.result()))  # type: ignore[arg-type]
                    self._check_cancel(cancel, pending)
            finally:
                stop.set()

    def _collect(self, results: list[tuple[int, str | None]], good: np.ndarray) -> None:
        for i, err in results:
            if err is None:
                good[i] = True
            else:
                with self._lock:
                    self.bad_slices[i] = err

    def _load_pool(
        self,
        idx: list[int],
        out: np.ndarray,
        good: np.ndarray,
        tick: Callable[[int], None],
        cancel: CancelFn | None,
        target: SharedTarget | None = None,
    ) -> None:
        """Work stealing (:func:`~viewer.core.dicom.pool.decode_chunks`): pool processes take chunks from
        the end, the slice decoder process from the front, every frame under its own time limit.

        Never slower than the slice decoder alone (a cold pool simply gets fewer chunks), every core
        decodes once the pool runs, and all C decoding happens outside this process. This thread
        only collects, so it never holds the GIL long enough to starve the threads receiving results.
        With ``target`` (``out`` is that shared volume), the decoder processes write the slices into it
        themselves and answer a few bytes each.
        """
        slices = self.stack.slices
        chunks = [[(i, slices[i]) for i in idx[k : k + POOL_CHUNK]] for k in range(0, len(idx), POOL_CHUNK)]

        def deliver(results: DecodeResults) -> None:
            self._put_results(results, out, good)
            tick(len(results))

        def front(chunk: Items, stop: WorkerCancelFn, crashed: CrashRecord) -> DecodeResults:
            return self._decode_front(chunk, stop, target, crashed)

        timeout = isolated.DECODE_TIMEOUT_S
        decode_chunks(chunks, deliver, front=front, frame_timeout=timeout, cancel=cancel, target=target)

    @staticmethod
    def _decode_front(
        chunk: Items, cancel: WorkerCancelFn, target: SharedTarget | None, crashed: CrashRecord
    ) -> DecodeResults:
        """One chunk in the slice decoder process (in this process where none can start; a slice that
        killed a pool process is never decoded here, see :func:`~viewer.core.dicom.worker.crashed_items`)."""
        results = run_isolated(chunk, cancel=cancel, target=target, crashed=crashed)
        if results is None:
            logger.warning("Decoder processes cannot start here; decoding in this process")
            return decode_task(chunk)
        return results

    def _put_results(
        self,
        results: DecodeResults,
        out: np.ndarray,
        good: np.ndarray,
    ) -> None:
        """Put a decoder task's results into ``out`` (modality LUT applied here when pending; a slice
        without an array was written into the shared volume ``out`` by its decoder process)."""
        for i, arr, err, stored in results:
            if err is None:
                if arr is None:
                    pass  # in ``out`` already
                elif stored:
                    self._modality(arr, self.stack.slices[i], out[i])
                else:
                    out[i] = arr
                good[i] = True
            elif err == MODALITY_OVERFLOW:
                self._overflowed = True  # load_all starts again in float32
            else:
                self.bad_slices[i] = err or "Cannot decode"

    # --- display defaults ------------------------------------------------------------------------
    def header_window(self) -> Window | None:
        """The middle slice's header window, else the first slice's that has one (never decodes)."""
        if not len(self):
            return None
        window = self.stack.slices[len(self) // 2].window
        if window is not None:
            return window
        return next((info.window for info in self.stack.slices if info.window is not None), None)

    def known_window(self) -> Window | None:
        """:meth:`header_window`, else the brain window for a greyscale CT (in HU); ``None`` when only the
        data can tell (never decodes)."""
        window = self.header_window()
        if window is None and self.stack.modality == "CT" and not self.stack.is_color:
            return CT_DEFAULT_WINDOW
        return window

    def default_window(self) -> Window:
        """:meth:`known_window`; for MR, CR and the rest without a header window one from the data
        range of the middle slice (decoded if needed)."""
        if not len(self):
            return Window(400, 40)
        mid = len(self) // 2
        window = self.known_window()
        if window is not None:
            return window
        try:
            data = self.get_slice(mid)
        except DicomError:
            return Window(400, 40)
        finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
        if finite.size == 0:
            return Window(400, 40)
        low, high = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
        if high <= low:
            low, high = float(finite.min()), float(finite.max()) + 1.0
        return Window.from_levels(low, high)

    def close(self) -> None:
        """Stop prefetching, drop the cache and close any open archive (idempotent)."""
        self._closed = True
        with self._lock:
            self._generation += 1
        self._prefetcher.shutdown(wait=False, cancel_futures=True)
        self._requester.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._cache.clear()
            self._cache_used = 0
        self._archives.close()
