"""Per-session writer lock: an OS lock on a small file that says who holds it (PID, host).

The OS releases the lock when the holder dies (even on ``kill -9``), so a lock is never stale.
On POSIX it is ``flock`` (per open file, so a second window in the same process is also refused);
on Windows a ``msvcrt`` byte-range lock.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from viewer.core.review.fileutil import create_private_file

log = logging.getLogger(__name__)

if sys.platform == "win32":  # pragma: no cover - exercised on Windows CI only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


_INFO_OFFSET = 16  # Windows locks byte 0; the owner info is written after it
_INFO_SIZE = 256


class SessionLock:
    """Try to become the one writer of a session; ``acquired`` says whether it worked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        create_private_file(path)
        self._fd: int | None = os.open(path, os.O_RDWR)
        self.acquired = _try_lock(self._fd)
        if self.acquired:
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
            data = json.dumps(info).encode().ljust(_INFO_SIZE)  # fixed size: no truncation needed
            os.lseek(self._fd, _INFO_OFFSET, os.SEEK_SET)
            os.write(self._fd, data[:_INFO_SIZE])
            os.fsync(self._fd)
        else:
            os.close(self._fd)
            self._fd = None

    def owner(self) -> str:
        """'PID 1234, host X' of the holder, as far as the lock file says."""
        try:
            raw = self.path.read_bytes()[_INFO_OFFSET : _INFO_OFFSET + _INFO_SIZE]
            info = json.loads(raw.decode())
            return f"PID {int(info['pid'])}, host {info['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "unknown process"

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if self.acquired:
                _unlock(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None
            self.acquired = False
