"""The applicability check: one function for the GUI, ``slicewise predict`` and the review session."""

from __future__ import annotations

import time
from collections.abc import Collection

import numpy as np

from viewer.core.applicability.anatomy import check_pixels
from viewer.core.applicability.codes import Applicability, Scope, ScopeCode, ScopeReason, TrainedRange
from viewer.core.applicability.header import ScopeTags, check_header, read_scope_tags
from viewer.core.applicability.noise import noise_reason
from viewer.core.dicom.model import Stack

# refusals after which the pixels are not HU of one greyscale plane: the pixel check is skipped
_NOT_HU = frozenset({ScopeCode.MODALITY, ScopeCode.COLOR, ScopeCode.TOO_FEW_SLICES, ScopeCode.LOCALIZER})
UNDECODABLE_SHARE = 0.5


def assess_applicability(
    stack: Stack,
    hu: np.ndarray | None,
    *,
    modality: str,
    min_slices: int,
    trained_range: TrainedRange | None,
    bad_slices: Collection[int] = (),
    tags: ScopeTags | None = None,
) -> Applicability:
    """In scope / in scope with caution / out of scope for ``stack`` with the pixels ``hu``.

    ``hu``: (S, rows, cols) HU in the stack's order, or None for a header-only answer (then the
    anatomy is not judged and the answer carries a caution saying so).
    """
    start = time.perf_counter()
    tags = read_scope_tags(stack) if tags is None else tags
    reasons = check_header(
        stack, modality=modality, min_slices=min_slices, trained_range=trained_range, tags=tags
    )
    measures: dict[str, float] = {}
    if not any(r.code in _NOT_HU for r in reasons):
        if hu is None:
            reasons.append(
                ScopeReason(ScopeCode.NOT_HEAD, Scope.CAUTION, "pixels not checked (header-only check)")
            )
        elif len(bad_slices) > UNDECODABLE_SHARE * len(stack):
            reasons.append(
                ScopeReason(
                    ScopeCode.UNDECODABLE,
                    Scope.OUT_OF_SCOPE,
                    f"{len(bad_slices)} of {len(stack)} slices could not be decoded",
                )
            )
        elif hu.ndim != 3 or hu.shape[0] != len(stack):
            reasons.append(
                ScopeReason(
                    ScopeCode.UNDECODABLE,
                    Scope.OUT_OF_SCOPE,
                    f"expected {len(stack)} greyscale slices, got pixels of shape {tuple(hu.shape)}",
                )
            )
        else:
            spacing = stack.slices[0].pixel_spacing if stack.slices else None
            pixel_reasons, measures = check_pixels(hu, max(spacing) if spacing else None, bad_slices)
            reasons.extend(pixel_reasons)
            noisy = (
                noise_reason(measures["noise_hu"], trained_range.noise_hu)
                if "noise_hu" in measures and trained_range is not None
                else None
            )
            if noisy is not None:
                reasons.append(noisy)
    return Applicability.from_reasons(reasons, time.perf_counter() - start, measures)
