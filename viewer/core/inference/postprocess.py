"""From probabilities to findings: runs of flagged slices per class (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from viewer.core.inference.results import ClassFinding, SliceRange


def flagged_ranges(mask: np.ndarray) -> tuple[SliceRange, ...]:
    """Runs of True in a 1-D bool array as inclusive :class:`SliceRange` s."""
    m = np.asarray(mask, dtype=bool).ravel()
    if not m.any():
        return ()
    padded = np.concatenate(([False], m, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return tuple(SliceRange(int(a), int(b) - 1) for a, b in zip(edges[0::2], edges[1::2]))


def make_findings(
    class_names: Sequence[str], slice_probs: np.ndarray, study_probs: np.ndarray, thresholds: Sequence[float]
) -> tuple[ClassFinding, ...]:
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
            )
        )
    return tuple(findings)


def flagged_slices(slice_probs: np.ndarray, thresholds: Sequence[float]) -> list[int]:
    """Indices of slices where any class is at or above its threshold, ascending."""
    if slice_probs.size == 0:
        return []
    flags = slice_probs >= np.asarray(thresholds, dtype=np.float32)[None, :]
    return [int(i) for i in np.flatnonzero(flags.any(axis=1))]
