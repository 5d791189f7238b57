"""Typed values of the PACS layer: queries, matches, retrieve and store outcomes.

Matches carry patient data (names, IDs) for the query table; nothing here is ever logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from pathlib import Path

from viewer.core.dicom.model import SliceSource


class QueryLevel(str, Enum):
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


class RetrieveMethod(str, Enum):
    """How a DIMSE retrieve runs: C-GET on the query association, or C-MOVE to our Storage SCP."""

    GET = "C-GET"
    MOVE = "C-MOVE"


@dataclass(frozen=True)
class StudyQuery:
    """Study-level filters. Texts may hold ``*`` and ``?`` wildcards (DICOM matching); dates are
    inclusive and either end may be open."""

    patient_name: str = ""
    patient_id: str = ""
    date_from: date | None = None
    date_to: date | None = None
    modality: str = ""
    accession_number: str = ""
    study_description: str = ""
    study_uid: str = ""
    limit: int | None = None

    def date_range(self) -> str:
        """The StudyDate matching value: ``20260101-20260131``, ``20260101-``, ``-20260131`` or ''."""
        if self.date_from is None and self.date_to is None:
            return ""
        low = self.date_from.strftime("%Y%m%d") if self.date_from else ""
        high = self.date_to.strftime("%Y%m%d") if self.date_to else ""
        return low if low and low == high else f"{low}-{high}"


@dataclass(frozen=True)
class StudyMatch:
    study_uid: str
    patient_name: str = ""
    patient_id: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_description: str = ""
    modalities: tuple[str, ...] = ()
    num_series: int | None = None
    num_instances: int | None = None


@dataclass(frozen=True)
class SeriesMatch:
    study_uid: str
    series_uid: str
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    num_instances: int | None = None
    body_part: str = ""  # BodyPartExamined, upper case, when the PACS answers it


@dataclass(frozen=True)
class InstanceMatch:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str = ""
    instance_number: int | None = None


@dataclass(frozen=True)
class RetrievedInstance:
    """One instance now in the local cache, ready for the local loader. ``frames``: its Number of Frames
    (1 for a single-frame image, an object without pixels, and an instance found already cached).
    ``path`` is its own file, or with ``member`` the pack holding it (:mod:`viewer.core.dicom.pack`):
    :attr:`source` addresses it either way."""

    sop_instance_uid: str
    series_uid: str
    path: Path
    transfer_syntax: str
    size: int
    frames: int = 1
    member: str | None = None

    @property
    def source(self) -> SliceSource:
        return SliceSource(self.path, self.member)


@dataclass(frozen=True)
class InstanceFailure:
    """One instance that did not arrive (or arrived unusable); ``sop_instance_uid`` may be '' when the
    server did not say which."""

    sop_instance_uid: str
    reason: str


@dataclass
class RetrieveReport:
    """What one series retrieve did: instances received now, found in the cache, and failed."""

    study_uid: str
    series_uid: str
    folder: Path
    expected: int
    received: list[RetrievedInstance] = field(default_factory=list)
    cached: list[RetrievedInstance] = field(default_factory=list)
    failed: list[InstanceFailure] = field(default_factory=list)
    attempts: int = 0
    cancelled: bool = False

    @property
    def instances(self) -> list[RetrievedInstance]:
        return [*self.cached, *self.received]

    @property
    def complete(self) -> bool:
        return not self.cancelled and not self.failed and len(self.instances) >= self.expected


@dataclass(frozen=True)
class StoreOutcome:
    """The PACS's answer for one object sent (C-STORE status or STOW-RS per-instance result)."""

    sop_instance_uid: str
    ok: bool
    status: int | None = None
    reason: str = ""


InstanceCallback = Callable[[RetrievedInstance], None]
# a study query's first page while the rest is on its way (never called after the query returned)
StudiesCallback = Callable[[list[StudyMatch]], None]
CancelFn = Callable[[], bool]
