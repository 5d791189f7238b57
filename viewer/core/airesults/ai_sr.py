"""The AI Result SR of one analysed stack: TID 1500 Measurement Report in a Comprehensive 3D SR.

Written before any review (IHE AIR "AI Result"): one TID 1501 measurement group per model class with
the finding type (standard codes, see :mod:`viewer.core.airesults.codes`), the study decision for the
class (Finding = Present / Absent), the study probability, the thresholds and the highest slice
probability as measurements carrying the Algorithm Identification (name, version, model SHA-256 as
an algorithm parameter), with localisation maps the class's bleed volume (SCT 118565006 Volume, UCUM
mL; ``any``: the union of the subtypes' voxels), and the flagged slices as per-image references (SOP
Instance UIDs of the source slices); one more group holds the applicability decision and its
reasons. The algorithm is also the observer device and the Contributing Equipment item (Purpose of
Reference 99IHE 1630 "Processing Algorithm", Device UID derived from the model's SHA-256). The
analysed series is the evidence.
"""

from __future__ import annotations

from typing import Final

import highdicom as hd
from pydicom.sr.codedict import codes
from pydicom.uid import UID

from viewer.core.airesults import codes as c
from viewer.core.airesults.identity import (
    SourceSeries,
    add_optional_identity,
    mark_deidentified,
    object_uids,
    slice_evidence,
    stable_uid,
)
from viewer.core.errors import SlicewiseError
from viewer.core.inference.results import ClassFinding, StackPrediction
from viewer.core.inference.volume_reading import VolumeReading

MANUFACTURER: Final = "Slicewise"
AI_SR_SERIES_NUMBER: Final = 9901
SERIES_DESCRIPTION: Final = "Slicewise AI result (research use only, unverified)"
SHA_PARAMETER: Final = "model_sha256="


class AIObjectError(SlicewiseError):
    """An AI result object could not be built (the prediction and the source do not match)."""


def algorithm_id(pred: StackPrediction) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=pred.model_name[:64],
        version=pred.model_version[:64],
        parameters=[SHA_PARAMETER + pred.model_sha256],
    )


def device_uid(model_sha256: str) -> str:
    return stable_uid(f"slicewise/model/{model_sha256}")


def device_context(model_name: str, model_version: str, model_sha256: str) -> hd.sr.ObserverContext:
    return hd.sr.ObserverContext(
        codes.DCM.Device,
        hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(model_sha256),
            name=model_name[:64],
            manufacturer_name=MANUFACTURER,
            model_name=model_version[:64],
        ),
    )


def contributing_equipment(
    model_name: str, model_version: str, model_sha256: str
) -> hd.ContributingEquipment:
    """The IHE AIR Contributing Equipment item naming the algorithm (Purpose of Reference 99IHE 1630).

    highdicom only accepts the DCM equipment purposes, so the item is made as "Processing Equipment"
    and its purpose then replaced by the IHE code; the Device UID is added the same way."""
    item = hd.ContributingEquipment(
        MANUFACTURER,
        codes.DCM.ProcessingEquipment,
        manufacturer_model_name=model_name[:64],
        software_versions=[model_version[:64], model_sha256[:64]],
        contribution_description=f"AI model {model_name} {model_version}, SHA-256 {model_sha256}"[:1024],
    )
    item.PurposeOfReferenceCodeSequence = [c.PROCESSING_ALGORITHM]
    item.DeviceUID = device_uid(model_sha256)
    return item


