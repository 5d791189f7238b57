"""The fast header reader gives exactly the records pydicom's ``dcmread`` gives, or steps aside."""

from __future__ import annotations

import io
import random
import warnings
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.factories import write_ct_series
from viewer.core.dicom import rawheader
from viewer.core.dicom.header import HeaderRecord, pixel_element, read_header
from viewer.core.dicom.model import SkippedFile, SliceSource

TEST_FILES = sorted(
    p for p in (Path(pydicom.data.__file__).parent / "test_files").rglob("*") if p.is_file()
)


def _both(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object, bool]:
    """(records via pydicom, records via the fast reader, whether the fast reader was used)."""
    real = rawheader.parse
    used: list[bool] = []

    def spy(*args: object) -> object:
        result = real(*args)  # type: ignore[arg-type]
        used.append(result is not None)
        return result

    with monkeypatch.context() as m:
        m.setattr(rawheader, "parse", lambda *a: None)
        reference = read_header(SliceSource(path), 0)
    with monkeypatch.context() as m:
        m.setattr(rawheader, "parse", spy)
        fast = read_header(SliceSource(path), 0)
    return reference, fast, bool(used and used[0])


@pytest.mark.filterwarnings("ignore")
def test_every_pydicom_test_file_gives_the_same_records(monkeypatch: pytest.MonkeyPatch) -> None:
    used = 0
    for path in TEST_FILES:
        reference, fast, was_used = _both(path, monkeypatch)
        assert fast == reference, path.name
        used += was_used
    assert used > len(TEST_FILES) // 2  # most files take the fast path


def test_sequences_of_undefined_length_are_skipped_and_still_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (path, *_) = write_ct_series(tmp_path / "s", 1, rows=8, columns=8)
    ds = dcmread(path)
    inner = Dataset()
    inner.CodeValue = "X"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    item.ConceptNameCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    ds.PatientName = "Müller^Jörg"  # non-ASCII: read through pydicom, with the character set
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.save_as(path)  # pydicom writes sequences and items with undefined length
    reference, fast, used = _both(path, monkeypatch)
    assert used and fast == reference
    assert isinstance(fast, list) and fast[0].patient_name == "Müller^Jörg"
    with path.open("rb") as fh:
        head = fh.read(4096)
        parsed = rawheader.parse(fh, head, path.stat().st_size)
        assert parsed is not None
        header, pixel_at = parsed
        fh.seek(pixel_at)
        pixel = pixel_element(fh, header, path.stat().st_size)
    assert pixel.present and pixel.value_at is not None and pixel.length == 8 * 8 * 2
    seq = header.get("ReferencedImageSequence")  # handed to pydicom on demand
    assert seq[0].ConceptNameCodeSequence[0].CodeValue == "X" and len(seq) == 2


def test_mutated_headers_never_differ_from_pydicom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A short seeded mutation run: flipped bytes and truncations in the header region."""
    sources = [p for p in TEST_FILES if p.suffix == ".dcm" and p.stat().st_size < 200_000][:40]
    rng = random.Random(14)
    for k in range(300):
        data = bytearray(rng.choice(sources).read_bytes())
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(128, min(len(data), 3000))
            data[i] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(132, len(data))]
        path = tmp_path / f"m{k}.dcm"
        path.write_bytes(bytes(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference, fast, _ = _both(path, monkeypatch)
        assert fast == reference, k
        assert isinstance(fast, SkippedFile) or (
            isinstance(fast, list) and all(isinstance(r, HeaderRecord) for r in fast)
        )



def test_known_tags_match_pydicoms_dictionary() -> None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    for keyword, (tag, vr) in rawheader.KNOWN.items():
        assert tag_for_keyword(keyword) == tag and dictionary_VR(tag) == vr, keyword


def test_an_uncompressed_study_scans_and_loads_without_importing_pydicom(tmp_path: Path) -> None:
    """pydicom's import costs more than scanning a small study: the common case never needs it."""
    import subprocess
    import sys

    write_ct_series(tmp_path / "s", 5, rows=16, columns=16)
    code = (
        "import sys\n"
        "from viewer.core.dicom.loader import load_paths\n"
        "from viewer.core.dicom.volume import StackVolume\n"
        f"(stack,) = load_paths([{str(tmp_path / 's')!r}]).all_stacks()\n"
        "volume = StackVolume(stack).load_all()\n"
        "assert volume.shape == (5, 16, 16), volume.shape\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pydicom'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("implicit", [False, True])
def test_a_bare_dataset_gives_pydicoms_raw_elements(implicit: bool) -> None:
    """``parse_dataset`` (a DIMSE identifier: no preamble, no file meta) finds every top-level element
    pydicom finds, with the same bytes, and the same values through ``get``; it steps aside for pixel
    data and for bytes that do not parse."""
    from pydicom.dataelem import RawDataElement
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset
    from pydicom.filewriter import write_dataset

    compared = 0
    for path in TEST_FILES:
        try:
            source = dcmread(path, stop_before_pixels=True, force=True)
            buffer = DicomBytesIO()
            buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
            write_dataset(buffer, Dataset({e.tag: e for e in source if e.tag.group != 0x0002}))
        except Exception:  # a file pydicom cannot write back this way is not a test case
            continue
        data = buffer.getvalue()
        reference = read_dataset(io.BytesIO(data), implicit, True)
        header = rawheader.parse_dataset(data, implicit)
        if header is None:
            continue
        compared += 1
        tags = [int(tag) for tag in list(reference.keys())]
        assert set(tags) == set(header._elements), path.name
        for tag in tags:
            raw = reference.get_item(tag)
            if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF:
                found = header.raw_value(tag)
                assert found is not None and found[1] == raw.value, (path.name, tag)
        uid = reference.get("SOPInstanceUID")
        assert header.get("SOPInstanceUID") == uid, path.name
    assert compared > len(TEST_FILES) // 3
    (ct, *_) = [p for p in TEST_FILES if p.name == "CT_small.dcm"]
    with_pixels = DicomBytesIO()
    with_pixels.is_little_endian, with_pixels.is_implicit_VR = True, implicit
    full = dcmread(ct)
    write_dataset(with_pixels, Dataset({e.tag: e for e in full if e.tag.group != 0x0002}))
    tail = b"\x10\x00\x10\x00" + (b"PN" if not implicit else b"") + b"\x04\x00" + b"AB^C"
    assert rawheader.parse_dataset(with_pixels.getvalue() + tail, implicit) is None  # pixel data inside
    assert rawheader.parse_dataset(b"\x08\x00\x20\x00DA\x08\x002026", False) is None  # cut short
