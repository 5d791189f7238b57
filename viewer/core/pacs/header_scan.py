"""Read the few header values a retrieve checks straight from a Part-10 instance's bytes.

The cache checks every arrived instance (its UIDs, and that its pixel data is all there) before keeping
it. Parsing each header with pydicom's ``dcmread`` cost about 1 ms an instance (a Dataset, its
elements, the file meta), most of a 300-slice retrieve's time beyond the transfer itself.
:func:`scan_header` uses the loader's header scan instead (:mod:`viewer.core.dicom.rawheader`: element
headers walked with ``struct`` up to the pixel data, values not decoded), decodes only the nine values
the check needs, and locates the pixel data in the bytes without copying it (encapsulated pixel data
must be whole: every item within the bytes, the sequence delimiter there, a fragment per frame).

It answers only where it reads with certainty: a Part-10 file in a little-endian transfer syntax known
to pydicom (not deflate) that the scan parses, whose UIDs and image values have the expected form.
Anything else returns ``None`` and the caller parses the instance with pydicom as before, which gives
the typed error for damaged input: the scan never decides that an instance is bad.
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass

from pydicom.uid import UID

from viewer.core.dicom import rawheader
from viewer.core.dicom.header import fragments_complete, pixel_element

_H = struct.Struct("<H")
_SOP_UID, _STUDY_UID, _SERIES_UID = 0x00080018, 0x0020000D, 0x0020000E
_SAMPLES, _FRAMES, _ROWS, _COLUMNS, _BITS = 0x00280002, 0x00280008, 0x00280010, 0x00280011, 0x00280100


class _Unsure(Exception):
    """A value the scan does not read with certainty: let pydicom parse the instance."""


@dataclass(frozen=True)
class ScannedHeader:
    """The values the cache checks. ``pixels``: the Pixel Data value as it lies in the bytes (native:
    the declared length, or less when the bytes end first; encapsulated: from its first item to the end
    of the bytes); ``None`` without Pixel Data."""

    sop_instance_uid: str
    series_uid: str
    study_uid: str
    transfer_syntax: UID
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    frames: int
    pixels: memoryview | None
    fragments_whole: bool = False  # encapsulated pixel data already walked: items in bounds, delimiter


def scan_header(data: bytes) -> ScannedHeader | None:
    """The header values of a Part-10 instance, or ``None`` when pydicom must parse it (module doc)."""
    try:
        return _scan(data)
    except (_Unsure, struct.error, UnicodeDecodeError, ValueError):
        return None


def _scan(data: bytes) -> ScannedHeader | None:
    parsed = rawheader.parse(io.BytesIO(), data, len(data))  # ``data`` is all there: nothing to read
    if parsed is None:
        return None
    header, pixel_at = parsed
    ts = _readable_syntax(_text(header.file_meta, 0x00020010) if header.file_meta is not None else "")
    if ts is None:
        return None

    def uid(tag: int) -> str:
        found = header.raw_value(tag)
        text = _text(header, tag)
        if found is None or found[0] != "UI" or not text or "\\" in text:
            raise _Unsure  # missing or multi-valued: pydicom names the defect
        return text

    def short(tag: int, default: int) -> int:
        found = header.raw_value(tag)
        if found is None:
            return default
        vr, value = found
        if vr != "US" or value is None or len(value) != 2:
            raise _Unsure
        return int(_H.unpack(value)[0])

    frames_text = _text(header, _FRAMES).strip()
    fp = io.BytesIO(data)
    fp.seek(pixel_at)
    pixel = pixel_element(fp, header, len(data))
    frames = (int(frames_text) if frames_text else 1) or 1  # int() refuses a multi-value
    pixels: memoryview | None = None
    if pixel.present and not pixel.float_data and pixel.value_at is not None:
        if pixel.length is None and not fragments_complete(fp, pixel.value_at, len(data), max(frames, 1)):
            return None  # encapsulated data cut short or malformed: pydicom says how
        end = len(data) if pixel.length is None else min(len(data), pixel.value_at + pixel.length)
        pixels = memoryview(data)[pixel.value_at : end]
    return ScannedHeader(
        sop_instance_uid=uid(_SOP_UID),
        series_uid=uid(_SERIES_UID),
        study_uid=uid(_STUDY_UID),
        transfer_syntax=ts,
        rows=short(_ROWS, 0),
        columns=short(_COLUMNS, 0),
        samples_per_pixel=short(_SAMPLES, 1),
        bits_allocated=short(_BITS, 16),
        frames=frames,
        pixels=pixels,
        fragments_whole=pixels is not None and pixel.length is None,
    )


@functools.lru_cache(maxsize=64)
def _readable_syntax(text: str) -> UID | None:
    """The transfer syntax when the scan reads it (little endian, known to pydicom, not deflate); cached,
    since pydicom validates a UID with a regular expression each time one is made."""
    ts = UID(text)
    if not ts.is_transfer_syntax or not ts.is_little_endian or ts.is_deflated:
        return None
    return ts


def _text(header: rawheader.RawHeader, tag: int) -> str:
    """An ASCII value (UI, IS) without its padding; "" when absent or empty."""
    found = header.raw_value(tag)
    if found is None or found[1] is None:
        return ""
    return found[1].decode("ascii").rstrip("\0 ")
