"""Header-only reads: sniff, parse without pixel data, and turn one object into per-frame SliceInfos."""

from __future__ import annotations

import io
import logging
import math
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from viewer.core.codes import Code
from viewer.core.constants import MAX_FRAME_BYTES, MAX_INFLATED_BYTES, MAX_INFLATION_RATIO, Window
from viewer.core.dicom import rawheader
from viewer.core.dicom.files import open_regular
from viewer.core.dicom.model import ResultFile, SkippedFile, SliceInfo, SliceSource
from viewer.core.dicom.pack import is_pack_head, open_member
from viewer.core.dicom.sources import GZIP_MAGIC, MEDIA_STORAGE_DIRECTORY, ZIP_MAGIC, ArchiveCache
from viewer.core.dicom.voi import read_voi_lut, voi_function
from viewer.core.errors import ImageTooLargeError, NotDicomError, NotRegularFileError
from viewer.core.foreign.kinds import result_kind

logger = logging.getLogger(__name__)

DEFLATED_TS = "1.2.840.10008.1.2.1.99"
ARCHIVE_CODE = Code.ARCHIVE  # internal: read_header found a zip or gzip archive, the loader expands it
NATIVE_TS = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})
# Transfer syntaxes that only ever store pixels losslessly, and those that always lose information.
# Anything else (JPEG 2000 .91/.93, HTJ2K .203, JPEG XL .112, private ones) may be either.
LOSSLESS_TS = NATIVE_TS | {
    DEFLATED_TS,
    "1.2.840.10008.1.2.5",  # RLE
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 multi-component lossless
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.110",  # JPEG XL lossless
}
LOSSY_TS = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # JPEG baseline
        "1.2.840.10008.1.2.4.51",  # JPEG extended
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
        "1.2.840.10008.1.2.4.111",  # JPEG XL recompressed JPEG
    }
)
MPEG_TS_PREFIX = "1.2.840.10008.1.2.4.10"  # MPEG-2/4, HEVC: .100 - .108
_ITEM, _SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)
RLE_TS = "1.2.840.10008.1.2.5"  # each frame one fragment (PS3.5 A.4.2)
MAX_FRAGMENT_WALK = 100_000  # fragments checked for completeness; beyond that a file is taken as complete
_LONG_VRS = frozenset({b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"})
_PIXEL_TAGS = frozenset({(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)})


@dataclass(frozen=True)
class HeaderRecord:
    """One frame's SliceInfo plus the patient/study/series keys used for grouping (PHI stays here)."""

    info: SliceInfo
    order: int  # discovery index of the file: the "file order" fallback
    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    patient_age: str = ""  # PatientAge as in the header ("045Y"), "" when absent
    study_uid: str = ""
    study_date: str = ""
    study_description: str = ""
    accession: str = ""
    series_uid: str = ""
    series_number: int | None = None
    series_description: str = ""
    body_part: str = ""  # BodyPartExamined, upper case ("HEAD"), "" when absent
    modality: str = ""
    frame_of_reference_uid: str | None = None
    # --- how good this copy of its SOP instance is, to choose between duplicates (grouping.duplicates)
    pixel_intact: bool = True  # the pixel data is all there (native length, every fragment, delimiter)
    lossless: int = 2  # 2 never lossy-compressed, 1 unknown (e.g. JPEG 2000 .91, no flag), 0 lossy
    notes: tuple[str, ...] = ()  # file-level warnings for the stack (no file names: they are counted)

    @property
    def file_key(self) -> tuple[str, str]:
        """The file (or archive member) this frame comes from: one SOP instance."""
        return self.info.source.file_key

    @property
    def is_original(self) -> bool:
        return not self.info.image_type or self.info.image_type[0] != "DERIVED"


def sniff(head: bytes) -> bool:
    """True for 'DICM' at byte 128 or a plausible leading group 0002/0008 tag (headerless files)."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    group_le = int.from_bytes(head[0:2], "little")
    group_be = int.from_bytes(head[0:2], "big")
    if group_le not in (0x0002, 0x0008) and group_be != 0x0008:
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    length = int.from_bytes(head[4:8], "little" if group_le in (0x0002, 0x0008) else "big")
    return length < 0x10000 and int.from_bytes(head[2:4], "little") < 0x1000


def check_deflated(data: bytes) -> None:
    """Inflate a deflated-transfer-syntax file's dataset in bounded chunks; raise on a bomb."""
    start = 132
    if data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00":
        start = 144 + int.from_bytes(data[140:144], "little")
    compressed = len(data) - start
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    chunk = data[start:]
    while chunk:
        out = inflater.decompress(chunk, 1024**2)
        total += len(out)
        chunk = inflater.unconsumed_tail
        if total > MAX_INFLATED_BYTES or (total > 1024**2 and total > MAX_INFLATION_RATIO * compressed):
            raise ImageTooLargeError(
                f"Deflated data inflates beyond the limit ({MAX_INFLATED_BYTES // 1024**2} MB or "
                f"{MAX_INFLATION_RATIO}x): refused"
            )
        if not out:
            break


def frame_bytes(rows: int, columns: int, samples: int, bits: int) -> int:
    return rows * columns * max(samples, 1) * max(bits, 1) // 8


def too_large_message(declared: int, limit: int) -> str:
    return f"Image too large ({declared / 1e9:.1f} GB declared, limit {limit / 1024**3:.3g} GB)"


_BINARY_INTS = {"US": ("H", 2), "SS": ("h", 2), "UL": ("I", 4), "SL": ("i", 4)}  # struct format, width
_ONE_INT = {  # (format, little endian) -> unpack_from of one value
    (fmt, little): struct.Struct(("<" if little else ">") + fmt).unpack_from
    for fmt, _ in _BINARY_INTS.values()
    for little in (True, False)
}
_ASCII_VRS = frozenset({"CS", "DS", "IS", "UI", "DA", "TM", "DT", "AS", "AE"})
_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT"})
# Keywords read by the display (age, lossy ratio) with their tags, so no dictionary lookup is needed.
_TAG_CACHE: dict[str, int] = {"PatientAge": 0x00101010, "LossyImageCompressionRatio": 0x00282112}


class FastGetter:
    """Read a few header values straight from pydicom's raw elements (pydicom's value conversion is
    most of a header read's cost); anything unusual (non-ASCII text, sequences) goes through pydicom."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    def __call__(self, keyword: str) -> Any:
        tag = _TAG_CACHE.get(keyword)
        if tag is None:
            tag = rawheader.keyword_tag(keyword)
            if tag is None:
                return None
            _TAG_CACHE[keyword] = tag
        ds = self.ds
        little = True
        if type(ds) is rawheader.RawHeader:  # the common file: no element object built
            found = ds.raw_value(tag)
            if found is None:
                return None
            vr, raw = found
        else:
            try:
                elem = ds.get_item(tag)
            except Exception:
                return None
            if elem is None:
                return None
            if not getattr(elem, "is_raw", False):
                return getattr(elem, "value", None)
            raw, vr, little = elem.value, elem.VR, elem.is_little_endian
        if vr is None:
            try:
                vr = rawheader.tag_vr(tag)
            except KeyError:
                return self._slow(keyword)
        if raw is None or not isinstance(raw, bytes):
            return self._slow(keyword)
        ints = _BINARY_INTS.get(vr)
        if ints is not None:
            fmt, width = ints
            count = len(raw) // width
            if count == 1:
                return _ONE_INT[fmt, little](raw)[0]
            if count == 0:
                return None
            return list(struct.unpack(("<" if little else ">") + fmt * count, raw[: count * width]))
        # ESC opens an ISO 2022 code extension (e.g. IR 87 Japanese): 7-bit bytes, but not ASCII text
        if vr in _ASCII_VRS or (vr in _TEXT_VRS and raw.isascii() and b"\x1b" not in raw):
            text = raw.decode("ascii", "replace").strip(" \x00")
            if vr in ("ST", "LT") or "\\" not in text:  # one value: already stripped
                return text
            parts = [p.strip(" \x00") for p in text.split("\\")]
            return parts[0] if len(parts) == 1 else parts
        return self._slow(keyword)

    def _slow(self, keyword: str) -> Any:
        try:
            return self.ds.get(keyword)
        except Exception:
            return None


def _float(value: Any) -> float | None:
    try:
        if value is None or value == "":
            return None
        if not isinstance(value, str | bytes) and hasattr(value, "__len__"):
            value = value[0]
        return float(value)
    except Exception:
        return None


def _int(value: Any) -> int | None:
    f = _float(value)
    return None if f is None or f != f else int(f)


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        vals = tuple(float(v) for v in value)
    except Exception:
        return None
    return vals if len(vals) == n and all(v == v for v in vals) else None


def positive_spacing(value: tuple[float, ...] | None) -> tuple[float, float] | None:
    """PixelSpacing as (row, column) mm, or None when absent, zero, negative or not finite (a CR with
    ``0\\0`` would otherwise scale the image to nothing): such an image is measured in pixels."""
    if value is None or len(value) != 2:
        return None
    if not all(math.isfinite(v) and v > 0 for v in value):
        return None
    return (float(value[0]), float(value[1]))


def _text(ds: Any, keyword: str) -> str:
    try:
        value = ds(keyword) if isinstance(ds, FastGetter) else ds.get(keyword)
        if isinstance(value, list):
            value = "\\".join(str(v) for v in value)
        text = "" if value is None else str(value)
    except Exception:
        return ""
    if text.isprintable():
        return text.strip()
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()


def _item(ds: Any, keyword: str) -> Any:
    try:
        seq = ds.get(keyword)
        return seq[0] if seq else None
    except Exception:
        return None


def _frame_attr(groups: Sequence[Any], seq_keyword: str, attr: str) -> Any:
    for group in groups:
        item = _item(group, seq_keyword) if group is not None else None
        if item is not None and attr in item:
            return item.get(attr)
    return None


@dataclass(frozen=True)
class PixelElement:
    """Where the Pixel Data element's value lies in the file (found right after the header parse)."""

    present: bool = False
    value_at: int | None = None  # offset of the value: native bytes or the first encapsulated item
    length: int | None = None  # defined length; None for encapsulated (undefined length) data
    left: int = 0  # bytes from the element to the end of the file
    float_data: bool = False  # Float / Double Float Pixel Data


def pixel_element(fp: BinaryIO, ds: Any, size: int) -> PixelElement:
    """The pixel element at fp's position (just after ``dcmread(stop_before_pixels=True)``)."""
    pos = fp.tell()
    raw = fp.read(12)
    if len(raw) < 8:
        return PixelElement()
    implicit, order = _encoding(ds)
    tag = (int.from_bytes(raw[0:2], order), int.from_bytes(raw[2:4], order))
    if tag not in _PIXEL_TAGS:
        return PixelElement()
    left = size - pos
    if implicit:
        length, value_at = int.from_bytes(raw[4:8], order), pos + 8
    elif raw[4:6] in _LONG_VRS:
        length, value_at = int.from_bytes(raw[8:12], order), pos + 12
    else:
        length, value_at = int.from_bytes(raw[6:8], order), pos + 8
    if tag != (0x7FE0, 0x0010):
        return PixelElement(True, None, None, left, float_data=True)
    return PixelElement(True, value_at, None if length == 0xFFFFFFFF else length, left)


def _encoding(ds: Any) -> tuple[bool, Literal["little", "big"]]:
    try:
        implicit, little = ds.original_encoding
    except Exception:
        implicit, little = False, True
    return bool(implicit), "little" if little is not False else "big"


@dataclass(frozen=True)
class FragmentWalk:
    """What the items of encapsulated pixel data say, read without decoding (:func:`walk_fragments`)."""

    complete: bool  # every item fits in the file and the sequence delimiter is there
    offsets: int  # entries in the basic offset table (one per frame where the table is filled)
    fragments: int  # items after the offset table
    too_long: bool = False  # more than MAX_FRAGMENT_WALK items: taken as complete, not counted

    def frames_held(self, transfer_syntax: str) -> int | None:
        """How many frames the items hold, where they say: one offset per frame in a filled offset
        table, one fragment per frame in RLE; None where a frame may span fragments (JPEG, no table)."""
        if not self.complete or self.too_long:
            return None
        if self.offsets:
            return self.offsets
        return self.fragments if transfer_syntax == RLE_TS else None


def walk_fragments(fp: BinaryIO, value_at: int, size: int) -> FragmentWalk:
    """Walk the items of encapsulated pixel data from ``value_at``: seeks, reads 8 bytes an item."""
    pos, items, table = value_at, 0, 0
    while pos + 8 <= size and items <= MAX_FRAGMENT_WALK:
        fp.seek(pos)
        head = fp.read(8)
        if len(head) < 8:
            break
        tag = (int.from_bytes(head[0:2], "little"), int.from_bytes(head[2:4], "little"))
        length = int.from_bytes(head[4:8], "little")
        if tag == _SEQ_END:
            return FragmentWalk(True, table // 4, max(items - 1, 0))
        if tag != _ITEM or pos + 8 + length > size:
            break
        if items == 0:
            table = length
        pos += 8 + length
        items += 1
    too_long = items > MAX_FRAGMENT_WALK
    return FragmentWalk(too_long, table // 4, max(items - 1, 0), too_long)


def fragments_complete(fp: BinaryIO, value_at: int, size: int, frames: int) -> bool:
    """Encapsulated pixel data: every item fits in the file, the sequence delimiter is there, and
    there is at least one fragment per frame (after the basic offset table)."""
    walk = walk_fragments(fp, value_at, size)
    return walk.too_long or (walk.complete and walk.fragments >= frames)


def native_bytes(rows: int, columns: int, samples: int, bits: int, frames: int, photometric: str) -> int:
    """Bytes that ``frames`` uncompressed frames occupy (bit-packed for 1-bit data, 4:2:2 subsampled)."""
    total = (rows * columns * max(samples, 1) * max(bits, 1) * frames + 7) // 8
    return total * 2 // 3 if photometric == "YBR_FULL_422" and samples == 3 else total


def _parse_frames(value: Any) -> tuple[int, bool]:
    """(NumberOfFrames, well-formed): absent means 1; '1A', '0' or '-3' are malformed (pydicom badVR.dcm)."""
    if value is None or value == "":
        return 1, True
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return 1, False
    if f != f or f < 1 or f != int(f):
        return 1, False
    return int(f), True


def transfer_syntax_rank(ts: str) -> int:
    """2 a transfer syntax that only stores losslessly, 0 one that always loses, 1 either (JPEG 2000 .91)."""
    if ts in LOSSLESS_TS:
        return 2
    if ts in LOSSY_TS or ts.startswith(MPEG_TS_PREFIX):
        return 0
    return 1


def _lossless_rank(ts: str, lossy_flag: str) -> int:
    """2 the image never went through lossy compression, 0 it did (LossyImageCompression 01 or a lossy
    transfer syntax), 1 unknown (a transfer syntax that may be lossy, no flag)."""
    rank = transfer_syntax_rank(ts)
    if lossy_flag == "01" or rank == 0:
        return 0
    return 2 if rank == 2 or lossy_flag == "00" else 1


def read_header(
    source: SliceSource, order: int, archives: ArchiveCache | None = None
) -> list[HeaderRecord] | SkippedFile:
    """Parse one file (or zip member) without its pixel data; one record per frame, or why it was skipped."""
    label = f"{source.path.name}:{source.member}" if source.member else str(source.path)
    try:
        if source.member is not None:
            from viewer.core.dicom.sources import archive_kind, read_source_bytes

            fp: BinaryIO
            kind = archives.kind(source.path) if archives is not None else archive_kind(source.path)
            if kind == "pack":  # a member of a cache pack: its header read from its range, not the whole
                fp, size = open_member(source.path, source.member)
            else:
                data = read_source_bytes(source, archives)
                fp = io.BytesIO(data)
                size = len(data)
        else:
            fp = open_regular(source.path)
            size = os.fstat(fp.fileno()).st_size
    except ImageTooLargeError as exc:
        return SkippedFile(label, Code.ZIP_BOMB, str(exc))
    except NotRegularFileError as exc:
        return SkippedFile(label, Code.SPECIAL_FILE, str(exc))
    except Exception as exc:  # OSError, DicomError, a zip member gone missing (KeyError), ...
        return SkippedFile(label, Code.READ, f"Cannot read the file ({type(exc).__name__})")
    with fp:
        head = fp.read(4096)
        if source.member is None and (head[:4] == ZIP_MAGIC or head[:2] == GZIP_MAGIC or is_pack_head(head)):
            return SkippedFile(label, ARCHIVE_CODE, "archive: its contents are read")
        if not sniff(head):
            return SkippedFile(label, Code.NOT_DICOM, "Not a DICOM file (no DICM marker or DICOM tag)")
        ds: Any
        try:
            fp.seek(0)
            if DEFLATED_TS.encode() in head:
                check_deflated(fp.read())
                fp.seek(0)
                from pydicom import dcmread  # imported where needed: rarely, in a scan

                ds = dcmread(fp, force=True)  # inflated in memory: pixels come along, positions do not
                has_pixels = any(t in ds for t in (0x7FE00010, 0x7FE00008, 0x7FE00009))
                pixel = PixelElement(has_pixels, None, None, size * MAX_INFLATION_RATIO)
            else:
                fp.seek(len(head))
                fast = rawheader.parse(fp, head, size)  # the common file, without pydicom's parser
                if fast is not None:
                    ds, pixel_at = fast
                    fp.seek(pixel_at)
                else:
                    from pydicom import dcmread

                    fp.seek(0)
                    ds = dcmread(fp, stop_before_pixels=True, force=True)
                pixel = pixel_element(fp, ds, size)
            return _records(ds, source, order, pixel, label, fp, size)
        except ImageTooLargeError as exc:
            return SkippedFile(label, Code.TOO_LARGE, str(exc))
        except NotDicomError as exc:
            return SkippedFile(label, Code.NOT_DICOM, str(exc))
        except Exception as exc:
            logger.debug("Header read failed: %s", type(exc).__name__)
            return SkippedFile(label, Code.READ, f"Unreadable DICOM header ({type(exc).__name__})")


def _records(
    ds: Any,
    source: SliceSource,
    order: int,
    pixel: PixelElement,
    label: str,
    fp: BinaryIO,
    size: int,
) -> list[HeaderRecord] | SkippedFile:
    meta = getattr(ds, "file_meta", None)
    meta = FastGetter(meta) if meta is not None else None
    g = FastGetter(ds)
    sop_class = _text(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return SkippedFile(label, Code.DICOMDIR, "DICOMDIR index, not an image")
    result_class = sop_class or _text(g, "SOPClassUID")
    kind = result_kind(result_class)
    if kind is not None:  # others' results: read by viewer.core.foreign, never loaded as images
        return ResultFile(label, Code.RESULT, f"{kind} object", source=source, sop_class_uid=result_class)
    if not pixel.present:
        return SkippedFile(label, Code.NO_PIXELS, "No image data (e.g. a report or presentation state)")
    rows, columns = _int(g("Rows")) or 0, _int(g("Columns")) or 0
    if rows <= 0 or columns <= 0:
        return SkippedFile(label, Code.READ, "Image without valid Rows/Columns")
    samples = _int(g("SamplesPerPixel")) or 1
    bits = _int(g("BitsAllocated")) or 16
    photometric = _text(g, "PhotometricInterpretation").upper() or "MONOCHROME2"
    per_frame = frame_bytes(rows, columns, samples, bits)
    if per_frame > MAX_FRAME_BYTES:
        raise ImageTooLargeError(too_large_message(per_frame, MAX_FRAME_BYTES))
    ts = _text(meta, "TransferSyntaxUID") if meta is not None else ""
    ts = ts or "1.2.840.10008.1.2"
    offset, length = pixel.value_at, pixel.length
    native = ts in NATIVE_TS and offset is not None and length is not None
    frames, well_formed = _parse_frames(g("NumberOfFrames"))
    notes: list[str] = []
    if not well_formed:
        one = native_bytes(rows, columns, samples, bits, 1, photometric)
        inferred = length // one if native and length is not None and bits >= 8 and one else 0
        if inferred < 1 or length is None or length - inferred * one > 1:  # one pad byte at most
            return SkippedFile(
                label,
                Code.FRAME_COUNT,
                f"NumberOfFrames '{_text(g, 'NumberOfFrames')[:16]}' is malformed and the frame count "
                "cannot be inferred from the pixel data",
            )
        frames = inferred
        notes.append("malformed NumberOfFrames: frame count inferred from the pixel data length")
    if frames > max(1, pixel.left // 8):
        raise ImageTooLargeError(f"Declares {frames} frames, more than the file can hold")
    if pixel.float_data:
        intact = True
    elif native:
        assert offset is not None and length is not None
        need = native_bytes(rows, columns, samples, bits, frames, photometric)
        intact = length >= need and offset + need <= size
    elif offset is not None:
        walk = walk_fragments(fp, offset, size)
        intact = walk.too_long or (walk.complete and walk.fragments >= frames)
        held = walk.frames_held(ts)
        if held is not None and held != frames:  # e.g. NumberOfFrames lost: the other frames dropped
            return SkippedFile(
                label,
                Code.FRAME_COUNT,
                f"NumberOfFrames gives {frames} frame(s) but the pixel data holds {held}",
            )
    else:  # deflated: the whole dataset was inflated, pixel data included
        try:
            intact = len(ds.PixelData) >= native_bytes(rows, columns, samples, bits, frames, photometric)
        except Exception:
            intact = True
    lossy_flag = _text(g, "LossyImageCompression")
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    try:
        per = ds.get("PerFrameFunctionalGroupsSequence")
        per_items = list(per) if per else []
    except Exception:
        per_items = []
    common = dict(
        sop_instance_uid=_text(g, "SOPInstanceUID"),
        instance_number=_int(g("InstanceNumber")),
        rows=rows,
        columns=columns,
        samples_per_pixel=samples,
        photometric=photometric,
        bits_allocated=bits,
        transfer_syntax_uid=ts,
        image_type=tuple(v.strip().upper() for v in _text(g, "ImageType").split("\\") if v.strip()),
        acquisition_number=_int(g("AcquisitionNumber")),
        bits_stored=_int(g("BitsStored")),
        pixel_representation=_int(g("PixelRepresentation")) or 0,
        number_of_frames=frames,
        pixel_length=length if native else None,
        has_modality_lut="ModalityLUTSequence" in ds,
        lossy=lossy_flag == "01" or transfer_syntax_rank(ts) == 0,
        lossy_ratio=_float(g("LossyImageCompressionRatio")),
    )
    top_window = _window(g("WindowCenter"), g("WindowWidth"))
    voi_lut = read_voi_lut(ds) if "VOILUTSequence" in ds else None
    keys: dict[str, Any] = dict(
        patient_id=_text(g, "PatientID"),
        patient_name=_text(g, "PatientName"),
        birth_date=_text(g, "PatientBirthDate"),
        sex=_text(g, "PatientSex"),
        patient_age=_text(g, "PatientAge"),
        study_uid=_text(g, "StudyInstanceUID"),
        study_date=_text(g, "StudyDate"),
        study_description=_text(g, "StudyDescription"),
        accession=_text(g, "AccessionNumber"),
        series_uid=_text(g, "SeriesInstanceUID"),
        series_number=_int(g("SeriesNumber")),
        series_description=_text(g, "SeriesDescription"),
        body_part=_text(g, "BodyPartExamined").upper(),
        modality=_text(g, "Modality").upper(),
        frame_of_reference_uid=_text(g, "FrameOfReferenceUID") or None,
        pixel_intact=intact,
        lossless=_lossless_rank(ts, lossy_flag),
        notes=tuple(notes),
    )
    top_spacing = _floats(g("PixelSpacing"), 2)
    records = []
    for f in range(frames):
        groups = [per_items[f] if f < len(per_items) else None, shared]
        pos = _floats(_frame_attr(groups, "PlanePositionSequence", "ImagePositionPatient"), 3)
        iop = _floats(_frame_attr(groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        declared = _floats(_frame_attr(groups, "PixelMeasuresSequence", "PixelSpacing"), 2)
        declared = declared or top_spacing
        spacing = positive_spacing(declared)
        if declared is not None and spacing is None and f == 0:
            keys["notes"] = (*keys["notes"], "invalid PixelSpacing (zero or negative): sizes in pixels")
        thick = _float(_frame_attr(groups, "PixelMeasuresSequence", "SliceThickness"))
        slope = _float(_frame_attr(groups, "PixelValueTransformationSequence", "RescaleSlope"))
        icpt = _float(_frame_attr(groups, "PixelValueTransformationSequence", "RescaleIntercept"))
        win = _window(
            _frame_attr(groups, "FrameVOILUTSequence", "WindowCenter"),
            _frame_attr(groups, "FrameVOILUTSequence", "WindowWidth"),
        )
        if pos is None and frames == 1:
            pos = _floats(g("ImagePositionPatient"), 3)
        iop = iop or _floats(g("ImageOrientationPatient"), 6)
        info = SliceInfo(
            source=SliceSource(source.path, source.member, f),
            position=pos,  # type: ignore[arg-type]
            orientation=iop,  # type: ignore[arg-type]
            pixel_spacing=spacing,
            slice_thickness=thick if thick is not None else _float(g("SliceThickness")),
            rescale_slope=slope if slope is not None else (_float(g("RescaleSlope")) or 1.0),
            rescale_intercept=icpt if icpt is not None else (_float(g("RescaleIntercept")) or 0.0),
            window=win or top_window,
            voi_function=voi_function(
                _frame_attr(groups, "FrameVOILUTSequence", "VOILUTFunction") if win else g("VOILUTFunction")
            ),
            voi_lut=voi_lut,
            pixel_offset=offset + f * per_frame if native and offset is not None else None,
            **common,  # type: ignore[arg-type]
        )
        records.append(HeaderRecord(info=info, order=order, **keys))
    if notes and not _is_fast_path(records[0].info):
        # Only the direct reader uses the inferred count; a decoder would read the malformed one itself.
        return SkippedFile(
            label, Code.FRAME_COUNT, "Malformed NumberOfFrames in pixel data that only a decoder can read"
        )
    return records


def _is_fast_path(info: SliceInfo) -> bool:
    from viewer.core.dicom.pixels import is_fast_path  # pixels imports this module

    return is_fast_path(info)


def _window(center: Any, width: Any) -> Window | None:
    c, w = _float(center), _float(width)
    if c is None or w is None or w <= 0:
        return None
    return Window(width=w, level=c)
