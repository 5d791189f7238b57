"""Model input preprocessing, shared by the viewer's inference engine and the training package.

Two versions, chosen by the model's ``preprocessing`` metadata (:class:`PreprocessSpec`):

- **version 1** (``kind="pad_resize"``, the default when a model has no ``preprocessing`` key): HU
  slices -> pad to square with air -> area-resize the matrix to ``size``. The result depends on the
  field of view and on where the head lies in it.
- **version 2** (``kind="head_mm"``): the slices are first put in a canonical patient orientation
  (columns towards the patient's left, rows towards posterior, from ImageOrientationPatient), the head
  is found as the centroid of the voxels above ``head_threshold_hu`` over the whole stack, and every
  slice is resampled onto a ``size`` x ``size`` grid of ``field_mm`` millimetres centred on it
  (separable triangle filter widened by the downscale factor, so shrinking averages like an area
  resize; outside the image is air). Slices thinner than ``slab_mm`` are then averaged with their
  neighbours into a ``slab_mm`` slab centred on each slice (the slice count is kept). The output
  depends on millimetres and anatomy, not on the matrix, file order or pixel encoding.

Both end in one channel per CT window, ``(clip(HU, low, high) - low) / width`` in [0, 1]. Training and
inference call :func:`preprocess`, so both see identical pixels.

Maps a model makes on its input grid go back onto the pixels by the inverse of each version's geometry:
:func:`model_grid_to_pixels` (version 1: the matrix alone fixes it) and :func:`head_grid_to_pixels`
(version 2: the stack's :class:`HeadGrid`, the parameters :func:`preprocess_head_mm` resamples with);
:func:`head_mm_to_grid` moves per-pixel values (training targets) forwards exactly as the pixels move.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from viewer.core.constants import MODEL_INPUT_SIZE, MODEL_WINDOWS, Window
from viewer.core.errors import ModelContractError, StackNotSupportedError

AIR_HU = -1024.0
PREPROCESS_VERSIONS = (1, 2)
KIND_BY_VERSION = {1: "pad_resize", 2: "head_mm"}
ProgressFn = Callable[[int, int], None]  # (slices done, total); may raise to cancel


# --------------------------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class PreprocessSpec:
    """How a model wants its input made; parsed from (and written to) the ``preprocessing`` metadata."""

    version: int = 1
    size: int = MODEL_INPUT_SIZE
    windows: tuple[Window, ...] = MODEL_WINDOWS
    field_mm: float = 230.0  # v2: the square field of view of the output grid
    slab_mm: float = 5.0  # v2: thinner slices are averaged into a slab this thick (0 = never)
    head_threshold_hu: float = -300.0  # v2: voxels above this count as head (skin and skull)

    @property
    def kind(self) -> str:
        return KIND_BY_VERSION[self.version]

    @property
    def pixel_mm(self) -> float:
        return self.field_mm / self.size

    def to_metadata(self) -> dict[str, Any]:
        """The ``preprocessing`` metadata object (windows and size also live in their own keys)."""
        out: dict[str, Any] = {"version": self.version, "kind": self.kind, "size": self.size}
        out["windows"] = [{"width": w.width, "level": w.level} for w in self.windows]
        if self.version == 2:
            out.update(
                field_mm=self.field_mm,
                slab_mm=self.slab_mm,
                head_threshold_hu=self.head_threshold_hu,
                centre="centroid of voxels above head_threshold_hu over the stack",
                orientation="columns -> patient left (+x), rows -> posterior (+y)",
                resample="separable triangle filter widened by the downscale factor; air outside",
            )
        return out

    @classmethod
    def from_record(
        cls, record: Mapping[str, object], *, size: int, default_windows: Sequence[Window] | None = None
    ) -> PreprocessSpec:
        """The spec a parsed model record declares (ONNX metadata or a training checkpoint): its
        ``preprocessing`` object (version 1 when absent) and its ``windows`` ([{width, level}, ...];
        ``default_windows`` when absent). Raises ModelContractError when the windows are absent without a
        default or malformed."""
        listed = record.get("windows")
        if not listed and default_windows is not None:
            windows = tuple(default_windows)
        elif not isinstance(listed, list) or not listed:
            raise ModelContractError(f"model 'windows' is {type(listed).__name__}, not a list of windows")
        else:
            try:
                windows = tuple(Window(float(w["width"]), float(w["level"])) for w in listed)
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelContractError(f"model 'windows' malformed: {exc!r}") from exc
        raw = record.get("preprocessing")
        return cls.from_metadata(None if raw is None else json.dumps(raw), size=size, windows=windows)

    @classmethod
    def from_metadata(cls, raw: str | None, *, size: int, windows: Sequence[Window]) -> PreprocessSpec:
        """Parse the raw ``preprocessing`` JSON (``None`` -> version 1); raises ModelContractError."""
        if raw is None:
            return cls(version=1, size=size, windows=tuple(windows))
        try:
            value = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise ModelContractError(f"metadata 'preprocessing' is not valid JSON: {raw[:60]!r}") from exc
        if not isinstance(value, dict):
            raise ModelContractError("metadata 'preprocessing' must be an object {version, kind, ...}")
        version = value.get("version")
        if version not in PREPROCESS_VERSIONS or isinstance(version, bool):
            raise ModelContractError(
                f"metadata 'preprocessing' version is {version!r}; this Slicewise reads "
                f"{', '.join(map(str, PREPROCESS_VERSIONS))}"
            )
        kind = value.get("kind", KIND_BY_VERSION[version])
        if kind != KIND_BY_VERSION[version]:
            raise ModelContractError(
                f"metadata 'preprocessing' kind {kind!r} does not match version {version} "
                f"({KIND_BY_VERSION[version]!r})"
            )
        if value.get("size", size) != size:
            raise ModelContractError(
                f"metadata 'preprocessing' size {value.get('size')!r} differs from 'input_size' {size}"
            )
        numbers: dict[str, float] = {}
        for key, lo, hi in (
            ("field_mm", 50.0, 600.0),
            ("slab_mm", 0.0, 20.0),
            ("head_threshold_hu", -900, 500),
        ):
            v = value.get(key, getattr(cls, key))
            if (
                not isinstance(v, (int, float))
                or isinstance(v, bool)
                or not math.isfinite(v)
                or not lo <= v <= hi
            ):
                raise ModelContractError(
                    f"metadata 'preprocessing' {key} must be a number in [{lo:g}, {hi:g}]"
                )
            numbers[key] = float(v)
        return cls(version=int(version), size=size, windows=tuple(windows), **numbers)


# ------------------------------------------------------------------------------------------ geometry
@dataclass(frozen=True)
class SliceGeometry:
    """What v2 needs to know about a stack's geometry, in millimetres (all from the DICOM header).

    ``pixel_spacing`` is (row spacing, column spacing) as in PixelSpacing; ``row_direction`` and
    ``column_direction`` are the two ImageOrientationPatient cosines (the direction in which the column
    index, resp. the row index, grows); ``positions`` the slice positions along the normal, ascending;
    ``thickness`` the SliceThickness (``None``: the slice spacing).
    """

    pixel_spacing: tuple[float, float]
    row_direction: tuple[float, float, float] = (1.0, 0.0, 0.0)
    column_direction: tuple[float, float, float] = (0.0, 1.0, 0.0)
    positions: tuple[float, ...] | None = None
    thickness: float | None = None

    def __post_init__(self) -> None:
        if len(self.pixel_spacing) != 2 or not all(math.isfinite(v) and v > 0 for v in self.pixel_spacing):
            raise StackNotSupportedError(
                f"pixel spacing {self.pixel_spacing!r} is not two positive numbers (mm); the model needs it"
            )

    @property
    def descending(self) -> bool:
        """True when the slice normal (row x column direction) points towards the feet, so a stack sorted
        along it runs from the vertex down; models read slices inferior to superior (see
        :func:`model_slice_order`)."""
        r, c = np.asarray(self.row_direction, float), np.asarray(self.column_direction, float)
        return bool(np.cross(r, c)[2] < 0)


def model_slice_order(geometry: SliceGeometry | None, n: int) -> np.ndarray:
    """Indices that put a stack's slices in the order a version-2 model reads them (inferior first)."""
    order = np.arange(n)
    return order[::-1].copy() if geometry is not None and geometry.descending else order


