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
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from viewer.core.errors import ModelContractError
from viewer.core.inference.maps import (
    SegmentationPrediction,
    grid_of,
    maps_to_pixels,
    parse_maps,
    volume_summary,
)
from viewer.core.inference.volume import MASK_VOLUME, VolumeEstimator
from viewer.core.tasks.registry import OutputSpec, ResultContext, Task, TaskResult, register_task

if TYPE_CHECKING:
    from viewer.core.airesults.identity import SourceSeries

SEGMENTATION_OUTPUT: Final = "slice_masks"
TASK_NAME: Final = "slice_segmentation"


def as_segmentation(result: TaskResult) -> SegmentationPrediction:
    if not isinstance(result, SegmentationPrediction):
        raise TypeError(f"expected a segmentation result, got {type(result).__name__}")
    return result


def parse_outputs(outputs: Sequence[np.ndarray], n: int, k: int) -> tuple[np.ndarray, ...]:
    """(maps (S, K, h, w) float32 in [0, 1],) from the batch-1 output; shape and NaN checks."""
    return (parse_maps(outputs[0], SEGMENTATION_OUTPUT, n, k),)


def build_result(ctx: ResultContext, arrays: tuple[np.ndarray, ...]) -> SegmentationPrediction:
    """Model-grid maps (model slice order) -> uint8 probabilities on the stack's pixel grid."""
    (maps,) = arrays
    info = ctx.info
    if maps.shape[-1] != info.input_size:
        raise ModelContractError(
            f"model returned {SEGMENTATION_OUTPUT} of {maps.shape[-1]} px; metadata 'input_size' is "
            f"{info.input_size}"
        )
    return maps_prediction(ctx, maps, info.class_names, info.thresholds)


def maps_prediction(
    ctx: ResultContext,
    maps: np.ndarray,
    class_names: tuple[str, ...],
    thresholds: tuple[float, ...],
    *,
    on_pixels: bool = True,
    volume: VolumeEstimator = MASK_VOLUME,
    hidden: frozenset[str] = frozenset(),
) -> SegmentationPrediction:
    """Model-grid maps (S, K, size, size) in model slice order -> the :class:`SegmentationPrediction` of
    ``class_names`` (also the localisation maps of a classification model); ``on_pixels``: with the
    pixel-grid probabilities made now, else made from the kept model-grid maps when asked; ``volume``: how
    the volumes are made; ``hidden``: classes whose maps are not shown (no voxel, no volume). The per-slice
    voxel counts and volumes are made here (on the analysis thread, not where the result is shown)."""
    info, stack = ctx.info, ctx.stack
    grid = grid_of(stack)
    in_stack_order = np.empty(maps.shape, dtype=np.float16)
    in_stack_order[ctx.slice_order] = maps
    result = SegmentationPrediction(
        stack_uid=stack.uid,
        study_instance_uid=stack.study_instance_uid,
        series_instance_uid=stack.series_instance_uid,
        slice_uids=tuple(s.sop_instance_uid for s in stack.slices),
        class_names=class_names,
        probabilities=maps_to_pixels(maps, ctx.slice_order, grid, ctx.head_grid) if on_pixels else None,
        thresholds=thresholds,
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
        model_maps=in_stack_order,
        head_grid=ctx.head_grid,
        volume=volume,
        hidden=hidden,
    )
    _ = result.slice_counts  # counted now, once
    return result


def summary(result: TaskResult) -> dict[str, object]:
    """The stack's fields in ``slicewise predict``'s JSON: per-class volume and lesion slices."""
    pred = as_segmentation(result)
    return {
        "status": "ok",
        "task": TASK_NAME,
        "applicability": pred.applicability.as_dict() if pred.applicability is not None else None,
        "from_cache": pred.from_cache,
        "elapsed_s": round(float(pred.elapsed_s), 4),
        **volume_summary(pred),
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
