"""The ``slice_segmentation`` task: per-class lesion probability maps on every slice.

Output ``slice_masks`` [batch, slices, K, h, w] (post-sigmoid probabilities on the model's input grid,
h = w = input_size); result :class:`SegmentationPrediction`: the maps moved back onto the stack's pixel
grid (preprocessing version 1's square pad + area resize undone by
:func:`viewer.core.preprocess.model_grid_to_pixels`), a pixel belonging to class k where its probability
is at or above the class's ``thresholds`` entry, and per-class volumes in mL (voxel = row spacing x
column spacing x slice spacing). DICOM output: a binary DICOM Segmentation, one segment per class
(:mod:`viewer.core.airesults.seg`). Only preprocessing version 1 (its geometry is undone exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from viewer.core.applicability.codes import Applicability
from viewer.core.errors import ModelContractError, ModelError
from viewer.core.inference.results import SliceRange, slice_runs
from viewer.core.preprocess import model_grid_to_pixels
from viewer.core.tasks.registry import OutputSpec, ResultContext, Task, TaskResult, register_task

if TYPE_CHECKING:
    from viewer.core.airesults.identity import SourceSeries

SEGMENTATION_OUTPUT: Final = "slice_masks"
TASK_NAME: Final = "slice_segmentation"


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
class SegmentationPrediction:
    """Per-class probability maps of one stack on its pixel grid, with provenance."""

    stack_uid: str
    study_instance_uid: str
    series_instance_uid: str
    slice_uids: tuple[str, ...]  # SOPInstanceUID per slice, display order
    class_names: tuple[str, ...]
    probabilities: np.ndarray  # uint8 (S, K, rows, columns): probability x 255, the stack's pixel grid
    thresholds: tuple[float, ...]  # per class: a pixel belongs to the class at probability >= threshold
    grid: SliceGrid
    model_name: str
    model_version: str
    model_sha256: str
    provider: str
    provider_note: str
    elapsed_s: float
    intended_use: str
    from_cache: bool = False
    bad_slices: tuple[int, ...] = ()
    applicability: Applicability | None = None

    @property
    def num_slices(self) -> int:
        return int(self.probabilities.shape[0])

    def mask(self, k: int) -> np.ndarray:
        """bool (S, rows, columns): the pixels of class ``k``."""
        level = int(np.ceil(self.thresholds[k] * 255.0 - 1e-6))
        return self.probabilities[:, k] >= max(level, 1)

    def masks(self) -> np.ndarray:
        """bool (S, rows, columns, K): every class (the layout of a DICOM SEG's pixel array)."""
        return np.stack([self.mask(k) for k in range(len(self.class_names))], axis=-1)

    def voxel_counts(self) -> tuple[int, ...]:
        return tuple(int(self.mask(k).sum()) for k in range(len(self.class_names)))

    def volumes_ml(self) -> dict[str, float | None]:
        """Per-class volume in mL (voxels of the class x voxel volume); None without the voxel size."""
        voxel = self.grid.voxel_ml
        return {
            name: None if voxel is None else count * voxel
            for name, count in zip(self.class_names, self.voxel_counts())
        }

    def lesion_slices(self, k: int) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.mask(k).any(axis=(1, 2)))]


def as_segmentation(result: TaskResult) -> SegmentationPrediction:
    if not isinstance(result, SegmentationPrediction):
        raise TypeError(f"expected a segmentation result, got {type(result).__name__}")
    return result


def parse_outputs(outputs: Sequence[np.ndarray], n: int, k: int) -> tuple[np.ndarray, ...]:
    """(maps (S, K, h, w) float32 in [0, 1],) from the batch-1 output; shape and NaN checks."""
    maps = np.asarray(outputs[0], dtype=np.float32)
    if maps.ndim != 5 or maps.shape[:3] != (1, n, k) or maps.shape[3] != maps.shape[4] or maps.shape[3] < 1:
        raise ModelContractError(
            f"model returned {SEGMENTATION_OUTPUT} {maps.shape}; expected (1, {n}, {k}, size, size)"
        )
    if not np.isfinite(maps).all():
        raise ModelError("The model returned NaN or infinite mask probabilities for this stack")
    return (np.clip(maps[0], 0.0, 1.0),)


