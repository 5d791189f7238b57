"""Applicability from the header: modality, localizer, orientation, geometry, trained range, contrast.

Never relies on BodyPartExamined alone (often missing or wrong): it only adds a caution; the pixel
check (:mod:`viewer.core.applicability.anatomy`) decides whether the stack shows a head.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from viewer.core.applicability.codes import Range, Scope, ScopeCode, ScopeReason, TrainedRange
from viewer.core.dicom.grouping import slice_normal
from viewer.core.dicom.model import SliceInfo, Stack
from viewer.core.geometry.orientation import classify_normal

log = logging.getLogger(__name__)

AXIAL_TOLERANCE_DEG = 35.0  # slice normal vs the patient's head-foot axis; gantry tilts stay below it
HEAD_BODY_PARTS = frozenset({"HEAD", "BRAIN", "SKULL", "CRANIUM", "HEADNECK", "HEAD_NECK", "NEURO", "ORBIT"})
NO_CONTRAST = frozenset({"", "NONE", "NO", "N/A", "NA", "0"})
MAX_GAP_RATIO = 1.5  # slice spacing beyond this many slice thicknesses leaves anatomy unsampled

SPACING_WARNINGS = ("missing slice", "irregular", "share a position", "share one position")
AddFn = Callable[[ScopeCode, Scope, str], None]


@dataclass(frozen=True)
class ScopeTags:
    """The few header tags the check needs that the viewer's header pass does not keep."""

    contrast_agent: str = ""
    body_part: str = ""


