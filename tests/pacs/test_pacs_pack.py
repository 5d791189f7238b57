"""A WADO-RS-retrieved series is kept in one pack file (viewer.core.dicom.pack, viewer.core.pacs.cache_pack):
the loader reads it like an archive and shows the pixels the original files hold; a damaged or truncated
pack or index is refused clearly; a cut stream's resume adds a second pack without duplicates; a killed
writer's half-written member is never counted; eviction removes packs. Against the real Orthanc where a
server is involved."""

from __future__ import annotations

import os
import stat
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from tests.factories import write_ct_series
from tests.pacs.conftest import Loaded, web_node
from tests.pacs.netfaults import CuttingRelay
from viewer.core.codes import Code
from viewer.core.dicom import pack
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import SliceSource, Stack
from viewer.core.dicom.sources import read_source_bytes
from viewer.core.dicom.volume import StackVolume
from viewer.core.errors import PackDamagedError
from viewer.core.pacs import DicomWebClient, InstanceCache, cache_pack
from viewer.core.pacs.cache import read_header


def _pixels(stack: Stack) -> dict[str, np.ndarray]:
    with StackVolume(stack) as volume:  # decoded as the viewer does (RLE, J2K: in decoder processes)
        return {info.sop_instance_uid: volume.get_slice(k) for k, info in enumerate(stack.slices)}


def _only_pack(folder: Path) -> Path:
    (found,) = sorted(folder.glob("*.pack"))
    return found


