"""Header-only reads: sniff, parse without pixel data, and turn one object into per-frame SliceInfos."""

from __future__ import annotations

import io
import logging
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword

from viewer.core.constants import MAX_FRAME_BYTES, MAX_INFLATED_BYTES, MAX_INFLATION_RATIO, Window
from viewer.core.dicom.model import SkippedFile, SliceInfo, SliceSource
from viewer.core.dicom.sources import MEDIA_STORAGE_DIRECTORY, ArchiveCache
from viewer.core.dicom.voi import read_voi_lut, voi_function
from viewer.core.errors import ImageTooLargeError, NotDicomError

logger = logging.getLogger(__name__)

DEFLATED_TS = "1.2.840.10008.1.2.1.99"
ARCHIVE_CODE = "ARCHIVE"  # internal: read_header found a zip archive, the loader expands it
NATIVE_TS = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})
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
    study_uid: str = ""
    study_date: str = ""
    study_description: str = ""
    accession: str = ""
    series_uid: str = ""
    series_number: int | None = None
    series_description: str = ""
    modality: str = ""
    frame_of_reference_uid: str | None = None


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


_BINARY_INTS = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}
_ASCII_VRS = frozenset({"CS", "DS", "IS", "UI", "DA", "TM", "DT", "AS", "AE"})
_TAG_CACHE: dict[str, int] = {}


class FastGetter:
    """Read a few header values straight from pydicom's raw elements (pydicom's value conversion is
    most of a header read's cost); anything unusual (non-ASCII text, sequences) goes through pydicom."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    def __call__(self, keyword: str) -> Any:
        tag = _TAG_CACHE.get(keyword)
        if tag is None:
            tag = tag_for_keyword(keyword)
            if tag is None:
                return None
            _TAG_CACHE[keyword] = tag
        try:
            elem = self.ds.get_item(tag)
        except Exception:
            return None
        if elem is None:
            return None
        if not getattr(elem, "is_raw", False):
            return getattr(elem, "value", None)
        raw = elem.value
        vr = elem.VR
        if vr is None:
            vr = dictionary_VR(tag)
        if raw is None or not isinstance(raw, bytes):
            return self._slow(keyword)
        if vr in _BINARY_INTS:
            fmt = _BINARY_INTS[vr]
            width = struct.calcsize(fmt)
            count = len(raw) // width
            if count == 0:
                return None
            values = struct.unpack(
                ("<" if elem.is_little_endian else ">") + fmt * count, raw[: count * width]
            )
            return values[0] if count == 1 else list(values)
        if vr in _ASCII_VRS or (vr in ("PN", "LO", "SH", "ST", "LT") and raw.isascii()):
            text = raw.decode("ascii", "replace").strip(" \x00")
            if vr in ("ST", "LT"):
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


def _pixel_element(fp: BinaryIO, ds: Any, size: int) -> tuple[bool, int | None, int | None, int]:
    """(has pixel data, value offset, defined length, bytes left from the element) at fp's position."""
    pos = fp.tell()
    raw = fp.read(12)
    if len(raw) < 8:
        return False, None, None, 0
    try:
        implicit, little = ds.original_encoding
    except Exception:
        implicit, little = False, True
    order: Literal["little", "big"] = "little" if little is not False else "big"
    tag = (int.from_bytes(raw[0:2], order), int.from_bytes(raw[2:4], order))
    if tag not in _PIXEL_TAGS:
        return False, None, None, 0
    left = size - pos
    if implicit:
        length, value_at = int.from_bytes(raw[4:8], order), pos + 8
    elif raw[4:6] in _LONG_VRS:
        length, value_at = int.from_bytes(raw[8:12], order), pos + 12
    else:
        length, value_at = int.from_bytes(raw[6:8], order), pos + 8
    if tag != (0x7FE0, 0x0010) or length == 0xFFFFFFFF:
        return True, None, None, left
    return True, value_at, length, left


