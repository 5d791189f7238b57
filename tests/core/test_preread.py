"""Pixels read during a whole-volume scan (issue 14, ``load_paths(whole_volume=True)``, ``preread``).

Every volume built from the slices staged during the scan must equal the one the normal path reads
afterwards (same values, dtype, bad slices), whatever order the instance numbers give, and the scan
itself must report exactly what it reports without the reads. Real files: ``tests/factories``' CT
series and pydicom's own test files.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files

from tests.factories import write_ct_series
from viewer.core.dicom.header import read_header
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import LoadReport, SliceSource, Stack
from viewer.core.dicom.preread import PreRead, _permute, stageable
from viewer.core.dicom.volume import StackVolume
from viewer.core.errors import LoadCancelled


def _testdata(name: str) -> Path:
    found = get_testdata_file(name)
    assert isinstance(found, str)
    return Path(found)


def _plain_volumes(folder: Path) -> dict[str, tuple[np.ndarray, dict[int, str]]]:
    report = load_paths([folder])
    assert report.preread is None
    out = {}
    for stack in report.all_stacks():
        if stack.is_color:
            continue
        with StackVolume(stack) as vol:
            out[stack.uid] = (vol.load_all(), dict(vol.bad_slices))
    return out


def _staged_load(report: LoadReport, stack: Stack) -> tuple[np.ndarray, dict[int, str]]:
    with StackVolume(stack, preread=report.preread) as vol:
        return vol.load_all(), dict(vol.bad_slices)


def _claim_all(report: LoadReport) -> tuple[np.ndarray, np.ndarray]:
    """The one stack's claim, made directly: (volume, staged mask)."""
    (stack,) = report.all_stacks()
    assert report.preread is not None
    claimed = report.preread.claim(stack, np.dtype(np.int16))
    assert claimed is not None
    return claimed


def _renumber(paths: list[Path], numbers: list[int]) -> None:
    for path, number in zip(paths, numbers, strict=True):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = number
        ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("order", ["ascending", "descending", "shuffled"])
def test_the_staged_volume_equals_the_normal_load(tmp_path: Path, order: str) -> None:
    """Instance numbers rising with the position, falling with it (as many head CTs), or in no order
    (the slices are moved into place): the same volume as the normal path, every slice staged."""
    paths = write_ct_series(tmp_path, 48, rows=24, columns=20, spacing_z=2.0, seed=7)  # ascending z
    if order == "descending":
        _renumber(paths, [48 - k for k in range(48)])
    elif order == "shuffled":
        rng = np.random.default_rng(3)
        _renumber(paths, [int(v) + 1 for v in rng.permutation(48)])
    expected = _plain_volumes(tmp_path)
    report = load_paths([tmp_path], whole_volume=True)
    (stack,) = report.all_stacks()
    volume, staged = _claim_all(report)
    assert staged.all()
    np.testing.assert_array_equal(volume, expected[stack.uid][0])
    assert volume.dtype == np.int16 and volume.flags.c_contiguous
    assert [int(volume[k, 0, 0]) for k in range(48)] == list(range(48))  # slice k holds HU k there


def test_the_scan_reports_the_same_with_and_without_the_reads(tmp_path: Path) -> None:
    """pydicom's test files (odd, broken, compressed, multi-frame, DICOMDIRs) plus a CT series: the
    patient tree, skipped files and warnings are identical; each greyscale stack's volume too."""
    for k, name in enumerate(get_testdata_files()):
        src = Path(name)
        if src.is_file() and src.stat().st_size < 2_000_000:
            shutil.copy(src, tmp_path / f"{k:03d}_{src.name}")
    write_ct_series(tmp_path / "ct", 40, rows=16, columns=16, seed=2)
    plain = load_paths([tmp_path])
    staged = load_paths([tmp_path], whole_volume=True)
    assert staged.preread is not None
    assert staged.patients == plain.patients
    assert sorted(staged.skipped, key=repr) == sorted(plain.skipped, key=repr)
    assert staged.warnings == plain.warnings
    expected = _plain_volumes(tmp_path)
    compared = 0
    for stack in staged.all_stacks():
        if stack.uid not in expected:
            continue
        got, bad = _staged_load(staged, stack)
        want, want_bad = expected[stack.uid]
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype and bad == want_bad
        compared += 1
    assert compared >= 10 and staged.preread.claimed


