"""What one analysis of a stack produced: frozen values for the engine, the GUI and the review store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from viewer.core.inference.provenance import Provenance
from viewer.core.inference.volume_reading import VolumeReading

if TYPE_CHECKING:
    from viewer.core.inference.maps import SegmentationPrediction

STUDY_CLASS = "any"  # the class whose study probability decides "ICH suspected" (when the model has it)


@dataclass(frozen=True)
class SliceRange:
    """Inclusive, 0-based range of slice indices in the stack's display order."""

    start: int
    stop: int

    def __str__(self) -> str:  # 1-based for people
        return f"{self.start + 1}" if self.start == self.stop else f"{self.start + 1}-{self.stop + 1}"

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and self.start <= index <= self.stop


def slice_runs(indices: list[int]) -> list[SliceRange]:
    """Consecutive runs of ascending slice indices: [2, 3, 4, 9] -> 3-5, 10 (1-based text)."""
    runs: list[SliceRange] = []
    for i in indices:
        if runs and i == runs[-1].stop + 1:
            runs[-1] = SliceRange(runs[-1].start, i)
        else:
            runs.append(SliceRange(i, i))
    return runs


def run_start(runs: list[SliceRange], current: int, direction: int) -> int | None:
    """The first slice of the next run after ``current`` (direction > 0), or of the run before the one
    ``current`` is in (direction < 0); None when there is none. Inside a run, next skips its rest."""
    if direction > 0:
        return next((r.start for r in runs if r.start > current), None)
    before = [r for r in runs if r.stop < current]
    return before[-1].start if before else None


@dataclass(frozen=True)
class ClassFinding:
    """One class's result: study probability and decision, slice threshold and the flagged slice runs.

    ``threshold`` is the slice threshold (flags point to where); ``study_threshold`` the study-level
    operating point. ``positive`` is the study decision for this class: the study is positive (its
    ``any`` probability at or above the ``any`` study threshold) and this class's study probability
    is at or above its own study threshold. Flagged slices alone never make a class positive.
    """

    class_name: str
    study_prob: float
    threshold: float
    flagged_ranges: tuple[SliceRange, ...]
    peak_slice: int  # index of the highest slice probability
    peak_prob: float
    study_threshold: float = 0.5
    positive: bool = False

    @property
    def flagged(self) -> bool:
        """Some slice is at or above the slice threshold."""
        return bool(self.flagged_ranges)


@dataclass(frozen=True, eq=False)
class StackPrediction(Provenance):
    """Per-slice and study-level probabilities for one stack, with provenance (the stack and the model
    run: :class:`~viewer.core.inference.provenance.Provenance`)."""

    class_names: tuple[str, ...]
    slice_probs: np.ndarray  # float32 (num_slices, K)
    study_probs: np.ndarray  # float32 (K,)
    thresholds: tuple[float, ...]  # per class
    findings: tuple[ClassFinding, ...]  # one per class, same order as class_names
    study_thresholds: tuple[float, ...] = ()  # per class, the study decision's operating points
    # the localisation maps of a model with a ``slice_maps`` output (contract version 2) on the stack's
    # pixel grid, with their thresholds and volumes; None for a model without maps
    maps: SegmentationPrediction | None = None

    @property
    def num_slices(self) -> int:
        return int(self.slice_probs.shape[0])

    def volumes_ml(self) -> dict[str, float | None]:
        """Bleed volume per map class in mL and ``any`` as the union of the classes ({} without maps;
        None values without the voxel size); made by the maps' volume estimator."""
        if self.maps is None:
            return {}
        return {STUDY_CLASS: self.maps.union_volume_ml(), **self.maps.volumes_ml()}

    def volume_readings(self) -> dict[str, VolumeReading]:
        """:meth:`volumes_ml` with each class's voxels at the map threshold and whether the classifier
        flags it (study decision or flagged slices), to be shown as what they are ({} without maps)."""
        if self.maps is None:
            return {}
        counts = dict(zip(self.maps.class_names, self.maps.voxel_counts()))
        counts[STUDY_CLASS] = self.maps.union_count()
        flagged = {f.class_name: f.positive or f.flagged for f in self.findings}
        hidden = set(self.maps.hidden)
        if hidden >= set(self.maps.class_names):  # the union of no shown class
            hidden.add(STUDY_CLASS)
        return {
            name: VolumeReading(ml, counts.get(name, 0), flagged.get(name, False), name not in hidden)
            for name, ml in self.volumes_ml().items()
        }

    def flagged_slices(self) -> list[int]:
        """Slices where any class is at or above its threshold, ascending."""
        return [int(i) for i in np.flatnonzero(self.flagged.any(axis=1))] if self.slice_probs.size else []

    def flagged_runs(self) -> list[SliceRange]:
        """Runs of consecutive flagged slices (any class), ascending."""
        return slice_runs(self.flagged_slices())

    @property
    def flagged(self) -> np.ndarray:
        """bool (num_slices, K): slice probability at or above the class threshold."""
        return self.slice_probs >= np.asarray(self.thresholds, dtype=np.float32)[None, :]

    @property
    def study_positive(self) -> bool:
        """The study decision: some class is positive at its study threshold (see ClassFinding)."""
        return any(f.positive for f in self.findings)

    @property
    def study_prob(self) -> float:
        """The probability the decision reads: ``any``'s study probability (else the highest)."""
        for f in self.findings:
            if f.class_name == STUDY_CLASS:
                return f.study_prob
        return max((f.study_prob for f in self.findings), default=0.0)

    def positive_findings(self) -> list[ClassFinding]:
        """Positive classes, 'any' excluded when a subtype explains it, most probable first."""
        found = [f for f in self.findings if f.positive]
        subtypes = [f for f in found if f.class_name != STUDY_CLASS]
        chosen = subtypes or found
        return sorted(chosen, key=lambda f: f.study_prob, reverse=True)

    def badge(self) -> str:
        """The study decision, e.g. 'ICH suspected: subdural 0.93' or 'No ICH flagged (any 0.08)'."""
        positives = self.positive_findings()
        if not positives:
            return f"No ICH flagged ({STUDY_CLASS} {self.study_prob:.2f})"
        top = positives[0]
        return f"ICH suspected: {top.class_name} {top.study_prob:.2f}"
