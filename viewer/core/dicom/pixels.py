"""Decode one frame to a native-endian array: modality values (int16 or float32), or uint8 RGB for colour.

Guards run before any pixel allocation: the declared frame size against :data:`MAX_FRAME_BYTES`
and free memory, and (uncompressed data) against the bytes actually in the file.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from viewer.core.constants import MAX_FRAME_BYTES
from viewer.core.dicom.encapsulated import decode_encapsulated, is_encapsulated
from viewer.core.dicom.files import open_regular_fd
from viewer.core.dicom.header import DEFLATED_TS, check_deflated, frame_bytes, read_header, too_large_message
from viewer.core.dicom.model import SkippedFile, SliceInfo, SliceSource
from viewer.core.dicom.sources import ArchiveCache, read_source_bytes
from viewer.core.errors import DicomError, ImageTooLargeError, NotDicomError, PixelDecodeError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

BIG_ENDIAN_TS = "1.2.840.10008.1.2.2"
GREY = ("MONOCHROME1", "MONOCHROME2")


_MEMINFO: list[float] = [0.0, 0.0]  # (time read, bytes): /proc/meminfo at most once a second


def available_memory() -> int | None:
    """Bytes of physical memory available now (None where the platform does not say)."""
    now = time.monotonic()
    if now - _MEMINFO[0] < 1.0 and _MEMINFO[1]:
        return int(_MEMINFO[1])
    free: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        free = None
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    _MEMINFO[:] = [now, float(free)]
    return free


def check_frame_size(info: SliceInfo) -> int:
    """Declared bytes of one stored frame; raise :class:`ImageTooLargeError` over the budget."""
    declared = frame_bytes(info.rows, info.columns, info.samples_per_pixel, info.bits_allocated)
    if declared > MAX_FRAME_BYTES:
        raise ImageTooLargeError(too_large_message(declared, MAX_FRAME_BYTES))
    decoded = info.rows * info.columns * max(info.samples_per_pixel, 1) * 4  # float32 / RGB working copy
    free = available_memory()
    if free is not None and declared + decoded > free:
        raise ImageTooLargeError(
            f"Image too large ({(declared + decoded) / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free)"
        )
    return declared


def is_fast_path(info: SliceInfo) -> bool:
    """Uncompressed single-sample greyscale whose bytes can be read straight from the file."""
    return (
        info.pixel_offset is not None
        and info.samples_per_pixel == 1
        and info.bits_allocated in (8, 16, 32)
        and info.photometric in GREY
        and not info.has_modality_lut
    )


def _native_dtype(info: SliceInfo) -> np.dtype:
    kind = "i" if info.pixel_representation else "u"
    order = ">" if info.transfer_syntax_uid == BIG_ENDIAN_TS else "<"
    return np.dtype(f"{order}{kind}{info.bits_allocated // 8}")


def _frame_extent(info: SliceInfo) -> tuple[int, int]:
    """(bytes, file offset) of an uncompressed frame, after the size guards and a check that the frame
    lies inside its Pixel Data element (a damaged element header: the bytes there are not this frame's)."""
    need = check_frame_size(info)
    offset = info.pixel_offset
    assert offset is not None
    frame = info.source.frame if info.number_of_frames > 1 else 0
    if info.pixel_length is not None and (frame + 1) * need > info.pixel_length:
        raise PixelDecodeError(
            f"Cannot decode {info.source.display_name}: its Pixel Data element holds "
            f"{info.pixel_length:,} bytes, frame {frame + 1} needs {(frame + 1) * need:,} (E-TRUNC-PIXEL)"
        )
    return need, offset


def _check_found(info: SliceInfo, need: int, found: int) -> None:
    if found < need:
        raise PixelDecodeError(
            f"Truncated pixel data in {info.source.display_name} "
            f"(expected {need:,} bytes, found {found:,}; E-TRUNC-PIXEL)"
        )


def read_raw(info: SliceInfo, archives: ArchiveCache | None = None, data: bytes | None = None) -> np.ndarray:
    """Fast path: the stored integers of one frame, native-endian, masked to BitsStored."""
    need, offset = _frame_extent(info)
    if info.source.member is None and data is None:
        with info.source.path.open("rb") as fh:
            # checked before reading: no buffer sized by the header
            _check_found(info, need, max(os.fstat(fh.fileno()).st_size - offset, 0))
            fh.seek(offset)
            buf = fh.read(need)
    else:
        blob = data if data is not None else read_source_bytes(info.source, archives)
        buf = blob[offset : offset + need]
    _check_found(info, need, len(buf))
    arr = np.frombuffer(buf, dtype=_native_dtype(info)).reshape(info.rows, info.columns)
    return _mask(arr.astype(arr.dtype.newbyteorder("="), copy=False), info)


def read_raw_into(info: SliceInfo, dest: np.ndarray) -> bool:
    """Fast path straight into ``dest``, an int16 (rows, cols) slice of a volume: the file's pixel bytes
    are read into it with ``readinto`` (no intermediate buffer), masked and rescaled in place.

    Returns False (``dest`` untouched) where this does not apply (a zip member, big endian, not 16-bit
    data): use :func:`read_raw` and :func:`to_modality` instead. Same guards and errors as
    :func:`read_raw`; :class:`ModalityOverflow` if the values do not fit int16.
    """
    if (
        info.source.member is not None
        or info.transfer_syntax_uid == BIG_ENDIAN_TS
        or info.bits_allocated != 16
        or dest.dtype != np.int16
        or dest.shape != (info.rows, info.columns)
        or not dest.flags.c_contiguous
    ):
        return False
    need, offset = _frame_extent(info)
    fd, st = open_regular_fd(info.source.path)  # a FIFO swapped in since the scan cannot block this
    try:
        _check_found(info, need, max(st.st_size - offset, 0))
        got = _read_at(fd, memoryview(dest.data).cast("B")[:need], offset)
    finally:
        os.close(fd)
    _check_found(info, need, got)
    stored = dest.view(_native_dtype(info))
    bits = info.bits_stored
    if bits is not None and 0 < bits < 16:  # in place, as _mask does
        if info.pixel_representation:
            np.left_shift(stored, 16 - bits, out=stored)
            np.right_shift(stored, 16 - bits, out=stored)
        else:
            np.bitwise_and(stored, (1 << bits) - 1, out=stored)
    intercept = int(info.rescale_intercept)
    if info.rescale_slope != 1.0 or intercept != info.rescale_intercept:
        raise ModalityOverflow("Rescale slope/intercept are not integral")
    _check_int16(stored, intercept)
    if intercept:  # modulo 2**16, exact because the result fits int16 (checked above)
        np.add(dest, np.int16(intercept), out=dest)
    return True


def _read_at(fd: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` from ``offset`` of ``fd`` (one ``preadv`` where there is one); bytes read."""
    got = 0
    while got < len(view):
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [view[got:]], offset + got)
        else:  # Windows
            os.lseek(fd, offset + got, os.SEEK_SET)
            with open(fd, "rb", buffering=0, closefd=False) as fh:
                n = fh.readinto(view[got:]) or 0
        if not n:
            break
        got += n
    return got


def _mask(arr: np.ndarray, info: SliceInfo) -> np.ndarray:
    stored = info.bits_stored
    bits = info.bits_allocated
    if stored is None or stored >= bits or stored <= 0:
        return arr
    if info.pixel_representation:
        shift = bits - stored
        return (arr << shift) >> shift  # sign-extend from BitsStored, as pydicom does
    return arr & ((1 << stored) - 1)


INT16_MIN, INT16_MAX = -32768, 32767


class ModalityOverflow(DicomError):
    """A slice's modality values do not fit the stack's int16 volume: the volume must be float32."""


def stored_range(info: SliceInfo) -> tuple[int, int] | None:
    """(lowest, highest) stored integer the header allows (BitsStored, PixelRepresentation)."""
    bits = info.bits_stored or info.bits_allocated
    if bits <= 0 or info.bits_allocated not in (8, 16):
        return None
    bits = min(bits, info.bits_allocated)
    if info.pixel_representation:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def int16_ok(info: SliceInfo) -> bool:
    """True when the modality LUT maps this frame's stored integers to integers that int16 can hold.

    Slope 1, an integral intercept, greyscale 8/16-bit data without a Modality LUT Sequence, and a
    stored range + intercept within int16. Signed 16-bit data with a negative intercept (or unsigned
    16-bit data with any intercept), as GE CT and pydicom's ``CT_small.dcm`` store, only reaches past
    int16 at the extreme of its declared range, which no CT uses: it is accepted too, and every such
    slice's actual range is checked when it is converted (:class:`ModalityOverflow` otherwise).
    """
    if info.is_color or info.has_modality_lut or info.photometric not in GREY:
        return False
    slope, intercept = info.rescale_slope, info.rescale_intercept
    if slope != 1.0 or not float(intercept).is_integer() or abs(intercept) > INT16_MAX:
        return False
    return stored_range(info) is not None


def modality_dtype(slices: Sequence[SliceInfo]) -> np.dtype:
    """The dtype of a stack's modality values, decided once from every slice's header: int16 when
    :func:`int16_ok` holds for all of them (nearly all CT), else float32."""
    if slices and all(int16_ok(info) for info in slices):
        return np.dtype(np.int16)
    return np.dtype(np.float32)


def _check_int16(arr: np.ndarray, intercept: int) -> None:
    """Raise :class:`ModalityOverflow` unless ``arr + intercept`` fits int16 (one pass at most)."""
    if arr.dtype.kind not in "iu" or arr.dtype.itemsize > 2:
        raise ModalityOverflow("Stored values are not 8/16-bit integers")
    limits = np.iinfo(arr.dtype)
    if not arr.size:
        return
    if limits.min + intercept < INT16_MIN and int(arr.min()) + intercept < INT16_MIN:
        raise ModalityOverflow("Modality values below the int16 range")
    if limits.max + intercept > INT16_MAX and int(arr.max()) + intercept > INT16_MAX:
        raise ModalityOverflow("Modality values above the int16 range")


def to_modality(
    arr: np.ndarray,
    info: SliceInfo,
    out: np.ndarray | None = None,
    *,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Stored values -> modality values (slope/intercept applied exactly once).

    ``dtype`` float32, or int16 for a stack :func:`modality_dtype` chose int16 for (the values are
    then exact integers; :class:`ModalityOverflow` if this slice's values do not fit). ``out``, if
    given, sets the dtype.
    """
    target = np.dtype(dtype) if out is None else out.dtype
    result = np.empty(arr.shape, dtype=target) if out is None else out
    if target == np.int16:
        intercept = int(info.rescale_intercept)
        if info.rescale_slope != 1.0 or intercept != info.rescale_intercept:
            raise ModalityOverflow("Rescale slope/intercept are not integral")
        _check_int16(arr, intercept)
        if intercept:
            np.add(arr, np.int16(intercept), out=result, dtype=np.int16, casting="unsafe")
        else:
            np.copyto(result, arr, casting="unsafe")
        return result
    slope, intercept_f = np.float32(info.rescale_slope), np.float32(info.rescale_intercept)
    if slope != 1.0:
        np.multiply(arr, slope, out=result, dtype=np.float32, casting="unsafe")
        if intercept_f != 0.0:
            result += intercept_f
    elif intercept_f != 0.0:
        np.add(arr, intercept_f, out=result, dtype=np.float32, casting="unsafe")  # one pass
    else:
        np.copyto(result, arr, casting="unsafe")
    return result


def _to_uint8_rgb(arr: np.ndarray, info: SliceInfo) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    top = int(arr.max()) if arr.size else 0
    if top <= 255 and arr.min() >= 0:
        return arr.astype(np.uint8)
    shift = max((info.bits_stored or info.bits_allocated) - 8, 0)
    if top >> shift > 255:
        shift = max(int(top).bit_length() - 8, 0)
    return (np.clip(arr, 0, None).astype(np.uint32) >> shift).astype(np.uint8)


def decode_frame(
    info: SliceInfo,
    *,
    archives: ArchiveCache | None = None,
    data: bytes | None = None,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """One frame: (rows, cols) modality values in ``dtype`` (float32, or int16 when the stack's
    :func:`modality_dtype` is int16), or uint8 (rows, cols, 3) RGB for colour.

    Raises :class:`ImageTooLargeError` before allocating anything over the budget and
    :class:`PixelDecodeError` (naming the file, never its folder) for truncated or corrupt data.
    """
    arr, pending = _decode(info, archives, data, stored=True)
    return to_modality(arr, info, dtype=dtype) if pending else arr


def decode_stored(info: SliceInfo, *, archives: ArchiveCache | None = None) -> tuple[np.ndarray, bool]:
    """Like :func:`decode_frame`, but a greyscale frame without a Modality LUT comes back as its stored
    values with ``True``: the caller applies :func:`to_modality` (half the bytes to move between processes).
    """
    return _decode(info, archives, None, stored=True)


def _decode(
    info: SliceInfo, archives: ArchiveCache | None, data: bytes | None, *, stored: bool
) -> tuple[np.ndarray, bool]:
    if is_fast_path(info):
        return read_raw(info, archives, data), True
    need = check_frame_size(info)
    name = info.source.display_name
    if info.photometric == "YBR_FULL_422" and info.samples_per_pixel == 3:
        need = need * 2 // 3  # chroma subsampled 2:1 horizontally when uncompressed
    if info.pixel_offset is not None and info.source.member is None and data is None:
        try:
            found = max(info.source.path.stat().st_size - info.pixel_offset, 0)
        except OSError as exc:
            raise PixelDecodeError(f"Cannot read {name} ({type(exc).__name__})") from exc
        if found < need:
            raise PixelDecodeError(
                f"Truncated pixel data in {name} (expected {need:,} bytes, found {found:,}; E-TRUNC-PIXEL)"
            )
    try:
        blob = data
        if blob is None and (info.source.member is not None or info.transfer_syntax_uid == DEFLATED_TS):
            blob = read_source_bytes(info.source, archives)
        if blob is not None and info.transfer_syntax_uid == DEFLATED_TS:
            check_deflated(blob)
        src = io.BytesIO(blob) if blob is not None else info.source.path
        return _decode_with_pydicom(info, src, stored=stored)
    except (ImageTooLargeError, PixelDecodeError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # also a Rust decoder's PanicException (pylibjpeg-rle), not an Exception
        logger.debug("Decode failed: %s", type(exc).__name__)
        raise PixelDecodeError(f"Cannot decode {name}: {_short(exc)}") from exc


# a decoder's Python wrapper failing inside its own code on damaged data: pydicom's GDCM plugin gives
# "gdcm: 'NoneType' object has no attribute 'encode'" for a JPEG lossless frame with two bytes changed
_WRAPPER_FAULT = re.compile(
    r"object has no attribute|'NoneType'|object is not subscriptable|unsupported operand"
)


def _short(exc: BaseException) -> str:
    """The decoder's words, on one line; said as damaged data (E-CORRUPT) when they are its wrapper's
    failure, which means nothing to a reader (the words follow, for a report)."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if _WRAPPER_FAULT.search(text):
        said = "the decoder failed on the frame's data, which is damaged (E-CORRUPT); its words:"
        return f"{said} {text}"[:300]
    return (text or type(exc).__name__)[:300]


def _decode_with_pydicom(info: SliceInfo, src: io.BytesIO | Path, *, stored: bool) -> tuple[np.ndarray, bool]:
    from pydicom.dataset import Dataset
    from pydicom.pixels import pixel_array

    if is_encapsulated(info.transfer_syntax_uid):  # codestream checked, one named decoder
        arr, ds_out = decode_encapsulated(info, src)
        return _finish(arr, ds_out, info, stored=stored)
    ds_out = Dataset()
    index = info.source.frame if info.number_of_frames > 1 else None
    try:
        arr = pixel_array(src, ds_out=ds_out, index=index)
    except Exception:
        # No (or a broken) file meta: read the whole object, then name its transfer syntax ourselves.
        from pydicom import dcmread
        from pydicom.uid import UID

        if isinstance(src, io.BytesIO):
            src.seek(0)
        ds_out = dcmread(src, force=True)
        if "TransferSyntaxUID" not in ds_out.file_meta:
            ds_out.file_meta.TransferSyntaxUID = UID(info.transfer_syntax_uid)
        arr = pixel_array(ds_out, index=index)
    if info.number_of_frames > 1 and arr.ndim > 2 and arr.shape[0] == 1 and info.samples_per_pixel == 1:
        arr = arr[0]
    return _finish(arr, ds_out, info, stored=stored)


def _finish(arr: np.ndarray, ds_out: Dataset, info: SliceInfo, *, stored: bool) -> tuple[np.ndarray, bool]:
    """A decoded frame to the viewer's forms: uint8 RGB for colour, stored or modality values for grey."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    photometric = info.photometric
    if photometric == "PALETTE COLOR":
        return _to_uint8_rgb(apply_color_lut(arr, ds_out), info), False
    if info.samples_per_pixel > 1:
        return _to_uint8_rgb(arr, info), False
    if arr.ndim != 2:
        raise PixelDecodeError(f"Unexpected decoded shape {arr.shape} in {info.source.display_name}")
    if info.has_modality_lut and "ModalityLUTSequence" in ds_out:
        return np.asarray(apply_modality_lut(arr, ds_out), dtype=np.float32), False
    return (arr, True) if stored else (to_modality(arr, info), False)


def decode_file(path: str | Path, frame: int = 0) -> np.ndarray:
    """Read the header of ``path`` then decode ``frame`` (typed errors; for CLIs, tests and fuzzing)."""
    result = read_header(SliceSource(Path(path)), 0)
    if isinstance(result, SkippedFile):
        if result.code in ("E-TOO-LARGE", "E-ZIP-BOMB"):
            raise ImageTooLargeError(result.reason)
        if result.code == "E-NOT-DICOM":
            raise NotDicomError(result.reason)
        raise DicomError(f"{result.code}: {result.reason}")
    if not 0 <= frame < len(result):
        raise DicomError(f"Frame {frame} out of range (the object has {len(result)} frames)")
    return decode_frame(result[frame].info)
