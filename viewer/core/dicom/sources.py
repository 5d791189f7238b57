"""Find candidate DICOM files: plain files, folders (recursive), zip archives, gzip files and DICOMDIRs.

Nothing here writes to the user's folders: zip members and gzip files are inflated in memory, capped
by the declared and by the actual inflated size as they stream (see :data:`MAX_INFLATED_BYTES` and
:data:`MAX_INFLATION_RATIO`), DICOMDIR references that escape the DICOMDIR's folder (CVE-2026-32711)
are refused, and only regular files are opened (:mod:`viewer.core.dicom.files`).
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import stat
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from viewer.core.codes import Code
from viewer.core.constants import MAX_INFLATED_BYTES, MAX_INFLATION_RATIO
from viewer.core.dicom import pack
from viewer.core.dicom.files import (
    check_regular,
    is_inside,
    not_regular_reason,
    open_regular,
    open_regular_fd,
)
from viewer.core.dicom.model import SkippedFile, SliceSource
from viewer.core.errors import DicomError, ImageTooLargeError, NotRegularFileError, PackDamagedError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

# Operating-system clutter that is never DICOM: skipped without being opened.
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})
JUNK_DIRS = frozenset({"__macosx", ".git", ".svn", ".hg", ".trash", ".trashes", ".spotlight-v100"})
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
ZIP_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b"
INFLATE_CHUNK = 1024**2  # archives are inflated this much at a time, the caps checked after each step
ArchiveKind = Literal["zip", "gzip", "pack", "pack-index"]


@dataclass
class Discovery:
    """What :func:`discover` found: sources to read and files skipped on the way."""

    sources: list[SliceSource] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    cancelled: bool = False


def is_junk(name: str) -> bool:
    low = name.lower()
    return low in JUNK_NAMES or low.startswith("._")


def _junk_reason(name: str) -> str:
    low = name.lower()
    if low == ".ds_store":
        return "macOS folder metadata (.DS_Store), not DICOM"
    if low.startswith("._"):
        return "macOS resource fork (._ file), not DICOM"
    return f"operating-system file ({name}), not DICOM"


def _head(path: Path, n: int) -> bytes:
    try:
        with open_regular(path) as fh:
            return fh.read(n)
    except (OSError, DicomError):
        return b""


def is_zip(path: Path) -> bool:
    return _head(path, 4) == ZIP_MAGIC and zipfile.is_zipfile(path)


def archive_kind(path: Path) -> ArchiveKind | None:
    """'zip', 'gzip', or 'pack' / 'pack-index' (:mod:`viewer.core.dicom.pack`) by the file's magic bytes,
    else None."""
    head = _head(path, len(pack.INDEX_MAGIC))
    if head[:4] == ZIP_MAGIC:
        return "zip"
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head.startswith(pack.INDEX_MAGIC):
        return "pack-index"
    if head.startswith(pack.MAGIC_PREFIX):
        return "pack"  # its marker's version is checked where its index is read
    return None


def is_dicomdir_name(name: str) -> bool:
    return name.upper() == "DICOMDIR"


def media_storage_sop_class(head: bytes) -> str | None:
    """MediaStorageSOPClassUID from the raw file meta group in ``head`` (bytes from offset 0), if there."""
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    pos = 132
    while pos + 8 <= len(head):
        group = int.from_bytes(head[pos : pos + 2], "little")
        elem = int.from_bytes(head[pos + 2 : pos + 4], "little")
        if group != 0x0002:
            return None
        vr = head[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"UN", b"UT", b"SQ", b"UC", b"UR", b"OD", b"OF", b"OL", b"OV"):
            length, value_at = int.from_bytes(head[pos + 8 : pos + 12], "little"), pos + 12
        else:
            length, value_at = int.from_bytes(head[pos + 6 : pos + 8], "little"), pos + 8
        if elem == 0x0002:
            if value_at + length > len(head):
                return None
            return head[value_at : value_at + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = value_at + length
    return None


def is_dicomdir_file(path: Path) -> bool:
    """True for a DICOMDIR whatever its name: its Media Storage SOP Class is 1.2.840.10008.1.3.10."""
    return media_storage_sop_class(_head(path, 2048)) == MEDIA_STORAGE_DIRECTORY


class ArchiveCache:
    """Open zip archives and packs shared by reader threads (``ZipFile`` reads are internally locked; a
    pack member is one ``pread``).

    Gzip files (one compressed DICOM file each) are inflated afresh on every read: nothing to keep open.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, zipfile.ZipFile] = {}
        self._packs: dict[Path, int] = {}  # open descriptors of packs
        self._kinds: dict[Path, ArchiveKind | None] = {}
        self._closed = False

    def kind(self, path: Path) -> ArchiveKind | None:
        """:func:`archive_kind` of ``path``, read once."""
        with self._lock:
            if path in self._kinds:
                return self._kinds[path]
        kind = archive_kind(path)
        with self._lock:
            self._kinds[path] = kind
        return kind

    def read_member(self, path: Path, member: str) -> bytes:
        """The member's bytes, refusing members over the inflated-size cap or ratio."""
        kind = self.kind(path)
        if kind == "gzip":
            return read_gzip(path)
        if kind == "pack":
            return self._read_pack_member(path, member)
        if kind == "pack-index":
            raise PackDamagedError("A cache pack's index holds no image (its pack is read)")
        with self._lock:
            zf = self._open.get(path)
            if zf is None and self._closed:  # a late reader after close(): open, read, close; keep nothing
                check_regular(path)
                with zipfile.ZipFile(path) as once:
                    return _read_checked(once, member, path)
            if zf is None:
                check_regular(path)
                zf = zipfile.ZipFile(path)
                self._open[path] = zf
        return _read_checked(zf, member, path)

    def _read_pack_member(self, path: Path, member: str) -> bytes:
        with self._lock:
            fd = self._packs.get(path)
            if fd is None and self._closed:  # a late reader after close(): open, read, close
                return pack.read_member(path, member)
            if fd is None:
                fd, _ = open_regular_fd(path)
                self._packs[path] = fd
        return pack.read_member_fd(fd, member)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for zf in self._open.values():
                zf.close()
            self._open.clear()
            for fd in self._packs.values():
                os.close(fd)
            self._packs.clear()


