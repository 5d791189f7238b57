"""A DICOM Structured Report per reviewed study: TID 1500 Measurement Report (highdicom Comprehensive 3D SR).

Each AI finding (one per class) and each reader-added finding becomes a TID 1501 "Measurements and
Qualitative Evaluations" group holding: the finding type, the AI result (present/absent) and study
probability with the algorithm identification, the reader's decision and correction, and the image
references of the flagged (or reader-marked) slices. The analysed series is the evidence.

Coded concepts: SCT 1386000 "Intracranial hemorrhage" for the 'any' class; the subtypes and the
review concepts use the local coding scheme ``SLICEWISE`` (99SLICEWISE-style private codes).
De-identified by default: patient name, ID, birth date, accession number and study date are left
empty and PatientIdentityRemoved=YES; UIDs are kept so the SR attaches to the study in a PACS.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from viewer.core.errors import ReviewStoreError
from viewer.core.inference.results import SliceRange
from viewer.core.review.models import Finding, StudyReview
from viewer.core.review.store import ReviewSession

SCHEME: Final = "SLICEWISE"

CLASS_CODES: Final[dict[str, hd.sr.CodedConcept]] = {
    "any": hd.sr.CodedConcept("1386000", "SCT", "Intracranial hemorrhage"),
    "epidural": hd.sr.CodedConcept("EDH", SCHEME, "Epidural hemorrhage"),
    "intraparenchymal": hd.sr.CodedConcept("IPH", SCHEME, "Intraparenchymal hemorrhage"),
    "intraventricular": hd.sr.CodedConcept("IVH", SCHEME, "Intraventricular hemorrhage"),
    "subarachnoid": hd.sr.CodedConcept("SAH", SCHEME, "Subarachnoid hemorrhage"),
    "subdural": hd.sr.CodedConcept("SDH", SCHEME, "Subdural hemorrhage"),
}
AI_RESULT = hd.sr.CodedConcept("AI-RESULT", SCHEME, "AI result (investigational)")
AI_PROBABILITY = hd.sr.CodedConcept("AI-STUDY-PROB", SCHEME, "AI study-level probability")
AI_THRESHOLD = hd.sr.CodedConcept("AI-THRESHOLD", SCHEME, "AI decision threshold")
READER_DECISION = hd.sr.CodedConcept("READER-DECISION", SCHEME, "Reader decision on AI finding")
READER_CORRECTED_TYPE = hd.sr.CodedConcept("READER-CORRECTED-TYPE", SCHEME, "Reader-corrected finding type")
FINDING_SOURCE = hd.sr.CodedConcept("FINDING-SOURCE", SCHEME, "Finding source")
REVIEW_STATUS = hd.sr.CodedConcept("REVIEW-STATUS", SCHEME, "Review status")
DECISION_CODES: Final[dict[str | None, hd.sr.CodedConcept]] = {
    "confirmed": hd.sr.CodedConcept("CONFIRMED", SCHEME, "Confirmed by reader"),
    "rejected": hd.sr.CodedConcept("REJECTED", SCHEME, "Rejected by reader"),
    "uncertain": hd.sr.CodedConcept("UNCERTAIN", SCHEME, "Uncertain"),
    None: hd.sr.CodedConcept("UNDECIDED", SCHEME, "Not yet decided"),
}
SOURCE_CODES: Final[dict[str, hd.sr.CodedConcept]] = {
    "ai": hd.sr.CodedConcept("AI", SCHEME, "AI model"),
    "reader": hd.sr.CodedConcept("READER", SCHEME, "Added by reader"),
}
STATUS_CODES: Final[dict[bool, hd.sr.CodedConcept]] = {
    True: hd.sr.CodedConcept("COMPLETE", SCHEME, "Review complete"),
    False: hd.sr.CodedConcept("IN-PROGRESS", SCHEME, "Review in progress"),
}
CT_HEAD = hd.sr.CodedConcept("303653007", "SCT", "Computed tomography of head")
_PATIENT_STUDY_KEYWORDS: Final = (
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


def class_code(name: str) -> hd.sr.CodedConcept:
    code = CLASS_CODES.get(name)
    if code is None:
        code = hd.sr.CodedConcept(name.upper()[:16], SCHEME, name)
    return code


def _stable_uid(text: str) -> str:
    """A UID derived from ``text`` (2.25 + 128-bit hash), so re-exports track the same finding."""
    return "2.25." + str(int(hashlib.sha256(text.encode()).hexdigest()[:32], 16))


def _evidence(study: StudyReview, source: Dataset | None, include_identifiers: bool) -> list[Dataset]:
    assert study.ai is not None
    items = []
    for uid in study.ai.slice_uids:
        ds = Dataset()
        ds.SOPClassUID = study.ai.sop_class_uid
        ds.SOPInstanceUID = uid
        ds.SeriesInstanceUID = study.ai.series_instance_uid
        ds.StudyInstanceUID = study.study_uid
        for kw in _PATIENT_STUDY_KEYWORDS:
            value = getattr(source, kw, "") if (include_identifiers and source is not None) else ""
            setattr(ds, kw, value)
        items.append(ds)
    return items


def _slice_refs(
    study: StudyReview, ranges: tuple[SliceRange, ...]
) -> list[hd.sr.SourceImageForMeasurementGroup]:
    assert study.ai is not None
    refs = []
    n = len(study.ai.slice_uids)
    for r in ranges:
        for i in range(max(r.start, 0), min(r.stop, n - 1) + 1):
            refs.append(hd.sr.SourceImageForMeasurementGroup(study.ai.sop_class_uid, study.ai.slice_uids[i]))
    return refs


def _group(study: StudyReview, f: Finding) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    assert study.ai is not None
    evaluations = [hd.sr.QualitativeEvaluation(FINDING_SOURCE, SOURCE_CODES[f.source])]
    measurements = []
    algorithm = None
    if f.source == "ai":
        evaluations.append(
            hd.sr.QualitativeEvaluation(AI_RESULT, codes.SCT.Present if f.ai_positive else codes.SCT.Absent)
        )
        evaluations.append(hd.sr.QualitativeEvaluation(READER_DECISION, DECISION_CODES[f.decision]))
        algorithm = hd.sr.AlgorithmIdentification(study.ai.model_name, study.ai.model_version)
        if f.study_prob is not None:
            measurements.append(
                hd.sr.Measurement(
                    AI_PROBABILITY, float(f.study_prob), codes.UCUM.NoUnits, algorithm_id=algorithm
                )
            )
        if f.threshold is not None:
            measurements.append(hd.sr.Measurement(AI_THRESHOLD, float(f.threshold), codes.UCUM.NoUnits))
    if f.corrected_class:
        evaluations.append(hd.sr.QualitativeEvaluation(READER_CORRECTED_TYPE, class_code(f.corrected_class)))
    ranges = (f.corrected_range,) if f.corrected_range is not None else f.ranges
    label = f"{f.source.upper()} {f.class_name} slices {';'.join(str(r) for r in ranges) or 'none'}"
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_stable_uid(f"{study.study_uid}/{f.source}/{f.id}"), identifier=label[:64]
        ),
        finding_type=class_code(f.class_name),
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
        source_images=_slice_refs(study, ranges) or None,
    )


def build_sr(
    session: ReviewSession,
    study_uid: str,
    *,
    include_identifiers: bool = False,
    source: Dataset | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The SR for one study of ``session``. ``source``: an image header of the study, used only
    with ``include_identifiers`` to copy the patient and study identifiers."""
    study = session.study(study_uid)
    if study.ai is None:
        raise ReviewStoreError("This study has no AI result yet, so there is no series to report on")
    reader_name = session.info.reader if include_identifiers and session.info.reader else "Reader"
    if "^" not in reader_name:
        reader_name += "^"  # one-component person name, made explicit
    context = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            codes.DCM.Person, hd.sr.PersonObserverIdentifyingAttributes(name=reader_name)
        ),
        observer_device_context=hd.sr.ObserverContext(
            codes.DCM.Device,
            hd.sr.DeviceObserverIdentifyingAttributes(
                uid=_stable_uid(f"model/{study.ai.model_sha256}"),
                name=study.ai.model_name[:64],
                manufacturer_name="Slicewise",
                model_name=study.ai.model_version[:64],
            ),
        ),
    )
    groups = [_group(study, f) for f in study.findings]
    status = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_stable_uid(f"{study.study_uid}/status"), identifier="Review status"
        ),
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(REVIEW_STATUS, STATUS_CODES[study.done])],
    )
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=CT_HEAD, imaging_measurements=[*groups, status]
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=_evidence(study, source, include_identifiers),
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=990,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Slicewise",
        is_complete=study.done,
        is_final=False,
        is_verified=False,
        series_description="Slicewise AI review (research use only)",
        # INTENDED_USE: research use only; the AI results in this report are investigational.
    )
    sr.ContentLabel = "SLICEWISE"
    if not include_identifiers:
        sr.PatientIdentityRemoved = "YES"
        sr.DeidentificationMethod = "Slicewise review export: identifiers omitted, UIDs retained"
        method = Dataset()
        method.CodeValue, method.CodingSchemeDesignator = "113100", "DCM"
        method.CodeMeaning = "Basic Application Confidentiality Profile"
        uids = Dataset()
        uids.CodeValue, uids.CodingSchemeDesignator, uids.CodeMeaning = "113110", "DCM", "Retain UIDs Option"
        sr.DeidentificationMethodCodeSequence = [method, uids]
    return sr


def write_sr(
    session: ReviewSession,
    study_uid: str,
    path: Path | str,
    *,
    include_identifiers: bool = False,
    source: Dataset | None = None,
) -> Path:
    """Build and save the SR (atomically, 0600); returns the path."""
    import io

    from viewer.core.review.fileutil import atomic_write_bytes

    sr = build_sr(session, study_uid, include_identifiers=include_identifiers, source=source)
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
