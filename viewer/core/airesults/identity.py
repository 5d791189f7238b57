"""The source series an AI object references, its UIDs, and whose identity it carries.

Identity policy (written down for the AI objects; see README "AI results as DICOM"):
- **De-identified by default** (``include_identity=False``): patient name, ID, birth date, sex,
  accession number, study ID, date and time and the referring physician are left empty,
  PatientIdentityRemoved = YES, and the method is coded as DICOM's Basic Application Confidentiality
  Profile with the Retain UIDs option (DCM 113100 + 113110). The Study, Series and SOP Instance UIDs
  of the source are kept: the objects still point at the exact slices analysed, and they stay
  consistent with the images' own references (Slicewise never exports re-identified copies of the
  images, so there is no second UID space to map to).
- **With identity** (``include_identity=True``, the user's explicit choice: ``--include-identifiers``
  or the viewer's identity toggle): the Patient and General Study modules are copied from the source
  header so a PACS files the objects under the patient and study. This is the mode for objects that
  go back to the PACS; a de-identified object sent there would not match its study.

UIDs of the objects are derived (2.25 + a SHA-256 prefix) from the model's SHA-256, the analysed
stack and its slices, the identity mode and (instance UIDs) the study probabilities: re-running the
same model on the same stack with the same result gives the same SOP Instance UID (the object is
replaced, not duplicated), a different result a new one, and the reader's review SR can name the AI SR
it reviews from the recorded AI result without storing its UID.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from pydicom import Dataset

from viewer.core.dicom.model import Stack

PATIENT_STUDY_KEYWORDS: Final[tuple[str, ...]] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_OPTIONAL_IDENTITY: Final[tuple[str, ...]] = ("IssuerOfPatientID", "PatientAge", "StudyDescription")
CT_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.2"
COMPREHENSIVE_3D_SR: Final = "1.2.840.10008.5.1.4.1.1.88.34"
KEY_OBJECT_SELECTION: Final = "1.2.840.10008.5.1.4.1.1.88.59"


def stable_uid(text: str) -> str:
    """A UID derived from ``text`` (2.25 + 128-bit hash): the same text gives the same UID."""
    return "2.25." + str(int(hashlib.sha256(text.encode()).hexdigest()[:32], 16))


@dataclass(frozen=True)
class SourceSeries:
    """The analysed stack as the AI objects reference it (display order, one entry per slice)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    slice_uids: tuple[str, ...]
    frame_numbers: tuple[int | None, ...] = ()  # 1-based frame of a multi-frame object, else None
    identity: Dataset = field(default_factory=Dataset)  # Patient / General Study attributes, no pixels

    def frame(self, index: int) -> int | None:
        return self.frame_numbers[index] if index < len(self.frame_numbers) else None


def identity_of(header: Dataset | None) -> Dataset:
    """The Patient and General Study attributes of ``header`` (a pixel-free copy)."""
    ds = Dataset()
    if header is None:
        return ds
    for kw in (*PATIENT_STUDY_KEYWORDS, *_OPTIONAL_IDENTITY):
        if kw in header:
            setattr(ds, kw, header[kw].value)
    if "SpecificCharacterSet" in header:
        ds.SpecificCharacterSet = header.SpecificCharacterSet
    return ds


def source_from_stack(stack: Stack, header: Dataset | None) -> SourceSeries:
    """A :class:`SourceSeries` for a loaded stack and one of its headers (the first slice's: SOP Class
    and the patient/study identity)."""
    sop_class = str(getattr(header, "SOPClassUID", "") or CT_IMAGE_STORAGE) if header is not None else ""
    return SourceSeries(
        study_instance_uid=stack.study_instance_uid,
        series_instance_uid=stack.series_instance_uid,
        sop_class_uid=sop_class or CT_IMAGE_STORAGE,
        slice_uids=tuple(s.sop_instance_uid for s in stack.slices),
        frame_numbers=tuple(s.source.frame + 1 if s.number_of_frames > 1 else None for s in stack.slices),
        identity=identity_of(header),
    )


def read_first_header(stack: Stack) -> Dataset | None:
    """The first slice's header without pixel data (None when it cannot be read)."""
    from viewer.core.dicom.sources import read_header_dataset

    if not stack.slices:
        return None
    try:
        return read_header_dataset(stack.slices[0].source)
    except Exception:  # a header that read at load time but not now: the objects go de-identified
        return None


def evidence_item(
    source: SourceSeries, sop_instance_uid: str, sop_class_uid: str, series_uid: str, include_identity: bool
) -> Dataset:
    """A minimal dataset standing for one referenced instance (highdicom's ``evidence``)."""
    ds = Dataset()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = source.study_instance_uid
    for kw in PATIENT_STUDY_KEYWORDS:
        value = source.identity.get(kw, "") if include_identity else ""
        setattr(ds, kw, value if value is not None else "")
    if include_identity and "SpecificCharacterSet" in source.identity:
        ds.SpecificCharacterSet = source.identity.SpecificCharacterSet
    return ds


def slice_evidence(
    source: SourceSeries, include_identity: bool, indices: Sequence[int] | None = None
) -> list[Dataset]:
    """Evidence items for the slices at ``indices`` (every slice by default), one per SOP instance."""
    seen: set[str] = set()
    items = []
    for i in range(len(source.slice_uids)) if indices is None else indices:
        uid = source.slice_uids[i]
        if uid in seen:
            continue
        seen.add(uid)
        items.append(
            evidence_item(source, uid, source.sop_class_uid, source.series_instance_uid, include_identity)
        )
    return items


def add_optional_identity(ds: Dataset, source: SourceSeries) -> None:
    """The source's Study Description, Patient's Age and Issuer of Patient ID on an identified object
    (highdicom copies only the required Patient and General Study attributes): a PACS may take a study's
    description from its latest object (Orthanc did: sending the AI result erased "CT HEAD")."""
    for kw in _OPTIONAL_IDENTITY:
        if kw not in ds and source.identity.get(kw) not in (None, ""):
            setattr(ds, kw, source.identity[kw].value)


def mark_deidentified(ds: Dataset, method: str) -> None:
    """PatientIdentityRemoved = YES with the Basic profile + Retain UIDs option codes."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = method[:64]
    profile = Dataset()
    profile.CodeValue, profile.CodingSchemeDesignator = "113100", "DCM"
    profile.CodeMeaning = "Basic Application Confidentiality Profile"
    retain = Dataset()
    retain.CodeValue, retain.CodingSchemeDesignator, retain.CodeMeaning = (
        "113110",
        "DCM",
        "Retain UIDs Option",
    )
    ds.DeidentificationMethodCodeSequence = [profile, retain]


def object_uids(
    kind: str,
    model_sha256: str,
    stack_uid: str,
    slice_uids: Sequence[str],
    study_uid: str,
    include_identity: bool,
    study_probs: Sequence[float] = (),
) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the ``kind`` object ("ai-sr", "kos", "review-sr").

    The instance UID also covers the study probabilities (to 6 decimals): the same model on the same
    slices with the same result gives the same instance, a different result (another execution
    provider, say) a new one, since one SOP Instance UID must never name two different contents.
    """
    mode = "identified" if include_identity else "deidentified"
    slices = hashlib.sha256("\\".join(slice_uids).encode()).hexdigest()
    result = ",".join(f"{float(p):.6f}" for p in study_probs)
    series = stable_uid(f"slicewise/{kind}/series/{model_sha256}/{study_uid}/{mode}")
    instance = stable_uid(f"slicewise/{kind}/{model_sha256}/{stack_uid}/{slices}/{mode}/{result}")
    return series, instance
