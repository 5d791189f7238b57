"""Per-class probability maps on a stack's pixel grid: the result of a ``slice_segmentation`` model and the
localisation maps of a slice classification model with a ``slice_maps`` output (contract version 2).

A pixel belongs to class k where its probability is at or above the class's threshold (the overlay and
the DICOM SEG); the volume of a class is made by the model's :class:`~viewer.core.inference.volume.
VolumeEstimator` (its voxel count, or its summed calibrated probability) x row spacing x column spacing
x slice spacing (mL). Maps made on the model's
grid are moved onto the pixels by undoing the model's preprocessing geometry:
:func:`viewer.core.preprocess.model_grid_to_pixels` for version 1 (square pad + area resize, fixed by
the matrix alone), :func:`viewer.core.preprocess.head_grid_to_pixels` for version 2 (canonical
orientation, head centre, millimetre grid: the stack's :class:`~viewer.core.preprocess.HeadGrid`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import cached_property
from typing import Final

import numpy as np

from viewer.core.dicom.model import Stack
from viewer.core.errors import ModelContractError, ModelError
from viewer.core.inference.provenance import Provenance
from viewer.core.inference.results import slice_runs
from viewer.core.inference.volume import LEVELS, MASK_VOLUME, VolumeEstimator, VolumeMethod
from viewer.core.preprocess import HeadGrid, head_grid_to_pixels, model_grid_to_pixels

NO_PIXEL_LEVEL: Final = LEVELS  # a hidden class's level: above every uint8 probability x 255

@dataclass(frozen=True)
class SliceGrid:
    """Where the stack's pixels lie (what a DICOM SEG needs to reference them), one entry per slice."""

    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) mm
    slice_spacing: float | None  # mm between neighbouring slices (else the slice thickness)
    slice_thickness: float | None
    orientation: tuple[float, ...] | None  # ImageOrientationPatient
    positions: tuple[tuple[float, float, float] | None, ...]  # ImagePositionPatient per slice
    frame_of_reference_uid: str | None
    modality: str = "CT"

    @property
    def voxel_ml(self) -> float | None:
        """Volume of one voxel in mL; None when the stack lacks PixelSpacing or a slice spacing."""
        if self.pixel_spacing is None or not self.slice_spacing:
            return None
        return self.pixel_spacing[0] * self.pixel_spacing[1] * self.slice_spacing / 1000.0


