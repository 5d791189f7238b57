"""Hostile file-system objects and archives: FIFOs, devices, links out of the folder, lying sizes, gzip."""

from __future__ import annotations

import gzip
import os
import sys
import threading
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from tests.factories import write_ct_series
from viewer.core.constants import MAX_INFLATED_BYTES
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import LoadReport
from viewer.core.dicom.pixels import decode_file
from viewer.core.dicom.sources import ArchiveCache
from viewer.core.dicom.volume import StackVolume
from viewer.core.errors import DicomError

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs, devices and symlinks: POSIX")
HANG_GUARD_S = 60  # not a speed check: a scan blocked in open() never ends, this only bounds the test


def _codes(report: LoadReport) -> dict[str, str]:
    return {Path(s.path).name: s.code for s in report.skipped}


def _load_unblocking(
    paths: list[Path], fifos: list[Path], cancel: Callable[[], bool] | None = None
) -> LoadReport:
    """``load_paths`` in a thread; should it block on a FIFO, open the FIFO's other end so the test ends."""
    result: list[LoadReport] = []
    worker = threading.Thread(target=lambda: result.append(load_paths(paths, cancel=cancel)), daemon=True)
    worker.start()
    worker.join(HANG_GUARD_S)
    if worker.is_alive():
        for fifo in fifos:  # release a reader blocked in open(): the old scanner waited here forever
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        worker.join(HANG_GUARD_S)
        pytest.fail("the scan blocked on a FIFO")
    return result[0]


@posix_only
def test_fifo_in_a_folder_or_a_dicomdir_never_blocks(tmp_path: Path) -> None:
    inside = write_ct_series(tmp_path / "study" / "IMG", 4, random_names=False)
    fifo = tmp_path / "study" / "IMG" / "pipe.dcm"
    os.mkfifo(fifo)
    named_dicomdir = tmp_path / "other" / "DICOMDIR"
    named_dicomdir.parent.mkdir()
    os.mkfifo(named_dicomdir)
    from tests.core.test_dicom_scan import _write_dicomdir

    index = _write_dicomdir(tmp_path / "study", [["IMG", p.name] for p in inside] + [["IMG", "pipe.dcm"]])
    report = _load_unblocking([tmp_path / "study", tmp_path / "other"], [fifo, named_dicomdir])
    assert sum(len(s) for s in report.all_stacks()) == 4
    special = [s for s in report.skipped if s.code == "E-SPECIAL-FILE"]
    assert {Path(s.path).name for s in special} == {"pipe.dcm", "DICOMDIR"}
    assert all("FIFO" in s.reason for s in special)
    direct = _load_unblocking([index, fifo], [fifo])  # the DICOMDIR's reference, and the FIFO given directly
    assert [s.code for s in direct.skipped if "pipe" in s.path] == ["E-SPECIAL-FILE", "E-SPECIAL-FILE"]
    assert sum(len(s) for s in direct.all_stacks()) == 4


@posix_only
def test_device_files_are_never_read(tmp_path: Path) -> None:
    devices = [Path(p) for p in ("/dev/zero", "/dev/urandom", "/dev/null") if Path(p).exists()]
    report = load_paths(devices)
    assert [s.code for s in report.skipped] == ["E-SPECIAL-FILE"] * len(devices)
    assert all("character device" in s.reason for s in report.skipped)


@posix_only
def test_symlinks_out_of_the_opened_folder_are_not_followed(tmp_path: Path) -> None:
    outside = write_ct_series(tmp_path / "outside", 3, random_names=False)
    study = tmp_path / "study"
    write_ct_series(study / "a", 5)
    links = {
        "to_outside.dcm": outside[0],
        "to_outside_dir": tmp_path / "outside",
        "passwd": Path("/etc/passwd"),
        "zero": Path("/dev/zero"),
        "urandom": Path("/dev/urandom"),
    }
    for name, target in links.items():
        (study / name).symlink_to(target)
    first = sorted((study / "a").iterdir())[0]
    (study / "inside_link.dcm").symlink_to(first)  # stays in the tree: read, but only once
    report = load_paths([study])
    assert [len(s) for s in report.all_stacks()] == [5]
    codes = _codes(report)
    assert codes == {name: "E-PATH-ESCAPE" for name in links}
    loaded = {s.source.path.resolve() for st in report.all_stacks() for s in st.slices}
    assert not loaded & {p.resolve() for p in outside}
    # a link the user opens directly is followed wherever it points
    direct = load_paths([study / "to_outside.dcm"])
    assert [len(s) for s in direct.all_stacks()] == [1] and direct.skipped == ()