def _archive_size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _read_checked(zf: zipfile.ZipFile, member: str, path: Path | None = None) -> bytes:
    """Inflate one member a chunk at a time, never past its declared size or the caps.

    One big ``read()`` would let zipfile inflate up to the requested size in one step before cutting
    the result to the declared size: a member that lies about its size cost 650 MB that way.
    """
    info = zf.getinfo(member)
    check_member(info, _archive_size(path) if path is not None else None)
    with zf.open(info) as fh:
        return _inflate_capped(
            fh,
            min(info.file_size, MAX_INFLATED_BYTES),
            f"Zip member inflates beyond its declared size or {MAX_INFLATED_BYTES // 1024**2} MB",
        )


def _inflate_capped(stream: IO[bytes] | io.BufferedIOBase, limit: int, too_large: str) -> bytes:
    """Read an inflating ``stream`` a chunk at a time; :class:`ImageTooLargeError` (``too_large``) as soon
    as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    while chunk := stream.read(INFLATE_CHUNK):
        total += len(chunk)
        if total > limit:
            raise ImageTooLargeError(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def check_member(info: zipfile.ZipInfo, archive_size: int | None = None) -> None:
    """Raise :class:`ImageTooLargeError` for a zip member that looks like a zip bomb.

    The ratio is taken against the smaller of the member's declared compressed size and the whole
    archive's size: a member cannot hold more compressed bytes than the archive.
    """
    if info.file_size > MAX_INFLATED_BYTES:
        raise ImageTooLargeError(
            f"Zip member too large ({info.file_size / 1e9:.1f} GB inflated, "
            f"limit {MAX_INFLATED_BYTES // 1024**2} MB)"
        )
    compressed = info.compress_size if archive_size is None else min(info.compress_size, archive_size)
    if info.file_size > 1024**2 and info.file_size > MAX_INFLATION_RATIO * max(compressed, 1):
        raise ImageTooLargeError(
            f"Zip member inflates {info.file_size / max(compressed, 1):.0f}x "
            f"(limit {MAX_INFLATION_RATIO}x): possible zip bomb"
        )


def read_gzip(path: Path) -> bytes:
    """Inflate a gzip file in memory, capped like a zip member while it streams.

    Caps: the size its trailer declares (ISIZE), :data:`MAX_INFLATED_BYTES` and
    :data:`MAX_INFLATION_RATIO` times the compressed size; each checked after every chunk.
    """
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 18:
            raise DicomError("Gzip file too short")
        fh.seek(size - 4)
        declared = int.from_bytes(fh.read(4), "little")  # ISIZE: inflated size mod 2**32
        limit = min(declared, MAX_INFLATED_BYTES)
        if declared > MAX_INFLATED_BYTES or (declared > 1024**2 and declared > MAX_INFLATION_RATIO * size):
            raise ImageTooLargeError(
                f"Gzip file declares {declared / 1e6:.0f} MB inflated from {size / 1e6:.1f} MB "
                f"(limits {MAX_INFLATED_BYTES // 1024**2} MB, {MAX_INFLATION_RATIO}x)"
            )
        fh.seek(0)
        try:
            with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
                return _inflate_capped(
                    gz,
                    limit,
                    f"Gzip file inflates beyond its declared size ({declared:,} bytes) or the limits",
                )
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise DicomError(f"Corrupt gzip data ({type(exc).__name__})") from exc


def zip_members(path: Path, out: Discovery) -> None:
    """Add a zip archive's members to ``out`` (junk, DICOMDIR and bomb-like members are skipped)."""
    try:
        check_regular(path)
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile, ValueError, NotRegularFileError) as exc:
        reason = f"Unreadable zip archive ({type(exc).__name__})"
        out.skipped.append(SkippedFile(str(path), Code.READ, reason))
        return
    archive_size = _archive_size(path)
    for info in sorted(infos, key=lambda i: i.filename):
        if info.is_dir():
            continue
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        label = f"{path.name}:{name}"
        if any(p.lower() in JUNK_DIRS for p in parts[:-1]) or is_junk(parts[-1]):
            out.skipped.append(SkippedFile(label, Code.NOT_DICOM, _junk_reason(parts[-1])))
            continue
        if is_dicomdir_name(parts[-1]):
            out.skipped.append(
                SkippedFile(label, Code.DICOMDIR, "DICOMDIR index, not an image (archive members are read)")
            )
            continue
        if info.flag_bits & 0x1:
            out.skipped.append(SkippedFile(label, Code.READ, "Encrypted zip member"))
            continue
        try:
            check_member(info, archive_size)
        except ImageTooLargeError as exc:
            out.skipped.append(SkippedFile(label, Code.ZIP_BOMB, str(exc)))
            continue
        if name.lower().endswith(".zip"):
            out.skipped.append(SkippedFile(label, Code.NOT_DICOM, "Nested zip archive (not opened)"))
            continue
        out.sources.append(SliceSource(path, member=name))


