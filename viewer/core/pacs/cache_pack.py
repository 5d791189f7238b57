"""Writing one retrieve round's instances into one pack file of the cache (format:
:mod:`viewer.core.dicom.pack`).

A WADO-RS round keeps its instances in one pack instead of one file per instance: the 300 file creations
and renames of a CT series cost ~50 ms here, more than the rest of keeping them. Each instance gets its
range of the pack (reserved under a lock, so writer threads never overlap) and is written there with
``pwrite``; only then is its index line appended. A reader (the loader, the streamed preview, the next
retrieve's :meth:`~viewer.core.pacs.cache.InstanceCache.cached`) counts only indexed members, so it never
sees half an instance, and a killed retrieve keeps every instance indexed before the kill. An instance
that arrives twice in a round is indexed once. Names are random (no patient data, no UID); files 0600.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from pathlib import Path

from viewer.core.dicom import pack
from viewer.core.pacs.models import RetrievedInstance

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)  # POSIX / Windows


def _create(path: Path, flags: int = 0) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | flags, 0o600)


_SEEK_LOCK = threading.Lock()  # where there is no pwrite (Windows): seek and write as one step


def _write_all(fd: int, data: bytes | memoryview, offset: int | None = None) -> None:
    """Write all of ``data`` (at ``offset`` with ``pwrite``, else at the end of an ``O_APPEND`` file)."""
    if offset is not None and not hasattr(os, "pwrite"):
        with _SEEK_LOCK:
            os.lseek(fd, offset, os.SEEK_SET)
            _write_all(fd, data)
        return
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[n:]
        if offset is not None:
            offset += n


class PackWriter:
    """One new pack in ``folder`` (see the module). Thread-safe. :meth:`close` when the round ends: a
    pack that received nothing is removed."""

    def __init__(self, folder: Path) -> None:
        token = secrets.token_hex(16)
        self.path = folder / f"{token}{pack.PACK_SUFFIX}"
        self._index = pack.index_path(self.path)
        self._lock = threading.Condition()
        self._members: dict[str, RetrievedInstance] = {}
        self._closed = False
        self._writing = 0  # writes in progress outside the lock: close() waits for them
        self._end = len(pack.PACK_MAGIC)
        # both files get their markers under temporary names (a leftover is removed with the other
        # ``.part`` files) and are renamed into place index first: a pack is never seen without them
        unfinished = f"{pack.UNFINISHED_PREFIX}{token}"
        tmp_pack, tmp_index = folder / f"{unfinished}-pack", folder / f"{unfinished}-index"
        fds: list[int] = []
        try:
            fds.append(_create(tmp_pack))
            _write_all(fds[0], pack.PACK_MAGIC)
            fds.append(_create(tmp_index, os.O_APPEND))
            _write_all(fds[1], pack.INDEX_MAGIC)
            os.replace(tmp_index, self._index)
            os.replace(tmp_pack, self.path)
        except BaseException:
            for fd in fds:
                os.close(fd)
            for path in (tmp_pack, tmp_index, self._index):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        self._fd, self._index_fd = fds

    def __len__(self) -> int:
        with self._lock:
            return len(self._members)

    def add(
        self, sop_uid: str, series_uid: str, transfer_syntax: str, frames: int, data: bytes
    ) -> RetrievedInstance:
        """Write one checked instance's bytes and index them; the instance kept already when this SOP is
        in the pack (its bytes are not written twice)."""
        with self._lock:
            if self._closed:
                raise OSError("The cache pack of this retrieve round is closed")
            kept = self._members.get(sop_uid)
            if kept is not None:
                return kept
            offset, self._end = self._end, self._end + len(data)
            self._writing += 1
        try:
            _write_all(self._fd, data, offset)  # outside the lock: writer threads write their ranges at once
        finally:
            with self._lock:
                self._writing -= 1
                self._lock.notify_all()
        item = RetrievedInstance(
            sop_uid,
            series_uid,
            self.path,
            transfer_syntax,
            len(data),
            max(1, frames),
            member=pack.member_name(offset, len(data)),
        )
        with self._lock:
            kept = self._members.get(sop_uid)
            if kept is not None:  # the same instance written by another thread meanwhile: indexed once
                return kept
            if self._closed:
                raise OSError("The cache pack of this retrieve round is closed")
            _write_all(self._index_fd, pack.index_line(sop_uid, offset, len(data), frames, transfer_syntax))
            self._members[sop_uid] = item
        return item

    def close(self) -> None:
        """Close the pack (idempotent) once the writes in progress have ended (its descriptor is never
        closed under a write, whose number could then name another file); remove it when it holds no
        instance."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            while self._writing:
                self._lock.wait(0.1)
            empty = not self._members
        self._close_files(remove=empty)

    def _close_files(self, *, remove: bool) -> None:
        for fd in (self._fd, self._index_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        if remove:
            for path in (self._index, self.path):
                with contextlib.suppress(OSError):
                    os.unlink(path)
