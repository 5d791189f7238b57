"""Find candidate DICOM files: plain files, folders (recursive), zip archives and DICOMDIR indexes.

Nothing here writes to the user's folders: zip members are read into memory (capped, see
:data:`MAX_INFLATED_BYTES` and :data:`MAX_INFLATION_RATIO`) and DICOMDIR references that escape the
DICOMDIR's folder (CVE-2026-32711) are refused.
"""

from __future__ import annotations

import logging
import os
import threading
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from viewer.core.constants import MAX_INFLATED_BYTES, MAX_INFLATION_RATIO
from viewer.core.dicom.model import SkippedFile, SliceSource
from viewer.core.errors import DicomError, ImageTooLargeError

logger = logging.getLogger(__name__)

# Operating-system clutter that is never DICOM: skipped without being opened.
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})
JUNK_DIRS = frozenset({"__macosx", ".git", ".svn", ".hg", ".trash", ".trashes", ".spotlight-v100"})
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


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


def is_zip(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError:
        return False
    return magic == b"PK\x03\x04" and zipfile.is_zipfile(path)


def is_dicomdir_name(name: str) -> bool:
    return name.upper() == "DICOMDIR"


class ArchiveCache:
    """Open zip archives shared by reader threads (``ZipFile`` reads are internally locked)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, zipfile.ZipFile] = {}
        self._closed = False

    def read_member(self, path: Path, member: str) -> bytes:
        """The member's bytes, refusing members over the inflated-size cap or ratio."""
        with self._lock:
            zf = self._open.get(path)
            if zf is None and self._closed:  # a late reader after close(): open, read, close; keep nothing
                with zipfile.ZipFile(path) as once:
                    return _read_checked(once, member)
            if zf is None:
                zf = zipfile.ZipFile(path)
                self._open[path] = zf
        return _read_checked(zf, member)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for zf in self._open.values():
                zf.close()
            self._open.clear()


def _read_checked(zf: zipfile.ZipFile, member: str) -> bytes:
    info = zf.getinfo(member)
    check_member(info)
    with zf.open(info) as fh:
        data = fh.read(MAX_INFLATED_BYTES + 1)
    if len(data) > MAX_INFLATED_BYTES:
        raise ImageTooLargeError(f"Zip member inflates beyond {MAX_INFLATED_BYTES // 1024**2} MB")
    return data


def check_member(info: zipfile.ZipInfo) -> None:
    """Raise :class:`ImageTooLargeError` for a zip member that looks like a zip bomb."""
    if info.file_size > MAX_INFLATED_BYTES:
        raise ImageTooLargeError(
            f"Zip member too large ({info.file_size / 1e9:.1f} GB inflated, "
            f"limit {MAX_INFLATED_BYTES // 1024**2} MB)"
        )
    if info.file_size > 1024**2 and info.file_size > MAX_INFLATION_RATIO * max(info.compress_size, 1):
        raise ImageTooLargeError(
            f"Zip member inflates {info.file_size / max(info.compress_size, 1):.0f}x "
            f"(limit {MAX_INFLATION_RATIO}x): possible zip bomb"
        )


def zip_members(path: Path, out: Discovery) -> None:
    """Add a zip archive's members to ``out`` (junk, DICOMDIR and bomb-like members are skipped)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        out.skipped.append(SkippedFile(str(path), "E-READ", f"Unreadable zip archive ({type(exc).__name__})"))
        return
    for info in sorted(infos, key=lambda i: i.filename):
        if info.is_dir():
            continue
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        label = f"{path.name}:{name}"
        if any(p.lower() in JUNK_DIRS for p in parts[:-1]) or is_junk(parts[-1]):
            out.skipped.append(SkippedFile(label, "E-NOT-DICOM", _junk_reason(parts[-1])))
            continue
        if is_dicomdir_name(parts[-1]):
            out.skipped.append(
                SkippedFile(label, "E-DICOMDIR", "DICOMDIR index, not an image (archive members are read)")
            )
            continue
        if info.flag_bits & 0x1:
            out.skipped.append(SkippedFile(label, "E-READ", "Encrypted zip member"))
            continue
        try:
            check_member(info)
        except ImageTooLargeError as exc:
            out.skipped.append(SkippedFile(label, "E-ZIP-BOMB", str(exc)))
            continue
        if name.lower().endswith(".zip"):
            out.skipped.append(SkippedFile(label, "E-NOT-DICOM", "Nested zip archive (not opened)"))
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


def dicomdir_references(path: Path) -> tuple[list[Path], list[SkippedFile]]:
    """Files a DICOMDIR references, refusing IDs that escape its folder (CVE-2026-32711)."""
    from pydicom import dcmread

    root = path.parent.resolve()
    try:
        ds = dcmread(path, force=True)
        records = list(ds.get("DirectoryRecordSequence", []))
    except Exception as exc:
        return [], [SkippedFile(str(path), "E-READ", f"Unreadable DICOMDIR ({type(exc).__name__})")]
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
                SkippedFile(text, "E-PATH-ESCAPE", "DICOMDIR reference points outside its folder (refused)")
            )
            continue
        if target is None or not target.is_file():
            skipped.append(SkippedFile(text, "E-MISSING", "File referenced by DICOMDIR is missing"))
            continue
        found.append(target)
    return found, skipped


def discover(paths: Iterable[str | Path], cancel: Callable[[], bool] | None = None) -> Discovery:
    """Expand ``paths`` into sources to read, in a deterministic order (sorted names per folder)."""
    out = Discovery()
    seen: set[Path] = set()

    def add_file(path: Path) -> None:
        try:
            key = path.resolve()
        except OSError:
            key = path
        if key in seen:
            return
        seen.add(key)
        name = path.name
        if is_junk(name):
            out.skipped.append(SkippedFile(str(path), "E-NOT-DICOM", _junk_reason(name)))
        elif is_dicomdir_name(name):
            refs, skips = dicomdir_references(path)
            out.skipped.append(
                SkippedFile(
                    str(path),
                    "E-DICOMDIR",
                    f"DICOMDIR index, not an image ({len(refs)} referenced files read)",
                )
            )
            out.skipped.extend(skips)
            for ref in refs:
                add_file(ref)
        elif path.suffix.lower() == ".zip" and is_zip(path):
            zip_members(path, out)
        else:
            out.sources.append(SliceSource(path))

    for raw in paths:
        if cancel is not None and cancel():
            out.cancelled = True
            return out
        path = Path(raw)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
                if cancel is not None and cancel():
                    out.cancelled = True
                    return out
                dirnames[:] = sorted(d for d in dirnames if d.lower() not in JUNK_DIRS)
                names = sorted(filenames)
                # A DICOMDIR first, so its references are read once, in its order.
                names.sort(key=lambda n: not is_dicomdir_name(n))
                for name in names:
                    add_file(Path(dirpath) / name)
        elif path.is_file():
            add_file(path)
        else:
            out.skipped.append(SkippedFile(str(path), "E-READ", "No such file or folder"))
    return out


def read_source_bytes(source: SliceSource, archives: ArchiveCache | None = None) -> bytes:
    """All bytes of a source (a zip member is inflated in memory, capped)."""
    if source.member is None:
        return source.path.read_bytes()
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
