"""An independent high-water mark for the review store: the last acknowledged change, fsynced.

SQLite's WAL keeps committed transactions as frames with running checksums; if bytes of the ``-wal`` file
are damaged, recovery stops at the first bad frame and every later commit disappears without an error.
This small side file records, after each commit, the sequence number of the change just acknowledged,
so a database that opens *behind* it is detected (:class:`~viewer.core.review.store.ReviewStore`
then warns).

Format: two 512-byte slots; a change with sequence number ``n`` is written to slot ``n % 2`` as
``magic, format, store id, seq, crc32``, then the file is fsynced (one ``fdatasync`` per change, no
rename). A torn write can only damage the slot being written, whose other slot holds the previous
change, so the value read back is the newest intact slot: never ahead of the database, at most one
change behind after a crash in the middle of writing it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from viewer.core.review.fileutil import fsync_dir

log = logging.getLogger(__name__)

_MAGIC: Final = b"SWHW"
_FORMAT_VERSION: Final = 1
_RECORD: Final = struct.Struct("<4sH32sQ")  # magic, format, store id (hex uuid), seq
_CRC: Final = struct.Struct("<I")
_SLOT_SIZE: Final = 512  # one sector per slot
SUFFIX: Final = ".hwm"


@dataclass(frozen=True)
class HighWater:
    """What the side file says: which database (its ``store_id``) and its last acknowledged change."""

    store_id: str
    seq: int


def _encode(mark: HighWater) -> bytes:
    body = _RECORD.pack(_MAGIC, _FORMAT_VERSION, mark.store_id.encode("ascii")[:32].ljust(32), mark.seq)
    return body + _CRC.pack(zlib.crc32(body))


def _decode(raw: bytes) -> HighWater | None:
    size = _RECORD.size + _CRC.size
    if len(raw) < size:
        return None
    body, (crc,) = raw[: _RECORD.size], _CRC.unpack(raw[_RECORD.size : size])
    if zlib.crc32(body) != crc:
        return None
    magic, version, store_id, seq = _RECORD.unpack(body)
    if magic != _MAGIC or version != _FORMAT_VERSION:
        return None
    return HighWater(store_id.rstrip(b" ").decode("ascii", "replace"), int(seq))


def path_for(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + SUFFIX)


def read_mark(path: Path) -> HighWater | None:
    """The newest intact slot of ``path``, or None (missing, unreadable or never written)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    slots = [_decode(data[k * _SLOT_SIZE : (k + 1) * _SLOT_SIZE]) for k in range(2)]
    valid = [s for s in slots if s is not None]
    return max(valid, key=lambda s: s.seq) if valid else None


_sync = getattr(os, "fdatasync", os.fsync)


class HighWaterMark:
    """The writer of one side file; keeps it open (0600) so each change costs one write and one sync."""

    def __init__(self, path: Path) -> None:
        self.path = path
        existed = path.exists()
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._lock = threading.Lock()
        if os.name == "posix":
            os.fchmod(self._fd, 0o600)
        if not existed:
            fsync_dir(path.parent)  # the file itself must survive a power cut, not only its data

    def write(self, mark: HighWater, *, both_slots: bool = False) -> None:
        """Record ``mark`` durably (raises OSError if the disk refuses). ``both_slots`` when starting
        over (another database file, or a lower number): the other slot must not outrank it."""
        record = _encode(mark)
        with self._lock:
            if self._fd is None:
                return
            for slot in (0, 1) if both_slots else (mark.seq % 2,):
                os.lseek(self._fd, slot * _SLOT_SIZE, os.SEEK_SET)
                os.write(self._fd, record)
            _sync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None


__all__ = ["SUFFIX", "HighWater", "HighWaterMark", "path_for", "read_mark"]
