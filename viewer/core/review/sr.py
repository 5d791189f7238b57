"""The reader's review of one study as its own DICOM SR, referencing the AI Result SR it reviews.

IHE AIRAI-style: the AI's unverified result stays in the AI Result SR
(:mod:`viewer.core.airesults.ai_sr`, written at Analyze time); this object holds only the reader's
verdicts. TID 1500 Measurement Report (highdicom Comprehensive 3D SR), observer = the reader
(person). One TID 1501 group per AI finding, with the **same Tracking Unique Identifier as the AI
SR's group** (TID 1500's way of saying "the same finding"), the verdict (accepted / rejected /
modified / uncertain / undecided), the reader's presence call, a corrected finding type when the
reader changed the class, and the image references of the slices the reader's call covers; one
group per reader-added finding; one review-status group. The AI SR is listed as evidence
(Current Requested Procedure Evidence) next to the analysed slices.

Finding types use the standard codes of :mod:`viewer.core.airesults.codes`; the verdicts are private
``99SLICEWISE`` codes (no standard code could be verified offline). De-identified by default (see
:mod:`viewer.core.airesults.identity`); the referenced AI SR is the one written in the same mode.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID, generate_uid

from viewer.core.airesults import codes as c
from viewer.core.airesults.ai_sr import MANUFACTURER, finding_tracking_uid
from viewer.core.airesults.identity import (
    COMPREHENSIVE_3D_SR,
    SourceSeries,
    evidence_item,
    identity_of,
    mark_deidentified,
    object_uids,
    slice_evidence,
    stable_uid,
)
from viewer.core.errors import ReviewStoreError
from viewer.core.inference.results import SliceRange
from viewer.core.review.export import reader_truth
from viewer.core.review.models import AIResult, Finding, StudyReview
from viewer.core.review.store import ReviewSession

REVIEW_SERIES_NUMBER = 9903
CLASS_CODES = c.CLASS_CODES  # the finding types (re-exported for callers of the old module)


def ai_sr_reference(ai: AIResult, study_uid: str, include_identity: bool) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the AI Result SR written for ``ai`` in that mode."""
    return object_uids(
        "ai-sr", ai.model_sha256, ai.stack_uid, ai.slice_uids, study_uid, include_identity, ai.study_probs
    )


def verdict(f: Finding) -> str:
    """The reader's verdict on a finding, as a key of :data:`codes.VERDICT_CODES`."""
    if f.source == "reader":
        return "added"
    corrected = f.corrected_class is not None or f.corrected_range is not None
    if f.decision == "rejected":
        return "rejected"
    if corrected:
        return "modified"
    return {"confirmed": "accepted", "uncertain": "uncertain"}.get(f.decision or "", "undecided")


def _source(study: StudyReview, header: Dataset | None, include_identity: bool) -> SourceSeries:
    assert study.ai is not None
    return SourceSeries(
        study_instance_uid=study.study_uid,
        series_instance_uid=study.ai.series_instance_uid,
        sop_class_uid=study.ai.sop_class_uid,
        slice_uids=study.ai.slice_uids,
        identity=identity_of(header) if include_identity else Dataset(),
    )


def _slice_refs(
    source: SourceSeries, ranges: tuple[SliceRange, ...]
) -> list[hd.sr.SourceImageForMeasurementGroup]:
    n = len(source.slice_uids)
    return [
        hd.sr.SourceImageForMeasurementGroup(UID(source.sop_class_uid), UID(source.slice_uids[i]))
        for r in ranges
        for i in range(max(r.start, 0), min(r.stop, n - 1) + 1)
    ]


