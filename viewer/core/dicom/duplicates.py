"""Choose between files that carry the same SOP Instance UID (duplicates and clashes), one series at a time.

Files, not frames, are compared: an instance's frames stay together. Copies of the *same image* (same
rows, columns, samples, frame count, bits and sign, and for uncompressed greyscale the same stored
values) are resolved to one: the one whose pixel data is complete, then lossless, then ORIGINAL, then
the first by path; the others are reported once each (``E-DUPLICATE``). Files that share a UID but
hold a *different image* are never merged or dropped: each is kept, as a variant that the grouping
puts in a stack of its own, with a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from viewer.core.codes import Code
from viewer.core.dicom.files import open_regular
from viewer.core.dicom.header import HeaderRecord, transfer_syntax_rank
from viewer.core.dicom.model import SkippedFile, SliceSource
from viewer.core.dicom.sources import ArchiveCache, read_source_bytes
from viewer.core.errors import DicomError

FileKey = tuple[str, str]
CompareFn = Callable[[Sequence[HeaderRecord], Sequence[HeaderRecord]], bool | None]
MAX_COMPARE_BYTES = 256 * 1024**2  # larger duplicates are compared by their headers only


@dataclass
class Resolution:
    """What :func:`resolve_duplicates` decided for one series' records."""

    records: list[HeaderRecord]  # the frames of every kept file, in the input order
    variant: dict[FileKey, int] = field(default_factory=dict)  # > 0: shares a UID with another image
    dropped: dict[FileKey, int] = field(default_factory=dict)  # kept file -> copies of it ignored
    skipped: list[SkippedFile] = field(default_factory=list)  # one per ignored copy


def file_label(source: SliceSource) -> str:
    """How the load report names a file: its path, or ``archive.zip:member``."""
    return f"{source.path.name}:{source.member}" if source.member else str(source.path)


def _signature(first: HeaderRecord, frames: int) -> tuple[int, ...]:
    i = first.info
    return (i.rows, i.columns, i.samples_per_pixel, frames, i.bits_allocated, i.pixel_representation)


def _quality(first: HeaderRecord) -> tuple[bool, int, int, bool, int]:
    """Sort key, best copy first: complete pixel data, a lossless image, stored in a lossless transfer
    syntax (a decompressed copy of a lossy image before the lossy file), ORIGINAL, then file order."""
    ts_rank = transfer_syntax_rank(first.info.transfer_syntax_uid)
    return (not first.pixel_intact, -first.lossless, -ts_rank, not first.is_original, first.order)


def _why(kept: HeaderRecord, dropped: HeaderRecord) -> str:
    if kept.pixel_intact and not dropped.pixel_intact:
        return "this copy's pixel data is incomplete"
    if kept.lossless > dropped.lossless:
        return "this copy is lossy-compressed" if dropped.lossless == 0 else "this copy may be lossy"
    ts_kept, ts_dropped = kept.info.transfer_syntax_uid, dropped.info.transfer_syntax_uid
    if transfer_syntax_rank(ts_kept) > transfer_syntax_rank(ts_dropped):
        return "this copy is stored with lossy compression, that one without"
    if kept.is_original and not dropped.is_original:
        return "this copy is DERIVED, that one ORIGINAL"
    return "equivalent copies: the first by path was used"


def _stored_bytes(frames: Sequence[HeaderRecord], archives: ArchiveCache) -> bytes | None:
    """The raw bytes of all frames of an uncompressed file, in one read (frames are contiguous)."""
    first = frames[0].info
    assert first.pixel_offset is not None
    length = len(frames) * first.rows * first.columns * first.bits_allocated // 8
    if first.source.member is not None:
        blob = read_source_bytes(first.source, archives)[first.pixel_offset : first.pixel_offset + length]
    else:
        with open_regular(first.source.path) as fh:
            fh.seek(first.pixel_offset)
            blob = fh.read(length)
    return blob if len(blob) == length else None


def same_pixels(a: Sequence[HeaderRecord], b: Sequence[HeaderRecord]) -> bool | None:
    """Whether two same-size uncompressed greyscale files hold the same stored values; None where only a
    decoder could tell (compressed, colour) or the pixel data cannot be read.

    Same encoding: one read per file and a byte comparison (a duplicated folder costs little more than
    reading it). Otherwise, or when the bytes differ, the values are compared as the viewer reads them
    (byte order swapped, bits above BitsStored masked), frame by frame.
    """
    from viewer.core.dicom.pixels import is_fast_path, read_raw

    if not (a and b and a[0].pixel_intact and b[0].pixel_intact and len(a) == len(b)):
        return None
    if not all(is_fast_path(r.info) for r in (*a, *b)):
        return None
    ia, ib = a[0].info, b[0].info
    if len(a) * ia.rows * ia.columns * ia.bits_allocated // 8 > MAX_COMPARE_BYTES:
        return None
    archives = ArchiveCache()
    try:
        encoding = ("transfer_syntax_uid", "bits_stored", "pixel_representation")
        if all(getattr(ia, f) == getattr(ib, f) for f in encoding):
            raw_a, raw_b = _stored_bytes(a, archives), _stored_bytes(b, archives)
            if raw_a is None or raw_b is None:
                return None
            if raw_a == raw_b:
                return True
        data_a = read_source_bytes(ia.source, archives) if ia.source.member else None
        data_b = read_source_bytes(ib.source, archives) if ib.source.member else None
        return all(
            np.array_equal(read_raw(fa.info, archives, data_a), read_raw(fb.info, archives, data_b))
            for fa, fb in zip(a, b, strict=True)
        )
    except (DicomError, OSError, MemoryError, ValueError):
        return None
    finally:
        archives.close()


def resolve_duplicates(
    records: Sequence[HeaderRecord], compare: CompareFn | None = same_pixels
) -> Resolution:
    """Keep one copy of each image per SOP Instance UID; keep apart different images sharing a UID.

    ``compare`` tells whether two same-size files hold the same pixels (None: headers only).
    """
    files: dict[FileKey, list[HeaderRecord]] = {}
    for rec in records:
        files.setdefault(rec.file_key, []).append(rec)
    by_uid: dict[str, list[FileKey]] = {}
    for key, frames in files.items():
        uid = frames[0].info.sop_instance_uid
        if uid:
            by_uid.setdefault(uid, []).append(key)
    result = Resolution(records=[])
    gone: set[FileKey] = set()

    for keys in by_uid.values():
        if len(keys) < 2:
            continue
        keys.sort(key=lambda k: _quality(files[k][0]))
        images: list[list[FileKey]] = []  # each: copies of one image, best first
        for key in keys:
            sig = _signature(files[key][0], len(files[key]))
            for image in images:
                best = image[0]
                if _signature(files[best][0], len(files[best])) != sig:
                    continue
                if compare is None or compare(files[best], files[key]) is not False:
                    image.append(key)
                    break
            else:
                images.append([key])
        for n, image in enumerate(images):
            best = image[0]
            if len(images) > 1:
                result.variant[best] = n
            kept = files[best][0]
            for key in image[1:]:
                gone.add(key)
                result.dropped[best] = result.dropped.get(best, 0) + 1
                dropped = files[key][0]
                result.skipped.append(
                    SkippedFile(
                        file_label(dropped.info.source),
                        Code.DUPLICATE,
                        f"Duplicate of {file_label(kept.info.source)} (same SOP Instance UID and image), "
                        f"which was used: {_why(kept, dropped)}",
                    )
                )
    result.records = [r for r in records if r.file_key not in gone]
    return result
