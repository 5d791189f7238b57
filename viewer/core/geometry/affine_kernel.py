"""The numba loops of :mod:`viewer.core.geometry.affine_sampler` (imported only from there, lazily: importing
this module imports numba). Compiled on first call per volume dtype and cached on disk (``cache=True``).

Every sample is blended as the numpy trilinear sampler blends it (along i, then j, then k, float32 weights
from float64 coordinates clamped to the volume), so the images are the numpy path's within float rounding.

A slab is sampled one image row and one slab plane at a time, the columns of that row strictly inside the
volume in three passes over small buffers: cells and weights (vectorised by LLVM), the cells' blends (8 at a
time with AVX2 gathers for int16 volumes, :mod:`viewer.core.geometry.affine_simd`; scalar otherwise), and
the fold into the row's MIP / MinIP / sum (vectorised).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.core import types
from numba.extending import overload

from viewer.core.geometry import affine_simd

EDGE = 1e-3  # voxel units: this close outside the outer voxel centres is on them (reslice.INTEGRAL_TOLERANCE)
STRICT = 1e-9  # a coordinate this far below the last voxel centre still has a cell above it (no clamping)
SIMD = affine_simd.available()  # AVX2 gathers for int16 volumes (decided once per process, at import)
# numba's disk cache checks this file's time stamp and size, not affine_simd.py's, whose code the kernel
# inlines: this digest of affine_simd.py's source (lines joined by "\n"; tests/core/test_slab_kernel.py
# compares it) makes every change there a change here, so the cache never serves a kernel built from old code.
SIMD_SOURCE_SHA256 = "f1735863d68dfe610c10a913f4c3fef432feb765bfd9fbede3209da5af170c8c"

_jit = numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy", fastmath={"contract"})


@_jit
def interval(b: float, d: float, low: float, top: float, lo: float, hi: float) -> tuple[float, float]:
    """``[lo, hi]`` narrowed to the ``t`` where ``b + t*d`` lies in ``[low, top]``."""
    if abs(d) < 1e-12:
        if b < low or b > top:
            return 1.0, 0.0
        return lo, hi
    t1 = (low - b) / d
    t2 = (top - b) / d
    if t1 > t2:
        t1, t2 = t2, t1
    return max(lo, t1), min(hi, t2)


@_jit
def fold(acc: np.float32, v: np.float32, mode: int) -> np.float32:
    if mode == 0:
        return max(acc, v)
    if mode == 1:
        return min(acc, v)
    return acc + v


@_jit
def fold_ends(mode: int, n: int) -> tuple[np.float32, np.float32]:
    """:func:`fold`'s starting value for ``mode`` and the factor applied after ``n`` folds (a mean's 1/n)."""
    start = np.float32(-np.inf) if mode == 0 else np.float32(np.inf) if mode == 1 else np.float32(0.0)
    return start, np.float32(1.0) / np.float32(n) if mode == 2 else np.float32(1.0)


@_jit
def cell(flat: np.ndarray, o: int, sj: int, sk: int, fk: float, fj: float, fi: float) -> np.float32:
    """Trilinear blend of the cell whose first voxel is at flat index ``o``."""
    c000, c001 = np.float32(flat[o]), np.float32(flat[o + 1])
    c010, c011 = np.float32(flat[o + sj]), np.float32(flat[o + sj + 1])
    c100, c101 = np.float32(flat[o + sk]), np.float32(flat[o + sk + 1])
    c110, c111 = np.float32(flat[o + sk + sj]), np.float32(flat[o + sk + sj + 1])
    fi32, fj32, fk32 = np.float32(fi), np.float32(fj), np.float32(fk)
    a0 = c000 + (c001 - c000) * fi32
    a1 = c010 + (c011 - c010) * fi32
    a2 = c100 + (c101 - c100) * fi32
    a3 = c110 + (c111 - c110) * fi32
    b0 = a0 + (a1 - a0) * fj32
    b1 = a2 + (a3 - a2) * fj32
    return b0 + (b1 - b0) * fk32


@_jit
def clamped(flat: np.ndarray, pk: float, pj: float, pi: float, dims: np.ndarray) -> np.float32:
    """The sample at (pk, pj, pi), clamped into the volume (a point within EDGE of its faces)."""
    nk, nj, ni = dims[0], dims[1], dims[2]
    pk = min(max(pk, 0.0), nk - 1.0)
    pj = min(max(pj, 0.0), nj - 1.0)
    pi = min(max(pi, 0.0), ni - 1.0)
    k0 = min(int(pk), nk - 2)
    j0 = min(int(pj), nj - 2)
    i0 = min(int(pi), ni - 2)
    return cell(flat, (k0 * nj + j0) * ni + i0, ni, nj * ni, pk - k0, pj - j0, pi - i0)


def blend_cells(flat, off, fk, fj, fi, n, sj, sk, val):  # type: ignore[no-untyped-def]
    """``val[t]`` = the blend of the cell at ``flat[off[t]]`` with weights ``fk[t], fj[t], fi[t]``, ``t < n``
    (compiled only: the implementation is chosen per volume dtype below)."""
    raise NotImplementedError("blend_cells runs compiled only")


@overload(blend_cells, jit_options={"nogil": True, "error_model": "numpy"})
def _blend_cells(flat, off, fk, fj, fi, n, sj, sk, val):  # type: ignore[no-untyped-def]
    if SIMD and isinstance(flat, types.Array) and flat.dtype == types.int16:

        def gathered(flat, off, fk, fj, fi, n, sj, sk, val):  # type: ignore[no-untyped-def]
            t = 0
            while t + affine_simd.LANES <= n:
                affine_simd.blend8(flat, off, fk, fj, fi, t, sj, sk, val)  # type: ignore[call-arg]
                t += affine_simd.LANES
            for u in range(t, n):
                val[u] = cell(flat, off[u], sj, sk, fk[u], fj[u], fi[u])

        return gathered

    def scalar(flat, off, fk, fj, fi, n, sj, sk, val):  # type: ignore[no-untyped-def]
        for u in range(n):
            val[u] = cell(flat, off[u], sj, sk, fk[u], fj[u], fi[u])

    return scalar


@_jit
def inner_run(
    flat: np.ndarray,
    sj: int,
    sk: int,
    pk0: float,
    pj0: float,
    pi0: float,
    d_col: np.ndarray,
    c0: int,
    c1: int,
    mode: int,
    acc_row: np.ndarray,
    b_off: np.ndarray,
    b_w: np.ndarray,
    b_val: np.ndarray,
) -> None:
    """Columns ``c0:c1`` of one slab plane's row, every sample clear of the volume's faces (no clamping),
    folded into ``acc_row[c0:c1]``."""
    n = c1 - c0
    dk, dj, di = d_col[0], d_col[1], d_col[2]
    fk, fj, fi = b_w[0], b_w[1], b_w[2]
    for t in range(n):
        c = c0 + t
        pk = pk0 + c * dk
        pj = pj0 + c * dj
        pi = pi0 + c * di
        k0, j0, i0 = int(pk), int(pj), int(pi)
        b_off[t] = np.int32(k0 * sk + j0 * sj + i0)
        fk[t] = np.float32(pk - k0)
        fj[t] = np.float32(pj - j0)
        fi[t] = np.float32(pi - i0)
    blend_cells(flat, b_off, fk, fj, fi, n, sj, sk, b_val)
    acc = acc_row[c0:c1]
    if mode == 0:
        for t in range(n):
            acc[t] = max(acc[t], b_val[t])
    elif mode == 1:
        for t in range(n):
            acc[t] = min(acc[t], b_val[t])
    else:
        for t in range(n):
            acc[t] += b_val[t]


@_jit
def row_spans(
    bk: float,
    bj: float,
    bi: float,
    d_col: np.ndarray,
    d_n: np.ndarray,
    n_off: int,
    hk: float,
    hj: float,
    hi: float,
    cols: int,
    spans: np.ndarray,
) -> None:
    """``spans[m]`` = (first, last) column of slab plane ``m``'s row inside the volume (within EDGE; none:
    ``cols, cols - 1``) and (first, last) of those clear of its faces (sampled without clamping): each row
    crosses the volume's box in one interval, as its voxel coordinates are affine in the column."""
    for m in range(n_off):
        pk0 = bk + m * d_n[0]
        pj0 = bj + m * d_n[1]
        pi0 = bi + m * d_n[2]
        lo, up = interval(pk0, d_col[0], -EDGE, hk + EDGE, 0.0, cols - 1.0)
        lo, up = interval(pj0, d_col[1], -EDGE, hj + EDGE, lo, up)
        lo, up = interval(pi0, d_col[2], -EDGE, hi + EDGE, lo, up)
        s_lo, s_up = interval(pk0, d_col[0], 0.0, hk - STRICT, lo, up)
        s_lo, s_up = interval(pj0, d_col[1], 0.0, hj - STRICT, s_lo, s_up)
        s_lo, s_up = interval(pi0, d_col[2], 0.0, hi - STRICT, s_lo, s_up)
        c_lo, c_up = cols, cols - 1
        if up >= lo:
            c_lo, c_up = math.ceil(lo), math.floor(up)
        f_lo, f_up = c_lo, c_lo - 1
        if s_up >= s_lo:
            f_lo, f_up = max(math.ceil(s_lo), c_lo), min(math.floor(s_up), c_up)
        spans[m, 0] = c_lo
        spans[m, 1] = c_up
        spans[m, 2] = f_lo
        spans[m, 3] = f_up


