"""Scanner: files, folders, zip archives, DICOMDIR, sniffing and every skipped-file case."""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_charset_files, get_testdata_file

from tests.factories import write_bomb_header, write_ct_series
from viewer.core.constants import MAX_INFLATED_BYTES
from viewer.core.dicom.header import sniff
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import LoadReport
from viewer.core.dicom.volume import StackVolume

DICOMDIR_TREE = Path(str(get_testdata_file("DICOMDIR"))).parent


def _codes(report: LoadReport) -> dict[str, str]:
    return {Path(s.path).name: s.code for s in report.skipped}


def test_folder_with_junk_and_dot_folders(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "study" / ".hidden", 5)
    write_ct_series(tmp_path / "study" / "b", 4)
    (tmp_path / "study" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + b"\0" * 100)
    (tmp_path / "study" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + b"\0" * 100)
    (tmp_path / "study" / "notes.txt").write_text("not dicom at all\n" * 20)
    (tmp_path / "study" / "empty").write_bytes(b"")
    before = sorted(p.name for p in (tmp_path / "study").rglob("*"))
    report = load_paths([tmp_path / "study"])
    stacks = report.all_stacks()
    assert sorted(len(s) for s in stacks) == [4, 5]  # the dot-folder's DICOM is read
    codes = _codes(report)
    assert codes == {
        ".DS_Store": "E-NOT-DICOM",
        "Thumbs.db": "E-NOT-DICOM",
        "notes.txt": "E-NOT-DICOM",
        "empty": "E-NOT-DICOM",
    }
    assert all(s.reason for s in report.skipped)
    assert report.files_seen == 13
    assert report.summary().startswith("Loaded 9 of 13 files, 2 stacks; 4 skipped")
    assert sorted(p.name for p in (tmp_path / "study").rglob("*")) == before  # nothing written
    assert set(report.stacks_by_uid) == {s.uid for s in stacks}


def test_sniff_accepts_headerless_and_rejects_text() -> None:
    no_preamble = Path(str(get_testdata_file("ExplVR_LitEndNoMeta.dcm"))).read_bytes()
    assert sniff(no_preamble[:256])
    assert sniff(Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()[:256])
    assert not sniff(b"hello world, this is text" * 10)
    assert not sniff(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)


def test_files_and_folders_mixed_and_deduplicated(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "s", 6)
    report = load_paths([tmp_path / "s", paths[0], paths[1]])
    assert report.files_seen == 6
    assert len(report.all_stacks()[0]) == 6


def test_missing_path_is_reported(tmp_path: Path) -> None:
    report = load_paths([tmp_path / "nope"])
    assert [s.code for s in report.skipped] == ["E-READ"]
    assert report.patients == ()


def test_zip_archive_members_read_in_memory(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "src", 7)
    archive = tmp_path / "drop" / "study.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, p in enumerate(paths):
            zf.write(p, f"dir/{k:03d}_{p.name}")
        zf.writestr("dir/.DS_Store", b"\0\0\0\1Bud1")
        zf.writestr("__MACOSX/dir/._x", b"junk")
        zf.writestr("readme.txt", "hello")
    report = load_paths([archive.parent])
    stacks = report.all_stacks()
    assert len(stacks) == 1 and len(stacks[0]) == 7
    assert all(s.source.member is not None and s.source.path == archive for s in stacks[0].slices)
    assert sorted(s.code for s in report.skipped) == ["E-NOT-DICOM"] * 3
    assert sorted(p.name for p in archive.parent.iterdir()) == ["study.zip"]  # nothing extracted


def test_zip_without_extension_is_detected(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "src", 3)
    archive = tmp_path / "drop" / "ARCHIVE"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for p in paths:
            zf.write(p, p.name)
    report = load_paths([archive])
    assert len(report.all_stacks()[0]) == 3
    assert report.skipped == ()
    assert report.files_seen == 3


