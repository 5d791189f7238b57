"""What a bleed volume says on screen and in ``slicewise predict``'s JSON, so that it never reads as
something it is not: "0.0 mL" beside a class the slice classifier flags (the demo study's
intraparenchymal class: flagged on slices 26-28, but its localisation map has no voxel at its threshold)
read as a measured empty volume.

* a volume of at least 0.05 mL: its value at one decimal ("12.3");
* above zero but below that (or voxels at the threshold with a smaller estimate): "< 0.1";
* nothing at the map's threshold for a class the classifier flags (study decision or flagged slices):
  "–", *not measurable: the map is below its threshold*;
* nothing for a class not flagged: "0.0" (true: nothing found, nothing flagged);
* a class whose map is not shown because the classifier does not flag it: "–" (*no volume: not flagged*;
  its map's voxels would otherwise read as a finding the classifier does not make);
* no voxel size (PixelSpacing or slice spacing missing): "" (*not measurable: no voxel size*).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

SHOWN_MIN_ML = 0.05  # smaller volumes round to "0.0" at one decimal


class VolumeState(str, Enum):
    MEASURED = "measured"
    BELOW_ONE_DECIMAL = "below 0.1 mL"
    MAP_BELOW_THRESHOLD = "not measurable: map below threshold"
    NONE = "none"
    NOT_SHOWN = "no volume: the class is not flagged"
    NO_VOXEL_SIZE = "not measurable: no voxel size"


@dataclass(frozen=True)
class VolumeReading:
    """One class's volume as the maps measured it: ``ml`` (None without a voxel size), the ``voxels`` at
    the map threshold, and whether the slice classifier flags the class (its study decision or a slice
    at or above its slice threshold); ``shown``: False when the class's map is not shown (not flagged)."""

    ml: float | None
    voxels: int
    flagged: bool
    shown: bool = True

    @property
    def state(self) -> VolumeState:
        if not self.shown:
            return VolumeState.NOT_SHOWN
        if self.ml is None:
            return VolumeState.NO_VOXEL_SIZE
        if self.ml >= SHOWN_MIN_ML:
            return VolumeState.MEASURED
        if self.ml > 0 or self.voxels > 0:
            return VolumeState.BELOW_ONE_DECIMAL
        return VolumeState.MAP_BELOW_THRESHOLD if self.flagged else VolumeState.NONE

    @property
    def measured_ml(self) -> float | None:
        """The volume as a measurement to record (an SR's), or None where there is none: no voxel size, or
        a flagged class whose map is below its threshold (recording 0.0 mL there would state a measured
        empty volume)."""
        if self.state in (VolumeState.MAP_BELOW_THRESHOLD, VolumeState.NOT_SHOWN, VolumeState.NO_VOXEL_SIZE):
            return None
        return self.ml

    @property
    def text(self) -> str:
        """For a narrow "mL" column: "12.3", "< 0.1", "–", "0.0" or ""."""
        state = self.state
        if state is VolumeState.MEASURED:
            return f"{self.ml:.1f}"
        return {
            VolumeState.BELOW_ONE_DECIMAL: "< 0.1",
            VolumeState.MAP_BELOW_THRESHOLD: "–",
            VolumeState.NONE: "0.0",
            VolumeState.NOT_SHOWN: "–",
            VolumeState.NO_VOXEL_SIZE: "",
        }[state]

    @property
    def note(self) -> str:
        """A sentence for a tooltip or a report: the volume with its unit, or why there is none."""
        state = self.state
        if state is VolumeState.MEASURED:
            return f"{self.ml:.1f} mL"
        if state is VolumeState.BELOW_ONE_DECIMAL:
            return f"< 0.1 mL ({self.voxels} voxels at the map threshold)"
        if state is VolumeState.MAP_BELOW_THRESHOLD:
            return (
                "volume not measurable: the localisation map is below its threshold on every slice, "
                "although the slice classifier flags this class"
            )
        if state is VolumeState.NONE:
            return "0.0 mL (nothing at the map threshold; the class is not flagged)"
        if state is VolumeState.NOT_SHOWN:
            if self.flagged:  # any: flagged slices, but no subtype of it flagged, so no map is shown
                return "no volume: the slice classifier flags no subtype, so no localisation map is shown"
            return (
                "no volume: the slice classifier does not flag this class, so its localisation map is "
                "not shown"
            )
        return "volume not measurable: the stack has no voxel size (PixelSpacing or slice spacing)"
