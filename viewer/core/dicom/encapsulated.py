"""Decode one compressed (encapsulated) frame: read only that frame's bytes, check its codestream
against the DICOM header (:mod:`viewer.core.dicom.codestream`), then hand it to one named,
permissively licensed decoder.

Decoders by transfer syntax (first installed one wins; pydicom's own "try every plugin" is not
used, so a decoder that refuses a bad frame is never followed by one that decodes it partially):

- JPEG baseline, extended, lossless: GDCM (``python-gdcm``, Apache-2.0 / BSD)
- JPEG-LS: CharLS (``pyjpegls``, MIT / BSD-3-Clause), else GDCM
- JPEG 2000 / HTJ2K: OpenJPEG via ``pylibjpeg-openjpeg`` (MIT / BSD-2-Clause), else GDCM (its bundled
  OpenJPEG). pylibjpeg-openjpeg takes less CPU per 512 x 512 CT frame (one process, 100 frames
  interleaved: 5.4 against 6.6 ms for flat synthetic slices, 28.2 against 31.8 ms with CT-like
  noise), which is what bounds a whole-volume load on two cores.
- RLE Lossless: ``pylibjpeg-rle`` (MIT), else pydicom's own decoder
- 12-bit JPEG Extended, which GDCM's wheels cannot decode: only ``pylibjpeg-libjpeg`` (GPL-3.0),
  installed by the opt-in ``jpeg12`` extra; without it such frames are refused (``E-NO-DECODER``).

Lossy 8-bit JPEG frames are also decoded by Pillow (libjpeg-turbo, MIT-CMU) and refused where the
two decoders disagree beyond IDCT rounding (``E-CORRUPT``): damaged entropy-coded data that neither
reports comes out differently from each. A decoder that reports damaged data (a Python warning,
or libjpeg's "Corrupt JPEG data" printed on stderr) has its frame refused (``E-CORRUPT``): it would
show filler where the data ran out.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from viewer.core.dicom.codestream import FAMILY_BY_SYNTAX, Expected, Family, check_frame
from viewer.core.dicom.model import SliceInfo
from viewer.core.errors import PixelDecodeError

if TYPE_CHECKING:
    import numpy as np
    from pydicom.dataset import Dataset

JPEG_EXTENDED_12BIT = "1.2.840.10008.1.2.4.51"
PLUGIN_PREFERENCE: dict[Family, tuple[str, ...]] = {
    Family.JPEG: ("gdcm", "pylibjpeg"),
    Family.JPEG_LS: ("pyjpegls", "gdcm"),
    Family.J2K: ("pylibjpeg", "gdcm"),
    Family.RLE: ("pylibjpeg", "pydicom"),
}
# Lossy 8-bit JPEG is decoded twice, by GDCM and by Pillow, and refused where they disagree.
CROSS_CHECKED = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})
CROSS_CHECK_PLUGIN = "pillow"
CROSS_CHECK_TOLERANCE = 8  # intact files differ by at most 5 between libjpeg builds (IDCT rounding)
_PIXEL_DATA_ITEM = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian
_UNDEFINED_LENGTH = b"\xff\xff\xff\xff"
# Decoder warnings that mean the frame was cut short or damaged: the output would be partly filler.
_BAD_WARNING = re.compile(r"truncat|premature|corrupt|too short|insufficient|end of (file|data|stream)", re.I)
_STDERR_LOCK = threading.Lock()  # fd 2 is process-wide: one redirection at a time


def is_encapsulated(transfer_syntax_uid: str) -> bool:
    return transfer_syntax_uid in FAMILY_BY_SYNTAX


def choose_plugin(transfer_syntax_uid: str, bits_stored: int | None) -> str:
    """The pydicom decoding plugin used for this syntax; :class:`PixelDecodeError` if none is installed."""
    from pydicom.pixels import get_decoder

    family = FAMILY_BY_SYNTAX[transfer_syntax_uid]
    try:
        available = set(get_decoder(transfer_syntax_uid).available_plugins)
    except (NotImplementedError, ValueError):
        available = set()
    wanted = list(PLUGIN_PREFERENCE[family])
    if transfer_syntax_uid == JPEG_EXTENDED_12BIT and (bits_stored or 8) != 8:
        wanted.remove("gdcm")  # its wheels are built without 12-bit JPEG
    for name in wanted:
        if name in available:
            return name
    if transfer_syntax_uid == JPEG_EXTENDED_12BIT:
        raise PixelDecodeError(
            "12-bit JPEG Extended needs the optional 'jpeg12' extra (pylibjpeg-libjpeg, GPL-3.0) "
            "(E-NO-DECODER)"
        )
    raise PixelDecodeError(f"No decoder installed for transfer syntax {transfer_syntax_uid} (E-NO-DECODER)")


@functools.cache
def _decoding_tags() -> list[int]:
    """Tags a decode needs (group 0028: image pixel module, LUTs, rescale; extended offsets): parsing
    only these halves the header read of a typical CT file."""
    from pydicom.datadict import DicomDictionary

    return [tag for tag in DicomDictionary if tag >> 16 == 0x0028] + [0x7FE00001, 0x7FE00002]


def read_frame(fp: BinaryIO, info: SliceInfo) -> tuple[Dataset, bytes]:
    """The header (no pixel data) and the compressed bytes of ``info``'s frame, read from ``fp``."""
    from pydicom import dcmread
    from pydicom.encaps import get_frame
    from pydicom.uid import UID

    ds = dcmread(fp, force=True, stop_before_pixels=True, specific_tags=_decoding_tags())
    head = fp.read(12)
    if len(head) < 12 or head[:4] != _PIXEL_DATA_ITEM or head[8:12] != _UNDEFINED_LENGTH:
        raise PixelDecodeError(
            f"Cannot decode {info.source.display_name}: the pixel data is not encapsulated as its "
            "transfer syntax requires (E-CODESTREAM)"
        )
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = UID(info.transfer_syntax_uid)
    frames = max(info.number_of_frames, 1)
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    index = info.source.frame if frames > 1 else 0
    frame = get_frame(fp, index, number_of_frames=frames, extended_offsets=offsets)
    return ds, bytes(frame)