def _resolve_case_insensitive(root: Path, parts: Sequence[str]) -> Path | None:
    current = root
    for part in parts:
        candidate = current / part
        if candidate.exists():
            current = candidate
            continue
        try:
            matches = [c for c in current.iterdir() if c.name.lower() == part.lower()]
        except OSError:
            return None
        if not matches:
            return None
        current = matches[0]
    return current


def dicomdir_references(path: Path) -> tuple[list[Path], list[SkippedFile]] | None:
    """Files a DICOMDIR references, refusing IDs that escape its folder (CVE-2026-32711).

    None when ``path`` is not a DICOMDIR after all (no Media Storage Directory SOP Class and no
    Directory Record Sequence): the caller reads it as an ordinary file.
    """
    from pydicom import dcmread

    root = path.parent.resolve()
    try:
        with open_regular(path) as fh:
            ds = dcmread(fh, force=True)
        sop_class = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", ""))
        if sop_class != MEDIA_STORAGE_DIRECTORY and "DirectoryRecordSequence" not in ds:
            return None
        records = list(ds.get("DirectoryRecordSequence", []))
    except Exception as exc:
        return [], [SkippedFile(str(path), Code.READ, f"Unreadable DICOMDIR ({type(exc).__name__})")]
    found: list[Path] = []
    skipped: list[SkippedFile] = []
    for rec in records:
        ref = rec.get("ReferencedFileID")
        if ref is None:
            continue
        parts = [str(ref)] if isinstance(ref, str | bytes) else [str(p) for p in ref]
        text = "/".join(parts)
        bad = any(
            p in ("", ".", "..") or "/" in p or "\\" in p or ":" in p or p.startswith("~") for p in parts
        )
        target = None if bad else _resolve_case_insensitive(root, parts)
        if bad or (target is not None and not target.resolve().is_relative_to(root)):
            skipped.append(
                SkippedFile(text, Code.PATH_ESCAPE, "DICOMDIR reference points outside its folder (refused)")
            )
            continue
        try:
            mode = os.stat(target).st_mode if target is not None else None
        except OSError:
            mode = None
        if mode is None:
            skipped.append(SkippedFile(text, Code.MISSING, "File referenced by DICOMDIR is missing"))
        elif not stat.S_ISREG(mode):
            skipped.append(SkippedFile(text, Code.SPECIAL_FILE, not_regular_reason(mode)))
        else:
            assert target is not None
            found.append(target)
    return found, skipped