def geometry_from_stack(stack: Any) -> SliceGeometry:
    """:class:`SliceGeometry` of a sorted :class:`viewer.core.dicom.model.Stack`.

    Raises :class:`StackNotSupportedError` when the stack has no PixelSpacing (v2 works in mm).
    """
    first = stack.slices[0]
    if first.pixel_spacing is None:
        raise StackNotSupportedError("The stack has no PixelSpacing; the model resamples in millimetres.")
    row_dir, col_dir = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
    if first.orientation is not None:
        o = tuple(float(v) for v in first.orientation)
        row_dir, col_dir = (o[0], o[1], o[2]), (o[3], o[4], o[5])
    locations = [s.location for s in stack.slices]
    positions = tuple(float(v) for v in locations) if all(v is not None for v in locations) else None
    return SliceGeometry(
        pixel_spacing=(float(first.pixel_spacing[0]), float(first.pixel_spacing[1])),
        row_direction=row_dir,
        column_direction=col_dir,
        positions=positions,
        thickness=float(first.slice_thickness) if first.slice_thickness else None,
    )


# ------------------------------------------------------------------------------------------- version 1
@lru_cache(maxsize=16)
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix that averages input cells by their overlap with each output cell."""
    scale = n_in / n_out
    edges = np.arange(n_out + 1, dtype=np.float64) * scale
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    weights = overlap / overlap.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def pad_to_square(hu: np.ndarray, fill: float = AIR_HU) -> np.ndarray:
    """Centre a (S, H, W) stack on a square canvas of air, keeping the pixel aspect."""
    s, h, w = hu.shape
    if h == w:
        return hu
    n = max(h, w)
    out = np.full((s, n, n), fill, dtype=np.float32)
    top, left = (n - h) // 2, (n - w) // 2
    out[:, top : top + h, left : left + w] = hu
    return out


def resize_slices(hu: np.ndarray, size: int) -> np.ndarray:
    """Area-resize a square (S, N, N) float32 stack to (S, size, size)."""
    _, h, w = hu.shape
    if h == size and w == size:
        return hu
    if h % size == 0 and w % size == 0:  # exact block mean: the common 512 -> 256 case
        fy, fx = h // size, w // size
        rows_summed = hu[:, 0::fy, :].copy()
        for dy in range(1, fy):
            rows_summed += hu[:, dy::fy, :]
        out = rows_summed[:, :, 0::fx].copy()
        for dx in range(1, fx):
            out += rows_summed[:, :, dx::fx]
        out *= np.float32(1.0 / (fy * fx))
        return out
    rows, cols = _area_matrix(h, size), _area_matrix(w, size)
    return np.matmul(np.matmul(rows, hu), cols.T)


@lru_cache(maxsize=16)
def _unresize_matrix(n: int, size: int, offset: int, count: int) -> np.ndarray:
    """(count, size) weights that sample a ``size``-pixel model axis at the centres of pixels
    ``offset .. offset + count - 1`` of the ``n``-pixel padded axis it was area-resized from (linear
    interpolation between model pixel centres, clamped at the edges)."""
    centres = (np.arange(count, dtype=np.float64) + offset + 0.5) * (size / n) - 0.5
    centres = np.clip(centres, 0.0, size - 1.0)
    lo = np.floor(centres).astype(np.int64)
    hi = np.minimum(lo + 1, size - 1)
    frac = centres - lo
    out = np.zeros((count, size), dtype=np.float64)
    np.add.at(out, (np.arange(count), lo), 1.0 - frac)
    np.add.at(out, (np.arange(count), hi), frac)
    return out.astype(np.float32)


def model_grid_to_pixels(maps: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Undo version 1's geometry: (..., size, size) maps on the model grid -> (..., rows, columns) on
    the stack's pixel grid (the inverse of :func:`pad_to_square` + :func:`resize_slices`: each pixel
    takes the map's value at its centre, the padding is cropped away)."""
    arr = np.asarray(maps, dtype=np.float32)
    if arr.ndim < 2 or arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"expected square maps (..., size, size), got shape {arr.shape}")
    if rows < 1 or columns < 1:
        raise ValueError(f"the pixel grid must be at least 1 x 1, got {rows} x {columns}")
    size, n = arr.shape[-1], max(rows, columns)
    r = _unresize_matrix(n, size, (n - rows) // 2, rows)
    c = _unresize_matrix(n, size, (n - columns) // 2, columns)
    return np.matmul(np.matmul(r, arr), c.T)


def window_channels(hu: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
    """(S, H, W) HU -> (S, C, H, W) float32 in [0, 1], one channel per window."""
    s, h, w = hu.shape
    out = np.empty((s, len(windows), h, w), dtype=np.float32)
    for c, win in enumerate(windows):
        width = max(float(win.width), 1.0)
        low = float(win.level) - width / 2.0
        channel = out[:, c]
        np.subtract(hu, np.float32(low), out=channel)
        channel *= np.float32(1.0 / width)
        np.clip(channel, 0.0, 1.0, out=channel)
    return out


def _as_stack(hu: np.ndarray) -> np.ndarray:
    arr = np.asarray(hu)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"expected (slices, rows, columns) HU, got shape {arr.shape}")
    if arr.dtype not in (np.float32, np.int16):
        arr = arr.astype(np.float32)
    return arr


def preprocess_stack(
    hu: np.ndarray,
    windows: Sequence[Window] = MODEL_WINDOWS,
    size: int = MODEL_INPUT_SIZE,
) -> np.ndarray:
    """Version 1: (S, H, W) or (H, W) HU -> (S, C, size, size) float32 model input in [0, 1]."""
    arr = _as_stack(hu).astype(np.float32, copy=False)
    return window_channels(resize_slices(pad_to_square(arr), size), windows)


# ------------------------------------------------------------------------------------------- version 2
def _axis_map(geometry: SliceGeometry) -> tuple[bool, bool, bool]:
    """(transpose, flip rows, flip columns) that bring the image to columns -> +x, rows -> +y.

    Each image axis is assigned to the patient axis (x or y) its direction cosine is closest to; an
    oblique or non-axial plane still gets a deterministic answer (the applicability check judges it).
    """
    r, c = np.asarray(geometry.row_direction, float), np.asarray(geometry.column_direction, float)
    transpose = abs(r[1]) > abs(r[0])  # the column index grows along patient y: swap the axes
    if transpose:
        r, c = c, r
    return transpose, bool(c[1] < 0), bool(r[0] < 0)


def canonical_orientation(hu: np.ndarray, geometry: SliceGeometry) -> tuple[np.ndarray, tuple[float, float]]:
    """(S, H, W) -> the same pixels with columns towards patient left and rows towards posterior.

    Returns the view and its (row spacing, column spacing) in mm. Flips and transposes only: no
    pixel value changes, so a mirrored encoding gives bit-identical canonical pixels.
    """
    transpose, flip_rows, flip_cols = _axis_map(geometry)
    row_sp, col_sp = geometry.pixel_spacing
    out = hu
    if transpose:
        out = out.transpose(0, 2, 1)
        row_sp, col_sp = col_sp, row_sp
    if flip_rows:
        out = out[:, ::-1, :]
    if flip_cols:
        out = out[:, :, ::-1]
    return out, (row_sp, col_sp)


def head_centre(hu: np.ndarray, threshold: float) -> tuple[float, float]:
    """(row, column) centroid, in pixels, of the voxels above ``threshold`` over the whole stack.

    Falls back to the image centre when nothing is above it (an empty or all-air stack).
    """
    mask = hu > threshold
    rows = mask.sum(axis=(0, 2), dtype=np.int64).astype(np.float64)
    cols = mask.sum(axis=(0, 1), dtype=np.int64).astype(np.float64)
    total = rows.sum()
    if total == 0:
        return (hu.shape[1] - 1) / 2.0, (hu.shape[2] - 1) / 2.0
    return (
        float((rows * np.arange(len(rows))).sum() / total),
        float((cols * np.arange(len(cols))).sum() / total),
    )


def _taps(n_in: int, n_out: int, centre: float, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1D resampling taps: output j samples input position ``centre + (j - (n_out-1)/2) * step``.

    Triangle kernel of half-width ``max(1, step)`` (antialiased when shrinking). Returns (indices
    (n_out, T) clipped into range, weights (n_out, T) with zero for taps outside the image, and the
    weight each output gives to the outside (air)).
    """
    pos = centre + (np.arange(n_out, dtype=np.float64) - (n_out - 1) / 2.0) * step
    a = max(1.0, step)
    half = math.ceil(a)
    base = np.floor(pos).astype(np.int64)
    idx = base[:, None] + np.arange(-half + 1, half + 1)[None, :]
    w = np.clip(1.0 - np.abs(idx - pos[:, None]) / a, 0.0, None)
    w /= w.sum(axis=1, keepdims=True)
    inside = (idx >= 0) & (idx < n_in)
    outside = (w * ~inside).sum(axis=1)
    w = np.where(inside, w, 0.0)
    return np.clip(idx, 0, n_in - 1), w.astype(np.float32), outside.astype(np.float32)


def resample_mm(
    hu: np.ndarray,
    spacing: tuple[float, float],
    centre: tuple[float, float],
    size: int,
    pixel_mm: float,
    fill: float = AIR_HU,
) -> np.ndarray:
    """(S, H, W) canonical HU -> (S, size, size) float32 on a ``pixel_mm`` grid centred on ``centre``."""
    s, h, w = hu.shape
    ri, rw, ro = _taps(h, size, centre[0], pixel_mm / spacing[0])
    ci, cw, co = _taps(w, size, centre[1], pixel_mm / spacing[1])
    src = hu if hu.dtype == np.float32 else hu.astype(np.float32)
    tmp = np.zeros((s, size, w), dtype=np.float32)
    buf = np.empty_like(tmp)
    for t in range(ri.shape[1]):  # rows: a few taps, each a gather of whole rows into one buffer
        np.take(src, ri[:, t], axis=1, out=buf)
        buf *= rw[None, :, t, None]
        tmp += buf
    dense = np.zeros((w, size), dtype=np.float32)  # columns: one 2-D BLAS matmul with the banded matrix
    np.add.at(dense, (ci, np.broadcast_to(np.arange(size)[:, None], ci.shape)), cw)
    out = (tmp.reshape(s * size, w) @ dense).reshape(s, size, size)
    # air outside the image: weight (1 - inside_rows * inside_cols) per output pixel
    air = 1.0 - (1.0 - ro)[:, None] * (1.0 - co)[None, :]
    out += np.float32(fill) * air[None]
    return out


def slab_weights(positions: Sequence[float], thickness: float | None, slab_mm: float) -> np.ndarray:
    """(S, S) row-normalised weights averaging each slice with its neighbours into a ``slab_mm`` slab.

    Slice j covers ``[z_j - t/2, z_j + t/2]`` (t = ``thickness``, else the median spacing); slice i's
    output is the overlap-weighted mean of the slices within ``[z_i - slab/2, z_i + slab/2]``. Slices as
    thick as the slab or thicker (and ``slab_mm <= 0``) give the identity.
    """
    z = np.asarray(positions, dtype=np.float64)
    n = len(z)
    if n < 2 or slab_mm <= 0:
        return np.eye(n, dtype=np.float32)
    spacing = float(np.median(np.abs(np.diff(z))))
    t = float(thickness) if thickness and thickness > 0 else spacing
    t = max(t, 1e-3)
    if t >= slab_mm * 0.999:
        return np.eye(n, dtype=np.float32)
    lo = np.maximum(z[:, None] - slab_mm / 2.0, z[None, :] - t / 2.0)
    hi = np.minimum(z[:, None] + slab_mm / 2.0, z[None, :] + t / 2.0)
    wts = np.clip(hi - lo, 0.0, None)
    wts[np.arange(n), np.arange(n)] = np.maximum(wts[np.arange(n), np.arange(n)], 1e-6)
    return (wts / wts.sum(axis=1, keepdims=True)).astype(np.float32)


def apply_slab(hu: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(S, H, W) -> (S, H, W): ``out[i] = sum_j weights[i, j] hu[j]`` over the band of non-zero weights."""
    n = len(hu)
    if n == 0 or np.array_equal(weights, np.eye(n, dtype=np.float32)):
        return hu
    out = np.zeros_like(hu)
    rows, cols = np.nonzero(weights)
    band = int(np.abs(rows - cols).max())
    for k in range(-band, band + 1):
        lo, hi = max(0, -k), min(n, n - k)
        if hi <= lo:
            continue
        w = weights[np.arange(lo, hi), np.arange(lo, hi) + k]
        if not w.any():
            continue
        out[lo:hi] += w[:, None, None] * hu[lo + k : hi + k]
    return out


@dataclass(frozen=True)
class HeadGrid:
    """Where a version-2 model's input grid lies on a stack's pixels: the parameters
    :func:`preprocess_head_mm` resamples with and :func:`head_grid_to_pixels` undoes.

    The image is put in canonical orientation (``transpose``, then ``flip_rows``, then ``flip_columns``;
    :func:`canonical_orientation`); ``spacing`` is the canonical (row, column) spacing in mm and
    ``centre`` the head centre in canonical (row, column) pixels; the ``size`` x ``size`` grid of
    ``pixel_mm`` pixels is centred on it. The slab averaging along the slices keeps the slice count, so a
    grid slice belongs to the image slice at its centre (nothing to undo across slices).
    """

    transpose: bool
    flip_rows: bool
    flip_columns: bool
    spacing: tuple[float, float]
    centre: tuple[float, float]
    size: int
    pixel_mm: float
    slab_mm: float

    def canonical_shape(self, rows: int, columns: int) -> tuple[int, int]:
        """(rows, columns) of the canonical image of a ``rows`` x ``columns`` slice."""
        return (columns, rows) if self.transpose else (rows, columns)


def head_grid(hu: np.ndarray, geometry: SliceGeometry, spec: PreprocessSpec) -> HeadGrid:
    """The :class:`HeadGrid` of a stack: its canonical orientation and the head centre over all slices."""
    canon, spacing = canonical_orientation(_as_stack(hu), geometry)
    transpose, flip_rows, flip_columns = _axis_map(geometry)
    return HeadGrid(
        transpose=transpose,
        flip_rows=flip_rows,
        flip_columns=flip_columns,
        spacing=spacing,
        centre=head_centre(canon, spec.head_threshold_hu),
        size=spec.size,
        pixel_mm=spec.pixel_mm,
        slab_mm=spec.slab_mm,
    )


def preprocess_head_mm(
    hu: np.ndarray,
    geometry: SliceGeometry,
    spec: PreprocessSpec,
    *,
    progress: ProgressFn | None = None,
    chunk: int = 16,
    grid: HeadGrid | None = None,
) -> np.ndarray:
    """Version 2 (see the module docstring): (S, H, W) HU -> (S, C, size, size) float32 in [0, 1].

    ``grid``: the stack's :func:`head_grid` when the caller has it (else it is found here)."""
    arr = _as_stack(hu)
    n = arr.shape[0]
    if geometry.positions is not None and len(geometry.positions) != n:
        raise ValueError(f"{len(geometry.positions)} slice positions for {n} slices")
    canon, spacing = canonical_orientation(arr, geometry)
    place = grid if grid is not None else head_grid(arr, geometry, spec)
    out = np.empty((n, spec.size, spec.size), dtype=np.float32)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        out[lo:hi] = resample_mm(canon[lo:hi], spacing, place.centre, spec.size, spec.pixel_mm)
        if progress is not None:
            progress(hi, n)
    if geometry.positions is not None:
        out = apply_slab(out, slab_weights(geometry.positions, geometry.thickness, spec.slab_mm))
    return window_channels(out, spec.windows)


def head_mm_to_grid(
    values: np.ndarray, geometry: SliceGeometry, grid: HeadGrid, map_size: int | None = None
) -> np.ndarray:
    """Move per-pixel values (S, K, H, W) (e.g. lesion fractions, 0 outside the image) onto a version-2
    model's grid exactly as :func:`preprocess_head_mm` moves the pixels (canonical orientation, the same
    resampling about the same centre, the same slab weights): (S, K, size, size), then area-averaged to
    ``map_size`` (a divisor of ``size``) when given."""
    s, k, h, w = values.shape
    flat = np.asarray(values, dtype=np.float32).transpose(1, 0, 2, 3).reshape(k * s, h, w)
    canon, spacing = canonical_orientation(flat, geometry)
    out = resample_mm(canon, spacing, grid.centre, grid.size, grid.pixel_mm, fill=0.0)
    out = out.reshape(k, s, grid.size, grid.size)
    if geometry.positions is not None:
        weights = slab_weights(geometry.positions, geometry.thickness, grid.slab_mm)
        out = np.stack([apply_slab(out[c], weights) for c in range(k)])
    out = out.transpose(1, 0, 2, 3)
    if map_size is not None and map_size != grid.size:
        if grid.size % map_size:
            raise ValueError(f"map size {map_size} does not divide the grid size {grid.size}")
        f = grid.size // map_size
        out = out.reshape(s, k, map_size, f, map_size, f).mean(axis=(3, 5))
    return np.ascontiguousarray(out, dtype=np.float32)


@lru_cache(maxsize=32)
def _grid_to_canonical_axis(n: int, centre: float, step: float, size: int, map_size: int) -> np.ndarray:
    """(n, map_size) weights that sample a ``map_size``-pixel map of a ``size``-pixel grid axis (output j
    at input position ``centre + (j - (size-1)/2) * step``) at the centres of the ``n`` canonical image
    pixels: linear between map pixel centres, clamped within half a map pixel of the edge, 0 beyond
    (outside the model's field of view)."""
    j = (np.arange(n, dtype=np.float64) - centre) / step + (size - 1) / 2.0  # grid pixel coordinate
    u = (j + 0.5) * (map_size / size) - 0.5  # map pixel coordinate
    inside = (u >= -0.5) & (u <= map_size - 0.5)
    u = np.clip(u, 0.0, map_size - 1.0)
    lo = np.floor(u).astype(np.int64)
    hi = np.minimum(lo + 1, map_size - 1)
    frac = u - lo
    out = np.zeros((n, map_size), dtype=np.float64)
    rows = np.arange(n)
    np.add.at(out, (rows, lo), (1.0 - frac) * inside)
    np.add.at(out, (rows, hi), frac * inside)
    return out.astype(np.float32)


def head_grid_to_pixels(maps: np.ndarray, grid: HeadGrid, rows: int, columns: int) -> np.ndarray:
    """Undo version 2's geometry: (..., m, m) maps on the model grid (the input grid, or a coarser map
    of it whose pixel i covers grid pixels [i size / m, (i + 1) size / m)) -> (..., rows, columns) on
    the stack's pixel grid. Each pixel takes the map's value at its centre (the inverse of
    :func:`preprocess_head_mm`'s resampling about the head centre, then of its canonical orientation);
    pixels outside the model's field of view get 0."""
    arr = np.asarray(maps, dtype=np.float32)
    if arr.ndim < 2 or arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"expected square maps (..., size, size), got shape {arr.shape}")
    if rows < 1 or columns < 1:
        raise ValueError(f"the pixel grid must be at least 1 x 1, got {rows} x {columns}")
    m = arr.shape[-1]
    h, w = grid.canonical_shape(rows, columns)
    r = _grid_to_canonical_axis(h, grid.centre[0], grid.pixel_mm / grid.spacing[0], grid.size, m)
    c = _grid_to_canonical_axis(w, grid.centre[1], grid.pixel_mm / grid.spacing[1], grid.size, m)
    if grid.flip_rows:
        r = r[::-1]
    if grid.flip_columns:
        c = c[::-1]
    if grid.transpose:  # canonical (columns, rows) -> image (rows, columns)
        return np.matmul(np.matmul(c, np.swapaxes(arr, -1, -2)), r.T)
    return np.matmul(np.matmul(r, arr), c.T)


def preprocess(
    hu: np.ndarray,
    spec: PreprocessSpec,
    geometry: SliceGeometry | None = None,
    *,
    progress: ProgressFn | None = None,
    grid: HeadGrid | None = None,
) -> np.ndarray:
    """The one entry point: HU (int16 or float32, (S, H, W)) -> (S, C, size, size) float32 in [0, 1].

    Version 1 ignores ``geometry``; version 2 requires it (StackNotSupportedError without it) and takes
    the stack's :func:`head_grid` when the caller already has it (to undo it on the model's maps).
    """
    if spec.version == 1:
        arr = _as_stack(hu)
        out = np.empty((arr.shape[0], len(spec.windows), spec.size, spec.size), dtype=np.float32)
        for lo in range(0, arr.shape[0], 16):
            hi = min(arr.shape[0], lo + 16)
            out[lo:hi] = preprocess_stack(arr[lo:hi], spec.windows, spec.size)
            if progress is not None:
                progress(hi, arr.shape[0])
        return out
    if geometry is None:
        raise StackNotSupportedError("The model resamples in millimetres; the stack's geometry is unknown.")
    return preprocess_head_mm(hu, geometry, spec, progress=progress, grid=grid)


def spec_for(metadata: Mapping[str, str], *, size: int, windows: Sequence[Window]) -> PreprocessSpec:
    """The spec of a model from its raw metadata_props (no ``preprocessing`` key -> version 1)."""
    return PreprocessSpec.from_metadata(metadata.get("preprocessing"), size=size, windows=windows)