def decode_encapsulated(info: SliceInfo, src: io.BytesIO | Path) -> tuple[np.ndarray, Dataset]:
    """Decode ``info``'s frame: (array as pydicom returns it, the header dataset for LUTs).

    Raises :class:`PixelDecodeError` (with a code) when the frame's codestream disagrees with the
    DICOM header, is truncated, no permitted decoder is installed, or the decoder warns that the
    data was cut short.
    """
    from pydicom.encaps import encapsulate
    from pydicom.pixels import pixel_array

    if isinstance(src, Path):
        with src.open("rb") as fp:
            ds, frame = read_frame(fp, info)
    else:
        src.seek(0)
        ds, frame = read_frame(src, info)
    name = info.source.display_name
    expected = Expected(info.rows, info.columns, info.samples_per_pixel, info.bits_allocated)
    try:
        check_frame(frame, info.transfer_syntax_uid, expected)
        plugin = choose_plugin(info.transfer_syntax_uid, info.bits_stored)
    except PixelDecodeError as exc:
        raise PixelDecodeError(f"Cannot decode {name}: {exc}") from None
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.add_new(0x7FE00010, "OB", encapsulate([frame]))
    if "NumberOfFrames" in ds:
        ds.NumberOfFrames = 1
    with warnings.catch_warnings(record=True) as caught, native_stderr() as printed:
        warnings.simplefilter("always")
        arr = pixel_array(ds, decoding_plugin=plugin)
    reports = [str(w.message) for w in caught] + printed
    if any(_BAD_WARNING.search(text) for text in reports):
        raise PixelDecodeError(f"Cannot decode {name}: the decoder reports damaged data (E-CORRUPT)")
    if info.transfer_syntax_uid in CROSS_CHECKED and plugin != CROSS_CHECK_PLUGIN:
        _cross_check(arr, ds, name)
    return arr, ds


def _cross_check(arr: np.ndarray, ds: Dataset, name: str) -> None:
    """Decode a lossy JPEG frame a second time with another libjpeg (Pillow's libjpeg-turbo) and
    refuse it when the two disagree beyond IDCT rounding: damaged entropy-coded data that no
    decoder reports comes out differently from each (GDCM's IJG 6b wraps overflowing samples
    around, libjpeg-turbo clamps), so a disagreement means the pixels are not the image's."""
    import numpy as np
    from pydicom.pixels import get_decoder, pixel_array

    if CROSS_CHECK_PLUGIN not in get_decoder(str(ds.file_meta.TransferSyntaxUID)).available_plugins:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = pixel_array(ds, decoding_plugin=CROSS_CHECK_PLUGIN)
    except Exception:  # Pillow cannot decode every JPEG GDCM can (e.g. 12-bit): nothing to compare
        return
    if other.shape != arr.shape:
        return
    diff = np.abs(arr.astype(np.int32) - other.astype(np.int32))
    if int(diff.max(initial=0)) > CROSS_CHECK_TOLERANCE:
        raise PixelDecodeError(
            f"Cannot decode {name}: two JPEG decoders disagree on its data, which is damaged (E-CORRUPT)"
        )


@contextlib.contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Collect what C/C++ decoders print on file descriptor 2 during the block (libjpeg inside GDCM
    reports "Corrupt JPEG data: premature end of data segment" there and decodes on with filler).

    The lines are filled in when the block ends. Where fd 2 cannot be redirected, nothing is collected.
    """
    lines: list[str] = []
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            yield lines
            return
        try:
            sink = _stderr_sink()
            sink.seek(0)
            sink.truncate()
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
            sink.seek(0)
            text = sink.read(64 * 1024).decode("utf-8", "replace")
            lines.extend(line for line in text.splitlines() if line.strip())
        finally:
            os.close(saved)


_SINK: dict[int, BinaryIO] = {}  # pid -> an unlinked temporary file, reused for every decode


def _stderr_sink() -> BinaryIO:
    sink = _SINK.get(os.getpid())
    if sink is None:
        sink = _SINK[os.getpid()] = tempfile.TemporaryFile()  # noqa: SIM115  (kept open, reused)
    return sink