def _gzip_member_name(path: Path) -> str:
    name = path.name
    return name[:-3] if name.lower().endswith(".gz") and len(name) > 3 else name


def gzip_source(path: Path) -> SliceSource:
    """A gzip-compressed DICOM file (``*.dcm.gz``): read like an archive member, inflated in memory."""
    return SliceSource(path, member=_gzip_member_name(path))


def pack_members(path: Path, out: Discovery) -> None:
    """Add a pack's indexed members to ``out``; a damaged pack or index line is reported, not read."""
    if path.name.startswith(pack.UNFINISHED_PREFIX):  # created by a retrieve killed before its rename
        out.skipped.append(
            SkippedFile(str(path), Code.READ, "An unfinished cache pack: its retrieve was interrupted")
        )
        return
    try:
        index = pack.read_index(path)
    except DicomError as exc:
        out.skipped.append(SkippedFile(str(path), Code.READ, str(exc)))
        return
    for problem in dict.fromkeys(index.problems):
        count = index.problems.count(problem)
        out.skipped.append(
            SkippedFile(str(path), Code.READ, f"Damaged cache pack: {problem} ({count} line(s) not read)")
        )
    out.sources.extend(SliceSource(path, member=entry.member) for entry in index.entries)


def expand_archive(path: Path, out: Discovery) -> None:
    """Add what an archive the header reader found by its magic bytes holds (zip members, a gzip file,
    a pack's members; a pack's index holds nothing to read itself)."""
    kind = archive_kind(path)
    if kind == "gzip":
        out.sources.append(gzip_source(path))
    elif kind == "pack":
        pack_members(path, out)
    elif kind != "pack-index":
        zip_members(path, out)


def discover(paths: Iterable[str | Path], cancel: Callable[[], bool] | None = None) -> Discovery:
    """Expand ``paths`` into sources to read, in a deterministic order (sorted names per folder).

    Only regular files are ever opened: FIFOs, sockets and devices are reported (E-SPECIAL-FILE), and
    inside a folder, symbolic links whose target lies outside that folder are not followed
    (E-PATH-ESCAPE). A path given directly (a file, or a link to one) is read wherever it points.
    """
    out = Discovery()
    seen: set[str] = set()

    def skip(path: str | Path, code: Code, reason: str) -> None:
        out.skipped.append(SkippedFile(str(path), code, reason))

    def add_file(path: Path, key: str, *, given: bool = False) -> None:
        """``key``: the resolved path (files reached twice are read once)."""
        if key in seen:
            return
        seen.add(key)
        name = path.name
        if is_junk(name):
            skip(path, Code.NOT_DICOM, _junk_reason(name))
            return
        if name.lower().endswith(".gz"):
            out.sources.append(gzip_source(path))
            return
        if is_dicomdir_name(name) or (given and is_dicomdir_file(path)):
            found = dicomdir_references(path)
            if found is not None:
                refs, skips = found
                skip(path, Code.DICOMDIR, f"DICOMDIR index, not an image ({len(refs)} referenced files read)")
                out.skipped.extend(skips)
                for ref in refs:
                    add_file(ref, os.path.realpath(ref))
                return
        if path.suffix.lower() == ".zip" and is_zip(path):
            zip_members(path, out)
        else:
            out.sources.append(SliceSource(path))

    for raw in paths:
        if cancel is not None and cancel():
            out.cancelled = True
            return out
        path = Path(raw)
        try:
            st = os.stat(path)
        except OSError:
            skip(path, Code.READ, "No such file or folder")
            continue
        if stat.S_ISDIR(st.st_mode):
            if not _walk(path, add_file, skip, cancel):
                out.cancelled = True
                return out
        elif stat.S_ISREG(st.st_mode):
            add_file(path, os.path.realpath(path), given=True)
        else:
            skip(path, Code.SPECIAL_FILE, not_regular_reason(st.st_mode))
    return out