@dataclass(frozen=True, eq=False)
class SegmentationPrediction(Provenance):
    """Per-class probability maps of one stack on its pixel grid, with provenance (the stack and the model
    run: :class:`~viewer.core.inference.provenance.Provenance`).

    The pixel-grid probabilities are either stored (``probabilities``, the segmentation task) or made
    from the model-grid maps when asked (``model_maps``; the localisation maps of the classification
    model: a 300-slice 512 px stack would hold 390 MB of pixel-grid maps). Voxel counts and volumes are
    counted slice by slice (:attr:`slice_counts`), never holding the whole stack's masks at once.
    """

    class_names: tuple[str, ...]
    # uint8 (S, K, rows, columns): probability x 255 on the stack's pixel grid; None: from ``model_maps``
    probabilities: np.ndarray | None
    thresholds: tuple[float, ...]  # per class: a pixel belongs to the class at probability >= threshold
    grid: SliceGrid
    # the maps as the model made them (S, K, size, size) in [0, 1] (float16), in the stack's slice order
    # (what the prediction cache keeps: a few MB where the pixel-grid maps take hundreds)
    model_maps: np.ndarray | None = None
    # a version-2 model's grid on the stack's pixels (None: version 1); see :func:`model_maps_to_pixels`
    head_grid: HeadGrid | None = None
    volume: VolumeEstimator = MASK_VOLUME  # how volumes are made (default: the masks' voxels)
    # classes whose maps are not shown: no pixel belongs to them, they have no volume and their SEG segment
    # is empty (the localisation maps of a class the slice classifier does not flag); the probabilities
    # are kept (:attr:`pixels`), so ``replace(maps, hidden=frozenset())`` gives every class's maps back
    hidden: frozenset[str] = frozenset()

    @property
    def num_slices(self) -> int:
        return len(self.slice_uids)

    def levels(self) -> np.ndarray:
        """int16 level per class: a pixel belongs to class k at probability x 255 >= levels[k] (a hidden
        class's level is above every probability)."""
        return np.array(
            [
                NO_PIXEL_LEVEL if name in self.hidden else max(int(np.ceil(t * 255.0 - 1e-6)), 1)
                for name, t in zip(self.class_names, self.thresholds)
            ],
            dtype=np.int16,
        )

    def slice_pixels(self, s: int) -> np.ndarray:
        """uint8 (K, rows, columns): slice ``s``'s probabilities x 255 on the pixel grid."""
        if self.probabilities is not None:
            return np.asarray(self.probabilities[s])
        if self.model_maps is None:
            raise ValueError("the maps hold neither pixel-grid probabilities nor the model's maps")
        pixels = model_maps_to_pixels(self.model_maps[s], self.grid, self.head_grid)
        np.rint(np.clip(pixels, 0.0, 1.0) * 255.0, out=pixels)
        return pixels.astype(np.uint8)

    @cached_property
    def pixels(self) -> np.ndarray:
        """uint8 (S, K, rows, columns): every slice's probabilities x 255 on the pixel grid."""
        if self.probabilities is not None:
            return self.probabilities
        return np.stack([self.slice_pixels(s) for s in range(self.num_slices)])

    def mask(self, k: int) -> np.ndarray:
        """bool (S, rows, columns): the pixels of class ``k``."""
        return self.pixels[:, k] >= self.levels()[k]

    def masks(self) -> np.ndarray:
        """bool (S, rows, columns, K): every class (the layout of a DICOM SEG's pixel array)."""
        return np.stack([self.mask(k) for k in range(len(self.class_names))], axis=-1)

    @cached_property
    def _tallies(self) -> tuple[np.ndarray, np.ndarray]:
        """Per slice, (voxels at the thresholds, volume in voxels by :attr:`volume`), each (S, K + 1) with
        the union last; one pass over the pixel-grid slices."""
        k_n = len(self.class_names)
        levels = self.levels()
        counts = np.zeros((self.num_slices, k_n + 1), dtype=np.int64)
        soft = self.volume.method is VolumeMethod.SOFT
        volumes = np.zeros((self.num_slices, k_n + 1), dtype=np.float64)
        tables = self.volume.weight_tables(k_n)
        tables32 = tables.astype(np.float32)
        for s in range(self.num_slices):
            pixels = self.slice_pixels(s)
            inside = pixels >= levels[:, None, None]
            counts[s, -1] = int(inside.any(axis=0).sum())
            for k in range(k_n):
                histogram = np.bincount(pixels[k].ravel(), minlength=LEVELS)
                counts[s, k] = int(histogram[levels[k] :].sum())
                if soft and levels[k] < NO_PIXEL_LEVEL:
                    volumes[s, k] = float(histogram @ tables[k])
            present = [int(k) for k in np.flatnonzero(volumes[s, :-1])] if soft else []
            if len(present) == 1 and self.volume.scale(present[0]) <= 1.0:
                volumes[s, -1] = volumes[s, present[0]]  # one class on the slice: never above 1 per voxel
            elif present:  # the union: the classes' volumes per voxel, capped at 1
                union = np.zeros(pixels.shape[1:], dtype=np.float32)
                for c in present:
                    union += tables32[c][pixels[c]]
                volumes[s, -1] = float(np.minimum(union, 1.0).sum(dtype=np.float64))
        return counts, counts.astype(np.float64) if not soft else volumes

    @property
    def slice_counts(self) -> np.ndarray:
        """int64 (S, K + 1): per slice, the voxels of each class and (last column) of their union."""
        return self._tallies[0]

    @property
    def slice_volumes(self) -> np.ndarray:
        """float64 (S, K + 1): per slice, each class's and the union's volume in voxels (:attr:`volume`)."""
        return self._tallies[1]

    def voxel_counts(self) -> tuple[int, ...]:
        return tuple(int(c) for c in self.slice_counts[:, :-1].sum(axis=0))

    def union_count(self) -> int:
        """Voxels that belong to any class."""
        return int(self.slice_counts[:, -1].sum())

    def volumes_ml(self) -> dict[str, float | None]:
        """Per-class volume in mL (:attr:`volume`'s voxels x voxel volume); None without the voxel size."""
        voxel = self.grid.voxel_ml
        totals = self.slice_volumes[:, :-1].sum(axis=0)
        return {
            name: None if voxel is None else float(v) * voxel for name, v in zip(self.class_names, totals)
        }

    def union_volume_ml(self) -> float | None:
        """The union's volume in mL (every class together); None without the voxel size."""
        voxel = self.grid.voxel_ml
        return None if voxel is None else float(self.slice_volumes[:, -1].sum()) * voxel

    def lesion_slices(self, k: int) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.slice_counts[:, k])]


