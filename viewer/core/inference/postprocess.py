"""From probabilities to findings: runs of flagged slices per class (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from viewer.core.inference.results import STUDY_CLASS, ClassFinding, SliceRange


def flagged_ranges(mask: np.ndarray) -> tuple[SliceRange, ...]:
    """Runs of True in a 1-D bool array as inclusive :class:`SliceRange` s."""
    m = np.asarray(mask, dtype=bool).ravel()
    if not m.any():
        return ()
    padded = np.concatenate(([False], m, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return tuple(SliceRange(int(a), int(b) - 1) for a, b in zip(edges[0::2], edges[1::2]))


def study_decision(
    class_names: Sequence[str], study_probs: np.ndarray, study_thresholds: Sequence[float]
) -> tuple[bool, ...]:
    """Per class: is it positive at study level? The study is positive when ``any`` (or, for a model
    without ``any``, some class) reaches its study threshold; then ``any`` and every subtype at or above
    its own study threshold are positive, else none is."""
    above = [float(study_probs[k]) >= float(study_thresholds[k]) for k in range(len(class_names))]
    names = list(class_names)
    decided = above[names.index(STUDY_CLASS)] if STUDY_CLASS in names else any(above)
    return tuple(decided and a for a in above)


def make_findings(
    class_names: Sequence[str],
    slice_probs: np.ndarray,
    study_probs: np.ndarray,
    thresholds: Sequence[float],
    study_thresholds: Sequence[float] | None = None,
) -> tuple[ClassFinding, ...]:
    """Findings per class: slice flags at ``thresholds``, the study decision at ``study_thresholds``
    (the slice thresholds when the model records none)."""
    study_thr = list(study_thresholds) if study_thresholds else list(thresholds)
    positive = study_decision(class_names, study_probs, study_thr)
    findings: list[ClassFinding] = []
    for k, name in enumerate(class_names):
        column = slice_probs[:, k]
        peak = int(np.argmax(column)) if column.size else 0
        findings.append(
            ClassFinding(
                class_name=name,
                study_prob=float(study_probs[k]),
                threshold=float(thresholds[k]),
                flagged_ranges=flagged_ranges(column >= np.float32(thresholds[k])),
                peak_slice=peak,
                peak_prob=float(column[peak]) if column.size else 0.0,
                study_threshold=float(study_thr[k]),
                positive=positive[k],
            )
        )
    return tuple(findings)


def flagged_slices(slice_probs: np.ndarray, thresholds: Sequence[float]) -> list[int]:
    """Indices of slices where any class is at or above its threshold, ascending."""
    if slice_probs.size == 0:
        return []
    flags = slice_probs >= np.asarray(thresholds, dtype=np.float32)[None, :]
    return [int(i) for i in np.flatnonzero(flags.any(axis=1))]