def _lying_zip(path: Path, inflated: int, declared: int) -> None:
    """A zip whose one member inflates to ``inflated`` zero bytes but declares ``declared`` bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("liar.dcm", b"\0" * inflated)
    data = bytearray(path.read_bytes())
    real = inflated.to_bytes(4, "little")
    for sig, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory
        at = data.index(sig)
        assert data[at + size_at : at + size_at + 4] == real
        data[at + size_at : at + size_at + 4] = declared.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_zip_member_lying_about_its_size_is_capped_while_it_streams(tmp_path: Path) -> None:
    archive = tmp_path / "liar.zip"
    _lying_zip(archive, inflated=128 * 1024**2, declared=4096)
    cache = ArchiveCache()
    tracemalloc.start()
    try:
        with pytest.raises((DicomError, zipfile.BadZipFile)):
            cache.read_member(archive, "liar.dcm")  # stops at the declared 4 kB: the CRC then fails
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        cache.close()
    assert peak < 16 * 1024**2, f"{peak / 1e6:.0f} MB inflated for a 4 kB member"
    report = load_paths([archive])
    assert [s.code for s in report.skipped] == ["E-READ"]


def test_gzip_compressed_dicom_is_read(tmp_path: Path) -> None:
    source = Path(str(get_testdata_file("CT_small.dcm")))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ct.dcm.gz").write_bytes(gzip.compress(source.read_bytes()))
    (tmp_path / "noext").write_bytes(gzip.compress(source.read_bytes()))  # found by its magic bytes
    mr = Path(str(get_testdata_file("MR_small_RLE.dcm")))
    (tmp_path / "in" / "mr.dcm.GZ").write_bytes(gzip.compress(mr.read_bytes()))
    report = load_paths([tmp_path / "in"])
    assert report.skipped == ()
    stacks = {s.modality: s for s in report.all_stacks()}
    assert sorted(stacks) == ["CT", "MR"]
    assert [s.source.display_name for s in stacks["CT"].slices] == ["ct.dcm"]
    bare = load_paths([tmp_path / "noext"])
    assert [len(s) for s in bare.all_stacks()] == [1] and bare.skipped == ()
    for modality, original in (("CT", source), ("MR", mr)):
        with StackVolume(stacks[modality]) as vol:
            np.testing.assert_array_equal(vol.get_slice(0), decode_file(original))


def test_gzip_bombs_refused_while_streaming(tmp_path: Path) -> None:
    (tmp_path / "bomb.dcm.gz").write_bytes(gzip.compress(b"\0" * (MAX_INFLATED_BYTES // 8), 9))  # 1000x
    liar = bytearray(gzip.compress(b"\0" * (128 * 1024**2), 9))
    liar[-4:] = (4096).to_bytes(4, "little")  # ISIZE: claims 4 kB
    (tmp_path / "liar.dcm.gz").write_bytes(bytes(liar))
    tracemalloc.start()
    try:
        report = load_paths([tmp_path])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _codes(report) == {"bomb.dcm.gz:bomb.dcm": "E-ZIP-BOMB", "liar.dcm.gz:liar.dcm": "E-ZIP-BOMB"}
    assert peak < 16 * 1024**2


@posix_only
def test_cancel_stays_effective_with_a_fifo_in_the_folder(tmp_path: Path) -> None:
    """The old reader thread blocked in open() on the FIFO, and cancel then waited for it forever."""
    write_ct_series(tmp_path, 40, rows=16, columns=16, random_names=False)
    pipe = tmp_path / "slice_0001.dcm.pipe"
    os.mkfifo(pipe)
    polls = [0]

    def cancel() -> bool:  # the reader thread never cancels itself: it would stop before the FIFO
        if threading.current_thread().name.startswith("dicom-scan"):
            return False
        polls[0] += 1
        return polls[0] > 3  # the scan loop polls every 0.1 s: cancel 0.1-0.2 s into the header scan

    report = _load_unblocking([tmp_path], [pipe], cancel)
    assert report.cancelled or _codes(report)["slice_0001.dcm.pipe"] == "E-SPECIAL-FILE"