def grid_of(stack: object) -> SliceGrid:
    from viewer.core.dicom.model import Stack

    assert isinstance(stack, Stack)
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


def build_result(ctx: ResultContext, arrays: tuple[np.ndarray, ...]) -> SegmentationPrediction:
    """Model-grid maps (model slice order) -> uint8 probabilities on the stack's pixel grid."""
    (maps,) = arrays
    info, stack = ctx.info, ctx.stack
    if maps.shape[-1] != info.input_size:
        raise ModelContractError(
            f"model returned {SEGMENTATION_OUTPUT} of {maps.shape[-1]} px; metadata 'input_size' is "
            f"{info.input_size}"
        )
    grid = grid_of(stack)
    out = np.empty((len(stack), maps.shape[1], grid.rows, grid.columns), dtype=np.uint8)
    for model_index, stack_index in enumerate(ctx.slice_order):
        pixels = model_grid_to_pixels(maps[model_index], grid.rows, grid.columns)
        np.rint(np.clip(pixels, 0.0, 1.0) * 255.0, out=pixels)
        out[stack_index] = pixels.astype(np.uint8)
    return SegmentationPrediction(
        stack_uid=stack.uid,
        study_instance_uid=stack.study_instance_uid,
        series_instance_uid=stack.series_instance_uid,
        slice_uids=tuple(s.sop_instance_uid for s in stack.slices),
        class_names=info.class_names,
        probabilities=out,
        thresholds=info.thresholds,
        grid=grid,
        model_name=info.name,
        model_version=info.version,
        model_sha256=info.sha256,
        provider=ctx.provider,
        provider_note=ctx.provider_note,
        elapsed_s=ctx.elapsed_s,
        intended_use=info.intended_use,
        bad_slices=ctx.bad_slices,
        applicability=ctx.applicability,
    )


def _ranges(runs: list[SliceRange]) -> list[object]:
    return [[r.start, r.stop] for r in runs]


def summary(result: TaskResult) -> dict[str, object]:
    """The stack's fields in ``slicewise predict``'s JSON: per-class volume and lesion slices."""
    pred = as_segmentation(result)
    voxel = pred.grid.voxel_ml
    findings: list[object] = []
    volumes: dict[str, object] = {}
    for k, (name, count) in enumerate(zip(pred.class_names, pred.voxel_counts())):
        volume = None if voxel is None else round(count * voxel, 4)
        volumes[name] = volume
        per_slice = pred.mask(k).sum(axis=(1, 2))
        findings.append(
            {
                "class": name,
                "volume_ml": volume,
                "voxels": count,
                "threshold": pred.thresholds[k],
                "lesion_slices": _ranges(slice_runs(pred.lesion_slices(k))),
                "peak_slice": int(np.argmax(per_slice)) if count else None,
            }
        )
    return {
        "status": "ok",
        "task": TASK_NAME,
        "applicability": pred.applicability.as_dict() if pred.applicability is not None else None,
        "from_cache": pred.from_cache,
        "elapsed_s": round(float(pred.elapsed_s), 4),
        "voxel_ml": None if voxel is None else round(voxel, 8),
        "volumes_ml": volumes,
        "findings": findings,
    }


def dicom_outputs(
    result: TaskResult, source: SourceSeries, folder: Path, include_identity: bool
) -> list[Path]:
    """The DICOM Segmentation (highdicom is imported on first use, not at model load)."""
    from viewer.core.airesults.seg import write_seg

    return [write_seg(as_segmentation(result), source, folder, include_identity=include_identity)]


SLICE_SEGMENTATION = register_task(
    Task(
        name=TASK_NAME,
        description="per-class lesion masks on every slice, volumes in mL",
        outputs=(OutputSpec(SEGMENTATION_OUTPUT, 5, class_axis=2, size_axes=(3, 4)),),
        parse_outputs=parse_outputs,
        result_type=SegmentationPrediction,
        dicom_outputs=dicom_outputs,
        build_result=build_result,
        summary=summary,
        preprocessing_versions=(1,),
    )
)