def test_pydicom_ct_small_copies_as_a_series(tmp_path: Path) -> None:
    """pydicom's CT_small.dcm (signed 16-bit, intercept -1024) as a 40-slice series: staged, and the
    same volume as the normal path (and as pydicom's own pixel_array + intercept)."""
    base = pydicom.dcmread(_testdata("CT_small.dcm"))
    for k in range(40):
        ds = base.copy()
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = 40 - k
        ds.ImagePositionPatient = [0.0, 0.0, float(k)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        arr = base.pixel_array.copy()
        arr[0, 0] = k
        ds.PixelData = arr.tobytes()
        ds.save_as(tmp_path / f"ct{(k * 7919) % 1000:03d}_{k}.dcm", enforce_file_format=True)
    expected = _plain_volumes(tmp_path)
    report = load_paths([tmp_path], whole_volume=True)
    (stack,) = report.all_stacks()
    got, bad = _staged_load(report, stack)
    np.testing.assert_array_equal(got, expected[stack.uid][0])
    assert bad == {}
    want0 = base.pixel_array.astype(np.int16) + np.int16(int(base.RescaleIntercept))
    np.testing.assert_array_equal(got[5, 1:], want0[1:])


def test_truncated_and_overflowing_slices_go_the_normal_way(tmp_path: Path) -> None:
    """A slice cut short is a bad slice, a slice whose values do not fit int16 makes the volume
    float32: exactly as without the reads."""
    paths = write_ct_series(tmp_path, 40, rows=16, columns=16, seed=5)
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[:-100])  # truncated pixel data
    expected = _plain_volumes(tmp_path)
    report = load_paths([tmp_path], whole_volume=True)
    (stack,) = report.all_stacks()
    got, bad = _staged_load(report, stack)
    np.testing.assert_array_equal(got, expected[stack.uid][0])
    assert bad == expected[stack.uid][1] and 3 in bad

    ds = pydicom.dcmread(paths[10])
    arr = ds.pixel_array.copy()
    arr[0, 1] = -32000  # + intercept -1024 is below int16
    ds.PixelData = arr.tobytes()
    ds.save_as(paths[10], enforce_file_format=True)
    expected = _plain_volumes(tmp_path)
    report = load_paths([tmp_path], whole_volume=True)
    (stack,) = report.all_stacks()
    got, bad = _staged_load(report, stack)
    assert got.dtype == np.float32 == expected[stack.uid][0].dtype
    np.testing.assert_array_equal(got, expected[stack.uid][0])
    assert got[10, 0, 1] == -33024.0


def test_two_series_only_the_first_is_staged_and_each_volume_is_right(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "a", 36, rows=16, columns=16, seed=1)
    write_ct_series(tmp_path / "b", 36, rows=16, columns=16, seed=2)
    write_ct_series(tmp_path / "c", 20, rows=8, columns=8, seed=3)  # another size
    expected = _plain_volumes(tmp_path)
    report = load_paths([tmp_path], whole_volume=True)
    stacks = report.all_stacks()
    assert len(stacks) == 3
    preread = report.preread
    assert preread is not None
    claimed = []
    for stack in stacks:
        before = preread.claimed
        got, bad = _staged_load(report, stack)
        np.testing.assert_array_equal(got, expected[stack.uid][0])
        assert bad == expected[stack.uid][1]
        claimed.append(preread.claimed and not before)
    assert claimed.count(True) == 1  # the series of the first file read, whichever that was


def test_a_stack_of_other_files_claims_nothing(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "a", 40, rows=16, columns=16, seed=1)
    other = load_paths([tmp_path / "a"])
    write_ct_series(tmp_path / "b", 40, rows=16, columns=16, seed=2)
    report = load_paths([tmp_path / "b"], whole_volume=True)
    assert report.preread is not None
    (foreign,) = other.all_stacks()
    assert report.preread.claim(foreign, np.dtype(np.int16)) is None
    assert report.preread.claim(report.all_stacks()[0], np.dtype(np.float32)) is None
    volume, staged = _claim_all(report)  # still there for its own stack
    assert staged.all() and volume.shape == (40, 16, 16)
    assert report.preread.claim(report.all_stacks()[0], np.dtype(np.int16)) is None  # claimed once
    assert report.preread.join(10)


