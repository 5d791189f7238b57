"""A fast header reader for the common file: Part 10, little endian (explicit or implicit VR).

pydicom's ``dcmread`` builds a Dataset element by element and was most of a folder scan's time
(about 0.3 ms a file, more than reading the file). This walks the elements up to the pixel data with
``struct`` and keeps them as pydicom ``RawDataElement``s in a dict; :class:`RawHeader` answers the
few Dataset calls the header code makes (``get_item``, ``in``, ``file_meta``) from that dict, and
hands anything else (a sequence's items, text in another character set) to pydicom, parsing the same
bytes with ``dcmread`` once on first use. Sequences are skipped by their lengths or delimiters, so
they cost nothing unless asked for.

:func:`parse_dataset` reads a bare dataset the same way (no preamble, no file meta: a DIMSE message's
identifier, e.g. a C-FIND answer).

:func:`parse` returns None for anything unusual (no ``DICM`` preamble, big endian, deflate, an element
that does not parse, very deep nesting): the caller then uses ``dcmread`` as before, which reports
its own errors. It never reads past ``size`` and every loop advances, so it cannot hang.

pydicom itself is imported only when needed (its import costs more than scanning a 40-file study,
and ``slicewise predict`` on uncompressed files never needs it): :data:`KNOWN` holds the tags and
VRs of the attributes the scan reads; other keywords are looked up in pydicom's dictionary.
"""

from __future__ import annotations

import io
import struct
from typing import Any, BinaryIO, NamedTuple

