"""How a bleed volume is made from a class's probability map (metadata ``maps`` -> ``volume``).

- ``mask`` (the default, and what a model without a ``volume`` entry gets): the voxels at or above the
  class's map threshold (the pixels the overlay and the DICOM SEG show) x the voxel volume.
- ``soft``: the expected volume, sum over the voxels of the class's probability (probabilities below
  ``floor`` count 0) x the class's calibration ``scale`` x the voxel volume. The maps are trained
  against the generator's blood fractions, so the summed probability estimates the summed fraction
  (the true volume) without the loss a threshold makes on thin or faint collections; ``scale``
  corrects a class's calibration (fitted on validation studies, ``slicewise-train maps-volume``).
  ``any`` is the union: per voxel the scaled probabilities of the classes summed and capped at 1.

A :class:`VolumeEstimator` turns a slice's per-class byte histograms and pixels into volumes in voxels;
:class:`viewer.core.inference.maps.SegmentationPrediction` multiplies by the voxel volume.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from viewer.core.errors import ModelContractError

LEVELS = 256  # the pixel-grid maps are uint8 probability x 255


class VolumeMethod(str, Enum):
    MASK = "mask"
    SOFT = "soft"


@dataclass(frozen=True)
class VolumeEstimator:
    """Metadata ``maps.volume``: the method, and for ``soft`` the floor and the per-class scales."""

    method: VolumeMethod = VolumeMethod.MASK
    floor: float = 0.0  # soft: a probability below it counts 0
    scales: tuple[float, ...] = ()  # soft: per class (the maps' class order); () = 1 for every class
    chosen_on: str = ""

    def scale(self, k: int) -> float:
        return self.scales[k] if self.scales else 1.0

    def weight_tables(self, classes: int) -> np.ndarray:
        """float64 (classes, 256): the volume (in voxels) one pixel of byte value v adds to class k
        (``soft``; the ``mask`` method counts pixels at the thresholds instead)."""
        values = np.arange(LEVELS, dtype=np.float64) / 255.0
        values[values < self.floor - 1e-9] = 0.0
        return np.stack([values * self.scale(k) for k in range(classes)])

    def to_metadata(self, class_names: Sequence[str]) -> dict[str, object]:
        out: dict[str, object] = {"method": self.method.value}
        if self.method is VolumeMethod.SOFT:
            out["floor"] = self.floor
            out["scales"] = {n: self.scale(k) for k, n in enumerate(class_names)}
        if self.chosen_on:
            out["chosen_on"] = self.chosen_on
        return out


#: the volume of a model whose metadata has no ``volume`` entry: the voxels of the masks
MASK_VOLUME = VolumeEstimator()


def parse_volume(raw: object, class_names: Sequence[str]) -> VolumeEstimator:
    """``maps.volume`` (None: absent) -> :class:`VolumeEstimator`; ModelContractError naming the fault."""
    if raw is None:
        return MASK_VOLUME
    if not isinstance(raw, Mapping):
        raise ModelContractError("metadata 'maps' volume must be an object {method, floor, scales}")
    method = raw.get("method", VolumeMethod.MASK.value)
    if method not in {m.value for m in VolumeMethod}:
        raise ModelContractError(
            f"metadata 'maps' volume method is {str(method)[:40]!r}; this Slicewise reads "
            f"{', '.join(m.value for m in VolumeMethod)}"
        )
    chosen_on = str(raw.get("chosen_on", ""))
    if method == VolumeMethod.MASK.value:
        return VolumeEstimator(chosen_on=chosen_on)
    floor = raw.get("floor", 0.0)
    if not _number_in(floor, 0.0, 1.0):
        raise ModelContractError("metadata 'maps' volume floor must be a number in [0, 1]")
    scales = raw.get("scales", {})
    if not isinstance(scales, Mapping) or any(n not in class_names for n in scales):
        raise ModelContractError(
            f"metadata 'maps' volume scales must be an object {{class: factor}} over the maps' classes, "
            f"got {json.dumps(scales)[:80]}"
        )
    if not all(_number_in(v, 0.01, 100.0) for v in scales.values()):
        raise ModelContractError("metadata 'maps' volume scales must be numbers in [0.01, 100]")
    return VolumeEstimator(
        method=VolumeMethod.SOFT,
        floor=float(floor),
        scales=tuple(float(scales.get(n, 1.0)) for n in class_names),
        chosen_on=chosen_on,
    )


def _number_in(value: object, lo: float, hi: float) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and lo <= value <= hi
    )
