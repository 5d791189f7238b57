"""Key Object Selection of an analysed stack: the peak slice of each positive class (IHE AIR "key images").

Document title DCM 113000 "Of Interest" (CID 7010); the algorithm is the observer device; the text
description names the class of each selected slice. No KOS when no class is positive (a KOS must
reference at least one instance, and there is no key image to point at).
"""

from __future__ import annotations

from typing import Final

import highdicom as hd

from viewer.core.airesults import codes as c
from viewer.core.airesults.ai_sr import MANUFACTURER, check_source, contributing_equipment, device_context
from viewer.core.airesults.identity import (
    SourceSeries,
    add_optional_identity,
    mark_deidentified,
    object_uids,
    slice_evidence,
)
from viewer.core.inference.results import StackPrediction

KOS_SERIES_NUMBER: Final = 9902


def key_slices(pred: StackPrediction) -> dict[int, list[str]]:
    """Peak slice index -> the positive classes peaking there (ascending slices)."""
    chosen: dict[int, list[str]] = {}
    for f in pred.findings:
        if f.positive:
            chosen.setdefault(f.peak_slice, []).append(f.class_name)
    return dict(sorted(chosen.items()))


def kos_uids(pred: StackPrediction, include_identity: bool) -> tuple[str, str]:
    return object_uids(
        "kos", pred.model_sha256, pred.stack_uid, pred.slice_uids, pred.study_instance_uid,
        include_identity, pred.study_probs.tolist(),
    )


def build_kos(
    pred: StackPrediction, source: SourceSeries, *, include_identity: bool = False
) -> hd.ko.KeyObjectSelectionDocument | None:
    """The KOS of ``pred``'s positive classes' peak slices, or None when no class is positive."""
    check_source(pred, source)
    peaks = key_slices(pred)
    if not peaks:
        return None
    evidence = slice_evidence(source, include_identity, list(peaks))
    description = "; ".join(f"slice {i + 1}: {', '.join(names)}" for i, names in peaks.items())
    content = hd.ko.KeyObjectSelection(
        document_title=c.KEY_OBJECT_TITLE,
        referenced_objects=evidence,
        observer_device_context=device_context(pred.model_name, pred.model_version, pred.model_sha256),
        description=f"AI peak slices (unverified): {description}"[:1024],
    )
    series_uid, instance_uid = kos_uids(pred, include_identity)
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=evidence,
        content=content,
        series_instance_uid=series_uid,
        series_number=KOS_SERIES_NUMBER,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
    )
    kos.SeriesDescription = "Slicewise AI key images (research use only, unverified)"
    kos.ContributingEquipmentSequence = [
        contributing_equipment(pred.model_name, pred.model_version, pred.model_sha256)
    ]
    if not include_identity:
        mark_deidentified(kos, "Slicewise: identifiers omitted, UIDs retained")
    else:
        add_optional_identity(kos, source)
    return kos
