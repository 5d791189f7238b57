"""The ``slice_classification`` task: per-slice and study probabilities per class (the ICH model).

Outputs ``slice_probs`` [batch, slices, K] and ``study_probs`` [batch, K], post-sigmoid; result
:class:`~viewer.core.inference.results.StackPrediction`; DICOM outputs: the AI Result SR and the Key
Object Selection (:mod:`viewer.core.airesults`).

Contract version 2 adds an optional third output, ``slice_maps`` [batch, slices, M, size, size]
(metadata ``maps``: its M classes, size and thresholds): per-class localisation maps on the model's
input grid. They are moved onto the stack's pixel grid (:func:`viewer.core.inference.maps.maps_to_pixels`)
and kept as the prediction's ``maps`` (a :class:`~viewer.core.inference.maps.SegmentationPrediction`):
bleed volumes per class in ``predict``'s output and the AI SR, and a binary DICOM SEG at the map
thresholds. A model without ``maps`` metadata is run with the two outputs only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from viewer.core.constants import MODEL_MAPS_OUTPUT, MODEL_SLICE_OUTPUT, MODEL_STUDY_OUTPUT
from viewer.core.errors import ModelContractError, ModelError
from viewer.core.inference.maps import (
    SegmentationPrediction,
    parse_maps,
    volume_summary,
)
from viewer.core.inference.postprocess import make_findings
from viewer.core.inference.results import StackPrediction
from viewer.core.inference.volume_reading import VolumeState
from viewer.core.tasks.registry import OutputSpec, ResultContext, Task, TaskResult, register_task
from viewer.core.tasks.slice_segmentation import maps_prediction

if TYPE_CHECKING:
    from viewer.core.airesults.identity import SourceSeries
    from viewer.core.inference.model import ModelInfo


def optional_outputs(info: ModelInfo) -> tuple[OutputSpec, ...]:
    """The localisation maps when the model's metadata declares them (contract version 2)."""
    if info.maps is None:
        return ()
    spec = info.maps
    classes = len(spec.class_names)
    return (OutputSpec(spec.output, 5, class_axis=2, size_axes=(3, 4), classes=classes, size=spec.size),)


def parse_outputs(outputs: Sequence[np.ndarray], n: int, k: int) -> tuple[np.ndarray, ...]:
    """(slice_probs (S, K), study_probs (K,)) float32 clipped to [0, 1], from batch-1 outputs; with a
    third output, its maps (S, M, size, size) in [0, 1] too (classes and size checked by the result)."""
    slice_probs = np.asarray(outputs[0], dtype=np.float32)
    study_probs = np.asarray(outputs[1], dtype=np.float32)
    if slice_probs.shape != (1, n, k) or study_probs.shape != (1, k):
        raise ModelContractError(
            f"model returned slice_probs {slice_probs.shape} and study_probs {study_probs.shape}; "
            f"expected (1, {n}, {k}) and (1, {k})"
        )
    if not (np.isfinite(slice_probs).all() and np.isfinite(study_probs).all()):
        raise ModelError("The model returned NaN or infinite probabilities for this stack")
    probs = (np.clip(slice_probs[0], 0.0, 1.0), np.clip(study_probs[0], 0.0, 1.0))
    if len(outputs) < 3:
        return probs
    raw = np.asarray(outputs[2])
    m = raw.shape[2] if raw.ndim == 5 else 0
    return (*probs, parse_maps(raw, MODEL_MAPS_OUTPUT, n, m))


def as_prediction(result: TaskResult) -> StackPrediction:
    """``result`` as a :class:`StackPrediction` (a TypeError for another task's result)."""
    if not isinstance(result, StackPrediction):
        raise TypeError(f"expected a slice classification result, got {type(result).__name__}")
    return result


def build_prediction(
    ctx: ResultContext, slice_probs: np.ndarray, study_probs: np.ndarray, *, from_cache: bool = False
) -> StackPrediction:
    """The :class:`StackPrediction` of ``slice_probs`` (S, K) in the stack's order."""
    info, stack = ctx.info, ctx.stack
    pred = StackPrediction(
        stack_uid=stack.uid,
        study_instance_uid=stack.study_instance_uid,
        series_instance_uid=stack.series_instance_uid,
        slice_uids=tuple(s.sop_instance_uid for s in stack.slices),
        class_names=info.class_names,
        slice_probs=slice_probs,
        study_probs=study_probs,
        thresholds=info.thresholds,
        findings=make_findings(
            info.class_names, slice_probs, study_probs, info.thresholds, info.decision_thresholds
        ),
        model_name=info.name,
        model_version=info.version,
        model_sha256=info.sha256,
        provider=ctx.provider,
        provider_note=ctx.provider_note,
        elapsed_s=ctx.elapsed_s,
        intended_use=info.intended_use,
        study_thresholds=info.decision_thresholds,
        applicability=ctx.applicability,
    )
    if from_cache or ctx.bad_slices:
        return replace(pred, from_cache=from_cache, bad_slices=ctx.bad_slices)
    return pred


def build_result(ctx: ResultContext, arrays: tuple[np.ndarray, ...]) -> StackPrediction:
    """Parsed (slice_probs, study_probs[, maps]) in model order -> the prediction in the stack's order."""
    slice_probs, study_probs = arrays[0], arrays[1]
    slice_probs[ctx.slice_order] = slice_probs.copy()  # back to the stack's order
    pred = build_prediction(ctx, slice_probs, study_probs)
    return pred if len(arrays) < 3 else with_localisation_maps(ctx, pred, arrays[2])


