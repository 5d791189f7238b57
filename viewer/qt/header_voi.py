"""The header's non-linear VOI (SIGMOID, LINEAR_EXACT, a VOI LUT) as pyqtgraph levels plus a lookup table."""

from __future__ import annotations

import logging

import numpy as np

from viewer.core.dicom.model import Stack
from viewer.core.dicom.voi import VoiRamp, display_ramp

logger = logging.getLogger(__name__)


def header_ramp(stack: Stack) -> VoiRamp | None:
    """The middle slice's header VOI as a ramp; None for a plain linear window (or colour, or none)."""
    info = stack.slices[len(stack) // 2]
    if info.is_color:
        return None
    try:
        return display_ramp(info.window, info.voi_function, info.voi_lut)
    except Exception as exc:  # pydicom refuses the header's values: fall back to the linear window
        logger.warning("Header VOI not usable (%s): linear window shown", type(exc).__name__)
        return None


def ramp_lookup_table(ramp: VoiRamp, *, inverted: bool) -> np.ndarray:
    """8-bit grey lookup table for ``ImageItem.setLookupTable`` (levels = ``ramp.levels``)."""
    grey = np.round(ramp.values * 255.0).astype(np.uint8)
    return grey[::-1].copy() if inverted else grey