def test_a_wadors_retrieve_keeps_the_series_in_one_pack_the_loader_reads(
    orthanc: Loaded, cache: InstanceCache
) -> None:
    with DicomWebClient(web_node(orthanc.server)) as client:
        report = client.retrieve_series(orthanc.demo_study_uid, orthanc.demo_series_uid, cache)
    n = len(orthanc.demo_files)
    assert report.complete and len(report.received) == n
    folder = report.folder
    packed = _only_pack(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted([packed.name, pack.index_path(packed).name])
    assert not list(folder.glob("*.dcm"))  # one pack, not a file per instance
    assert {(i.path, i.member is not None) for i in report.received} == {(packed, True)}
    for path in (packed, pack.index_path(packed)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert orthanc.demo_study_uid not in path.name and orthanc.demo_series_uid not in path.name
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # each member is the instance as the server sent it (the stored RLE), read by its own range
    originals = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in orthanc.demo_files}
    for item in report.received:
        member = read_header(read_source_bytes(item.source))
        assert member.sop_instance_uid == item.sop_instance_uid
        stored = originals[item.sop_instance_uid].file_meta.TransferSyntaxUID
        assert str(member.transfer_syntax) == str(stored)

    loaded = load_paths([folder])
    (stack,) = loaded.all_stacks()
    assert len(stack.slices) == n and not loaded.skipped
    assert all(s.source.path == packed and s.source.member for s in stack.slices)
    (reference,) = load_paths(list(orthanc.demo_files)).all_stacks()
    assert [s.sop_instance_uid for s in stack.slices] == [s.sop_instance_uid for s in reference.slices]
    got, want = _pixels(stack), _pixels(reference)
    for uid, image in want.items():
        np.testing.assert_array_equal(got[uid], image)

    # the next retrieve finds the whole series in the pack: nothing is asked for again
    again = DicomWebClient(web_node(orthanc.server))
    try:
        second = again.retrieve_series(orthanc.demo_study_uid, orthanc.demo_series_uid, cache)
    finally:
        again.close()
    assert len(second.cached) == n and second.received == [] and _only_pack(folder) == packed
    assert cache.cached_series_folders("test-orthanc", orthanc.demo_study_uid) == [folder]

    cache.budget_bytes = 0  # eviction removes the study's packs with it
    assert cache.evict().removed == (folder.parent,)
    assert not folder.exists()


def test_a_jpeg2000_instance_in_a_pack_loads_the_original_pixels(
    orthanc: Loaded, cache: InstanceCache
) -> None:
    original = next(p for p in orthanc.vendor_files if p.name == "MR_small_jp2klossless.dcm")
    head = dcmread(original, stop_before_pixels=True)
    with DicomWebClient(web_node(orthanc.server)) as client:
        report = client.retrieve_series(str(head.StudyInstanceUID), str(head.SeriesInstanceUID), cache)
    assert report.complete and all(i.member for i in report.received)
    loaded = load_paths([report.folder])
    (stack,) = loaded.all_stacks()
    (reference,) = load_paths([original]).all_stacks()
    assert stack.slices[0].transfer_syntax_uid == "1.2.840.10008.1.2.4.90"
    uid = str(head.SOPInstanceUID)
    np.testing.assert_array_equal(_pixels(stack)[uid], _pixels(reference)[uid])


def test_a_truncated_pack_is_refused_clearly_and_its_lost_members_fetched_again(
    orthanc: Loaded, cache: InstanceCache
) -> None:
    with DicomWebClient(web_node(orthanc.server)) as client:
        first = client.retrieve_series(orthanc.demo_study_uid, orthanc.demo_series_uid, cache)
        packed = _only_pack(first.folder)
        index = pack.read_index(packed)
        cut = index.entries[len(index.entries) // 2]
        os.truncate(packed, cut.offset + cut.length // 2)  # a member cut in half, the ones after it gone
        intact = {e.sop_instance_uid for e in index.entries if e.offset + e.length <= cut.offset}

        # the loader (the cache opened offline) shows the intact members and says what it refused
        loaded = load_paths([first.folder])
        (stack,) = loaded.all_stacks()
        assert {s.sop_instance_uid for s in stack.slices} == intact
        refused = [s for s in loaded.skipped if s.code == Code.READ]
        (skip,) = refused
        assert "Damaged cache pack" in skip.reason and "outside the pack" in skip.reason
        assert f"({len(index.entries) - len(intact)} line(s) not read)" in skip.reason
        # the cache never counts a member it cannot read whole
        uids = [e.sop_instance_uid for e in index.entries]
        assert set(cache.cached(first.folder, orthanc.demo_series_uid, uids)) == intact

        # the next retrieve drops the damaged pack and fetches the series again, into a new pack
        second = client.retrieve_series(orthanc.demo_study_uid, orthanc.demo_series_uid, cache)
    assert second.complete and len(second.received) == len(orthanc.demo_files)
    assert not packed.exists() and len(list(first.folder.glob("*.pack"))) == 1
    loaded = load_paths([first.folder])
    assert len(loaded.all_stacks()[0].slices) == len(orthanc.demo_files) and not loaded.skipped


def test_a_cut_stream_resumes_into_a_second_pack_without_duplicates(
    orthanc: Loaded, cache: InstanceCache
) -> None:
    server = orthanc.server
    with CuttingRelay(server.http_port, cut_after=2_000_000, cuts=1) as relay:
        url = f"http://127.0.0.1:{relay.port}/dicom-web"
        with DicomWebClient(web_node(server, dicomweb_url=url)) as client:
            report = client.retrieve_series(orthanc.demo_study_uid, orthanc.demo_series_uid, cache)
    assert relay.cuts_done == 1 and report.attempts > 1 and report.complete
    packs = sorted(report.folder.glob("*.pack"))
    assert len(packs) == 2  # the cut round's pack keeps what arrived whole; the resume adds one
    members = Counter(e.sop_instance_uid for p in packs for e in pack.read_index(p).entries)
    assert len(members) == len(orthanc.demo_files) and set(members.values()) == {1}
    loaded = load_paths([report.folder])
    (stack,) = loaded.all_stacks()
    assert len(stack.slices) == len(orthanc.demo_files) and not loaded.skipped


# --- the pack files themselves (no server) ---------------------------------------------------------
def _series(tmp_path: Path, n: int) -> tuple[str, str, list[bytes]]:
    paths = write_ct_series(tmp_path / "s", n, rows=16, columns=16, shuffle=False)
    head = dcmread(paths[0], stop_before_pixels=True)
    return str(head.StudyInstanceUID), str(head.SeriesInstanceUID), [p.read_bytes() for p in paths]


def _packed(tmp_path: Path, blobs: list[bytes], series: str) -> tuple[InstanceCache, Path, Path]:
    cache = InstanceCache(tmp_path / "cache")
    folder = cache.series_folder("node", "1.2", series)
    writer = cache.open_pack(folder)
    try:
        for blob in blobs:
            cache.put(folder, blob, expect_series=series, pack=writer)
    finally:
        writer.close()
    return cache, folder, writer.path


def test_a_killed_writers_half_member_and_torn_index_line_are_never_counted(tmp_path: Path) -> None:
    _study, series, blobs = _series(tmp_path, 4)
    _cache, folder, packed = _packed(tmp_path, blobs[:3], series)
    # killed mid-way through the fourth instance: half its bytes written, half its index line
    sop = read_header(blobs[3]).sop_instance_uid
    line = pack.index_line(sop, packed.stat().st_size, len(blobs[3]), 1, "1.2")
    with packed.open("ab") as fh:
        fh.write(blobs[3][: len(blobs[3]) // 2])
    with pack.index_path(packed).open("ab") as fh:
        fh.write(line[:-9])
    index = pack.read_index(packed)
    assert [e.sop_instance_uid for e in index.entries] == [read_header(b).sop_instance_uid for b in blobs[:3]]
    assert index.problems == []
    assert [read_source_bytes(SliceSource(packed, e.member)) for e in index.entries] == blobs[:3]
    loaded = load_paths([folder])
    assert len(loaded.all_stacks()[0].slices) == 3 and not loaded.skipped


def test_a_pack_left_unfinished_by_a_killed_retrieve_is_named_as_such_and_removed_on_the_next(
    tmp_path: Path,
) -> None:
    """A retrieve killed between creating a pack and renaming it into place left a '.part-' file that
    the loader listed as a damaged pack ("its index is missing") until the series was retrieved again."""
    _study, series, blobs = _series(tmp_path, 2)
    cache, folder, _packed_path = _packed(tmp_path, blobs, series)
    unfinished = folder / ".part-0123abcd-pack"
    unfinished.write_bytes(pack.PACK_MAGIC)
    loaded = load_paths([folder])
    assert len(loaded.all_stacks()[0].slices) == 2
    assert [(s.path, s.reason) for s in loaded.skipped] == [
        (str(unfinished), "An unfinished cache pack: its retrieve was interrupted")
    ]
    cache.series_folder("node", "1.2", series)  # what the next retrieve of the series does first
    assert not unfinished.exists()


def test_an_instance_sent_twice_in_a_round_is_kept_once_and_an_empty_pack_is_removed(
    tmp_path: Path,
) -> None:
    _study, series, blobs = _series(tmp_path, 2)
    _cache, _folder, packed = _packed(tmp_path, [blobs[0], blobs[1], blobs[0]], series)
    assert [e.sop_instance_uid for e in pack.read_index(packed).entries] == [
        read_header(b).sop_instance_uid for b in blobs
    ]
    assert packed.stat().st_size == len(pack.PACK_MAGIC) + len(blobs[0]) + len(blobs[1])
    cache = InstanceCache(tmp_path / "cache2")
    empty_folder = cache.series_folder("node", "1.2", series)
    cache.open_pack(empty_folder).close()
    assert list(empty_folder.iterdir()) == []


def test_a_pack_is_closed_only_after_the_writes_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write runs outside the writer's lock; closing the pack under it closed the descriptor the write
    was using, whose number could then name another file opened meanwhile."""
    _study, series, blobs = _series(tmp_path, 1)
    head = read_header(blobs[0])
    cache = InstanceCache(tmp_path / "cache")
    writer = cache.open_pack(cache.series_folder("node", head.study_uid, series))
    real_write = cache_pack._write_all
    writing, release = threading.Event(), threading.Event()

    def slow_write(fd: int, data: bytes | memoryview, offset: int | None = None) -> None:
        if offset is not None:  # the instance's bytes (the index line is appended without an offset)
            writing.set()
            assert release.wait(10)
        real_write(fd, data, offset)

    monkeypatch.setattr(cache_pack, "_write_all", slow_write)
    errors: list[BaseException] = []

    def add() -> None:
        try:
            writer.add(head.sop_instance_uid, series, str(head.transfer_syntax), 1, blobs[0])
        except OSError as exc:
            errors.append(exc)

    adding = threading.Thread(target=add)
    adding.start()
    assert writing.wait(10)
    closing = threading.Thread(target=writer.close)
    closing.start()
    closing.join(0.3)
    assert closing.is_alive()  # waits for the write in progress
    release.set()
    adding.join(10)
    closing.join(10)
    assert not adding.is_alive() and not closing.is_alive()
    # the write ended on the pack's own descriptor; closed meanwhile, the pack keeps nothing of it
    assert [str(e) for e in errors] == ["The cache pack of this retrieve round is closed"]
    assert not writer.path.exists()


@pytest.mark.parametrize("damage", ["checksum", "marker", "index-marker", "no-index", "huge-index"])
def test_a_damaged_pack_or_index_is_refused_with_the_reason(
    tmp_path: Path, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _study, series, blobs = _series(tmp_path, 3)
    cache, folder, packed = _packed(tmp_path, blobs, series)
    index_file = pack.index_path(packed)
    if damage == "checksum":  # one line's offset changed: its checksum fails, the others are read
        text = index_file.read_bytes()
        head, first, rest = text.partition(b"\n")[0], *text.partition(b"\n")[2].split(b"\n", 1)
        sop, offset, tail = first.split(b" ", 2)
        changed = b" ".join([sop, str(int(offset) + 1).encode(), tail])
        index_file.write_bytes(head + b"\n" + changed + b"\n" + rest)
        loaded = load_paths([folder])
        (skip,) = [s for s in loaded.skipped if s.code == Code.READ]
        assert "fails its checksum" in skip.reason and len(loaded.all_stacks()[0].slices) == 2
        return
    if damage == "marker":  # its version byte: a pack of another format (the first bytes say "pack")
        with packed.open("r+b") as fh:
            fh.seek(len(pack.PACK_MAGIC) - 2)
            fh.write(b"9")
        reason = "does not begin with the pack marker"
    elif damage == "index-marker":
        with index_file.open("r+b") as fh:
            fh.write(b"X")
        reason = "does not begin with the index marker"
    elif damage == "no-index":
        index_file.unlink()
        reason = "its index is missing"
    else:  # an index longer than any a retrieve writes is not read into memory
        monkeypatch.setattr(pack, "MAX_INDEX_BYTES", index_file.stat().st_size - 1)
        reason = "larger than any index a retrieve writes"
    with pytest.raises(PackDamagedError, match=reason):
        pack.read_index(packed)
    loaded = load_paths([folder])
    assert not loaded.all_stacks()
    assert any(s.code == Code.READ and reason in s.reason for s in loaded.skipped)
    assert cache.cached(folder, series, [read_header(b).sop_instance_uid for b in blobs]) == {}
    assert not cache.has_instances(folder)
    cache.series_folder("node", "1.2", series)  # a retrieve starting: the damaged pack is removed
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("member", ["0+10", "17+999999", "notanumber", "17+-1"])
def test_a_member_outside_its_pack_is_a_typed_error_not_a_read_past_its_end(
    tmp_path: Path, member: str
) -> None:
    _study, series, blobs = _series(tmp_path, 1)
    _cache, _folder, packed = _packed(tmp_path, blobs, series)
    with pytest.raises(PackDamagedError):
        read_source_bytes(SliceSource(packed, member))
