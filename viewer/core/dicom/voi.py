"""The header's VOI transform beyond a linear window: VOI LUT Function and the VOI LUT Sequence.

The maths is pydicom's (:func:`pydicom.pixels.apply_voi_lut` and its two halves): the header pass keeps
the LUT entries as pydicom decodes them, and :func:`display_ramp` samples pydicom's windowing over the
range that matters, so the viewer can show it as levels plus a lookup table. Only the header (default)
window uses this; presets and manual windowing stay linear (:mod:`viewer.core.windowing`). pydicom is
imported only when a header has a VOI to read (``model.py`` imports this module).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from viewer.core.constants import Window

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

RAMP_SAMPLES: Final = 4096  # samples of a VOI function across its display range
SIGMOID_SPAN: Final = 2.0  # sample the sigmoid over centre ± 2 widths: beyond it, < 1/2900 from 0 or 1
_RAMP_BITS: Final = 16  # the synthetic dataset's output range for pydicom's windowing (0 .. 2**16 - 1)
_INTERNED: dict[VoiLut, VoiLut] = {}
_MAX_INTERNED: Final = 64


class VoiFunction(str, Enum):
    """VOI LUT Function (0028,1056); LINEAR when absent."""

    LINEAR = "LINEAR"
    LINEAR_EXACT = "LINEAR_EXACT"
    SIGMOID = "SIGMOID"


@dataclass(frozen=True)
class VoiLut:
    """The first item of a VOI LUT Sequence: input ``first_mapped`` .. ``first_mapped + n - 1`` maps to
    ``entries`` (uint16, little endian), whose nominal range is 0 .. 2**bits - 1."""

    first_mapped: int
    bits: int
    entries: bytes

    def values(self) -> np.ndarray:
        return np.frombuffer(self.entries, dtype="<u2")


@dataclass(frozen=True)
class VoiRamp:
    """How to show a non-linear VOI: data at ``levels[0]`` .. ``levels[1]`` spread over ``values``
    (float32 in [0, 1], evenly spaced bins; values outside the levels take the end values)."""

    levels: tuple[float, float]
    values: np.ndarray
    label: str


def voi_function(value: Any) -> VoiFunction:
    """The VOI LUT Function of a header value; LINEAR for a missing or unknown one (logged)."""
    text = str(value or "").strip().upper()
    if not text:
        return VoiFunction.LINEAR
    try:
        return VoiFunction(text)
    except ValueError:
        logger.warning("Unknown VOI LUT Function in a header: using LINEAR")
        return VoiFunction.LINEAR


def read_voi_lut(ds: Dataset) -> VoiLut | None:
    """The dataset's first VOI LUT (decoded by pydicom), or None if it has none or it is malformed."""
    from pydicom.pixels import apply_voi

    try:
        seq = ds.get("VOILUTSequence")
        if not seq:
            return None
        n_entries, first, bits = (int(v) for v in seq[0].LUTDescriptor)
        n_entries = n_entries or 2**16
        entries = apply_voi(np.arange(first, first + n_entries), ds, 0)
    except Exception as exc:  # malformed descriptor or data, unsupported bit depth (pydicom raises)
        logger.warning("Ignoring an unreadable VOI LUT Sequence (%s)", type(exc).__name__)
        return None
    lut = VoiLut(first, bits, np.asarray(entries, dtype="<u2").tobytes())
    if len(_INTERNED) >= _MAX_INTERNED:
        _INTERNED.clear()
    return _INTERNED.setdefault(lut, lut)  # the slices of a series share one copy


def display_ramp(
    window: Window | None, function: VoiFunction, lut: VoiLut | None, *, samples: int = RAMP_SAMPLES
) -> VoiRamp | None:
    """The header VOI as a ramp, or None when it is a plain LINEAR window (shown as a linear window).

    The VOI LUT wins over a window when a header has both (``apply_voi_lut(prefer_lut=True)``).
    """
    if lut is not None:
        values = lut.values().astype(np.float32)
        top = max(float(2**lut.bits - 1), float(values.max(initial=0.0)), 1.0)
        start = float(lut.first_mapped)
        return VoiRamp((start, start + len(values)), values / np.float32(top), "VOI LUT")
    if window is None or function == VoiFunction.LINEAR:
        return None
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_voi_lut

    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored = _RAMP_BITS
    ds.PixelRepresentation = 0
    ds.WindowCenter = window.level
    ds.WindowWidth = window.width
    ds.VOILUTFunction = function.value
    if function == VoiFunction.SIGMOID:
        low, high = window.level - SIGMOID_SPAN * window.width, window.level + SIGMOID_SPAN * window.width
    else:
        low, high = window.low, window.high
    step = (high - low) / samples
    centres = low + step * (np.arange(samples) + 0.5)
    out = apply_voi_lut(centres, ds)
    values = (np.asarray(out, dtype=np.float64) / (2**_RAMP_BITS - 1)).astype(np.float32)
    label = f"W {window.width:.0f}  L {window.level:.0f}  {function.value}"
    return VoiRamp((float(low), float(high)), np.clip(values, 0.0, 1.0), label)


__all__ = ["VoiFunction", "VoiLut", "VoiRamp", "display_ramp", "read_voi_lut", "voi_function"]