@_jit
def planar_row(
    flat: np.ndarray,
    dims: np.ndarray,
    bk: float,
    bj: float,
    bi: float,
    d_col: np.ndarray,
    d_n: np.ndarray,
    n_off: int,
    mode: int,
    fill: float,
    out_row: np.ndarray,
    table: tuple[np.ndarray, np.ndarray, np.ndarray],
    last: np.ndarray,
) -> bool:
    """One image row of a plane containing the slice normal (single oblique): every sample in one slice, at
    the same in-slice points for every row of an untilted stack (a table of in-slice cells and weights,
    rebuilt when the row's in-slice start changes, ``last``). False when the row is not on a slice (the
    general path samples it)."""
    nk, nj, ni = dims[0], dims[1], dims[2]
    sj = ni
    sk = nj * ni
    hk, hj, hi = nk - 1.0, nj - 1.0, ni - 1.0
    cols = out_row.shape[0]
    fill32 = np.float32(fill)
    start, scale = fold_ends(mode, n_off)
    t_off, t_fj, t_fi = table
    if bk < -EDGE or bk > hk + EDGE:
        for c in range(cols):
            out_row[c] = fill32
        return True
    pk = min(max(bk, 0.0), hk)
    k_near = int(pk + 0.5)
    if abs(pk - k_near) > EDGE:
        return False
    if bj != last[0] or bi != last[1]:
        last[0], last[1] = bj, bi
        for c in range(cols):
            for m in range(n_off):
                pj = bj + c * d_col[1] + m * d_n[1]
                pi = bi + c * d_col[2] + m * d_n[2]
                if pj < -EDGE or pj > hj + EDGE or pi < -EDGE or pi > hi + EDGE:
                    t_off[c, m] = -1
                    continue
                pj = min(max(pj, 0.0), hj)
                pi = min(max(pi, 0.0), hi)
                j0 = min(int(pj), nj - 2)
                i0 = min(int(pi), ni - 2)
                t_off[c, m] = j0 * sj + i0
                t_fj[c, m] = np.float32(pj - j0)
                t_fi[c, m] = np.float32(pi - i0)
    base = k_near * sk
    for c in range(cols):
        acc = start
        for m in range(n_off):
            o = t_off[c, m]
            if o < 0:
                acc = fold(acc, fill32, mode)
                continue
            o += base
            fi, fj = t_fi[c, m], t_fj[c, m]
            c00, c01 = np.float32(flat[o]), np.float32(flat[o + 1])
            c10, c11 = np.float32(flat[o + sj]), np.float32(flat[o + sj + 1])
            a0 = c00 + (c01 - c00) * fi
            a1 = c10 + (c11 - c10) * fi
            acc = fold(acc, a0 + (a1 - a0) * fj, mode)
        out_row[c] = acc * scale
    return True


