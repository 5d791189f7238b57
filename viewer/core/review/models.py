"""Frozen values read back from the review store."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal

from viewer.core.dicom.model import SliceKey
from viewer.core.inference.results import SliceRange
from viewer.core.location.ref import SourceRef

Decision = Literal["confirmed", "rejected", "uncertain"]
DECISIONS: Final[tuple[str, ...]] = ("confirmed", "rejected", "uncertain")
FindingSource = Literal["ai", "reader"]
WorklistOrder = Literal["ai_first", "original"]


@dataclass(frozen=True)
class SessionInfo:
    """One named review session with its progress (``n_done`` of ``n_studies`` studies marked done)."""

    id: str  # internal UUID: never derived from patient data
    name: str
    reader: str
    created_at: str  # ISO-8601 UTC
    modified_at: str
    n_studies: int
    n_done: int

    @property
    def progress(self) -> str:
        return f"{self.n_done}/{self.n_studies}"


@dataclass(frozen=True)
class AIResult:
    """What the model said about a study (one analysed stack), as recorded at decision time."""

    stack_uid: str
    series_instance_uid: str
    model_name: str
    model_version: str
    model_sha256: str
    class_names: tuple[str, ...]
    study_probs: tuple[float, ...]
    thresholds: tuple[float, ...]
    slice_uids: tuple[str, ...]  # SOPInstanceUID per slice, display order
    sop_class_uid: str
    badge: str  # e.g. 'ICH suspected: subdural 0.93'
    positive: bool
    recorded_at: str


@dataclass(frozen=True)
class Finding:
    """An AI finding (one per class) or a reader-added one, with the reader's decision."""

    id: int
    study_uid: str
    source: FindingSource
    class_name: str
    ai_positive: bool | None  # None for reader-added findings
    study_prob: float | None
    threshold: float | None
    ranges: tuple[SliceRange, ...]  # AI flagged ranges, or the reader's range
    peak_slice: int | None
    decision: str | None  # one of DECISIONS, None while undecided
    decision_at: str | None
    corrected_class: str | None
    corrected_range: SliceRange | None
    created_at: str
    updated_at: str

    @property
    def jump_slice(self) -> int | None:
        """The slice to show for this finding: corrected range, else peak, else first flagged slice."""
        if self.corrected_range is not None:
            return self.corrected_range.start
        if self.peak_slice is not None and (self.positive or not self.ranges):
            return self.peak_slice
        return self.ranges[0].start if self.ranges else None

    @property
    def positive(self) -> bool:
        return self.source == "reader" or bool(self.ai_positive)


@dataclass(frozen=True)
class StudyReview:
    """Everything the session knows about one study of its worklist."""

    study_uid: str
    position: int  # original worklist order, 0-based
    paths: tuple[str, ...]  # every local path it was opened from (PHI: never logged, exported on opt-in only)
    source: SourceRef  # where to get it again: local files or a PACS node (viewer.core.location)
    added_at: str
    updated_at: str
    ai: AIResult | None
    findings: tuple[Finding, ...]
    note: str
    note_at: str | None
    impression: str
    impression_at: str | None
    done: bool
    done_at: str | None

    @property
    def ai_positive(self) -> bool:
        return self.ai is not None and self.ai.positive

    @property
    def n_decided(self) -> int:
        return sum(1 for f in self.findings if f.decision is not None)

    def finding(self, finding_id: int) -> Finding:
        for f in self.findings:
            if f.id == finding_id:
                return f
        raise KeyError(finding_id)


@dataclass(frozen=True)
class Position:
    """Where the reader was: study, stack and slice (for resume). ``slice_key`` names the slice by UIDs
    (None in positions saved before v3), so it is found again however the study was reopened."""

    study_uid: str
    stack_uid: str
    slice_index: int
    updated_at: str
    slice_key: SliceKey | None = None


class StoreWarningCode(str, Enum):
    """Why the review store warns at open (the GUI shows :attr:`StoreWarning.message`)."""

    BEHIND = "W-REVIEW-BEHIND"  # the database holds fewer changes than were acknowledged
    EMPTY_FILE = "W-REVIEW-EMPTY-FILE"  # a 0-byte database file was kept aside and a new one created
    ORPHAN_LOG = "W-REVIEW-ORPHAN-LOG"  # a -wal without its database was kept aside (never replayed)


@dataclass(frozen=True)
class StoreWarning:
    code: StoreWarningCode
    message: str
    missing_changes: int = 0  # acknowledged changes the database no longer holds (BEHIND)
    kept_aside: tuple[str, ...] = ()  # file names copied or moved aside for recovery