def test_zip_bomb_member_refused_quickly(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "src", 3)
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for p in paths:
            zf.write(p, p.name)
        with zf.open("bomb.dcm", "w", force_zip64=True) as fh:
            block = b"\0" * (1024 * 1024)
            for _ in range(MAX_INFLATED_BYTES // len(block) // 8):  # 64 MB of zeros, ratio ~1000x
                fh.write(block)
    start = time.perf_counter()
    report = load_paths([archive])
    elapsed = time.perf_counter() - start
    assert {Path(s.path).name.split(":")[-1]: s.code for s in report.skipped} == {"bomb.dcm": "E-ZIP-BOMB"}
    assert "zip bomb" in report.skipped[0].reason
    assert len(report.all_stacks()[0]) == 3  # the good members still load
    assert elapsed < 30  # sanity only; timing belongs to benchmarks


def test_dicomdir_tree_from_pydicom(tmp_path: Path) -> None:
    root = tmp_path / "dicomdirtests"
    shutil.copytree(DICOMDIR_TREE, root)
    report = load_paths([root / "DICOMDIR"])
    # Following the index alone finds every referenced image; DICOMDIR itself is never an image.
    assert [s.code for s in report.skipped if Path(s.path).name == "DICOMDIR"] == ["E-DICOMDIR"]
    assert "31 referenced files" in report.skipped[0].reason
    modalities = sorted({st.modality for st in report.all_stacks()})
    assert modalities == ["CR", "CT", "MR"]
    assert sum(len(st) for st in report.all_stacks()) == 31
    assert {p.patient_id for p in report.patients} == {"77654033", "98890234"}
    for stack in report.all_stacks():
        assert all(s.source.path.name != "DICOMDIR" for s in stack.slices)


def test_dicomdir_variants_in_a_folder_are_never_images() -> None:
    report = load_paths([DICOMDIR_TREE])
    dicomdirs = {Path(s.path).name for s in report.skipped if s.code == "E-DICOMDIR"}
    assert {"DICOMDIR", "DICOMDIR-bigEnd", "DICOMDIR-implicit", "DICOMDIR-reordered"} <= dicomdirs
    shown = {s.source.path.name for st in report.all_stacks() for s in st.slices}
    assert not any(name.startswith("DICOMDIR") for name in shown)
    assert sum(len(st) for st in report.all_stacks()) == 31


def _write_dicomdir(folder: Path, ids: list[list[str]]) -> Path:
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.1.3.10")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.FileSetID = "TEST"
    records = []
    for parts in ids:
        rec = Dataset()
        rec.DirectoryRecordType = "IMAGE"
        rec.ReferencedFileID = parts
        records.append(rec)
    ds.DirectoryRecordSequence = records
    path = folder / "DICOMDIR"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicomdir_path_escape_refused(tmp_path: Path) -> None:
    """CVE-2026-32711: ReferencedFileID with ../ must not reach files outside the DICOMDIR's folder."""
    outside = write_ct_series(tmp_path / "outside", 2, random_names=False)
    inside = write_ct_series(tmp_path / "media" / "IMG", 3, random_names=False)
    ids = [["IMG", p.name] for p in inside] + [["..", "outside", outside[0].name], ["IMG", "MISSING"]]
    dicomdir = _write_dicomdir(tmp_path / "media", ids)
    report = load_paths([dicomdir])
    codes = sorted(s.code for s in report.skipped)
    assert codes == ["E-DICOMDIR", "E-MISSING", "E-PATH-ESCAPE"]
    loaded = {s.source.path.resolve() for st in report.all_stacks() for s in st.slices}
    assert loaded == {p.resolve() for p in inside}
    assert not any(p.resolve() in loaded for p in outside)


def test_dicomdir_symlink_escape_refused(tmp_path: Path) -> None:
    outside = write_ct_series(tmp_path / "outside", 1, random_names=False)
    media = tmp_path / "media"
    media.mkdir()
    try:
        (media / "LINK").symlink_to(outside[0])
    except OSError:
        pytest.skip("symlinks not available")
    report = load_paths([_write_dicomdir(media, [["LINK"]])])
    assert sorted(s.code for s in report.skipped) == ["E-DICOMDIR", "E-PATH-ESCAPE"]
    assert report.all_stacks() == []


def test_header_bomb_skipped_with_clear_message(tmp_path: Path) -> None:
    bomb = write_bomb_header(tmp_path / "in" / "bomb.dcm")
    assert bomb.stat().st_size < 4096
    write_ct_series(tmp_path / "in", 4)
    report = load_paths([tmp_path / "in"])
    assert _codes(report) == {"bomb.dcm": "E-TOO-LARGE"}
    assert report.skipped[0].reason == "Image too large (17.2 GB declared, limit 2 GB)"
    assert len(report.all_stacks()[0]) == 4


def test_huge_frame_count_refused(tmp_path: Path) -> None:
    path = write_bomb_header(tmp_path / "frames.dcm", rows=8, columns=8, bits=8)
    from pydicom import dcmread

    ds = dcmread(path)
    ds.NumberOfFrames = 2**31 - 1
    ds.save_as(path)
    report = load_paths([path])
    assert [s.code for s in report.skipped] == ["E-TOO-LARGE"]
    assert "frames" in report.skipped[0].reason


@pytest.mark.parametrize("name", ["rtplan.dcm", "rtstruct.dcm", "waveform_ecg.dcm"])
def test_objects_without_pixels_skipped(name: str) -> None:
    report = load_paths([str(get_testdata_file(name))])
    assert [s.code for s in report.skipped] == ["E-NO-PIXELS"]
    assert report.all_stacks() == []


@pytest.mark.parametrize("name", ["test-SR.dcm", "reportsi.dcm", "liver.dcm"])
def test_result_objects_set_aside_not_skipped_or_loaded(name: str) -> None:
    """SRs and SEGs are others' results (viewer.core.foreign), not files without images or stacks."""
    report = load_paths([str(get_testdata_file(name))])
    assert report.skipped == () and report.all_stacks() == []
    assert [f.code for f in report.result_files] == ["RESULT"]


def test_charsets_never_raise() -> None:
    files = get_charset_files("chr*.dcm")
    assert len(files) >= 10
    report = load_paths(files)
    assert not [s for s in report.skipped if s.code == "E-READ"]
    names = {p.name for p in report.patients}
    assert any("\u0400" <= ch <= "\u04ff" for n in names for ch in n)  # Cyrillic decoded (chrRuss)
    assert all(isinstance(n, str) for n in names)


def test_misdeclared_charset_never_raises(tmp_path: Path) -> None:
    from pydicom import dcmread

    ds = dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.SpecificCharacterSet = "ISO_IR 6"  # says ASCII ...
    ds["PatientName"].value = "Müller^Jürgen".encode("cp1252")  # ... holds cp1252 (pydicom#2115)
    ds.SeriesDescription = "Тест".encode("cp1251")  # and cp1251
    ds.save_as(tmp_path / "bad_charset.dcm")
    report = load_paths([tmp_path])
    assert report.skipped == ()
    assert report.patients[0].name  # decoded with replacement, not raised
    assert len(report.all_stacks()) == 1


def test_progress_and_cancel(tmp_path: Path) -> None:
    write_ct_series(tmp_path, 40)
    seen: list[tuple[int, int]] = []
    report = load_paths([tmp_path], progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (40, 40) and all(t == 40 for _, t in seen)
    assert not report.cancelled
    cancelled = load_paths([tmp_path], cancel=lambda: True)
    assert cancelled.cancelled
    assert cancelled.summary().endswith("(cancelled)")


def test_cancel_midway_stops_reading(tmp_path: Path) -> None:
    write_ct_series(tmp_path, 60, rows=16, columns=16)
    calls = [0]

    def cancel() -> bool:
        calls[0] += 1
        return calls[0] > 5

    report = load_paths([tmp_path], cancel=cancel)
    assert report.cancelled
    loaded = sum(len(s) for s in report.all_stacks())
    assert loaded < 20  # workers stop at their next file once cancel() turns true


@pytest.mark.parametrize(
    "name",
    ["DICOMDIR-bigEnd", "DICOMDIR-implicit", "DICOMDIR-nooffset", "DICOMDIR-reordered", "DICOMDIR-nopatient"],
)
def test_dicomdir_recognised_by_its_sop_class_whatever_its_name(tmp_path: Path, name: str) -> None:
    root = tmp_path / "media"
    shutil.copytree(DICOMDIR_TREE, root)
    (root / "DICOMDIR").unlink()
    renamed = root / f"INDEX-{name[9:]}"  # neither called DICOMDIR nor like it
    (root / name).rename(renamed)
    report = load_paths([renamed])  # opened directly: read as the index it is
    assert [(Path(s.path).name, s.code) for s in report.skipped] == [(renamed.name, "E-DICOMDIR")]
    assert "31 referenced files" in report.skipped[0].reason
    assert sum(len(st) for st in report.all_stacks()) == 31
    assert not any(s.source.path == renamed for st in report.all_stacks() for s in st.slices)


def test_malformed_number_of_frames_inferred_from_the_pixel_data(tmp_path: Path) -> None:
    """badVR.dcm says NumberOfFrames '1A'; its pixel data holds 15 frames (rtdose.dcm: the same grid)."""
    report = load_paths([str(get_testdata_file("badVR.dcm"))])
    (stack,) = report.all_stacks()
    assert len(stack) == 15
    assert any("malformed NumberOfFrames" in w for w in stack.warnings)
    (reference,) = load_paths([str(get_testdata_file("rtdose.dcm"))]).all_stacks()
    with StackVolume(stack) as vol, StackVolume(reference) as ref:
        for k in range(15):
            np.testing.assert_array_equal(vol.get_slice(k), ref.get_slice(k))


def test_malformed_number_of_frames_refused_when_only_a_decoder_could_count(tmp_path: Path) -> None:
    data = Path(str(get_testdata_file("rtdose_rle.dcm"))).read_bytes()  # RLE, NumberOfFrames '15'
    element = b"\x28\x00\x08\x00IS\x02\x0015"
    assert data.count(element) == 1
    (tmp_path / "rle_bad_frames.dcm").write_bytes(data.replace(element, element[:-2] + b"1A"))
    report = load_paths([tmp_path])
    assert _codes(report) == {"rle_bad_frames.dcm": "E-FRAME-COUNT"}
    assert report.all_stacks() == []


@pytest.mark.parametrize(
    ("name", "element", "frames"),
    [
        ("SC_rgb_rle_2frame.dcm", b"\x28\x00\x08\x00IS\x02\x002 ", 2),  # RLE: one fragment a frame
        ("examples_ybr_color.dcm", b"\x28\x00\x08\x00IS\x02\x0030", 30),  # JPEG: 30 offsets in the table
    ],
)
def test_encapsulated_frames_beyond_number_of_frames_are_refused(
    name: str, element: bytes, frames: int, tmp_path: Path
) -> None:
    """NumberOfFrames gone (one byte of its tag changed, found by the fuzzer, seed 12 #1966): the object
    reads as one frame while its offset table (or, for RLE, its fragments) holds more; the other
    frames were silently dropped. The frame count the pixel data gives is another than the header's."""
    data = Path(str(get_testdata_file(name))).read_bytes()
    assert data.count(element) == 1
    (tmp_path / "frames_gone.dcm").write_bytes(data.replace(element, b"\x28\x00\x69\x00" + element[4:]))
    report = load_paths([tmp_path])
    assert _codes(report) == {"frames_gone.dcm": "E-FRAME-COUNT"}
    assert f"holds {frames}" in report.skipped[0].reason
    assert report.all_stacks() == []
    intact = load_paths([str(get_testdata_file(name))])  # the intact objects still load, every frame
    assert sum(len(stack) for stack in intact.all_stacks()) == frames


def test_skipped_files_counted_by_code(tmp_path: Path) -> None:
    for name in ("rtstruct.dcm", "rtplan.dcm", "waveform_ecg.dcm"):
        shutil.copy(str(get_testdata_file(name)), tmp_path / name)
    (tmp_path / "notes.txt").write_text("not dicom\n" * 10)
    write_ct_series(tmp_path / "ct", 3)
    report = load_paths([tmp_path])
    assert report.skipped_by_code() == {"E-NO-PIXELS": 3, "E-NOT-DICOM": 1}
    assert report.warnings == ("4 file(s) skipped: 3 E-NO-PIXELS (no image data), 1 E-NOT-DICOM (not DICOM)",)
