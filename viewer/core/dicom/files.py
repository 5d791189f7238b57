"""Open only regular files: a FIFO would block ``open()`` forever, a device (``/dev/zero``) never ends.

Every file the scanner reads goes through :func:`open_regular`: ``stat`` first (devices are never
opened, since opening some has side effects), then a non-blocking open and ``fstat`` on the open
descriptor, so a file swapped for a FIFO in between still cannot block the scan.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from viewer.core.errors import NotRegularFileError

_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
)


def special_kind(mode: int) -> str:
    """What a non-regular file is, in words ('named pipe (FIFO)', 'character device', ...)."""
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "folder"
    return "special file"


def not_regular_reason(mode: int) -> str:
    return f"A {special_kind(mode)}, not a regular file (never opened)"


def check_regular(path: str | Path) -> os.stat_result:
    """``os.stat`` of ``path`` (following links); :class:`NotRegularFileError` unless a regular file."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(not_regular_reason(st.st_mode))
    return st


def open_regular_fd(path: str | Path) -> tuple[int, os.stat_result]:
    """:func:`open_regular` as a raw descriptor and its ``fstat`` (the caller closes it): for reads
    straight into memory (``os.preadv``) without a file object."""
    check_regular(path)
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped after the stat above
            raise NotRegularFileError(not_regular_reason(st.st_mode))
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for reading without ever blocking on a FIFO or opening a device."""
    fd, _ = open_regular_fd(path)
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def is_inside(target: str, root: str) -> bool:
    """True when the resolved path ``target`` lies in (or is) the resolved folder ``root``."""
    try:
        return os.path.commonpath([root, target]) == root
    except ValueError:  # different drives (Windows)
        return False