def test_cancel_and_release_end_the_reader(tmp_path: Path) -> None:
    write_ct_series(tmp_path, 40, rows=16, columns=16, seed=9)
    report = load_paths([tmp_path], whole_volume=True)
    (stack,) = report.all_stacks()
    preread = report.preread
    assert preread is not None
    with StackVolume(stack, preread=preread) as vol, pytest.raises(LoadCancelled):
        vol.load_all(cancel=lambda: True)
    preread.release()
    assert preread.join(10)
    assert preread.claim(stack, np.dtype(np.int16)) is None
    cancelled = load_paths([tmp_path], whole_volume=True, cancel=lambda: True)
    assert cancelled.cancelled and (cancelled.preread is None)
    small = load_paths([tmp_path / "missing"], whole_volume=True)
    assert small.preread is None  # too few files: nothing read during the scan


def test_what_is_stageable(tmp_path: Path) -> None:
    """Only plain 16-bit greyscale single frames that fit int16 are read during the scan."""
    names = ["CT_small.dcm", "MR_small.dcm", "OBXXXX1A.dcm", "emri_small.dcm", "MR_small_RLE.dcm"]
    for name in [*names, "JPEG2000.dcm", "MR_small_bigendian.dcm"]:
        shutil.copy(_testdata(name), tmp_path / name)
    got = {}
    for path in tmp_path.iterdir():
        records = read_header(SliceSource(path), 0)
        assert isinstance(records, list)
        got[path.name] = stageable(records[0].info)
    assert got["CT_small.dcm"] and got["MR_small.dcm"]
    assert not got["OBXXXX1A.dcm"]  # 8-bit
    assert not got["emri_small.dcm"]  # multi-frame
    assert not got["MR_small_RLE.dcm"] and not got["JPEG2000.dcm"]  # compressed
    assert not got["MR_small_bigendian.dcm"]


def test_permute_moves_every_slice_to_its_index() -> None:
    """Chains, cycles, unstaged slices and sources past the stack's end (a stack shorter than the
    staging volume): every staged slice ends at its index."""
    rng = np.random.default_rng(11)
    for n, slots in [(1, 1), (2, 2), (7, 7), (30, 30), (10, 25), (40, 41)]:
        volume = np.arange(slots, dtype=np.int16)[:, None, None] * np.ones((1, 3, 2), dtype=np.int16)
        source_of = [int(v) for v in rng.permutation(slots)[:n]]
        for k in np.flatnonzero(rng.random(n) < 0.3).tolist():
            source_of[k] = -1
        original = volume.copy()
        _permute(volume, source_of)
        for i, slot in enumerate(source_of):
            if slot >= 0:
                np.testing.assert_array_equal(volume[i], original[slot])
            elif i not in source_of:  # an unstaged slice whose content nobody needed: untouched
                np.testing.assert_array_equal(volume[i], original[i])


def test_no_reads_for_a_viewer_scan(tmp_path: Path) -> None:
    write_ct_series(tmp_path, 40, rows=16, columns=16, seed=9)
    assert load_paths([tmp_path]).preread is None
    assert isinstance(load_paths([tmp_path], whole_volume=True).preread, PreRead)


def test_a_file_swapped_for_a_fifo_after_the_scan_does_not_block_the_load(tmp_path: Path) -> None:
    """The whole-volume read opens files like the scan does (non-blocking, regular files only): a
    slice whose file became a named pipe since the scan is a bad slice, not a load stuck in open()."""
    paths = write_ct_series(tmp_path, 12, rows=16, columns=16, seed=4)
    report = load_paths([tmp_path])
    (stack,) = report.all_stacks()
    paths[5].unlink()
    os.mkfifo(paths[5])
    result: list[dict[int, str]] = []

    def load() -> None:
        with StackVolume(stack) as vol:
            vol.load_all()
            result.append(dict(vol.bad_slices))

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # the old open() blocks on the FIFO: give it a writer so the thread ends
        fd = os.open(paths[5], os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        worker.join(20)
        pytest.fail("load_all blocked on a FIFO")
    assert list(result[0]) == [5] and "not a regular file" in result[0][5]