def with_localisation_maps(ctx: ResultContext, pred: StackPrediction, maps: np.ndarray) -> StackPrediction:
    """``pred`` with its localisation maps (model grid, stack order). The maps of a class the classifier
    does not flag (no study decision, no slice at its threshold) are not shown: a "No ICH flagged" study
    showed "epidural 0.2 mL" and drew those voxels."""
    unflagged = frozenset(f.class_name for f in pred.findings if not (f.positive or f.flagged))
    return replace(pred, maps=localisation_maps(ctx, maps, hidden=unflagged))


def localisation_maps(
    ctx: ResultContext, maps: np.ndarray, *, hidden: frozenset[str] = frozenset()
) -> SegmentationPrediction:
    """The model-grid maps (S, M, size, size) of a contract-2 model on the stack's pixel grid; the maps
    of the ``hidden`` classes are kept but not shown (no voxel, no volume, an empty SEG segment)."""
    spec = ctx.info.maps
    if spec is None:
        raise ModelContractError(f"model returned {MODEL_MAPS_OUTPUT} but its metadata has no 'maps'")
    if maps.shape[1] != len(spec.class_names) or maps.shape[-1] != spec.size:
        raise ModelContractError(
            f"model returned {MODEL_MAPS_OUTPUT} with {maps.shape[1]} classes of {maps.shape[-1]} px; "
            f"metadata 'maps' lists {len(spec.class_names)} classes of {spec.size} px"
        )
    return maps_prediction(
        ctx,
        maps,
        spec.class_names,
        spec.thresholds,
        on_pixels=False,
        volume=spec.volume,
        hidden=hidden & frozenset(spec.class_names),
    )


def cache_arrays(result: TaskResult) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    pred = as_prediction(result)
    return pred.slice_probs, pred.study_probs, None if pred.maps is None else pred.maps.model_maps


def summary(result: TaskResult) -> dict[str, object]:
    """The stack's fields in ``slicewise predict``'s JSON: decision, findings and per-slice probabilities."""
    pred = as_prediction(result)
    names = list(pred.class_names)
    return {
        "status": "ok",
        "applicability": pred.applicability.as_dict() if pred.applicability is not None else None,
        "study_decision": {
            "positive": pred.study_positive,
            "label": "ICH suspected" if pred.study_positive else "No ICH flagged",
            "study_prob": round(float(pred.study_prob), 6),
            "study_thresholds": {n: float(t) for n, t in zip(names, pred.study_thresholds)},
            "positive_classes": [f.class_name for f in pred.findings if f.positive],
        },
        "badge": pred.badge(),
        "from_cache": pred.from_cache,
        "elapsed_s": round(float(pred.elapsed_s), 4),
        "study_probs": {n: round(float(p), 6) for n, p in zip(names, pred.study_probs)},
        "findings": [
            {
                "class": f.class_name,
                "study_prob": round(f.study_prob, 6),
                "threshold": f.threshold,
                "study_threshold": f.study_threshold,
                "positive": f.positive,
                "flagged": f.flagged,
                "flagged_ranges": [[r.start, r.stop] for r in f.flagged_ranges],
                "flagged_ranges_1based": [str(r) for r in f.flagged_ranges],
                "peak_slice": f.peak_slice,
                "peak_prob": round(f.peak_prob, 6),
            }
            for f in pred.findings
        ],
        **maps_summary(pred),
        "slices": [
            {
                "index": i,
                "sop_instance_uid": uid,
                "probs": {n: round(float(p), 6) for n, p in zip(names, pred.slice_probs[i])},
            }
            for i, uid in enumerate(pred.slice_uids)
        ],
    }


def maps_summary(pred: StackPrediction) -> dict[str, object]:
    """``maps`` for ``predict``'s JSON: classes, thresholds, voxel size, volumes (``any`` = the union of
    the classes' voxels) and per-class findings; {} for a model without maps."""
    if pred.maps is None:
        return {}
    readings = pred.volume_readings()
    # a flagged class whose map is below its threshold has no volume (null, empty in the CSV), as in the
    # AI SR: 0.0 there would read as a measured empty volume; its note says why
    volumes = {n: None if (ml := r.measured_ml) is None else round(ml, 4) for n, r in readings.items()}
    unmeasurable = [n for n, r in readings.items() if r.state is VolumeState.MAP_BELOW_THRESHOLD]
    return {
        "maps": {
            "classes": list(pred.maps.class_names),
            "thresholds": dict(zip(pred.maps.class_names, pred.maps.thresholds)),
            **volume_summary(pred.maps, unmeasurable),
            "volumes_ml": volumes,
            # what each volume means: "12.3 mL", "< 0.1 mL (...)", "volume not measurable: ..."
            "volume_notes": {n: r.note for n, r in readings.items()},
        }
    }


def dicom_outputs(
    result: TaskResult, source: SourceSeries, folder: Path, include_identity: bool
) -> list[Path]:
    """The AI Result SR and the KOS, and with maps the DICOM SEG (highdicom is imported on first use,
    not at model load)."""
    from viewer.core.airesults.writer import write_ai_objects

    pred = as_prediction(result)
    paths = write_ai_objects(pred, source, folder, include_identity=include_identity)
    if pred.maps is not None:  # the localisation maps as a binary SEG at the map thresholds
        from viewer.core.airesults.seg import write_seg

        paths.append(write_seg(pred.maps, source, folder, include_identity=include_identity))
    return paths


SLICE_CLASSIFICATION = register_task(
    Task(
        name="slice_classification",
        description="per-slice and study probabilities per class",
        outputs=(OutputSpec(MODEL_SLICE_OUTPUT, 3), OutputSpec(MODEL_STUDY_OUTPUT, 2)),
        parse_outputs=parse_outputs,
        result_type=StackPrediction,
        dicom_outputs=dicom_outputs,
        build_result=build_result,
        summary=summary,
        tabular=True,
        cache_arrays=cache_arrays,
        optional_outputs=optional_outputs,
    )
)
