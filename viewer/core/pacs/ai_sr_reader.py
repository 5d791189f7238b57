"""Reading Slicewise AI Result SRs found in a PACS study (for :mod:`viewer.core.pacs.worklist`).

Uses highdicom, whose first use holds the GIL for about a second: the viewer runs
:func:`read_ai_result_file` in the helper process of :mod:`viewer.core.airesults.process`.
"""

from __future__ import annotations

import io
import logging

import highdicom as hd
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from viewer.core.airesults import codes as c
from viewer.core.airesults.ai_sr import MANUFACTURER
from viewer.core.airesults.identity import COMPREHENSIVE_3D_SR
from viewer.core.applicability.codes import Scope
from viewer.core.dicom.model import SliceSource
from viewer.core.errors import DicomError
from viewer.core.pacs.worklist import AiStatus, AiStudyResult

logger = logging.getLogger(__name__)


def _is_slicewise_algorithm(ds: Dataset) -> bool:
    for item in ds.get("ContributingEquipmentSequence", []):
        purposes = item.get("PurposeOfReferenceCodeSequence", [])
        if str(item.get("Manufacturer", "")) != MANUFACTURER:
            continue
        if any(
            str(p.get("CodeValue", "")) == c.PROCESSING_ALGORITHM.value
            and str(p.get("CodingSchemeDesignator", "")) == c.PROCESSING_ALGORITHM.scheme_designator
            for p in purposes
        ):
            return True
    return False


def is_slicewise_ai_sr(ds: Dataset) -> bool:
    """A Comprehensive 3D SR made by Slicewise's algorithm (not a review SR, not another vendor's)."""
    return str(ds.get("SOPClassUID", "")) == COMPREHENSIVE_3D_SR and _is_slicewise_algorithm(ds)


def _same(a: object, b: hd.sr.CodedConcept) -> bool:
    """``a`` is the coded concept ``b`` (same value and scheme)."""
    return (
        isinstance(a, hd.sr.CodedConcept)
        and a.value == b.value
        and a.scheme_designator == b.scheme_designator
    )


def read_ai_result(ds: Dataset) -> AiStudyResult | None:
    """The study decision of a Slicewise AI Result SR (None for any other SR). An SR that claims to be
    Slicewise's but has no readable ``any`` decision is :attr:`AiStatus.UNREADABLE`."""
    if not is_slicewise_ai_sr(ds):
        return None
    uid = str(ds.get("SOPInstanceUID", ""))
    model = str(ds.ContributingEquipmentSequence[0].get("ManufacturerModelName", ""))
    try:
        report = hd.sr.Comprehensive3DSR.from_dataset(ds).content
        if not isinstance(report, hd.sr.MeasurementReport):
            raise ValueError("not a TID 1500 Measurement Report")
        groups = list(report.get_image_measurement_groups())
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        logger.info("AI SR content unreadable (%s)", type(exc).__name__)
        return AiStudyResult(AiStatus.UNREADABLE, None, model, uid)
    out_of_scope = any(
        _same(q.name, c.APPLICABILITY) and _same(q.value, c.SCOPE_CODES[Scope.OUT_OF_SCOPE])
        for g in groups
        for q in g.get_qualitative_evaluations()
    )
    any_code = c.CLASS_CODES["any"]
    decisions: list[bool] = []  # one per finding group with a Present / Absent decision
    prob: float | None = None
    for g in groups:
        if g.finding_type is None:
            continue
        presence = [q.value for q in g.get_qualitative_evaluations() if _same(q.name, c.PRESENCE)]
        if presence and (_same(presence[0], c.PRESENT) or _same(presence[0], c.ABSENT)):
            decisions.append(_same(presence[0], c.PRESENT))
        if _same(g.finding_type, any_code):
            probs = [float(m.value) for m in g.get_measurements() if _same(m.name, c.PROBABILITY)]
            prob = probs[0] if probs else None
    if out_of_scope:
        return AiStudyResult(AiStatus.OUT_OF_SCOPE, prob, model, uid)
    if not decisions:
        return AiStudyResult(AiStatus.UNREADABLE, None, model, uid)
    status = AiStatus.POSITIVE if any(decisions) else AiStatus.NEGATIVE
    return AiStudyResult(status, prob, model, uid)


def read_ai_result_file(source: SliceSource) -> AiStudyResult | None:
    """The AI result of one cached SR (its file, or its member of a cache pack; None: not a Slicewise
    AI SR, or unreadable)."""
    from viewer.core.dicom.sources import read_source_bytes

    try:
        ds = dcmread(io.BytesIO(read_source_bytes(source)))
    except (OSError, ValueError, EOFError, DicomError, InvalidDicomError) as exc:  # damaged in the cache
        logger.info("AI worklist: an SR file could not be read (%s)", type(exc).__name__)
        return None
    return read_ai_result(ds)
