"""Read a compressed frame's own header (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ, RLE segment table)
and refuse it before any decoder runs when it disagrees with the DICOM header or is cut short.

Decoders size their buffers from the codestream, not from Rows/Columns: a JPEG-LS frame whose SOF
gives height 0 makes CharLS allocate without bound, and a 3.6 kB JPEG 2000 frame that declares
32767 x 32767 drives OpenJPEG to gigabytes. The DICOM header guards (``pixels.check_frame_size``)
bound Rows x Columns; this module makes sure the decoder is given the same numbers. It also catches
truncated JPEG frames (no EOI marker), which the JPEG decoders would otherwise fill with zeros.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from enum import Enum

from viewer.core.codes import Code
from viewer.core.errors import PixelDecodeError


class Family(str, Enum):
    JPEG = "jpeg"  # baseline, extended, lossless (ISO 10918-1)
    JPEG_LS = "jpeg-ls"
    J2K = "jpeg2000"  # JPEG 2000 and HTJ2K
    RLE = "rle"


FAMILY_BY_SYNTAX: dict[str, Family] = {
    "1.2.840.10008.1.2.4.50": Family.JPEG,
    "1.2.840.10008.1.2.4.51": Family.JPEG,
    "1.2.840.10008.1.2.4.57": Family.JPEG,
    "1.2.840.10008.1.2.4.70": Family.JPEG,
    "1.2.840.10008.1.2.4.80": Family.JPEG_LS,
    "1.2.840.10008.1.2.4.81": Family.JPEG_LS,
    "1.2.840.10008.1.2.4.90": Family.J2K,
    "1.2.840.10008.1.2.4.91": Family.J2K,
    "1.2.840.10008.1.2.4.201": Family.J2K,
    "1.2.840.10008.1.2.4.202": Family.J2K,
    "1.2.840.10008.1.2.4.203": Family.J2K,
    "1.2.840.10008.1.2.5": Family.RLE,
}

# SOF0-3, 5-7, 9-11, 13-15 (ISO 10918-1) and SOF55 (JPEG-LS, ISO 14495-1)
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
_EOI = b"\xff\xd9"
_EOI_TAIL = 16  # bytes at the end of a frame searched for the EOI marker
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_J2K_MAX_TILES = 65535  # Isot is a 16-bit tile index
_J2K_SEARCH = 4096  # a JP2 wrapper (not DICOM, but seen) puts a few boxes before the codestream


@dataclass(frozen=True)
class FrameHeader:
    """What a frame's codestream says about itself."""

    rows: int
    columns: int
    samples: int
    precision: int  # bits per sample


