"""Pack files: many Part-10 instances kept back to back in one file, with an index beside it.

The PACS cache keeps a WADO-RS-retrieved series this way (one pack per retrieve round) instead of one
file per instance: creating and renaming 300 files cost more than the rest of keeping them. The
loader reads a pack like an archive: a member is addressed as
``SliceSource(pack, member="<offset>+<length>")`` and read with one positioned read of its range (never
the whole file).

- The pack starts with :data:`PACK_MAGIC`; each instance's bytes follow exactly as the server sent them.
- The index, ``<pack name>.index`` beside it, starts with :data:`INDEX_MAGIC` and holds one line per
  member, appended once the member's bytes are written: ``<SOP Instance UID> <offset> <length>
  <frames> <transfer syntax UID> <CRC-32 of the text before it, 8 hex digits>``. A member counts only
  through a whole line with a right checksum whose range lies inside the pack: a reader never sees half
  an instance, and the torn last line of a killed writer is ignored.

Both files are recognised by their first bytes, not their names (the header reader hands them to the
loader as archives). A damaged pack or index raises :class:`PackDamagedError`.
"""

from __future__ import annotations

import io
import os
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from viewer.core.constants import MAX_INFLATED_BYTES
from viewer.core.dicom.files import open_regular, open_regular_fd
from viewer.core.errors import PackDamagedError

PACK_MAGIC = b"SLICEWISE-PACK/1\n"
INDEX_MAGIC = b"SLICEWISE-PACK-INDEX/1\n"
PACK_SUFFIX = ".pack"  # the cache names its packs so (the loader knows them by their marker)
INDEX_SUFFIX = ".index"
MAGIC_PREFIX = b"SLICEWISE-PACK"  # both files begin with it (the header reader's first 4096 bytes)
UNFINISHED_PREFIX = ".part-"  # a pack's and its index's names until both are complete and renamed
_UID_CHARS = frozenset("0123456789.")
MAX_INDEX_BYTES = 64 * 1024**2  # ~400,000 members: a larger index is not one this writes
_SEEK_LOCK = threading.Lock()  # where there is no pread (Windows): seek and read as one step


def pread(fd: int, n: int, offset: int) -> bytes:
    """Up to ``n`` bytes of ``fd`` from ``offset`` (``os.pread``; on Windows a seek and a read under a
    lock, since descriptors are shared between reader threads)."""
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    with _SEEK_LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, n)


def index_path(pack: Path) -> Path:
    return pack.with_name(pack.name + INDEX_SUFFIX)


def member_name(offset: int, length: int) -> str:
    return f"{offset}+{length}"


def parse_member(member: str) -> tuple[int, int]:
    """(offset, length) of a member name; :class:`PackDamagedError` when it is not one."""
    offset, sep, length = member.partition("+")
    if not sep or not offset.isdigit() or not length.isdigit():
        raise PackDamagedError("Not a member of a cache pack (the member name is not '<offset>+<length>')")
    return int(offset), int(length)


def index_line(sop_uid: str, offset: int, length: int, frames: int, transfer_syntax: str) -> bytes:
    """One index line (see the module), newline included."""
    text = f"{sop_uid} {offset} {length} {max(1, frames)} {transfer_syntax}"
    return f"{text} {zlib.crc32(text.encode()):08x}\n".encode()


@dataclass(frozen=True)
class PackEntry:
    sop_instance_uid: str
    offset: int
    length: int
    frames: int
    transfer_syntax: str

    @property
    def member(self) -> str:
        return member_name(self.offset, self.length)