def read_header(
    source: SliceSource, order: int, archives: ArchiveCache | None = None
) -> list[HeaderRecord] | SkippedFile:
    """Parse one file (or zip member) without its pixel data; one record per frame, or why it was skipped."""
    label = f"{source.path.name}:{source.member}" if source.member else str(source.path)
    try:
        if source.member is not None:
            from viewer.core.dicom.sources import read_source_bytes

            data = read_source_bytes(source, archives)
            fp: BinaryIO = io.BytesIO(data)
            size = len(data)
        else:
            fp = source.path.open("rb")
            size = source.path.stat().st_size
    except ImageTooLargeError as exc:
        return SkippedFile(label, "E-ZIP-BOMB", str(exc))
    except Exception as exc:  # OSError, DicomError, a zip member gone missing (KeyError), ...
        return SkippedFile(label, "E-READ", f"Cannot read the file ({type(exc).__name__})")
    with fp:
        head = fp.read(4096)
        if head[:4] == b"PK\x03\x04" and source.member is None:
            return SkippedFile(label, ARCHIVE_CODE, "zip archive: its members are read")
        if not sniff(head):
            return SkippedFile(label, "E-NOT-DICOM", "Not a DICOM file (no DICM marker or DICOM tag)")
        try:
            fp.seek(0)
            if DEFLATED_TS.encode() in head:
                check_deflated(fp.read())
                fp.seek(0)
                ds = dcmread(fp, force=True)  # inflated in memory: pixels come along, positions do not
                has_pixels = any(t in ds for t in (0x7FE00010, 0x7FE00008, 0x7FE00009))
                offset, length, left = None, None, size * MAX_INFLATION_RATIO
            else:
                ds = dcmread(fp, stop_before_pixels=True, force=True)
                has_pixels, offset, length, left = _pixel_element(fp, ds, size)
            return _records(ds, source, order, has_pixels, offset, length, left, label)
        except ImageTooLargeError as exc:
            return SkippedFile(label, "E-TOO-LARGE", str(exc))
        except NotDicomError as exc:
            return SkippedFile(label, "E-NOT-DICOM", str(exc))
        except Exception as exc:
            logger.debug("Header read failed: %s", type(exc).__name__)
            return SkippedFile(label, "E-READ", f"Unreadable DICOM header ({type(exc).__name__})")


def _records(
    ds: Any,
    source: SliceSource,
    order: int,
    has_pixels: bool,
    offset: int | None,
    length: int | None,
    left: int,
    label: str,
) -> list[HeaderRecord] | SkippedFile:
    meta = getattr(ds, "file_meta", None)
    meta = FastGetter(meta) if meta is not None else None
    g = FastGetter(ds)
    sop_class = _text(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return SkippedFile(label, "E-DICOMDIR", "DICOMDIR index, not an image")
    if not has_pixels:
        return SkippedFile(label, "E-NO-PIXELS", "No image data (e.g. a report or presentation state)")
    rows, columns = _int(g("Rows")) or 0, _int(g("Columns")) or 0
    if rows <= 0 or columns <= 0:
        return SkippedFile(label, "E-READ", "Image without valid Rows/Columns")
    samples = _int(g("SamplesPerPixel")) or 1
    bits = _int(g("BitsAllocated")) or 16
    per_frame = frame_bytes(rows, columns, samples, bits)
    if per_frame > MAX_FRAME_BYTES:
        raise ImageTooLargeError(too_large_message(per_frame, MAX_FRAME_BYTES))
    frames = max(_int(g("NumberOfFrames")) or 1, 1)
    if frames > max(1, left // 8):
        raise ImageTooLargeError(f"Declares {frames} frames, more than the file can hold")
    ts = _text(meta, "TransferSyntaxUID") if meta is not None else ""
    ts = ts or "1.2.840.10008.1.2"
    native = ts in NATIVE_TS and offset is not None
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
        photometric=_text(g, "PhotometricInterpretation").upper() or "MONOCHROME2",
        bits_allocated=bits,
        transfer_syntax_uid=ts,
        image_type=tuple(v.strip().upper() for v in _text(g, "ImageType").split("\\") if v.strip()),
        acquisition_number=_int(g("AcquisitionNumber")),
        bits_stored=_int(g("BitsStored")),
        pixel_representation=_int(g("PixelRepresentation")) or 0,
        number_of_frames=frames,
        pixel_length=length if native else None,
        has_modality_lut="ModalityLUTSequence" in ds,
    )
    top_window = _window(g("WindowCenter"), g("WindowWidth"))
    voi_lut = read_voi_lut(ds) if "VOILUTSequence" in ds else None
    keys: dict[str, Any] = dict(
        patient_id=_text(g, "PatientID"),
        patient_name=_text(g, "PatientName"),
        birth_date=_text(g, "PatientBirthDate"),
        sex=_text(g, "PatientSex"),
        study_uid=_text(g, "StudyInstanceUID"),
        study_date=_text(g, "StudyDate"),
        study_description=_text(g, "StudyDescription"),
        accession=_text(g, "AccessionNumber"),
        series_uid=_text(g, "SeriesInstanceUID"),
        series_number=_int(g("SeriesNumber")),
        series_description=_text(g, "SeriesDescription"),
        modality=_text(g, "Modality").upper(),
        frame_of_reference_uid=_text(g, "FrameOfReferenceUID") or None,
    )
    records = []
    for f in range(frames):
        groups = [per_items[f] if f < len(per_items) else None, shared]
        pos = _floats(_frame_attr(groups, "PlanePositionSequence", "ImagePositionPatient"), 3)
        iop = _floats(_frame_attr(groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        spacing = _floats(_frame_attr(groups, "PixelMeasuresSequence", "PixelSpacing"), 2)
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
            pixel_spacing=spacing or _floats(g("PixelSpacing"), 2),  # type: ignore[arg-type]
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
    return records


def _window(center: Any, width: Any) -> Window | None:
    c, w = _float(center), _float(width)
    if c is None or w is None or w <= 0:
        return None
    return Window(width=w, level=c)
