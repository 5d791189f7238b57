"""Values of the applicability check: the decision, the reason codes and the trained range."""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from viewer.core.errors import StackNotSupportedError


class Scope(enum.Enum):
    """Whether the model may be run on a stack. Ordered: a worse reason decides."""

    IN_SCOPE = "in_scope"
    CAUTION = "caution"
    OUT_OF_SCOPE = "out_of_scope"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def label(self) -> str:
        return {"in_scope": "in scope", "caution": "in scope with caution", "out_of_scope": "out of scope"}[
            self.value
        ]


_RANK = {Scope.IN_SCOPE: 0, Scope.CAUTION: 1, Scope.OUT_OF_SCOPE: 2}


class ScopeCode(enum.Enum):
    """Why a stack is cautioned or refused (stable codes for the GUI, ``predict`` output and tests)."""

    MODALITY = "S-MODALITY"  # not the model's modality (e.g. MR)
    COLOR = "S-COLOR"  # colour images
    TOO_FEW_SLICES = "S-TOO-FEW-SLICES"
    LOCALIZER = "S-LOCALIZER"  # scout / topogram
    NOT_AXIAL = "S-NOT-AXIAL"  # coronal, sagittal or oblique reformat
    NO_GEOMETRY = "S-NO-GEOMETRY"  # no ImageOrientationPatient / PixelSpacing: cannot judge
    SLICE_ORDER = "S-SLICE-ORDER"  # not sorted by position (instance number or file order)
    SPACING = "S-SPACING"  # missing slices, uneven spacing, gaps, duplicates
    MATRIX = "S-MATRIX"  # outside the trained matrix range / too small to judge
    PIXEL_SPACING = "S-PIXEL-SPACING"
    FIELD_OF_VIEW = "S-FIELD-OF-VIEW"
    SLICE_THICKNESS = "S-SLICE-THICKNESS"
    SLICE_COUNT = "S-SLICE-COUNT"
    NO_TRAINED_RANGE = "S-NO-TRAINED-RANGE"  # the model's metadata lacks ``trained_range``
    CONTRAST_HEADER = "S-CONTRAST-HEADER"  # ContrastBolusAgent present
    CONTRAST_PIXELS = "S-CONTRAST-PIXELS"  # vessel signature in the HU histogram
    BODY_PART = "S-BODY-PART"  # BodyPartExamined names another body part
    NOT_HEAD = "S-NOT-HEAD"  # no skull ring around brain-density tissue (chest, abdomen, body CT)
    HEAD_SIZE = "S-HEAD-SIZE"  # a ring, but not head-sized in mm
    UNDECODABLE = "S-UNDECODABLE"  # too few slices could be decoded to judge the pixels
    NOISE = "S-NOISE"  # image noise (estimated from the pixels) above the model's trained noise


@dataclass(frozen=True)
class ScopeReason:
    """One finding of the check: code, how serious, and a sentence for people (no identifiers)."""

    code: ScopeCode
    scope: Scope
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "scope": self.scope.value, "message": self.message}


@dataclass(frozen=True)
class Applicability:
    """The check's answer for one stack: the worst reason decides; no reason means in scope."""

    scope: Scope
    reasons: tuple[ScopeReason, ...] = ()
    elapsed_s: float = 0.0
    measures: Mapping[str, float] = field(default_factory=dict)  # numbers behind the pixel check

    @classmethod
    def from_reasons(
        cls, reasons: list[ScopeReason], elapsed_s: float = 0.0, measures: Mapping[str, float] | None = None
    ) -> Applicability:
        worst = max((r.scope for r in reasons), key=lambda s: s.rank, default=Scope.IN_SCOPE)
        ordered = sorted(reasons, key=lambda r: -r.scope.rank)
        return cls(worst, tuple(ordered), elapsed_s, dict(measures or {}))

    @property
    def refused(self) -> bool:
        return self.scope is Scope.OUT_OF_SCOPE

    @property
    def cautioned(self) -> bool:
        return self.scope is Scope.CAUTION

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code.value for r in self.reasons)

    def summary(self) -> str:
        """'Out of scope: <first reason>' / 'In scope with caution: a; b' / 'In scope'."""
        relevant = [r.message for r in self.reasons if r.scope is self.scope]
        head = self.scope.label[0].upper() + self.scope.label[1:]
        return f"{head}: {'; '.join(relevant)}" if relevant else head

    def as_dict(self) -> dict[str, object]:
        return {
            "decision": self.scope.value,
            "codes": list(self.codes),
            "reasons": [r.as_dict() for r in self.reasons],
            "measures": {k: round(float(v), 4) for k, v in self.measures.items()},
        }


Range = tuple[float, float]
RANGE_KEYS: tuple[str, ...] = (
    "pixel_spacing_mm",
    "slice_thickness_mm",
    "field_of_view_mm",
    "matrix",
    "slices",
    "noise_hu",  # image noise (standard deviation in HU, as viewer.core.applicability.noise estimates it)
)


@dataclass(frozen=True)
class TrainedRange:
    """What the model was trained on (model metadata ``trained_range``); None: not recorded."""

    pixel_spacing_mm: Range | None = None
    slice_thickness_mm: Range | None = None
    field_of_view_mm: Range | None = None
    matrix: Range | None = None
    slices: Range | None = None
    noise_hu: Range | None = None


def _finite_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_trained_range(raw: str | None) -> TrainedRange | None:
    """The metadata string -> :class:`TrainedRange`; None when absent; ValueError when malformed."""
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"metadata 'trained_range' is not valid JSON: {raw[:60]!r}") from exc
    if not isinstance(value, Mapping):
        raise ValueError("metadata 'trained_range' must be an object {name: [low, high]}")
    parsed: dict[str, Range] = {}
    for key in RANGE_KEYS:
        item = value.get(key)
        if item is None:
            continue
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(_finite_number(v) for v in item)
            or item[0] > item[1]
        ):
            raise ValueError(f"metadata 'trained_range' {key!r} must be [low, high], got {item!r}")
        parsed[key] = (float(item[0]), float(item[1]))
    return TrainedRange(**parsed)


class OutOfScopeError(StackNotSupportedError):
    """The applicability check refused the stack; ``applicability`` says why (codes and reasons)."""

    def __init__(self, applicability: Applicability) -> None:
        super().__init__(applicability.summary())
        self.applicability = applicability
