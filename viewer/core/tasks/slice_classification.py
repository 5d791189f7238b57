"""The ``slice_classification`` task: per-slice and study probabilities per class (the ICH model).

Outputs ``slice_probs`` [batch, slices, K] and ``study_probs`` [batch, K], post-sigmoid; result
:class:`~viewer.core.inference.results.StackPrediction`; DICOM outputs: the AI Result SR and the Key
Object Selection (:mod:`viewer.core.airesults`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from viewer.core.constants import MODEL_SLICE_OUTPUT, MODEL_STUDY_OUTPUT
from viewer.core.errors import ModelContractError, ModelError
from viewer.core.inference.results import StackPrediction
from viewer.core.tasks.registry import OutputSpec, Task, register_task

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


def dicom_outputs(
    pred: StackPrediction, source: SourceSeries, folder: Path, include_identity: bool
) -> list[Path]:
    """The AI Result SR and the KOS (highdicom is imported on first use, not at model load)."""
    from viewer.core.airesults.writer import write_ai_objects

    return write_ai_objects(pred, source, folder, include_identity=include_identity)


SLICE_CLASSIFICATION = register_task(
    Task(
        name="slice_classification",
        description="per-slice and study probabilities per class",
        outputs=(OutputSpec(MODEL_SLICE_OUTPUT, 3), OutputSpec(MODEL_STUDY_OUTPUT, 2)),
        parse_outputs=parse_outputs,
        result_type=StackPrediction,
        dicom_outputs=dicom_outputs,
    )
)
