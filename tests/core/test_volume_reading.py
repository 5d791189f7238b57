"""A bleed volume reads as what it is (issue 12: the demo's intraparenchymal class, flagged by the slice
classifier, showed "0.0 mL" although its map had no voxel at its threshold)."""

from __future__ import annotations

import pytest

from viewer.core.inference.volume_reading import VolumeReading, VolumeState


@pytest.mark.parametrize(
    ("ml", "voxels", "flagged", "state", "text"),
    [
        (12.34, 5000, True, VolumeState.MEASURED, "12.3"),
        (0.05, 20, False, VolumeState.MEASURED, "0.1"),
        (0.0499, 20, True, VolumeState.BELOW_ONE_DECIMAL, "< 0.1"),  # rounds to 0.0: not an empty volume
        (0.0, 3, True, VolumeState.BELOW_ONE_DECIMAL, "< 0.1"),  # voxels with no soft volume
        (0.0, 0, True, VolumeState.MAP_BELOW_THRESHOLD, "–"),  # flagged, nothing measured
        (0.0, 0, False, VolumeState.NONE, "0.0"),  # not flagged, nothing found: 0.0 is true
        (None, 10, True, VolumeState.NO_VOXEL_SIZE, ""),
    ],
)
def test_a_volume_reads_as_what_it_is(
    ml: float | None, voxels: int, flagged: bool, state: VolumeState, text: str
) -> None:
    reading = VolumeReading(ml, voxels, flagged)
    assert reading.state is state and reading.text == text
    if state is VolumeState.MAP_BELOW_THRESHOLD:
        assert reading.note.startswith("volume not measurable: the localisation map is below its threshold")
    if state is VolumeState.BELOW_ONE_DECIMAL:
        assert reading.note.startswith(f"< 0.1 mL ({voxels} voxels")


@pytest.mark.parametrize(
    ("flagged", "note"),
    [
        (False, "no volume: the slice classifier does not flag this class"),  # a subtype not flagged
        (True, "no volume: the slice classifier flags no subtype"),  # any: slices flagged, no subtype
    ],
)
def test_a_volume_whose_map_is_not_shown_has_none(flagged: bool, note: str) -> None:
    """A class whose map is not shown (not flagged) has no volume, even where its map found voxels; for
    `any`, flagged on some slices while no subtype is, the note does not say "does not flag this class"
    (a normal study's findings panel said so beside `any`'s flagged slices)."""
    reading = VolumeReading(0.2, 120, flagged, shown=False)
    assert reading.state is VolumeState.NOT_SHOWN and reading.text == "–" and reading.measured_ml is None
    assert reading.note.startswith(note)
