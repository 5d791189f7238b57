"""The ``slice_classification`` task: per-slice and study probabilities per class (the ICH model).

Outputs ``slice_probs`` [batch, slices, K] and ``study_probs`` [batch, K], post-sigmoid; result
:class:`~viewer.core.inference.results.StackPrediction`; DICOM outputs: the AI Result SR and the Key
Object Selection (:mod:`viewer.core.airesults`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from viewer.core.constants import MODEL_SLICE_OUTPUT, MODEL_STUDY_OUTPUT
from viewer.core.errors import ModelContractError, ModelError
from viewer.core.inference.postprocess import make_findings
from viewer.core.inference.results import StackPrediction
from viewer.core.tasks.registry import OutputSpec, ResultContext, Task, TaskResult, register_task

if TYPE_CHECKING:
    from viewer.core.airesults.identity import SourceSeries


def parse_outputs(outputs: Sequence[np.ndarray], n: int, k: int) -> tuple[np.ndarray, ...]:
    """(slice_probs (S, K), study_probs (K,)) float32 clipped to [0, 1], from batch-1 outputs."""
    slice_probs = np.asarray(outputs[0], dtype=np.float32)
    study_probs = np.asarray(outputs[1], dtype=np.float32)
    if slice_probs.shape != (1, n, k) or study_probs.shape != (1, k):
        raise ModelContractError(
            f"model returned slice_probs {slice_probs.shape} and study_probs {study_probs.shape}; "
            f"expected (1, {n}, {k}) and (1, {k})"
        )
    if not (np.isfinite(slice_probs).all() and np.isfinite(study_probs).all()):
        raise ModelError("The model returned NaN or infinite probabilities for this stack")
    return np.clip(slice_probs[0], 0.0, 1.0), np.clip(study_probs[0], 0.0, 1.0)


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
    """Parsed (slice_probs, study_probs) in model order -> the prediction in the stack's order."""
    slice_probs, study_probs = arrays
    slice_probs[ctx.slice_order] = slice_probs.copy()  # back to the stack's order
    return build_prediction(ctx, slice_probs, study_probs)


def cache_arrays(result: TaskResult) -> tuple[np.ndarray, np.ndarray]:
    pred = as_prediction(result)
    return pred.slice_probs, pred.study_probs


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
        "slices": [
            {
                "index": i,
                "sop_instance_uid": uid,
                "probs": {n: round(float(p), 6) for n, p in zip(names, pred.slice_probs[i])},
            }
            for i, uid in enumerate(pred.slice_uids)
        ],
    }


def dicom_outputs(
    result: TaskResult, source: SourceSeries, folder: Path, include_identity: bool
) -> list[Path]:
    """The AI Result SR and the KOS (highdicom is imported on first use, not at model load)."""
    from viewer.core.airesults.writer import write_ai_objects

    return write_ai_objects(as_prediction(result), source, folder, include_identity=include_identity)


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
    )
)
