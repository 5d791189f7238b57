"""Which SOP classes are result objects, and what kind each is."""

from __future__ import annotations

from enum import Enum


class ResultKind(str, Enum):
    """The kinds of others' result objects Slicewise reads."""

    SEG = "SEG"
    PARAMETRIC_MAP = "Parametric map"
    SR = "SR"
    PRESENTATION_STATE = "Presentation state"

    def __str__(self) -> str:
        return str(self.value)


SEG_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
        "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
    }
)
PARAMETRIC_MAP_CLASS = "1.2.840.10008.5.1.4.1.1.30"
GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy Presentation State
SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."  # every SR class (Basic Text ... Comprehensive 3D, KOS, CAD)


def result_kind(sop_class_uid: str) -> ResultKind | None:
    """The kind of result object a SOP class is, or None for anything else (images, RT, ...)."""
    uid = (sop_class_uid or "").strip()
    if uid in SEG_CLASSES:
        return ResultKind.SEG
    if uid == PARAMETRIC_MAP_CLASS:
        return ResultKind.PARAMETRIC_MAP
    if uid == GSPS_CLASS:
        return ResultKind.PRESENTATION_STATE
    if uid.startswith(SR_PREFIX):
        return ResultKind.SR
    return None
