"""The WADO-RS multipart splitter: parts come out byte for byte whatever the chunking, a body cut short
is reported incomplete and its unfinished part dropped."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.factories import write_ct_series
from viewer.core.pacs.multipart import MIN_CHUNK, MultipartParts


def _body(parts: list[bytes], boundary: bytes = b"B0UND", *, close: bool = True) -> bytes:
    out = b"preamble to ignore"
    for k, part in enumerate(parts):
        head = b"Content-Type: application/dicom\r\n" if k % 2 == 0 else b""  # a part may have no header
        out += b"\r\n--" + boundary + b"\r\n" + head + b"\r\n" + part
    return out + (b"\r\n--" + boundary + b"--\r\n" if close else b"")


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("min_chunk", [0, MIN_CHUNK])  # 0: chunks kept as short as the delimiter
@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9, 11, 64, 10**6])
def test_parts_survive_any_chunking(size: int, min_chunk: int) -> None:
    # contents holding CRLFs, a blank line and a near-boundary: only CRLF "--B0UND" ends a part
    parts = [b"\r\n\r\nA\r\n--B0UN", b"", b"x--B0UND without a CRLF before it", b"x" * 300]
    reader = MultipartParts(_chunks(_body(parts), size), b"B0UND", min_chunk=min_chunk)
    assert list(reader) == parts
    assert reader.complete


def test_real_instances_come_out_as_sent(tmp_path: Path) -> None:
    files = [p.read_bytes() for p in write_ct_series(tmp_path, 3, rows=16, columns=16)]
    reader = MultipartParts(_chunks(_body(files, b"a-b-c"), 4096), b"a-b-c", min_chunk=0)
    assert list(reader) == files and reader.complete


@pytest.mark.parametrize("cut", [10, 60, 200])
def test_a_cut_body_is_incomplete_and_its_last_part_dropped(cut: int) -> None:
    parts = [b"first" * 10, b"second" * 20]
    body = _body(parts)
    reader = MultipartParts(_chunks(body[: len(body) - cut], 7), b"B0UND", min_chunk=0)
    got = list(reader)
    assert not reader.complete
    assert got == parts[: len(got)] and len(got) < len(parts)


def test_a_part_without_header_end_is_an_error() -> None:
    body = b"--B\r\nContent-Type: application/dicom" + b"\r\n--B--"
    with pytest.raises(ValueError, match="header end"):
        list(MultipartParts([body], b"B"))


def test_parts_survive_random_chunking() -> None:
    rng = random.Random(7)
    parts = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 90))) + b"\r\n--B0UN" for _ in range(9)]
    body = _body(parts)
    for _ in range(60):
        cuts, at = [], 0
        while at < len(body):
            step = rng.randrange(1, 40)
            cuts.append(body[at : at + step])
            at += step
        reader = MultipartParts(cuts, b"B0UND", min_chunk=rng.choice([0, 16, MIN_CHUNK]))
        assert list(reader) == parts and reader.complete