@dataclass
class PackIndex:
    """A pack's members (in index order, each SOP once) and what was wrong with the lines refused."""

    pack: Path
    size: int
    entries: list[PackEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _parse_line(line: bytes, size: int) -> PackEntry | str:
    """The entry of one whole index line, or why it is refused."""
    try:
        text, crc = line.decode("ascii").rsplit(" ", 1)
        if len(crc) != 8 or int(crc, 16) != zlib.crc32(text.encode()):
            return "an index line fails its checksum"
        sop, offset_s, length_s, frames_s, ts = text.split(" ")
        offset, length, frames = int(offset_s), int(length_s), int(frames_s)
    except (UnicodeDecodeError, ValueError):
        return "an index line is unreadable"
    if not sop or not set(sop) <= _UID_CHARS or not ts or not set(ts) <= _UID_CHARS or frames < 1:
        return "an index line holds no valid UID or frame count"
    if offset < len(PACK_MAGIC) or length <= 0 or offset + length > size:
        return "an indexed member lies outside the pack (the pack was cut short)"
    return PackEntry(sop, offset, length, frames, ts)


def read_index(pack: Path) -> PackIndex:
    """The pack's index, each member checked against the pack's size (see the module). Raises
    :class:`PackDamagedError` when the pack or its index is missing or does not begin with its marker
    (both are created with their markers under temporary names and renamed into place, index first)."""
    try:
        with open_regular(pack) as fh:
            size = os.fstat(fh.fileno()).st_size
            if fh.read(len(PACK_MAGIC)) != PACK_MAGIC:
                raise PackDamagedError("Damaged cache pack: it does not begin with the pack marker")
    except OSError as exc:
        raise PackDamagedError(f"Cache pack unreadable ({type(exc).__name__})") from exc
    try:
        with open_regular(index_path(pack)) as fh:
            if os.fstat(fh.fileno()).st_size > MAX_INDEX_BYTES:
                raise PackDamagedError("Damaged cache pack index: larger than any index a retrieve writes")
            data = fh.read(MAX_INDEX_BYTES + 1)
    except FileNotFoundError as exc:
        raise PackDamagedError("Damaged cache pack: its index is missing") from exc
    except OSError as exc:
        raise PackDamagedError(f"Cache pack index unreadable ({type(exc).__name__})") from exc
    if not data.startswith(INDEX_MAGIC):
        raise PackDamagedError("Damaged cache pack index: it does not begin with the index marker")
    index = PackIndex(pack, size)
    seen: set[str] = set()
    lines = data[len(INDEX_MAGIC) :].split(b"\n")
    for line in lines[:-1]:  # the last piece has no newline: empty, or the torn line of a killed writer
        entry = _parse_line(line, size)
        if isinstance(entry, str):
            index.problems.append(entry)
        elif entry.sop_instance_uid not in seen:
            seen.add(entry.sop_instance_uid)
            index.entries.append(entry)
    return index


def _checked_range(fd: int, member: str) -> tuple[int, int]:
    """(offset, length) of ``member`` in the pack open as ``fd``; :class:`PackDamagedError` when it lies
    outside the pack."""
    offset, length = parse_member(member)
    size = os.fstat(fd).st_size
    if offset < len(PACK_MAGIC) or length <= 0 or offset + length > size:
        raise PackDamagedError(
            f"Damaged cache pack: a member lies outside it (bytes {offset:,}+{length:,} of {size:,})"
        )
    if length > MAX_INFLATED_BYTES:
        raise PackDamagedError(f"Cache pack member of {length / 1e9:.1f} GB exceeds the image size limit")
    return offset, length


def read_member_fd(fd: int, member: str) -> bytes:
    """The bytes of ``member`` of the pack open as ``fd``: one positioned read of its range, checked
    against the pack's size first (:class:`PackDamagedError` when it lies outside)."""
    offset, length = _checked_range(fd, member)
    parts: list[bytes] = []
    got = 0
    while got < length:
        chunk = pread(fd, length - got, offset + got)
        if not chunk:
            raise PackDamagedError("Damaged cache pack: it ended while a member was read")
        parts.append(chunk)
        got += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_member(pack: Path, member: str) -> bytes:
    """:func:`read_member_fd` on ``pack`` opened for this read."""
    fd, _ = open_regular_fd(pack)
    try:
        return read_member_fd(fd, member)
    finally:
        os.close(fd)


class _MemberFile(io.RawIOBase):
    """One member's range of a pack as a read-only file of its own (positions from the member's start);
    owns ``fd``."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        super().__init__()
        self._fd, self._offset, self._length, self._pos = fd, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._length - self._pos)
        if n <= 0:
            return 0
        data = pread(self._fd, n, self._offset + self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def open_member(pack: Path, member: str) -> tuple[BinaryIO, int]:
    """``member`` of ``pack`` as a file of its own, and its length: a header is read from it without
    reading the member's pixel data (checked like :func:`read_member_fd`)."""
    fd, _ = open_regular_fd(pack)
    try:
        offset, length = _checked_range(fd, member)
    except BaseException:
        os.close(fd)
        raise
    return io.BufferedReader(_MemberFile(fd, offset, length), 64 * 1024), length


def is_pack_head(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) begins a pack or a pack index."""
    return head.startswith(MAGIC_PREFIX)
