"""The provisional stack (issue 14): the first files read, offered before a big folder's scan ends,
show the right slices with their own positions; files without pixels give none."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.factories import write_ct_series
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import Stack
from viewer.core.dicom.volume import StackVolume


def test_the_provisional_stack_shows_the_right_slices(tmp_path: Path) -> None:
    write_ct_series(tmp_path, 40, rows=32, columns=32, spacing_z=2.5)  # shuffled, random names
    early: list[Stack] = []
    report = load_paths([tmp_path], on_provisional=early.append)
    (final,) = report.all_stacks()
    assert len(early) == 1
    provisional = early[0]
    assert 0 < len(provisional) < len(final)  # from the first files read, before the scan ended
    by_uid = {info.sop_instance_uid: (k, info) for k, info in enumerate(final.slices)}
    positions = [info.position for info in provisional.slices]
    assert all(p is not None for p in positions)
    assert [p[2] for p in positions if p] == sorted(p[2] for p in positions if p)
    with StackVolume(provisional) as early_vol, StackVolume(final) as final_vol:
        for j, info in enumerate(provisional.slices):
            k, same = by_uid[info.sop_instance_uid]
            assert info.position == same.position  # labelled with its own position, as in the final stack
            np.testing.assert_array_equal(early_vol.get_slice(j), final_vol.get_slice(k))


def test_no_provisional_stack_from_files_without_pixels(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not DICOM")
    early: list[Stack] = []
    report = load_paths([tmp_path], on_provisional=early.append)
    assert not report.all_stacks()
    assert early == []
