"""The volume's memory faulted in during the header scan (issue 14): the reserved memory is the one
load_all fills, with the same values as a plain load; nothing is kept after a claim that does not fit,
a cancelled scan or an unclaimed reservation; the provisional stack shows the right slices."""

from __future__ import annotations

import mmap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.factories import write_ct_series
from viewer.core.dicom import loader, pool, prefault
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import Stack
from viewer.core.dicom.volume import StackVolume


@pytest.fixture(autouse=True)
def _small_volumes_prefaulted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test series are a few MB: reserve and prefault them as the app does volumes over 32 MB."""
    monkeypatch.setattr(loader, "PREFAULT_MIN_BYTES", 0)
    monkeypatch.setattr(pool, "PREFAULT_MIN_BYTES", 0)
    prefault.release()
    yield
    prefault.release()


def _wait_until(cond: object, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if callable(cond) and cond():
            return True
        time.sleep(0.01)
    return False


def _prefault_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("volume-prefault")]


def test_load_all_fills_the_reserved_memory_with_the_same_values(tmp_path: Path) -> None:
    write_ct_series(tmp_path, 24, rows=64, columns=48)
    (plain_stack,) = load_paths([tmp_path]).all_stacks()
    assert prefault.pending() is None  # nothing reserved unless asked
    with StackVolume(plain_stack) as vol:
        expected = vol.load_all()

    report = load_paths([tmp_path], reserve_volume=True)
    reservation = prefault.pending()
    assert reservation is not None
    assert reservation.nbytes == 24 * 64 * 48 * 2  # every file like the first, int16
    (stack,) = report.all_stacks()
    with StackVolume(stack) as vol:
        volume = vol.load_all()
    assert reservation.claimed
    assert prefault.pending() is None
    assert reservation.wait(10)
    assert volume.dtype == expected.dtype == np.int16
    np.testing.assert_array_equal(volume, expected)


def test_a_reservation_too_small_for_the_volume_is_released_not_used() -> None:
    reservation = prefault.reserve(4096)
    volume = pool.allocate_volume((4, 64, 64), np.int16)
    assert volume.shape == (4, 64, 64)
    assert not reservation.claimed
    assert prefault.pending() is None
    assert reservation.wait(10)
    assert reservation.take(16) is None  # released: nothing left to hand out


def test_a_smaller_volume_uses_the_front_of_the_reservation() -> None:
    reservation = prefault.reserve(8 * 64 * 64 * 2)
    volume = pool.allocate_volume((3, 64, 64), np.int16)
    assert reservation.claimed
    volume[:] = 7  # writable, and the tail given back to the system does not overlap it
    assert int(volume.sum()) == 7 * 3 * 64 * 64


def test_a_cancelled_scan_releases_its_reservation(tmp_path: Path) -> None:
    write_ct_series(tmp_path, 48, rows=64, columns=64)  # three chunks of 16: cancelled after the first
    seen: list[prefault.VolumeReservation | None] = []
    stop = threading.Event()

    def on_provisional(stack: Stack) -> None:
        seen.append(prefault.pending())
        stop.set()

    report = load_paths([tmp_path], reserve_volume=True, on_provisional=on_provisional, cancel=stop.is_set)
    assert report.cancelled
    assert seen and seen[0] is not None
    assert prefault.pending() is None
    assert seen[0].wait(10)
    assert not seen[0].claimed
    assert _wait_until(lambda: not _prefault_threads())


def test_an_unclaimed_reservation_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefault, "RESERVATION_TTL_S", 0.05)
    write_ct_series(tmp_path, 8, rows=32, columns=32)
    load_paths([tmp_path], reserve_volume=True)
    reservation = prefault.pending()
    assert reservation is not None
    assert _wait_until(lambda: prefault.pending() is None)
    assert not reservation.claimed
    assert _wait_until(lambda: not _prefault_threads())  # the fault-in thread and the expiry timer


def test_a_newer_reservation_replaces_the_older() -> None:
    first = prefault.reserve(64 * 1024)
    second = prefault.reserve(64 * 1024)
    assert prefault.pending() is second
    assert first.wait(10)
    assert first.take(1) is None


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
    report = load_paths([tmp_path], on_provisional=early.append, reserve_volume=True)
    assert not report.all_stacks()
    assert early == []
    assert prefault.pending() is None


def test_a_folder_of_several_series_faults_in_no_more_than_its_largest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefault, "AHEAD_BYTES", 0)
    for seed, n in ((1, 12), (2, 30), (3, 12)):  # three series in one folder, the files interleaved
        write_ct_series(tmp_path, n, rows=64, columns=64, seed=seed)
    report = load_paths([tmp_path], reserve_volume=True)
    reservation = prefault.pending()
    assert reservation is not None
    assert reservation.nbytes == 54 * 64 * 64 * 2  # mapped (address space) for every file
    assert reservation.wait(10)
    largest = 30 * 64 * 64 * 2
    assert reservation.populated <= -(-largest // mmap.PAGESIZE) * mmap.PAGESIZE < reservation.nbytes
    big = max(report.all_stacks(), key=len)
    with StackVolume(big) as vol:
        volume = vol.load_all()
    assert reservation.claimed
    assert volume.shape == (30, 64, 64)
    assert [int(volume[k, 0, 0]) for k in range(30)] == list(range(30))  # slice k holds k at (0, 0)


def test_without_madvise_pages_are_faulted_in_by_writing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefault, "_MADVISE", None)  # as off Linux or before MADV_POPULATE_WRITE
    reservation = prefault.reserve(6 * 64 * 64 * 2)
    assert reservation.wait(10)
    assert reservation.populated == reservation.nbytes
    volume = pool.allocate_volume((6, 64, 64), np.int16)
    assert reservation.claimed
    volume[:] = -3
    assert int(volume.min()) == int(volume.max()) == -3