def _walk(
    root: Path,
    add_file: Callable[[Path, str], None],
    skip: Callable[[str | Path, Code, str], None],
    cancel: Callable[[], bool] | None,
) -> bool:
    """Visit ``root`` depth-first in sorted order (DICOMDIR first in each folder); False when cancelled.

    ``os.scandir`` says from the directory entry alone whether a name is a file, folder, link or
    something else, so regular files cost no extra system call; only links are resolved.
    """
    root_real = os.path.realpath(root)
    pending: list[tuple[str, str]] = [(str(root), root_real)]
    while pending:
        if cancel is not None and cancel():
            return False
        folder, folder_real = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skip(folder, Code.READ, f"Unreadable folder ({type(exc).__name__})")
            continue
        files: list[tuple[str, str]] = []
        subfolders: list[tuple[str, str]] = []
        for entry in entries:
            try:
                if entry.is_symlink():
                    _follow_link(entry.path, root_real, files, skip)
                elif entry.is_dir(follow_symlinks=False):
                    if entry.name.lower() not in JUNK_DIRS:
                        subfolders.append((entry.path, os.path.join(folder_real, entry.name)))
                elif entry.is_file(follow_symlinks=False):
                    files.append((entry.path, os.path.join(folder_real, entry.name)))
                else:
                    mode = entry.stat(follow_symlinks=False).st_mode
                    skip(entry.path, Code.SPECIAL_FILE, not_regular_reason(mode))
            except OSError as exc:
                skip(entry.path, Code.READ, f"Cannot read the folder entry ({type(exc).__name__})")
        files.sort(key=lambda f: not is_dicomdir_name(os.path.basename(f[0])))  # its references read once
        for path, key in files:
            add_file(Path(path), key)
        pending.extend(reversed(subfolders))
    return True


def _follow_link(
    link: str,
    root_real: str,
    files: list[tuple[str, str]],
    skip: Callable[[str | Path, Code, str], None],
) -> None:
    """A symbolic link inside an opened folder: followed only to a regular file inside that folder."""
    target = os.path.realpath(link)
    if not is_inside(target, root_real):
        skip(link, Code.PATH_ESCAPE, "Symbolic link to a place outside the opened folder (not followed)")
        return
    try:
        st = os.stat(target)
    except OSError:
        skip(link, Code.MISSING, "Broken symbolic link")
        return
    if stat.S_ISREG(st.st_mode):
        files.append((link, target))
    elif not stat.S_ISDIR(st.st_mode):  # a link to a folder inside the tree: that folder is walked itself
        skip(link, Code.SPECIAL_FILE, not_regular_reason(st.st_mode))


def read_header_dataset(source: SliceSource) -> Dataset:
    """The source's DICOM header without its pixel data (pydicom Dataset), for the tag browser.

    Archive members and gzip files are streamed: only the header is inflated.
    """
    from pydicom import dcmread

    if source.member is None:
        with open_regular(source.path) as fh:
            return dcmread(fh, stop_before_pixels=True, force=True)
    kind = archive_kind(source.path)
    if kind == "pack":
        data = pack.read_member(source.path, source.member)
        return dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    if kind == "gzip":
        with open_regular(source.path) as fh, gzip.GzipFile(fileobj=fh, mode="rb") as gz:
            return dcmread(gz, stop_before_pixels=True, force=True)
    check_regular(source.path)
    with zipfile.ZipFile(source.path) as zf:
        info = zf.getinfo(source.member)
        check_member(info, _archive_size(source.path))
        with zf.open(info) as member:
            return dcmread(member, stop_before_pixels=True, force=True)


def read_source_bytes(source: SliceSource, archives: ArchiveCache | None = None) -> bytes:
    """All bytes of a source (a zip member or gzip file is inflated in memory, capped)."""
    if source.member is None:
        with open_regular(source.path) as fh:
            return fh.read()
    if archives is None:
        cache = ArchiveCache()
        try:
            return cache.read_member(source.path, source.member)
        finally:
            cache.close()
    try:
        return archives.read_member(source.path, source.member)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DicomError(f"Cannot read {source.display_name} from its archive") from exc