def grid_of(stack: Stack) -> SliceGrid:
    """The pixel grid of ``stack`` (what volumes and a DICOM SEG need)."""
    first = stack.slices[0]
    return SliceGrid(
        rows=first.rows,
        columns=first.columns,
        pixel_spacing=first.pixel_spacing,
        slice_spacing=stack.slice_spacing or first.slice_thickness,
        slice_thickness=first.slice_thickness,
        orientation=first.orientation,
        positions=tuple(s.position for s in stack.slices),
        frame_of_reference_uid=stack.frame_of_reference_uid,
        modality=stack.modality or "CT",
    )


def model_maps_to_pixels(maps: np.ndarray, grid: SliceGrid, head_grid: HeadGrid | None) -> np.ndarray:
    """(..., h, w) maps on the model grid -> (..., rows, columns) float32 on the stack's pixel grid: the
    model's preprocessing geometry undone (version 2 with the stack's ``head_grid``, else version 1)."""
    if head_grid is not None:
        return head_grid_to_pixels(maps, head_grid, grid.rows, grid.columns)
    return model_grid_to_pixels(maps, grid.rows, grid.columns)


def maps_to_pixels(
    maps: np.ndarray, slice_order: np.ndarray, grid: SliceGrid, head_grid: HeadGrid | None = None
) -> np.ndarray:
    """(S, K, h, w) maps in [0, 1] on the model grid, in model slice order -> uint8 (S, K, rows,
    columns) probability x 255 on the stack's pixel grid, in the stack's order (``head_grid``: a
    version-2 model's grid on the pixels)."""
    out = np.empty((len(slice_order), maps.shape[1], grid.rows, grid.columns), dtype=np.uint8)
    for model_index, stack_index in enumerate(slice_order):
        pixels = model_maps_to_pixels(maps[model_index], grid, head_grid)
        np.rint(np.clip(pixels, 0.0, 1.0) * 255.0, out=pixels)
        out[stack_index] = pixels.astype(np.uint8)
    return out


def parse_maps(raw: np.ndarray, name: str, n: int, k: int) -> np.ndarray:
    """A batch-1 maps output (1, n, k, size, size) -> (n, k, size, size) float32 clipped to [0, 1];
    ModelContractError naming the mismatch for another shape, ModelError for NaN / infinite values."""
    maps = np.asarray(raw, dtype=np.float32)
    if maps.ndim != 5 or maps.shape[:3] != (1, n, k) or maps.shape[3] != maps.shape[4] or maps.shape[3] < 1:
        raise ModelContractError(f"model returned {name} {maps.shape}; expected (1, {n}, {k}, size, size)")
    if not np.isfinite(maps).all():
        raise ModelError(f"The model returned NaN or infinite values in {name} for this stack")
    return np.clip(maps[0], 0.0, 1.0)


def volume_summary(maps: SegmentationPrediction, unmeasurable: Collection[str] = ()) -> dict[str, object]:
    """``voxel_ml``, ``volume_method``, ``volumes_ml`` per class and ``findings`` (per class: volume,
    voxels at the threshold, threshold, lesion slice ranges, the slice with the most voxels) for
    ``slicewise predict``'s JSON. The classes in ``unmeasurable`` (flagged by a classifier while their map
    is below its threshold) get no volume (null): 0.0 there would read as a measured empty volume; nor do
    the hidden classes (their maps are not shown)."""
    voxel = maps.grid.voxel_ml
    findings: list[object] = []
    volumes: dict[str, object] = {}
    ml = maps.volumes_ml()
    for k, (name, count) in enumerate(zip(maps.class_names, maps.voxel_counts())):
        value = None if name in unmeasurable or name in maps.hidden else ml[name]
        volume = None if value is None else round(value, 4)
        volumes[name] = volume
        per_slice = maps.slice_counts[:, k]
        findings.append(
            {
                "class": name,
                "volume_ml": volume,
                "voxels": count,
                "threshold": maps.thresholds[k],
                "lesion_slices": [[r.start, r.stop] for r in slice_runs(maps.lesion_slices(k))],
                "peak_slice": int(np.argmax(per_slice)) if count else None,
            }
        )
    return {
        "voxel_ml": None if voxel is None else round(voxel, 8),
        "volume_method": maps.volume.method.value,
        "volumes_ml": volumes,
        "findings": findings,
    }