def _group(
    study: StudyReview, source: SourceSeries, f: Finding
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    assert study.ai is not None
    kind = verdict(f)
    evaluations = [hd.sr.QualitativeEvaluation(c.READER_VERDICT, c.VERDICT_CODES[kind])]
    truth = reader_truth(study, f.corrected_class or f.class_name) if kind != "undecided" else None
    if kind == "rejected":
        truth = not f.ai_positive
    if truth is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(c.PRESENCE, c.PRESENT if truth else c.ABSENT))
    if f.corrected_class:
        evaluations.append(hd.sr.QualitativeEvaluation(c.CORRECTED_TYPE, c.class_code(f.corrected_class)))
    if f.source == "ai":
        tracking = finding_tracking_uid(study.ai.model_sha256, study.ai.stack_uid, f.class_name)
    else:
        tracking = stable_uid(f"slicewise/reader-finding/{study.study_uid}/{f.id}")
    ranges = (f.corrected_range,) if f.corrected_range is not None else f.ranges
    refs = _slice_refs(source, ranges) if kind in ("accepted", "modified", "added") else []
    label = f"{kind} {f.class_name} slices {';'.join(str(r) for r in ranges) or 'none'}"
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking, identifier=label[:64]),
        finding_type=c.class_code(f.class_name),
        qualitative_evaluations=evaluations,
        source_images=refs or None,
    )


def build_sr(
    session: ReviewSession,
    study_uid: str,
    *,
    include_identifiers: bool = False,
    source: Dataset | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The reader's review SR for one study of ``session``. ``source``: an image header of the study,
    used only with ``include_identifiers`` to copy the patient and study identity."""
    return build_study_sr(
        session.study(study_uid), session.info.reader, include_identifiers=include_identifiers, source=source
    )


def build_study_sr(
    study: StudyReview,
    reader: str,
    *,
    include_identifiers: bool = False,
    source: Dataset | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The review SR of ``study`` (a snapshot of one session study) read by ``reader``."""
    if study.ai is None:
        raise ReviewStoreError("This study has no AI result yet, so there is no series to report on")
    ai = study.ai
    series = _source(study, source, include_identifiers)
    reader_name = reader if include_identifiers and reader else "Reader"
    if "^" not in reader_name:
        reader_name += "^"  # one-component person name, made explicit
    context = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            codes.DCM.Person, hd.sr.PersonObserverIdentifyingAttributes(name=reader_name)
        )
    )
    groups = [_group(study, series, f) for f in study.findings]
    groups.append(
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=stable_uid(f"slicewise/review-status/{study.study_uid}"), identifier="Review status"
            ),
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(c.REVIEW_STATUS, c.STATUS_CODES[study.done])
            ],
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=c.CT_HEAD, imaging_measurements=groups
    )
    ai_series, ai_instance = ai_sr_reference(ai, study.study_uid, include_identifiers)
    evidence = [
        *slice_evidence(series, include_identifiers),
        evidence_item(series, ai_instance, COMPREHENSIVE_3D_SR, ai_series, include_identifiers),
    ]
    review_series, _ = object_uids(
        "review-sr", ai.model_sha256, ai.stack_uid, ai.slice_uids, study.study_uid, include_identifiers
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=review_series,
        series_number=REVIEW_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),  # each export is a new version of the review
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=study.done,
        is_final=False,
        is_verified=False,
        series_description="Slicewise reader review of AI result (research use only)",
    )
    sr.ContentLabel = "SLICEWISE"
    if not include_identifiers:
        mark_deidentified(sr, "Slicewise review export: identifiers omitted, UIDs retained")
    return sr


def write_sr(
    session: ReviewSession,
    study_uid: str,
    path: Path | str,
    *,
    include_identifiers: bool = False,
    source: Dataset | None = None,
) -> Path:
    """Build and save the review SR (atomically, 0600); returns the path."""
    study = session.study(study_uid)
    return write_study_sr(study, session.info.reader, Path(path), include_identifiers, source)


def write_study_sr(
    study: StudyReview, reader: str, path: Path, include_identifiers: bool, source: Dataset | None
) -> Path:
    """:func:`write_sr` from a snapshot of the study (picklable: the viewer runs it in the helper process
    of :mod:`viewer.core.airesults.process`, where highdicom's tables are already loaded)."""
    from viewer.core.airesults.writer import dataset_bytes
    from viewer.core.review.fileutil import atomic_write_bytes

    sr = build_study_sr(study, reader, include_identifiers=include_identifiers, source=source)
    atomic_write_bytes(path, dataset_bytes(sr))
    return path
