"""Which stack an analysis read and which model run made it: the fields every task's result shares.

:class:`~viewer.core.inference.results.StackPrediction` (slice classification) and
:class:`~viewer.core.inference.maps.SegmentationPrediction` (segmentation, and the localisation maps of a
classification model) both derive from :class:`Provenance`, so the run's identity (model name, version and
SHA-256, execution provider, time, intended use, cache, undecodable slices, the scope check) is declared
once. The fields are keyword-only: a result is built by name (``StackPrediction(stack_uid=..., ...)``) and
reads them as before (``prediction.model_sha256``).
"""

from __future__ import annotations

from dataclasses import dataclass

from viewer.core.applicability.codes import Applicability


@dataclass(frozen=True, eq=False, kw_only=True)
class Provenance:
    """The analysed stack (its UIDs, slice order) and the model run that analysed it."""

    stack_uid: str
    study_instance_uid: str
    series_instance_uid: str
    slice_uids: tuple[str, ...]  # SOPInstanceUID per slice, display order
    model_name: str
    model_version: str
    model_sha256: str
    provider: str  # the execution provider actually used, e.g. "CPUExecutionProvider"
    provider_note: str  # why the requested provider was not obtained, "" otherwise
    elapsed_s: float
    intended_use: str
    from_cache: bool = False  # True when served from the prediction cache (elapsed_s is the original run's)
    bad_slices: tuple[int, ...] = ()  # slices that could not be decoded (filled with the stack minimum)
    applicability: Applicability | None = None  # the scope check's answer (in scope or caution)


__all__ = ["Provenance"]
