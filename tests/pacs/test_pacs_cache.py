"""The retrieved-instance cache without a server: checks on arrival, atomic private files, hashed names,
eviction of the least recently used study first (never a pinned one)."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.factories import CANARY_ID, CANARY_NAME, write_ct_series
from viewer.core.errors import PacsResponseError
from viewer.core.pacs import InstanceCache
from viewer.core.pacs.cache import inspect_instance, parse_instance


def _series(tmp_path: Path, n: int = 3, name: str = "s") -> tuple[str, str, list[bytes]]:
    paths = write_ct_series(tmp_path / name, n, rows=32, columns=32)
    head = dcmread(paths[0], stop_before_pixels=True)
    return str(head.StudyInstanceUID), str(head.SeriesInstanceUID), [p.read_bytes() for p in paths]


def test_put_checks_and_writes_privately_under_hashed_names(tmp_path: Path) -> None:
    cache = InstanceCache(tmp_path / "cache")
    study, series, blobs = _series(tmp_path)
    folder = cache.series_folder("node", study, series)
    items = [cache.put(folder, blob, expect_series=series) for blob in blobs]
    for item, blob in zip(items, blobs, strict=True):
        assert item.path.read_bytes() == blob
        assert stat.S_IMODE(item.path.stat().st_mode) == 0o600
        assert item.sop_instance_uid not in str(item.path) and study not in str(item.path)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert CANARY_NAME not in str(folder) and CANARY_ID not in str(folder)
    assert set(cache.cached(folder, series, [i.sop_instance_uid for i in items])) == {
        i.sop_instance_uid for i in items
    }


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-100], "Pixel data truncated"),
        (lambda b: b[:128] + b"XXXX" + b[132:], "not a readable DICOM file"),
        (lambda b: b[:200], "not a readable DICOM file|lacks a required element"),
    ],
)
def test_damaged_instances_are_refused_and_leave_nothing(
    tmp_path: Path, damage: Callable[[bytes], bytes], message: str
) -> None:
    cache = InstanceCache(tmp_path / "cache")
    study, series, blobs = _series(tmp_path, 1)
    folder = cache.series_folder("node", study, series)
    with pytest.raises(PacsResponseError, match=message):
        cache.put(folder, damage(blobs[0]))
    assert list(folder.iterdir()) == []


def test_inspect_reports_the_stored_encoding(tmp_path: Path) -> None:
    _, series, blobs = _series(tmp_path, 1)
    head = inspect_instance(blobs[0])
    assert head.series_uid == series and head.transfer_syntax == "1.2.840.10008.1.2.1"


def test_eviction_removes_least_recently_used_studies_first_never_pinned(tmp_path: Path) -> None:
    cache = InstanceCache(tmp_path / "cache", budget_bytes=1)
    folders = []
    for k in range(3):
        study, series, blobs = _series(tmp_path, 2, name=f"s{k}")
        folder = cache.series_folder("node", study, series)
        for blob in blobs:
            cache.put(folder, blob)
        folders.append(folder.parent)
    cache.touch(folders[0])  # opened again: now the most recently used
    size_one = sum(p.stat().st_size for p in folders[0].rglob("*") if p.is_file())
    cache.budget_bytes = 2 * size_one + 10  # room for two studies
    assert cache.evict().removed == (folders[1],)  # the least recently used
    cache.budget_bytes = 1
    cache.pin(folders[2])
    assert cache.evict().removed == (folders[0],)  # the pinned older one stays
    cache.unpin(folders[2])
    assert cache.evict().removed == (folders[2],)
    assert cache.size_bytes() == 0


def test_stale_partial_files_are_removed(tmp_path: Path) -> None:
    cache = InstanceCache(tmp_path / "cache")
    folder = cache.series_folder("node", "1.2", "1.2.3")
    (folder / ".part-abc").write_bytes(b"half")
    cache.series_folder("node", "1.2", "1.2.3")
    assert not (folder / ".part-abc").exists()


@pytest.mark.parametrize("cut", [0, 2, 64 * 1024])
def test_large_pixel_data_is_checked_where_it_lies_in_the_bytes(tmp_path: Path, cut: int) -> None:
    """A 512 x 512 instance: its pixel data (over the parse's defer size) is located in the bytes as
    received, not read into the dataset; a short tail is still refused, a whole one kept byte for byte."""
    path = write_ct_series(tmp_path / "big", 1, rows=512, columns=512)[0]
    blob = path.read_bytes()
    assert parse_instance(blob).get_item(0x7FE00010, keep_deferred=True).value is None  # located, not read
    cache = InstanceCache(tmp_path / "cache")
    head = dcmread(path, stop_before_pixels=True)
    folder = cache.series_folder("node", str(head.StudyInstanceUID), str(head.SeriesInstanceUID))
    if cut == 0:
        assert cache.put(folder, blob).path.read_bytes() == blob
    else:
        with pytest.raises(PacsResponseError, match=rf"Pixel data truncated: {512 * 512 * 2 - cut} of"):
            cache.put(folder, blob[:-cut])
        assert list(folder.iterdir()) == []


def test_a_leftover_temporary_file_of_the_same_name_is_replaced_not_written_into(tmp_path: Path) -> None:
    """The temporary name is the final name's plus this process and thread: a leftover of a killed process
    that had the same ones is removed and the instance written whole."""
    import threading

    cache = InstanceCache(tmp_path / "cache")
    study, series, blobs = _series(tmp_path, 1)
    folder = cache.series_folder("node", study, series)
    sop = str(dcmread(io.BytesIO(blobs[0]), stop_before_pixels=True).SOPInstanceUID)
    final = cache.instance_path(folder, sop)
    leftover = folder / f".part-{final.stem}-{os.getpid()}-{threading.get_ident():x}"
    leftover.write_bytes(b"half of an earlier write" * 1000)
    item = cache.put(folder, blobs[0], expect_series=series)
    assert item.path == final and final.read_bytes() == blobs[0]
    assert sorted(p.name for p in folder.iterdir()) == [final.name]