@dataclass(frozen=True)
class Expected:
    """What the DICOM header says the frame holds."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int


def _fail(code: Code, message: str) -> PixelDecodeError:
    return PixelDecodeError(f"{message} ({code.value})")


def jpeg_header(frame: bytes) -> FrameHeader:
    """SOF of an ISO 10918-1 or JPEG-LS frame; :class:`PixelDecodeError` if there is none."""
    if frame[:2] != b"\xff\xd8":
        raise _fail(Code.CODESTREAM, "the JPEG frame does not start with an SOI marker")
    n = len(frame)
    pos = 2
    while pos < n:
        if frame[pos] != 0xFF:
            raise _fail(Code.CODESTREAM, f"no JPEG marker at byte {pos} before the frame header")
        while pos < n and frame[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker = frame[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI, EOI or SOS before any SOF
            raise _fail(Code.CODESTREAM, "the JPEG frame has no frame header (SOF) before its data")
        if pos + 2 > n:
            break
        (length,) = struct.unpack_from(">H", frame, pos)
        if length < 2 or pos + length > n:
            break
        if marker in _SOF_MARKERS:
            if length < 8:
                raise _fail(Code.CODESTREAM, "the JPEG frame header (SOF) is too short")
            precision, rows, columns, samples = struct.unpack_from(">BHHB", frame, pos + 2)
            return FrameHeader(rows, columns, samples, precision)
        pos += length
    raise _fail(Code.TRUNC_PIXEL, "the JPEG frame ends before its frame header (SOF)")


def j2k_header(frame: bytes) -> FrameHeader:
    """SIZ of a JPEG 2000 codestream (bare or in a JP2 wrapper)."""
    start = frame.find(_J2K_SOC_SIZ, 0, _J2K_SEARCH)
    if start < 0:
        raise _fail(Code.CODESTREAM, "no JPEG 2000 codestream header (SOC, SIZ) in the frame")
    pos = start + 4
    if pos + 38 > len(frame):
        raise _fail(Code.TRUNC_PIXEL, "the JPEG 2000 frame ends inside its SIZ header")
    (lsiz, _rsiz, xsiz, ysiz, xosiz, yosiz, xtsiz, ytsiz, xtosiz, ytosiz, csiz) = struct.unpack_from(
        ">HHIIIIIIIIH", frame, pos
    )
    if csiz < 1 or lsiz != 38 + 3 * csiz or pos + lsiz > len(frame):
        raise _fail(Code.CODESTREAM, "the JPEG 2000 SIZ header is inconsistent")
    if xsiz <= xosiz or ysiz <= yosiz or xtsiz == 0 or ytsiz == 0 or xtosiz > xosiz or ytosiz > yosiz:
        raise _fail(Code.CODESTREAM, "the JPEG 2000 SIZ header gives an empty image or tiling")
    tiles = -(-(xsiz - xtosiz) // xtsiz) * -(-(ysiz - ytosiz) // ytsiz)
    if tiles > _J2K_MAX_TILES:
        raise _fail(Code.CODESTREAM, f"the JPEG 2000 SIZ header declares {tiles:,} tiles")
    precision = max((frame[pos + 38 + 3 * c] & 0x7F) + 1 for c in range(csiz))
    return FrameHeader(ysiz - yosiz, xsiz - xosiz, csiz, precision)


def check_rle(frame: bytes, expected: Expected) -> None:
    """The RLE header's segment count and offsets against the DICOM header and the frame's length."""
    if len(frame) < 64:
        raise _fail(Code.TRUNC_PIXEL, "the RLE frame is shorter than its header")
    count, *offsets = struct.unpack_from("<16I", frame, 0)
    want = expected.samples * -(-expected.bits_allocated // 8)
    if count != want:
        raise _fail(
            Code.CODESTREAM_SIZE,
            f"the RLE frame has {count} segments, the DICOM header implies {want}",
        )
    used = offsets[:count]
    if used[0] != 64 or any(b <= a for a, b in itertools.pairwise(used)) or used[-1] >= len(frame):
        raise _fail(
            Code.TRUNC_PIXEL if used[-1] >= len(frame) else Code.CODESTREAM,
            "the RLE segment offsets do not fit the frame",
        )


def _check_size(header: FrameHeader, expected: Expected, what: str) -> None:
    if header.rows == 0:
        raise _fail(
            Code.CODESTREAM_SIZE,
            f"the {what} frame declares height 0 (defined later by a DNL marker)",
        )
    if (header.rows, header.columns, header.samples) != (expected.rows, expected.columns, expected.samples):
        raise _fail(
            Code.CODESTREAM_SIZE,
            f"the {what} frame is {header.columns} x {header.rows} x {header.samples}, "
            f"the DICOM header says {expected.columns} x {expected.rows} x {expected.samples}",
        )
    if not 1 <= header.precision <= max(expected.bits_allocated, 8):
        raise _fail(
            Code.CODESTREAM_SIZE,
            f"the {what} frame has {header.precision}-bit samples, "
            f"more than Bits Allocated ({expected.bits_allocated})",
        )


def jpeg_ends(frame: bytes) -> bool:
    """True if the frame ends with an EOI marker, give or take a few padding bytes (DICOM pads
    fragments to an even length, with 0x00 or 0xFF). Entropy-coded data never holds FF D9 (an FF
    there is followed by 00, a restart marker or, in JPEG-LS, a byte below 0x80)."""
    return _EOI in frame[-_EOI_TAIL:]


def check_frame(frame: bytes, transfer_syntax_uid: str, expected: Expected) -> None:
    """Refuse ``frame`` (one frame's compressed bytes) before decoding when its codestream declares
    another size than the DICOM header, is malformed in its header, or is cut short.

    Raises :class:`PixelDecodeError` with an ``E-CODESTREAM*`` or ``E-TRUNC-PIXEL`` code. Syntaxes
    that are not compressed frames pass unchecked.
    """
    family = FAMILY_BY_SYNTAX.get(transfer_syntax_uid)
    if family is None:
        return
    if family is Family.RLE:
        check_rle(frame, expected)
        return
    if family is Family.J2K:
        _check_size(j2k_header(frame), expected, "JPEG 2000")
        return
    what = "JPEG-LS" if family is Family.JPEG_LS else "JPEG"
    _check_size(jpeg_header(frame), expected, what)
    if not jpeg_ends(frame):
        raise _fail(
            Code.TRUNC_PIXEL,
            f"the {what} frame is truncated (no end-of-image marker)",
        )