def read_scope_tags(stack: Stack) -> ScopeTags:
    """ContrastBolusAgent and BodyPartExamined of the stack's middle slice (one header read)."""
    if not stack.slices:
        return ScopeTags()
    source = stack.slices[len(stack.slices) // 2].source
    try:
        from pydicom import dcmread

        if source.member is not None:
            from viewer.core.dicom.sources import read_source_bytes

            fp: io.BufferedIOBase | io.BytesIO = io.BytesIO(read_source_bytes(source))
        else:
            fp = source.path.open("rb")
        with fp:
            ds = dcmread(
                fp,
                stop_before_pixels=True,
                force=True,
                specific_tags=["ContrastBolusAgent", "BodyPartExamined"],
            )
        return ScopeTags(
            contrast_agent=str(ds.get("ContrastBolusAgent", "") or "").strip(),
            body_part=str(ds.get("BodyPartExamined", "") or "").strip().upper(),
        )
    except Exception as exc:  # the file vanished or is unreadable: the pixel checks still run
        log.debug("Scope tags unreadable (%s)", type(exc).__name__)
        return ScopeTags()


def _outside(value: float, allowed: Range | None) -> bool:
    if allowed is None:
        return False
    lo, hi = allowed
    slack = 1e-3 * max(abs(lo), abs(hi), 1.0)
    return value < lo - slack or value > hi + slack


def _fmt_range(allowed: Range) -> str:
    lo, hi = allowed
    return f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"


def check_header(
    stack: Stack,
    *,
    modality: str,
    min_slices: int,
    trained_range: TrainedRange | None,
    tags: ScopeTags,
) -> list[ScopeReason]:
    """Every header reason for ``stack`` (empty: nothing in the header argues against the model)."""
    out: list[ScopeReason] = []

    def add(code: ScopeCode, scope: Scope, message: str) -> None:
        out.append(ScopeReason(code, scope, message))

    have = (stack.modality or "?").upper()
    if have != modality.upper():
        add(
            ScopeCode.MODALITY, Scope.OUT_OF_SCOPE, f"the model reads {modality} stacks; this stack is {have}"
        )
    if stack.is_color:
        add(ScopeCode.COLOR, Scope.OUT_OF_SCOPE, "colour images; the model reads greyscale CT")
    if len(stack) < min_slices:
        add(
            ScopeCode.TOO_FEW_SLICES,
            Scope.OUT_OF_SCOPE,
            f"{len(stack)} slice(s); the model needs at least {min_slices} slices",
        )
    if not stack.slices:
        return out
    first = stack.slices[0]
    if stack.label == "localizer" or any("LOCALIZER" in s.image_type for s in stack.slices):
        add(ScopeCode.LOCALIZER, Scope.OUT_OF_SCOPE, "a localizer (scout) image, not cross-sectional slices")
    _orientation(stack, first, add)
    _spacing(stack, add)
    _trained_range(stack, first, trained_range, add)
    agent = tags.contrast_agent
    if agent.upper() not in NO_CONTRAST:
        add(
            ScopeCode.CONTRAST_HEADER,
            Scope.CAUTION,
            "the header names a contrast agent (ContrastBolusAgent); "
            "the model was trained on non-contrast CT",
        )
    if tags.body_part and not any(part in tags.body_part.replace(" ", "") for part in HEAD_BODY_PARTS):
        add(
            ScopeCode.BODY_PART,
            Scope.CAUTION,
            f"BodyPartExamined is {tags.body_part[:16]!r}, not the head",
        )
    return out


def _orientation(stack: Stack, first: SliceInfo, add: AddFn) -> None:
    iops = {s.orientation for s in stack.slices}
    if None in iops:
        add(
            ScopeCode.NO_GEOMETRY,
            Scope.CAUTION,
            "no ImageOrientationPatient: the slice plane cannot be checked (axial assumed)",
        )
        return
    if len(iops) > 1:
        add(ScopeCode.NOT_AXIAL, Scope.OUT_OF_SCOPE, "the slices have different orientations")
        return
    assert first.orientation is not None
    normal = slice_normal(first.orientation)
    if normal is None:
        add(ScopeCode.NO_GEOMETRY, Scope.OUT_OF_SCOPE, "degenerate ImageOrientationPatient")
        return
    angle = math.degrees(math.acos(min(1.0, abs(float(normal[2])))))
    if angle > AXIAL_TOLERANCE_DEG:
        plane = classify_normal(normal).value
        add(
            ScopeCode.NOT_AXIAL,
            Scope.OUT_OF_SCOPE,
            f"{plane} slices (normal {angle:.0f}° from the head-foot axis; the model reads axial slices, "
            f"tolerance {AXIAL_TOLERANCE_DEG:g}°)",
        )
    if stack.sort_method != "position":
        add(
            ScopeCode.SLICE_ORDER,
            Scope.CAUTION,
            f"slices ordered by {stack.sort_method.replace('_', ' ')}, not by position: order not verified",
        )


def _spacing(stack: Stack, add: AddFn) -> None:
    for warning in stack.warnings:
        low = warning.lower()
        if any(word in low for word in SPACING_WARNINGS):
            add(ScopeCode.SPACING, Scope.CAUTION, warning)
    thickness = stack.slices[0].slice_thickness
    spacing = stack.slice_spacing
    if thickness and spacing and spacing > MAX_GAP_RATIO * thickness:
        add(
            ScopeCode.SPACING,
            Scope.CAUTION,
            f"slice spacing {spacing:.2f} mm is more than {MAX_GAP_RATIO:g}× "
            f"the slice thickness {thickness:.2f} mm",
        )


def _trained_range(stack: Stack, first: SliceInfo, allowed: TrainedRange | None, add: AddFn) -> None:
    if first.pixel_spacing is None:
        add(
            ScopeCode.NO_GEOMETRY,
            Scope.CAUTION,
            "no PixelSpacing: field of view and head size in mm cannot be checked",
        )
    if allowed is None:
        add(ScopeCode.NO_TRAINED_RANGE, Scope.CAUTION, "the model's metadata lacks the trained range")
        return
    rows, cols = first.rows, first.columns
    if allowed.matrix is not None and (_outside(rows, allowed.matrix) or _outside(cols, allowed.matrix)):
        add(
            ScopeCode.MATRIX,
            Scope.CAUTION,
            f"matrix {rows}×{cols} outside the trained {_fmt_range(allowed.matrix)}",
        )
    if first.pixel_spacing is not None:
        ps = max(first.pixel_spacing)
        fov = max(rows * first.pixel_spacing[0], cols * first.pixel_spacing[1])
        if _outside(ps, allowed.pixel_spacing_mm) and allowed.pixel_spacing_mm is not None:
            add(
                ScopeCode.PIXEL_SPACING,
                Scope.CAUTION,
                f"pixel spacing {ps:.3f} mm outside the trained {_fmt_range(allowed.pixel_spacing_mm)} mm",
            )
        if _outside(fov, allowed.field_of_view_mm) and allowed.field_of_view_mm is not None:
            add(
                ScopeCode.FIELD_OF_VIEW,
                Scope.CAUTION,
                f"field of view {fov:.0f} mm outside the trained {_fmt_range(allowed.field_of_view_mm)} mm",
            )
    thickness = first.slice_thickness or stack.slice_spacing
    if thickness is None:
        add(ScopeCode.NO_GEOMETRY, Scope.CAUTION, "no SliceThickness or slice positions: thickness unknown")
    elif allowed.slice_thickness_mm is not None and _outside(thickness, allowed.slice_thickness_mm):
        add(
            ScopeCode.SLICE_THICKNESS,
            Scope.CAUTION,
            f"slice thickness {thickness:.2f} mm outside "
            f"the trained {_fmt_range(allowed.slice_thickness_mm)} mm",
        )
    if allowed.slices is not None and _outside(len(stack), allowed.slices):
        add(
            ScopeCode.SLICE_COUNT,
            Scope.CAUTION,
            f"{len(stack)} slices outside the trained {_fmt_range(allowed.slices)}",
        )
