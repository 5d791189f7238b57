"""The retrieve's header scan reads exactly what pydicom reads, or steps aside (no server needed).

:func:`viewer.core.pacs.header_scan.scan_header` replaced a ``dcmread`` per arrived instance; for every
pydicom test file and generated series in the usual transfer syntaxes, whole or damaged, the cache's
check must come out the same (the same header, or the same typed error) as when pydicom parses.
"""

from __future__ import annotations

import random
from pathlib import Path

import pydicom.data
import pytest
from pydicom.encaps import generate_fragments
from pydicom.uid import UID

from tests.factories import compress_files, write_ct_series
from viewer.core.errors import PacsResponseError
from viewer.core.pacs.cache import InstanceHeader, check_header, header_of, inspect_instance, parse_instance
from viewer.core.pacs.header_scan import ScannedHeader, scan_header

TEST_FILES = sorted(
    p
    for p in (Path(pydicom.data.__file__).parent / "test_files").rglob("*")
    if p.is_file() and p.read_bytes()[128:132] == b"DICM"
)
J2K_LOSSLESS, RLE = "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"
IMPLICIT, BIG_ENDIAN, DEFLATED = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"


def _fields(header: ScannedHeader) -> tuple[object, ...]:
    """The values; encapsulated pixel data as its fragments (the scan's value runs on to the end of the
    bytes, pydicom's stops at the sequence delimiter)."""
    pixels: object = None
    if header.pixels is not None:
        pixels = bytes(header.pixels)
        if header.transfer_syntax.is_encapsulated:
            pixels = list(generate_fragments(bytes(header.pixels)))
    return (
        header.sop_instance_uid,
        header.series_uid,
        header.study_uid,
        str(header.transfer_syntax),
        header.rows,
        header.columns,
        header.samples_per_pixel,
        header.bits_allocated,
        header.frames,
        pixels,
    )


def _by_pydicom(data: bytes) -> InstanceHeader | str:
    """The check as it was before the scan: pydicom parses; the outcome or the error's message."""
    try:
        ds = parse_instance(data)
    except Exception as exc:
        return f"The instance is not a readable DICOM file ({type(exc).__name__})"
    try:
        return check_header(header_of(ds, data))
    except PacsResponseError as exc:
        return str(exc)


def _by_scan(data: bytes) -> InstanceHeader | str:
    try:
        return inspect_instance(data)
    except PacsResponseError as exc:
        return str(exc)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One instance in each of several transfer syntaxes (generated; big endian and deflate: pydicom's)."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    folder = tmp_path_factory.mktemp("syntaxes")
    out: dict[str, bytes] = {}
    for ts in ("1.2.840.10008.1.2.1", IMPLICIT, J2K_LOSSLESS, RLE):
        (path,) = write_ct_series(folder / ts, 1)
        if ts in (J2K_LOSSLESS, RLE):
            compress_files([path], ts)
        elif ts == IMPLICIT:
            ds = dcmread(path)
            ds.file_meta.TransferSyntaxUID = UID(ts)
            ds.save_as(path, enforce_file_format=True)
        out[ts] = path.read_bytes()
    out[BIG_ENDIAN] = Path(str(get_testdata_file("MR_small_bigendian.dcm"))).read_bytes()
    out[DEFLATED] = Path(str(get_testdata_file("image_dfl.dcm"))).read_bytes()
    return out


@pytest.mark.filterwarnings("ignore")
def test_every_pydicom_test_file_reads_as_pydicom_reads_it() -> None:
    scanned = 0
    for path in TEST_FILES:
        data = path.read_bytes()
        header = scan_header(data)
        if header is None:
            continue
        scanned += 1
        assert _fields(header) == _fields(header_of(parse_instance(data), data)), path.name
        assert _by_scan(data) == _by_pydicom(data), path.name
    assert scanned > len(TEST_FILES) // 2  # most files take the scan


def test_the_usual_syntaxes_are_scanned_big_endian_and_deflate_left_to_pydicom(
    series: dict[str, bytes],
) -> None:
    for ts, data in series.items():
        header = scan_header(data)
        if ts in (BIG_ENDIAN, DEFLATED):
            assert header is None, ts
            continue
        assert header is not None, ts
        assert _fields(header) == _fields(header_of(parse_instance(data), data)), ts
        assert header.pixels is not None and header.pixels.obj is data  # located, not copied


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2.1", IMPLICIT, J2K_LOSSLESS, RLE])
def test_damaged_instances_give_the_same_outcome_as_with_pydicom(series: dict[str, bytes], ts: str) -> None:
    data = series[ts]
    rng = random.Random(13)
    damaged = [data[:cut] for cut in range(0, len(data), max(1, len(data) // 97))]
    damaged += [data[:cut] for cut in range(len(data) - 40, len(data))]
    for _ in range(150):  # one byte changed somewhere in the header
        at = rng.randrange(128, min(len(data), 1200))
        damaged.append(data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :])
    for blob in damaged:
        assert _by_scan(blob) == _by_pydicom(blob), len(blob)


@pytest.mark.filterwarnings("ignore")
def test_an_unknown_transfer_syntax_is_a_typed_error(series: dict[str, bytes]) -> None:
    """It was a bare ValueError out of the check (pydicom cannot say whether it is encapsulated)."""
    data = series["1.2.840.10008.1.2.1"]
    damaged = data.replace(b"1.2.840.10008.1.2.1\0", b"1m2.840.10008.1.2.1\0", 1)
    assert damaged != data
    with pytest.raises(PacsResponseError, match="transfer syntax is unknown"):
        inspect_instance(damaged)
