"""Hostile DICOM files made from pydicom's test files: codestreams that lie about their size or are cut
short (issue 14, "Hostile files and faults"), and helpers run inside decoder processes."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from pydicom.data import get_testdata_file

PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def testdata(name: str) -> Path:
    found = get_testdata_file(name)
    assert found is not None, name
    return Path(str(found))


def _patched(name: str, dst: Path, edit: Callable[[bytearray, int], None], src: Path | None = None) -> Path:
    """Copy pydicom's ``name`` (or ``src``, a copy of it) to ``dst``; ``edit(data, start)`` changes bytes
    in place (``start``: the Pixel Data element), so every length field stays as it was."""
    data = bytearray((src or testdata(name)).read_bytes())
    start = data.rfind(PIXEL_DATA_TAG)
    assert start > 0, name
    edit(data, start)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(data))
    return dst


def jpeg_ls_height_zero(dst: Path, src: Path | None = None) -> Path:
    """A JPEG-LS frame whose SOF55 gives height 0 (CharLS then allocates without bound)."""

    def edit(data: bytearray, start: int) -> None:
        sof = data.find(b"\xff\xf7", start)
        assert sof > 0
        struct.pack_into(">H", data, sof + 5, 0)

    return _patched("MR_small_jpeg_ls_lossless.dcm", dst, edit, src)


def j2k_huge(dst: Path, size: int = 32767, src: Path | None = None) -> Path:
    """A few-kB JPEG 2000 file whose SIZ declares ``size`` x ``size`` in one tile."""

    def edit(data: bytearray, start: int) -> None:
        soc = data.find(b"\xff\x4f\xff\x51", start)
        assert soc > 0
        # Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz after SOC, SIZ, Lsiz, Rsiz
        struct.pack_into(">IIIIIIII", data, soc + 8, size, size, 0, 0, size, size, 0, 0)

    return _patched("MR_small_jp2klossless.dcm", dst, edit, src)


def jpeg_sof_resized(dst: Path, name: str = "JPEG-LL.dcm", rows: int = 4096, columns: int = 4096) -> Path:
    """A JPEG frame whose SOF declares another size than the DICOM Rows/Columns."""

    def edit(data: bytearray, start: int) -> None:
        pos = start
        while True:
            pos = data.find(b"\xff", pos + 1)
            assert pos > 0
            if data[pos + 1] in (0xC0, 0xC1, 0xC3, 0xC7):
                struct.pack_into(">HH", data, pos + 5, rows, columns)
                return

    return _patched(name, dst, edit)


def rle_segments(dst: Path, count: int = 15) -> Path:
    """An RLE frame whose header claims ``count`` segments."""

    def edit(data: bytearray, start: int) -> None:
        # item tag, BOT item (length 0 in this file) then the first fragment's item header
        frag = data.find(b"\xfe\xff\x00\xe0", start + 12 + 8)
        assert frag > 0
        struct.pack_into("<I", data, frag + 8, count)

    return _patched("MR_small_RLE.dcm", dst, edit)


def series_copies(name: str, folder: Path, n: int) -> list[Path]:
    """``n`` copies of pydicom's single-frame ``name`` as one series in ``folder`` (own SOP Instance UIDs,
    positions 2 mm apart, in that order)."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    ds = dcmread(testdata(name))
    ds.SeriesInstanceUID = generate_uid()
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        paths.append(folder / f"s{k:02d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def truncated(name: str, dst: Path, keep: int) -> Path:
    """pydicom's ``name`` cut ``keep`` bytes after the start of its Pixel Data element."""
    data = testdata(name).read_bytes()
    start = data.rfind(PIXEL_DATA_TAG)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: start + keep])
    return dst


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM), run inside a decoder process via ``call``."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM")


def allocate_under_cap(allowance: int, nbytes: int) -> str:
    """Inside a decoder process: allocate ``nbytes`` under an address-space cap of ``allowance``."""
    import numpy as np

    from viewer.core.dicom.limits import address_space_limit

    try:
        with address_space_limit(allowance):
            block = np.ones(nbytes, dtype=np.uint8)
        return f"allocated {block.nbytes}"
    except MemoryError:
        return "MemoryError"


def unchecked_decode_under_cap(path: str, plugin: str, allowance: int) -> str:
    """Inside a decoder process: decode with pydicom directly (no codestream check) under the cap,
    to show the cap alone stops a decoder that believes a lying codestream."""
    from pydicom.pixels import pixel_array

    from viewer.core.dicom.limits import address_space_limit

    try:
        with address_space_limit(allowance):
            arr = pixel_array(path, decoding_plugin=plugin)
        return f"decoded {arr.shape}"
    except MemoryError:
        return "MemoryError"
    except Exception as exc:  # the decoder's own error once its allocation failed
        return f"{type(exc).__name__}: {exc}"


def jpeg_corrupt_scan(dst: Path) -> Path:
    """A baseline JPEG frame with an EOI marker half-way through its entropy-coded data: libjpeg
    prints "Corrupt JPEG data" and fills the rest of the image (GDCM passes that on to stderr only)."""

    def edit(data: bytearray, start: int) -> None:
        sos = data.find(b"\xff\xda", start)
        eoi = data.rfind(b"\xff\xd9")
        assert 0 < sos < eoi
        middle = (sos + eoi) // 2
        data[middle : middle + 2] = b"\xff\xd9"  # an end-of-image marker half-way

    return _patched("SC_jpeg_no_color_transform.dcm", dst, edit)


def jpeg_silent_damage(dst: Path) -> Path:
    """One byte of a baseline JPEG's entropy-coded data changed (found by the fuzzer, seed 1 #9996):
    no decoder reports it, and GDCM (IJG 6b wraps overflowing samples) and libjpeg-turbo (clamps)
    show different images, neither of them the original."""

    def edit(data: bytearray, start: int) -> None:
        soi = data.find(b"\xff\xd8", start)
        assert data[soi + 851] == 28
        data[soi + 851] = 98

    return _patched("SC_rgb_dcmtk_+eb+cy+np.dcm", dst, edit)
