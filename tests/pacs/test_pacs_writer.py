"""The background writer of a streamed retrieve: everything handed over is kept, in order, with the
cache's checks; a failed write reaches the reading thread as the error it was (no server needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.factories import write_ct_series
from viewer.core.pacs import InstanceCache
from viewer.core.pacs.cache import read_header
from viewer.core.pacs.models import RetrievedInstance
from viewer.core.pacs.retrieve import InstanceSink
from viewer.core.pacs.writer import BackgroundWriter


def _series(tmp_path: Path, n: int) -> tuple[str, str, list[bytes]]:
    paths = write_ct_series(tmp_path / "s", n, rows=16, columns=16, shuffle=False)
    head = dcmread(paths[0], stop_before_pixels=True)
    return str(head.StudyInstanceUID), str(head.SeriesInstanceUID), [p.read_bytes() for p in paths]


def test_instances_are_kept_in_stream_order_with_the_checks(tmp_path: Path) -> None:
    study, series, blobs = _series(tmp_path, 12)
    blobs[5] = blobs[5][:-10]  # a truncated one is refused, the rest kept
    cache = InstanceCache(tmp_path / "cache")
    folder = cache.series_folder("node", study, series)
    arrived: list[RetrievedInstance] = []
    sink = InstanceSink(cache, folder, series, on_instance=arrived.append)
    with BackgroundWriter(sink, max_bytes=3 * len(blobs[0]), threads=1) as writer:  # the reader waits
        for blob in blobs:
            writer.put(blob)
    expected = [read_header(b).sop_instance_uid for k, b in enumerate(blobs) if k != 5]
    assert [a.sop_instance_uid for a in arrived] == expected
    assert [a.path.read_bytes() for a in arrived] == [b for k, b in enumerate(blobs) if k != 5]
    assert list(sink.failures) == [read_header(blobs[5]).sop_instance_uid]
    assert "Pixel data truncated" in sink.failures[read_header(blobs[5]).sop_instance_uid]


@pytest.mark.parametrize("threads", [2, 4])
def test_several_writer_threads_keep_every_instance_once(tmp_path: Path, threads: int) -> None:
    study, series, blobs = _series(tmp_path, 40)
    cache = InstanceCache(tmp_path / "cache")
    folder = cache.series_folder("node", study, series)
    arrived: list[RetrievedInstance] = []
    sink = InstanceSink(cache, folder, series, on_instance=arrived.append)
    with BackgroundWriter(sink, max_bytes=2 * len(blobs[0]), threads=threads) as writer:
        for blob in blobs:
            writer.put(blob)
    uids = [read_header(b).sop_instance_uid for b in blobs]
    assert sorted(a.sop_instance_uid for a in arrived) == sorted(uids)
    assert {a.sop_instance_uid: a.path.read_bytes() for a in arrived} == dict(zip(uids, blobs, strict=True))
    assert sorted(p.name for p in folder.iterdir()) == sorted(a.path.name for a in arrived)  # no .part left


def test_a_failed_write_is_raised_in_the_reading_thread(tmp_path: Path) -> None:
    study, series, blobs = _series(tmp_path, 3)
    cache = InstanceCache(tmp_path / "cache")
    folder = cache.series_folder("node", study, series)
    shutil.rmtree(folder)  # the folder is gone: creating the file fails
    sink = InstanceSink(cache, folder, series)
    with pytest.raises(FileNotFoundError), BackgroundWriter(sink) as writer:
        for blob in blobs:
            writer.put(blob)
    assert sink.received == {}


def test_headers_are_read_on_the_writer_threads(tmp_path: Path) -> None:
    """The reading thread hands over bytes only: an instance without a SOP Instance UID is listed as an
    unnamed failure (the rest kept); bytes that are not DICOM reach the reading thread as pydicom's
    error (the client turns it into a malformed-answer error)."""
    from pydicom.errors import InvalidDicomError

    study, series, blobs = _series(tmp_path, 4)
    ds = dcmread(tmp_path / "s" / sorted(p.name for p in (tmp_path / "s").iterdir())[0])
    del ds.SOPInstanceUID
    no_uid = tmp_path / "no-uid.dcm"
    ds.save_as(no_uid)
    cache = InstanceCache(tmp_path / "cache")
    folder = cache.series_folder("node", study, series)
    sink = InstanceSink(cache, folder, series)
    with BackgroundWriter(sink, threads=2) as writer:
        for blob in [blobs[0], no_uid.read_bytes(), *blobs[1:]]:
            writer.put(blob)
    assert len(sink.received) == 4 and len(sink.unnamed_failures) == 1
    sink = InstanceSink(cache, cache.series_folder("node", study, series), series)
    with pytest.raises(InvalidDicomError), BackgroundWriter(sink, threads=1) as writer:
        writer.put(b"not DICOM at all" * 20)
        writer.finish()