_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_NOT_HANDLED = frozenset({"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})  # big endian, deflate
_LONG_VRS = frozenset({b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"})
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 12
_MAX_HEADER = 64 * 1024**2  # a header larger than this goes to pydicom
_U16 = struct.Struct("<HH")
_U32 = struct.Struct("<I")
_TAG_LEN = struct.Struct("<HHI")
_KEYWORD_TAGS: dict[str, int | None] = {}
# The attributes the header scan reads, as in pydicom's data dictionary (test_dicom_rawheader checks).
KNOWN: dict[str, tuple[int, str]] = {
    "AccessionNumber": (0x00080050, "SH"),
    "AcquisitionNumber": (0x00200012, "IS"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "BodyPartExamined": (0x00180015, "CS"),
    "Columns": (0x00280011, "US"),
    "DirectoryRecordSequence": (0x00041220, "SQ"),
    "FrameOfReferenceUID": (0x00200052, "UI"),
    "HighBit": (0x00280102, "US"),
    "ImageOrientationPatient": (0x00200037, "DS"),
    "ImagePositionPatient": (0x00200032, "DS"),
    "ImageType": (0x00080008, "CS"),
    "InstanceNumber": (0x00200013, "IS"),
    "LossyImageCompression": (0x00282110, "CS"),
    "MediaStorageSOPClassUID": (0x00020002, "UI"),
    "Modality": (0x00080060, "CS"),
    "ModalityLUTSequence": (0x00283000, "SQ"),
    "NumberOfFrames": (0x00280008, "IS"),
    "PatientBirthDate": (0x00100030, "DA"),
    "PatientID": (0x00100020, "LO"),
    "PatientName": (0x00100010, "PN"),
    "PatientSex": (0x00100040, "CS"),
    "PerFrameFunctionalGroupsSequence": (0x52009230, "SQ"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "PixelRepresentation": (0x00280103, "US"),
    "PixelSpacing": (0x00280030, "DS"),
    "RescaleIntercept": (0x00281052, "DS"),
    "RescaleSlope": (0x00281053, "DS"),
    "Rows": (0x00280010, "US"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "SamplesPerPixel": (0x00280002, "US"),
    "SeriesDescription": (0x0008103E, "LO"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "SeriesNumber": (0x00200011, "IS"),
    "SharedFunctionalGroupsSequence": (0x52009229, "SQ"),
    "SliceThickness": (0x00180050, "DS"),
    "SpecificCharacterSet": (0x00080005, "CS"),
    "StudyDate": (0x00080020, "DA"),
    "StudyDescription": (0x00081030, "LO"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "TransferSyntaxUID": (0x00020010, "UI"),
    "VOILUTFunction": (0x00281056, "CS"),
    "VOILUTSequence": (0x00283010, "SQ"),
    "WindowCenter": (0x00281050, "DS"),
    "WindowWidth": (0x00281051, "DS"),
}
_KNOWN_VRS = {tag: vr for tag, vr in KNOWN.values()}


def keyword_tag(keyword: str) -> int | None:
    """The tag of a DICOM keyword (pydicom's ``tag_for_keyword``, imported only for rare keywords)."""
    known = KNOWN.get(keyword)
    if known is not None:
        return known[0]
    from pydicom.datadict import tag_for_keyword

    found = tag_for_keyword(keyword)
    return None if found is None else int(found)


def tag_vr(tag: int) -> str:
    """The dictionary VR of ``tag`` (pydicom's ``dictionary_VR``: KeyError if unknown)."""
    known = _KNOWN_VRS.get(tag)
    if known is not None:
        return known
    from pydicom.datadict import dictionary_VR

    return str(dictionary_VR(tag))


class RawElement(NamedTuple):
    """One element's raw value: the fields of pydicom's ``RawDataElement`` that the header scan reads."""

    tag: int
    VR: str | None
    length: int
    value: bytes | None
    value_tell: int
    is_implicit_VR: bool
    is_little_endian: bool
    is_raw: bool = True
_Element = tuple["str | None", int, int]  # VR (None: implicit), length, value offset (-1: not kept)


class _Unhandled(Exception):
    """Something this reader does not handle: use pydicom."""


def _tag_of(key: str | int) -> int | None:
    if isinstance(key, int):
        return key
    tag = _KEYWORD_TAGS.get(key, -1)
    if tag == -1:
        tag = keyword_tag(key)
        _KEYWORD_TAGS[key] = tag
    return tag


class RawHeader:
    """The Dataset calls ``header.read_header`` makes, answered from raw elements (see the module)."""

    def __init__(
        self,
        elements: dict[int, _Element],
        data: bytes,
        implicit: bool,
        file_meta: RawHeader | None = None,
        *,
        bare: bool = False,
    ) -> None:
        self._elements = elements
        self._data = data  # the file's bytes up to the pixel data (element values are read from it)
        self._implicit = implicit
        self._bare = bare  # a dataset without preamble and file meta (parse_dataset)
        self._full: Any = None
        self.file_meta = file_meta
        self.original_encoding = (implicit, True)

    def get_item(self, tag: int) -> RawElement | None:
        """The element's raw value (None for an undefined-length sequence: use :meth:`get`)."""
        found = self._elements.get(tag)
        if found is None:
            return None
        vr, length, at = found
        if vr is None:
            vr = _KNOWN_VRS.get(tag)
        value = self._data[at : at + length] if at >= 0 else None
        return RawElement(tag, vr, length, value, at, self._implicit, True)

    def raw_value(self, tag: int) -> tuple[str | None, bytes | None] | None:
        """(VR or None, raw value) of an element, as :meth:`get_item` without building the element
        (the header scan's hot path); None when absent."""
        found = self._elements.get(tag)
        if found is None:
            return None
        vr, length, at = found
        return (vr or _KNOWN_VRS.get(tag), self._data[at : at + length] if at >= 0 else None)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str | int):
            return False
        tag = _tag_of(key)
        return tag is not None and tag in self._elements

    def __iter__(self) -> Any:
        return iter(self._pydicom())

    def get(self, key: str | int, default: Any = None) -> Any:
        if key not in self:
            return default
        return self._pydicom().get(key, default)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._pydicom(), name)

    def _pydicom(self) -> Any:
        """The same header parsed by pydicom (once, on first use)."""
        if self._full is None and self._bare:
            from pydicom.filereader import read_dataset

            self._full = read_dataset(io.BytesIO(self._data), self._implicit, True)
        if self._full is None:
            if self.file_meta is None:  # this is a file meta group: reach it through the file
                raise AttributeError("file meta elements are read through the file's header")
            from pydicom import dcmread

            ds = dcmread(io.BytesIO(self._data), stop_before_pixels=True, force=True)
            self._full = ds
        return self._full


_ALL_VRS = (
    "AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV"
)
_VR_INFO = {vr.encode(): (vr, vr.encode() in _LONG_VRS) for vr in _ALL_VRS.split(" ")}


class _Reader:
    """The file's bytes from its start, read on demand (doubling), never past ``size``."""

    def __init__(self, fp: BinaryIO, head: bytes, size: int) -> None:
        self.fp = fp
        self.buf = head
        self.size = size

    def ensure(self, end: int) -> None:
        if end <= len(self.buf):
            return
        if end > self.size or end > _MAX_HEADER:
            raise _Unhandled
        want = min(max(end, 2 * len(self.buf)), self.size, _MAX_HEADER)
        parts = [self.buf]
        have = len(self.buf)
        while have < want:
            chunk = self.fp.read(want - have)
            if not chunk:
                raise _Unhandled
            parts.append(chunk)
            have += len(chunk)
        self.buf = b"".join(parts)

    def header(self, pos: int, implicit: bool) -> tuple[int, str | None, int, int]:
        """(tag, VR or None, length, value offset) of the element at ``pos``."""
        if pos + 12 > len(self.buf):
            self.ensure(min(pos + 12, self.size))
        group, elem, length = _TAG_LEN.unpack_from(self.buf, pos)
        tag = (group << 16) | elem
        if implicit or group == 0xFFFE:
            return tag, None, length, pos + 8
        info = _VR_INFO.get(self.buf[pos + 4 : pos + 6])
        if info is None:
            raise _Unhandled  # e.g. implicit VR data under an explicit transfer syntax: pydicom copes
        if info[1]:
            self.ensure(pos + 12)
            return tag, info[0], _U32.unpack_from(self.buf, pos + 8)[0], pos + 12
        return tag, info[0], length >> 16, pos + 8

    def skip_undefined(self, pos: int, implicit: bool, depth: int) -> int:
        """End of an undefined-length sequence whose first item starts at ``pos``."""
        if depth > _MAX_DEPTH:
            raise _Unhandled
        while True:
            tag, _, length, at = self.header(pos, True)
            if tag == _SEQ_END:
                return at
            if tag != _ITEM:
                raise _Unhandled
            if length != _UNDEFINED:
                pos = at + length
                continue
            pos = at
            while True:  # an item of undefined length: its elements, up to the item delimiter
                tag, vr, length, at = self.header(pos, implicit)
                if tag == _ITEM_END:
                    pos = at
                    break
                pos = self.skip_value(vr, length, at, implicit, depth + 1)

    def skip_value(self, vr: str | None, length: int, at: int, implicit: bool, depth: int) -> int:
        if length != _UNDEFINED:
            return at + length
        if vr in (None, "SQ"):
            return self.skip_undefined(at, implicit, depth)
        if vr == "UN":  # an undefined-length UN is a sequence in implicit VR little endian
            return self.skip_undefined(at, True, depth)
        raise _Unhandled


def parse(fp: BinaryIO, head: bytes, size: int) -> tuple[RawHeader, int] | None:
    """Parse from ``fp`` (positioned after ``head``, its first bytes) up to the pixel data.

    Returns the header and the file offset where parsing stopped: the Pixel Data (or Float Pixel
    Data) element, or the end of the file; or None where pydicom must read the file.
    """
    if len(head) < 144 or head[128:132] != b"DICM":
        return None
    reader = _Reader(fp, head, size)
    try:
        return _parse(reader)
    except (_Unhandled, struct.error, UnicodeDecodeError):
        return None


def _parse(reader: _Reader) -> tuple[RawHeader, int]:
    meta: dict[int, _Element] = {}
    pos = 132
    while True:  # file meta: explicit VR little endian, group 0002
        reader.ensure(pos + 8)
        if _U16.unpack_from(reader.buf, pos)[0] != 0x0002:
            break
        tag, vr, length, at = reader.header(pos, False)
        if length == _UNDEFINED or at + length > reader.size:
            raise _Unhandled
        meta[tag] = (vr, length, at)
        pos = at + length
    reader.ensure(pos)
    ts_at = meta.get(0x00020010)
    ts = ""
    if ts_at is not None:
        ts = reader.buf[ts_at[2] : ts_at[2] + ts_at[1]].decode("ascii").strip(" \x00")
    if not ts or ts in _NOT_HANDLED:
        raise _Unhandled
    implicit = ts == _IMPLICIT_LE
    elements, pos = _elements(reader, pos, implicit)
    reader.ensure(min(pos + 12, reader.size))
    data = reader.buf[: pos + 12]
    file_meta = RawHeader(meta, data, False)
    return RawHeader(elements, data, implicit, file_meta), pos


def parse_dataset(data: bytes, implicit: bool) -> RawHeader | None:
    """A bare little-endian dataset (no preamble, no file meta; e.g. a C-FIND identifier as received)
    read like a file's header: None where pydicom must read it (see :func:`parse`)."""
    reader = _Reader(io.BytesIO(b""), data, len(data))
    try:
        elements, end = _elements(reader, 0, implicit)
    except (_Unhandled, struct.error, UnicodeDecodeError):
        return None
    if end + 8 <= len(data):  # stopped at pixel data: not an identifier's
        return None
    return RawHeader(elements, data, implicit, bare=True)


def _elements(reader: _Reader, pos: int, implicit: bool) -> tuple[dict[int, _Element], int]:
    """The elements from ``pos`` up to the pixel data or the end, and the offset where that is."""
    elements: dict[int, _Element] = {}
    size = reader.size
    header = reader.header
    while pos + 8 <= size:  # shorter trailing padding: pydicom ignores it too
        tag, vr, length, at = header(pos, implicit)
        if tag in _PIXEL_TAGS:
            break
        if tag >> 16 == 0x0002 or tag >> 16 == 0xFFFE:
            raise _Unhandled  # meta elements in the dataset, stray delimiters: pydicom decides
        if length != _UNDEFINED:
            end = at + length
            if end > size:
                raise _Unhandled
            elements[tag] = (vr, length, at)
        else:
            end = reader.skip_value(vr, length, at, implicit, 0)
            elements[tag] = (vr, length, -1)  # an undefined-length sequence: pydicom reads its items
        pos = end
    return elements, pos