@_jit
def rows(
    flat: np.ndarray,
    dims: np.ndarray,
    v0: np.ndarray,
    d_row: np.ndarray,
    d_col: np.ndarray,
    d_n: np.ndarray,
    n_off: int,
    mode: int,
    fill: float,
    out: np.ndarray,
    r0: int,
    r1: int,
) -> None:
    """Image rows ``r0:r1`` of ``out``: ``mode`` over ``m < n_off`` of the samples at voxel coordinates
    ``v0 + r*d_row + c*d_col + m*d_n`` (trilinear; ``fill`` outside the volume; a mean for mode 2)."""
    nk, nj, ni = dims[0], dims[1], dims[2]
    sj = ni
    sk = nj * ni
    hk, hj, hi = nk - 1.0, nj - 1.0, ni - 1.0
    cols = out.shape[1]
    fill32 = np.float32(fill)
    start, scale = fold_ends(mode, n_off)
    planar = abs(d_col[0]) * cols < 1e-9 and abs(d_n[0]) * n_off < 1e-9
    table = (
        np.empty((cols if planar else 0, n_off), np.int64),
        np.empty((cols if planar else 0, n_off), np.float32),
        np.empty((cols if planar else 0, n_off), np.float32),
    )
    last = np.full(2, np.nan)
    spans = np.empty((n_off, 4), np.int64)
    acc_row = np.empty(cols, np.float32)
    b_off = np.empty(cols, np.int32)
    b_w = np.empty((3, cols), np.float32)
    b_val = np.empty(cols, np.float32)
    for r in range(r0, r1):
        bk = v0[0] + r * d_row[0]
        bj = v0[1] + r * d_row[1]
        bi = v0[2] + r * d_row[2]
        if planar and planar_row(flat, dims, bk, bj, bi, d_col, d_n, n_off, mode, fill, out[r], table, last):
            continue
        # the slab's planes' rows one after the other, folded into ``acc_row``: per row, the columns inside
        # the volume (within EDGE, the rest ``fill``), those clear of its faces unclamped
        row_spans(bk, bj, bi, d_col, d_n, n_off, hk, hj, hi, cols, spans)
        acc_row[:] = start
        for m in range(n_off):
            c_lo, c_up, f_lo, f_up = spans[m, 0], spans[m, 1], spans[m, 2], spans[m, 3]
            pk0 = bk + m * d_n[0]
            pj0 = bj + m * d_n[1]
            pi0 = bi + m * d_n[2]
            for c in range(min(c_lo, cols)):
                acc_row[c] = fold(acc_row[c], fill32, mode)
            for c in range(max(c_up + 1, 0), cols):
                acc_row[c] = fold(acc_row[c], fill32, mode)
            for c in range(c_lo, f_lo):
                v = clamped(flat, pk0 + c * d_col[0], pj0 + c * d_col[1], pi0 + c * d_col[2], dims)
                acc_row[c] = fold(acc_row[c], v, mode)
            for c in range(max(f_up + 1, c_lo), c_up + 1):
                v = clamped(flat, pk0 + c * d_col[0], pj0 + c * d_col[1], pi0 + c * d_col[2], dims)
                acc_row[c] = fold(acc_row[c], v, mode)
            if f_up >= f_lo:
                inner_run(
                    flat, sj, sk, pk0, pj0, pi0, d_col, f_lo, f_up + 1, mode, acc_row, b_off, b_w, b_val
                )
        for c in range(cols):
            out[r, c] = acc_row[c] * scale