def ai_sr_uids(pred: StackPrediction, include_identity: bool) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the AI SR for ``pred``."""
    return object_uids(
        "ai-sr", pred.model_sha256, pred.stack_uid, pred.slice_uids, pred.study_instance_uid,
        include_identity, pred.study_probs.tolist(),
    )


def finding_tracking_uid(model_sha256: str, stack_uid: str, class_name: str) -> str:
    """The TID 1500 Tracking Unique Identifier of an AI finding; the review SR reuses it."""
    return stable_uid(f"slicewise/ai-finding/{model_sha256}/{stack_uid}/{class_name}")


def _images(source: SourceSeries, finding: ClassFinding) -> list[hd.sr.SourceImageForMeasurementGroup]:
    refs = []
    n = len(source.slice_uids)
    for r in finding.flagged_ranges:
        for i in range(max(r.start, 0), min(r.stop, n - 1) + 1):
            frame = source.frame(i)
            refs.append(
                hd.sr.SourceImageForMeasurementGroup(
                    UID(source.sop_class_uid),
                    UID(source.slice_uids[i]),
                    referenced_frame_numbers=[frame] if frame is not None else None,
                )
            )
    return refs


def _finding_group(
    pred: StackPrediction, source: SourceSeries, finding: ClassFinding, volumes: dict[str, VolumeReading]
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    algorithm = algorithm_id(pred)
    measurements = [
        hd.sr.Measurement(c.PROBABILITY, float(finding.study_prob), c.NO_UNITS, algorithm_id=algorithm),
        hd.sr.Measurement(c.STUDY_THRESHOLD, float(finding.study_threshold), c.NO_UNITS),
        hd.sr.Measurement(c.SLICE_THRESHOLD, float(finding.threshold), c.NO_UNITS),
        hd.sr.Measurement(
            c.PEAK_SLICE_PROBABILITY, float(finding.peak_prob), c.NO_UNITS, algorithm_id=algorithm
        ),
    ]
    reading = volumes.get(finding.class_name)
    volume = None if reading is None else reading.measured_ml
    if volume is not None:  # the localisation maps' voxels of the class x voxel size (any: their union)
        measurements.append(
            hd.sr.Measurement(c.VOLUME, round(float(volume), 4), c.MILLILITER, algorithm_id=algorithm)
        )
    site = c.CLASS_SITES.get(finding.class_name)
    ranges = ";".join(str(r) for r in finding.flagged_ranges) or "none"
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=finding_tracking_uid(pred.model_sha256, pred.stack_uid, finding.class_name),
            identifier=f"AI {finding.class_name} slices {ranges}"[:64],
        ),
        finding_type=c.class_code(finding.class_name),
        finding_sites=[hd.sr.FindingSite(site)] if site is not None else None,
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(c.PRESENCE, c.PRESENT if finding.positive else c.ABSENT)
        ],
        source_images=_images(source, finding) or None,
    )


def _applicability_group(pred: StackPrediction) -> hd.sr.MeasurementsAndQualitativeEvaluations | None:
    scope = pred.applicability
    if scope is None:
        return None
    evaluations = [hd.sr.QualitativeEvaluation(c.APPLICABILITY, c.SCOPE_CODES[scope.scope])]
    evaluations += [
        hd.sr.QualitativeEvaluation(c.APPLICABILITY_REASON, c.scope_reason_code(r.code.value, r.message))
        for r in scope.reasons
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=stable_uid(f"slicewise/applicability/{pred.model_sha256}/{pred.stack_uid}"),
            identifier="Applicability",
        ),
        algorithm_id=algorithm_id(pred),
        qualitative_evaluations=evaluations,
    )


def check_source(pred: StackPrediction, source: SourceSeries) -> None:
    if tuple(source.slice_uids) != tuple(pred.slice_uids):
        raise AIObjectError(
            f"The prediction covers {len(pred.slice_uids)} slices but the source series lists "
            f"{len(source.slice_uids)} (or other UIDs): the AI objects would reference the wrong images"
        )
    if not source.slice_uids:
        raise AIObjectError("The prediction has no slices to reference")


def build_ai_sr(
    pred: StackPrediction, source: SourceSeries, *, include_identity: bool = False
) -> hd.sr.Comprehensive3DSR:
    """The AI Result SR of ``pred`` on ``source`` (de-identified unless ``include_identity``)."""
    check_source(pred, source)
    volumes = pred.volume_readings()  # {} without localisation maps
    groups = [_finding_group(pred, source, f, volumes) for f in pred.findings]
    scope = _applicability_group(pred)
    if scope is not None:
        groups.append(scope)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=device_context(pred.model_name, pred.model_version, pred.model_sha256)
        ),
        procedure_reported=c.CT_HEAD,
        imaging_measurements=groups,
    )
    series_uid, instance_uid = ai_sr_uids(pred, include_identity)
    sr = hd.sr.Comprehensive3DSR(
        evidence=slice_evidence(source, include_identity),
        content=report[0],
        series_instance_uid=series_uid,
        series_number=AI_SR_SERIES_NUMBER,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=True,
        is_verified=False,
        series_description=SERIES_DESCRIPTION,
    )
    sr.ContributingEquipmentSequence = [
        contributing_equipment(pred.model_name, pred.model_version, pred.model_sha256)
    ]
    if not include_identity:
        mark_deidentified(sr, "Slicewise: identifiers omitted, UIDs retained")
    else:
        add_optional_identity(sr, source)
    return sr
