"""Compiled trilinear sampling of a plane, or of a thick slab of parallel planes folded as it is sampled
(MIP / MinIP / mean), through a stack that one affine describes: the oblique MPR planes and slabs.

The numpy samplers in :mod:`viewer.core.geometry.reslice` gather the 8 corners of every pixel into
temporary arrays, one plane at a time, so a 10 mm slab of 21 planes costs 21 full planes and a float copy
of each. Here a compiled loop (:mod:`viewer.core.geometry.affine_kernel`) samples each image row of the
slab's planes one after the other and folds every sample into a float32 accumulator row as it goes:
int16 (or any numeric dtype) read in place, no copies. The columns of a row inside the volume come from the
row's crossing of the volume's box (no bounds test per sample; only samples within a voxel of its faces are
clamped, as the numpy path clamps them); the others count as ``fill``, as the numpy path's outside pixels
do. A plane containing the slice normal (single oblique, the crosshair turned in the axial view) keeps
every image row in one slice at the same in-slice points: their cells and weights are computed once into a
table and each row is a bilinear pass over it.

numba compiles the loop on first use (once per volume dtype, cached on disk), lazily on the reslice
thread, by sampling a 3x3x3 volume of that dtype; where numba is missing, or that first compiled call fails
(a numba or LLVM error, numba's ``NUMBA_DISABLE_JIT`` switch, ...), one warning is logged, the compiled
sampler stays off for the session and :func:`sample_affine` returns None: the numpy path runs.
Large jobs are split by rows over at most two threads (the loop releases the GIL): the calling thread and
one pool thread take blocks of rows in turn, so a thread that gets less CPU on a loaded machine takes
fewer blocks. A thread pool rather than numba's ``prange``, whose default threading layer aborts the
process when two threads (two MPR viewports reslicing at once) enter parallel code together.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import IntEnum

import numpy as np

log = logging.getLogger(__name__)


SPLIT_SAMPLES = 400_000  # samples per thread-pool job; smaller jobs run on the calling thread
JOB_TIMEOUT_S = 60.0
BLOCKS_PER_THREAD = 8  # row blocks per thread of a split job (taken in turn, see sample_affine)
_THREADS = max(1, min(2, os.cpu_count() or 1))
MAX_VOXELS = 2**31 - 2**24  # the kernel's cell offsets are int32 (gather lanes)


class Reduce(IntEnum):
    """How the slab's planes are folded (the kernel's ``mode`` argument)."""

    MAX = 0
    MIN = 1
    MEAN = 2


Kernel = Callable[..., None]
_lock = threading.Lock()
_kernel: Kernel | None = None
_failed = False
_ready: set[str] = set()  # volume dtypes the kernel compiled (and ran) for
_pool: ThreadPoolExecutor | None = None


def _compile() -> Kernel:
    """The numba kernel (raises ImportError without numba); compiled on first call, from the disk cache
    after that."""
    from viewer.core.geometry import affine_kernel  # lazy: imports numba (~0.5 s), only for oblique planes

    return affine_kernel.rows


def kernel() -> Kernel | None:
    """The compiled kernel, compiling it on first call; None where numba is not available."""
    global _kernel, _failed
    with _lock:
        if _kernel is None and not _failed:
            try:
                _kernel = _compile()
            except Exception as exc:  # ImportError, or numba refusing this platform
                _failed = True
                log.info("Compiled oblique sampler unavailable (%s): numpy path", type(exc).__name__)
        return _kernel


def _compiled_for(run: Kernel, dtype: np.dtype) -> bool:
    """Whether ``run`` works for volumes of ``dtype``: compiled (or loaded from the disk cache) and checked by
    sampling the centre of a 3x3x3 volume on the calling thread, once per dtype. A failure (typing, lowering
    or LLVM error, or numba running uncompiled) turns the compiled sampler off for the session, with one
    warning."""
    global _failed
    key = dtype.str
    with _lock:
        if _failed:
            return False
        if key in _ready:
            return True
        try:
            probe = np.arange(27, dtype=dtype).reshape(3, 3, 3)
            out = np.empty((1, 1), dtype=np.float32)
            half = np.full(3, 0.5)
            run(probe.reshape(-1), np.array(probe.shape, dtype=np.int64), half, half, half, half, 2,
                int(Reduce.MEAN), 0.0, out, 0, 1)
            if not abs(float(out[0, 0]) - 9.75) < 1e-3:  # value 9k + 3j + i: (6.5 at 0.5 + 13 at 1) / 2
                raise ArithmeticError(f"probe sampled {float(out[0, 0])!r}")
        except Exception as exc:  # any compile or run failure: the numpy path works
            _failed = True
            log.warning("Compiled oblique sampler failed on first use (%s): numpy path from now on",
                        type(exc).__name__)
            return False
        _ready.add(key)
        return True


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, _THREADS - 1), thread_name_prefix="reslice-rows")
        return _pool


def sample_affine(
    volume: np.ndarray,
    v0: np.ndarray,
    d_row: np.ndarray,
    d_col: np.ndarray,
    d_n: np.ndarray,
    n_planes: int,
    mode: Reduce,
    fill: float,
    size: tuple[int, int],
) -> np.ndarray | None:
    """``out[r, c]`` = ``mode`` over ``m < n_planes`` of the volume, trilinear, at voxel coordinates
    ``v0 + r*d_row + c*d_col + m*d_n`` (``fill`` outside the volume), float32; None without the kernel or
    for a volume it cannot read in place (not C-contiguous, fewer than 2 voxels along an axis, over
    ``MAX_VOXELS`` voxels)."""
    if volume.ndim != 3 or not volume.flags.c_contiguous or min(volume.shape) < 2 or n_planes < 1:
        return None
    if volume.size > MAX_VOXELS:
        return None
    dtype = volume.dtype
    if dtype.kind not in "iuf" or not dtype.isnative or (dtype.kind == "f" and dtype.itemsize < 4):
        return None  # bool, complex, float16, big-endian: the numpy path reads those
    run = kernel()
    if run is None or not _compiled_for(run, dtype):
        return None
    rows, cols = size
    out = np.empty((rows, cols), dtype=np.float32)
    args = (
        volume.reshape(-1),
        np.asarray(volume.shape, dtype=np.int64),
        np.asarray(v0, dtype=np.float64),
        np.asarray(d_row, dtype=np.float64),
        np.asarray(d_col, dtype=np.float64),
        np.asarray(d_n, dtype=np.float64),
        int(n_planes),
        int(mode),
        float(fill),
        out,
    )
    threads = min(_THREADS, max(1, (rows * cols * n_planes) // SPLIT_SAMPLES), rows)
    if threads == 1:
        run(*args, 0, rows)
        return out
    # the calling thread and (threads - 1) pool threads take row blocks in turn from one counter: on a
    # loaded machine a thread that gets less CPU takes fewer blocks instead of holding up the image
    bounds = np.linspace(0, rows, min(rows, threads * BLOCKS_PER_THREAD) + 1).astype(int)
    blocks = itertools.count()

    def work() -> None:
        while (b := next(blocks)) < len(bounds) - 1:
            run(*args, int(bounds[b]), int(bounds[b + 1]))

    pool = _executor()
    helpers = [pool.submit(work) for _ in range(threads - 1)]
    work()
    for future in helpers:
        if not future.cancel():  # not started yet (the pool busy with another image's blocks): not needed
            future.result(timeout=JOB_TIMEOUT_S)
    return out
