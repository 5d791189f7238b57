"""Private (0600) files and atomic writes for the review store and its exports."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) 0700, or take group/other access away from an existing folder.

    Never *adds* permissions: a folder the user made read-only stays read-only (the store then opens
    read-only, see :func:`is_writable`).
    """
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "posix":
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            with contextlib.suppress(PermissionError):  # not ours to change: leave it
                path.chmod(mode & 0o700)
    return path


def is_writable(path: Path) -> bool:
    """True when the user may change ``path``: the OS allows it *and* the owner's write bit is set.

    The bit is checked too because the owner (or root) can write past a mode the user chose on purpose.
    """
    if not os.access(path, os.W_OK):
        return False
    return os.name != "posix" or bool(path.stat().st_mode & stat.S_IWUSR)


def create_private_file(path: Path) -> None:
    """Create ``path`` with mode 0600 if missing (never a umask default); tighten it if it exists."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.name == "posix":
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    """fsync the file (or, on POSIX, the folder) at ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename in it survives a power cut (no-op on Windows)."""
    if os.name == "posix":
        fsync_path(path)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` all-or-nothing: temp file in the same folder, fsync, replace, fsync dir.
    ``durable=False`` skips both fsyncs: readers still never see a partial file, but after a power cut
    the file may be the previous version or damaged (for files that are rebuilt when damaged)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)
