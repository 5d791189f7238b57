"""A shared process pool for decoding compressed slices on every core, and the series memory budget."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import mmap
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from viewer.core.constants import MAX_SERIES_BYTES, MAX_SERIES_BYTES_FRACTION_OF_RAM, PREFAULT_MIN_BYTES
from viewer.core.dicom.header import too_large_message
from viewer.core.dicom.model import SliceInfo, Stack
from viewer.core.errors import DicomError, ImageTooLargeError

logger = logging.getLogger(__name__)
POOL_MIN_SLICES = 8  # fewer compressed slices than this go to the slice decoder process only
WORKER_NICE = 5  # decoder processes run below the GUI's priority
_POOL: ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def pool_workers() -> int:
    """One process per core but one (at most 8): the slice decoder process (``isolated``) takes the
    load's chunks from the front meanwhile (see ``StackVolume._load_pool``)."""
    return max(1, min((os.cpu_count() or 1) - 1, 8))


def decode_pool() -> ProcessPoolExecutor:
    """The shared spawn-based pool (created on first use, recreated after a worker crash)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or getattr(_POOL, "_broken", False):
            ctx = multiprocessing.get_context("spawn")  # fork is unsafe in a threaded (Qt) process
            _POOL = ProcessPoolExecutor(
                max_workers=pool_workers(), mp_context=ctx, initializer=_init_worker
            )
        return _POOL


def _init_worker() -> None:
    """Bulk decoder start-up: below the GUI in priority (with one worker per core, a niced worker
    yields to the GUI thread, so scrolling stays smooth while a compressed stack decodes)."""
    if hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(WORKER_NICE)
    keep_freed_memory()


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


def warm_worker() -> int:
    import viewer.core.dicom.pixels  # noqa: F401  (pydicom and the decoders, imported once per worker)

    return os.getpid()


def warm_pool() -> None:
    """Start the decoder processes now (e.g. when a compressed stack opens) to hide start-up."""
    try:
        pool = decode_pool()
        for fut in [pool.submit(warm_worker) for _ in range(pool_workers())]:
            fut.result()
    except Exception:  # a pool that cannot start is reported when it is used
        logger.warning("Decoder processes did not start", exc_info=True)


_WARMING = threading.Event()


def warm_pool_async() -> None:
    """:func:`warm_pool` on a daemon thread, once per process (later calls return at once)."""
    if _WARMING.is_set():
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
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.shutdown(wait=False, cancel_futures=True)
            _POOL = None
        _WARMING.clear()


atexit.register(shutdown_pool)


def pool_broken(exc: BaseException) -> bool:
    return isinstance(exc, BrokenProcessPool)


DecodeResults = list[tuple[int, "np.ndarray | None", "str | None", bool]]  # index, array, error, pending


def decode_task(items: list[tuple[int, SliceInfo]], *, grey_only: bool = True) -> DecodeResults:
    """Worker side: (index, array, error, modality pending) per slice; errors come back as text.

    Greyscale frames come back as stored values (``pending`` True, apply ``to_modality``): half the
    bytes of float32 to pickle back to the loading process. ``grey_only`` refuses colour frames (a
    greyscale volume is being filled).
    """
    from viewer.core.dicom.pixels import decode_stored
    from viewer.core.dicom.sources import ArchiveCache

    archives = ArchiveCache()
    out: DecodeResults = []
    try:
        for i, info in items:
            try:
                arr, pending = decode_stored(info, archives=archives)
                if grey_only and arr.ndim != 2:
                    raise DicomError("colour slice in a greyscale volume")
                out.append((i, arr, None, pending))
            except DicomError as exc:
                out.append((i, None, str(exc), False))
            except Exception as exc:
                out.append(
                    (i, None, f"Cannot decode {info.source.display_name}: {type(exc).__name__}", False)
                )
    finally:
        archives.close()
    return out


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


def allocate_volume(shape: tuple[int, int, int]) -> np.ndarray:
    """An uninitialised float32 array for a whole volume, its pages faulted in by one ``mmap`` call.

    Touching a fresh 300 MB array page by page costs about 0.5 s on a virtual machine (one fault per
    4 KB page); ``MAP_POPULATE`` maps the same memory about 4x faster. Elsewhere (or if the mapping
    fails) this is ``np.empty``. The array owns the mapping: it is unmapped when the array is freed.
    """
    nbytes = int(np.prod(shape)) * 4
    populate = getattr(mmap, "MAP_POPULATE", None)
    if populate is None or nbytes < PREFAULT_MIN_BYTES:
        return np.empty(shape, dtype=np.float32)
    try:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
    except (OSError, ValueError):
        return np.empty(shape, dtype=np.float32)
    return np.frombuffer(buf, dtype=np.float32).reshape(shape)
