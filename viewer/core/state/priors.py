"""Prior comparison: a patient's earlier study, and the prior series that best matches a current one.

Qt-free. Studies are described by :class:`StudyRef` (the patient key is an opaque grouping value, never
shown or logged); the window shows the pair side by side and links their scrolling
(:meth:`~viewer.core.state.viewer_state.ViewerState.link`) when their frames of reference differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

import numpy as np

from viewer.core.dicom.model import Stack
from viewer.core.state.catalogue import CatalogueEntry
from viewer.core.state.planes import base_plane, scroll_grid
from viewer.core.state.viewport import ViewportState

PARALLEL_COS = 0.9  # series whose slice normals lie within ~25° count as the same orientation


@dataclass(frozen=True)
class StudyRef:
    patient_key: str  # e.g. the PatientID: groups one patient's studies
    study_uid: str
    date: str  # YYYYMMDD, "" when unknown
    stacks: tuple[Stack, ...]


def find_prior(current: StudyRef, studies: Sequence[StudyRef]) -> StudyRef | None:
    """The latest study of the same patient dated before ``current`` (None when there is none, or the
    dates or the patient are unknown)."""
    if not current.patient_key or not current.date:
        return None
    earlier = [
        s
        for s in studies
        if s.patient_key == current.patient_key
        and s.study_uid != current.study_uid
        and s.date
        and s.date < current.date
    ]
    return max(earlier, key=lambda s: s.date) if earlier else None


def matching_series(current: Stack, candidates: Sequence[Stack]) -> Stack | None:
    """The candidate best matching ``current``: same modality (required), then the same orientation,
    the closest series description, the closest slice spacing, the most slices."""
    same = [s for s in candidates if s.modality == current.modality and s.label != "localizer"]
    if not same:
        return None
    normal = _normal(current)

    def score(s: Stack) -> tuple[bool, float, float, int]:
        n = _normal(s)
        parallel = normal is not None and n is not None and abs(float(np.dot(normal, n))) >= PARALLEL_COS
        text = SequenceMatcher(
            None, current.series_description.lower(), s.series_description.lower()
        ).ratio()
        spacing = (
            -abs(current.slice_spacing - s.slice_spacing)
            if current.slice_spacing is not None and s.slice_spacing is not None
            else -1e9
        )
        return (parallel, text, spacing, len(s))

    return max(same, key=score)


def _normal(stack: Stack) -> np.ndarray | None:
    iop = stack.slices[0].orientation if stack.slices else None
    if iop is None:
        return None
    n = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    norm = float(np.linalg.norm(n))
    return n / norm if norm > 0 else None


def comparison_pair(active: StudyRef, studies: Sequence[StudyRef]) -> tuple[StudyRef, StudyRef] | None:
    """(current, prior) for the study on screen: itself and its latest earlier study, or, when it is the
    earliest one, the patient's latest study and itself."""
    prior = find_prior(active, studies)
    if prior is not None:
        return active, prior
    later = [
        s
        for s in studies
        if active.patient_key
        and active.date
        and s.patient_key == active.patient_key
        and s.study_uid != active.study_uid
        and s.date > active.date
    ]
    return (max(later, key=lambda s: s.date), active) if later else None


def aligned_position(
    current: CatalogueEntry, current_vp: ViewportState, prior: CatalogueEntry, prior_vp: ViewportState
) -> float:
    """Where the prior viewport starts when its frame of reference differs from the current one's: the
    current viewport's distance from its stack's middle, applied from the prior stack's middle (the
    two are then linked with the offset this gives; the reader can unlink, adjust and link again)."""
    grid_c, grid_p = scroll_grid(current, current_vp), scroll_grid(prior, prior_vp)
    sign = 1.0
    if current.geometry is not None and prior.geometry is not None:
        n_current = base_plane(current.geometry, current_vp).normal
        cos = float(np.dot(n_current, base_plane(prior.geometry, prior_vp).normal))
        sign = 1.0 if cos >= 0 else -1.0
    return grid_p.snap(grid_p.middle + sign * (current_vp.position_mm - grid_c.middle))
