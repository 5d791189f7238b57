"""What the AI node stores back to the PACS for one analysed stack: a minimal DICOM Comprehensive SR
(TID 1500 Measurement Report, built with highdicom) holding the study decision and the per-class study
probabilities, thresholds and flagged slices, with the analysed series as evidence.

This module is the one place to swap when the AI Result SR/KOS objects (issue 13 item 3 / the "AI that
shows where" work) land: the node calls :func:`build_result_object` and stores what it returns.

Unlike the de-identified review export, this object goes to the PACS the images came from, so it carries
the patient and study module of the source images (copied, never logged): a PACS files it under the same
patient and study, and every workstation finds it there. Its UIDs are derived from the result key (pixel
digest + model hash), so storing it twice leaves one object in the PACS.
"""

from __future__ import annotations

import hashlib
from typing import Final

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes

from viewer.core.inference.results import StackPrediction
from viewer.core.review.sr import AI_PROBABILITY, AI_RESULT, AI_THRESHOLD, CT_HEAD, SCHEME, class_code

RESULT_SERIES_NUMBER: Final = 991
RESULT_SERIES_DESCRIPTION: Final = "Slicewise AI result (research use only, investigational)"
STUDY_DECISION = hd.sr.CodedConcept("AI-DECISION", SCHEME, "AI study decision (investigational)")
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


def derived_uid(*parts: str) -> str:
    """A UID derived from ``parts`` (2.25 + a 128-bit hash): the same inputs give the same UID."""
    return "2.25." + str(int(hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32], 16))


def _evidence(pred: StackPrediction, source: Dataset, sop_class_uid: str) -> list[Dataset]:
    items = []
    for uid in pred.slice_uids:
        ds = Dataset()
        ds.SOPClassUID = sop_class_uid
        ds.SOPInstanceUID = uid
        ds.SeriesInstanceUID = pred.series_instance_uid
        ds.StudyInstanceUID = pred.study_instance_uid
        for kw in _PATIENT_STUDY_KEYWORDS:
            setattr(ds, kw, source.get(kw, ""))
        items.append(ds)
    return items


def _class_group(
    pred: StackPrediction, k: int, sop_class_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    finding = pred.findings[k]
    algorithm = hd.sr.AlgorithmIdentification(pred.model_name[:64], pred.model_version[:64])
    measurements = [
        hd.sr.Measurement(
            AI_PROBABILITY, float(finding.study_prob), codes.UCUM.NoUnits, algorithm_id=algorithm
        ),
        hd.sr.Measurement(AI_THRESHOLD, float(finding.study_threshold), codes.UCUM.NoUnits),
    ]
    refs = [
        hd.sr.SourceImageForMeasurementGroup(sop_class_uid, pred.slice_uids[i])
        for r in finding.flagged_ranges
        for i in range(max(r.start, 0), min(r.stop, pred.num_slices - 1) + 1)
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(pred.model_sha256, pred.stack_uid, finding.class_name),
            identifier=f"AI {finding.class_name}"[:64],
        ),
        finding_type=class_code(finding.class_name),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                AI_RESULT, codes.SCT.Present if finding.positive else codes.SCT.Absent
            )
        ],
        source_images=refs or None,
    )


def build_result_object(
    pred: StackPrediction, source: Dataset, *, result_key: str, sop_class_uid: str
) -> Dataset:
    """The result object for ``pred`` (one analysed stack); ``source`` is a header of one of its images
    (patient and study module); ``result_key`` the node's key for this result (pixels + model)."""
    device = hd.sr.ObserverContext(
        codes.DCM.Device,
        hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid("model", pred.model_sha256),
            name=pred.model_name[:64],
            manufacturer_name="Slicewise",
            model_name=pred.model_version[:64],
        ),
    )
    decision = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(pred.model_sha256, pred.stack_uid, "decision"), identifier="AI study decision"
        ),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                STUDY_DECISION, codes.SCT.Present if pred.study_positive else codes.SCT.Absent
            )
        ],
    )
    groups = [decision, *(_class_group(pred, k, sop_class_uid) for k in range(len(pred.findings)))]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=CT_HEAD,
        imaging_measurements=groups,
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=_evidence(pred, source, sop_class_uid),
        content=report[0],
        series_instance_uid=derived_uid("ai-series", pred.study_instance_uid, pred.model_sha256),
        series_number=RESULT_SERIES_NUMBER,
        sop_instance_uid=derived_uid("ai-result", result_key),
        instance_number=1,
        manufacturer="Slicewise",
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=RESULT_SERIES_DESCRIPTION,
    )
    sr.ContentLabel = "SLICEWISE_AI"
    sr.ContentDescription = f"{pred.badge()} (investigational)"[:64]
    return sr
