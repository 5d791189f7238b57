"""Pins on cached studies that hold across processes and end with the process that holds them.

A pinned study (open on screen, being retrieved, the review's current study) is never evicted. A pin is
a shared ``flock`` on the study folder's ``.pinned`` file, held open while the pin lasts: every process
(and every :class:`~viewer.core.pacs.cache.InstanceCache` of one process) that pins a study holds one,
and the kernel drops them when the process ends, however it ends (``kill -9`` included), so a pin never
outlives its holder and no stale-PID bookkeeping is needed. Eviction takes the exclusive lock without
waiting: when it cannot, someone pins the study; when it can, it holds that lock while it deletes, so a
pin taken meanwhile waits and then finds the file gone and pins the new folder instead.

Where ``fcntl`` does not exist (Windows) pins are only in-process (the cache's own count).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from viewer.core.review.fileutil import private_dir

try:
    import fcntl
except ImportError:  # Windows: in-process pins only
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

PIN_FILE = ".pinned"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_PIN_WAIT_S = 10.0  # an evictor holds the exclusive lock only while it deletes one study


def cross_process() -> bool:
    """Whether pins are seen by other processes here (POSIX ``flock``)."""
    return fcntl is not None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        return False


def acquire_shared(study_folder: Path) -> int | None:
    """Hold a shared lock on the study's pin file (the folder is created when missing); the open fd,
    to be given to :func:`release`, or None when pins are in-process only or the lock could not be had
    within a few seconds (logged; the in-process pin still holds)."""
    if fcntl is None:
        return None
    deadline = time.monotonic() + _PIN_WAIT_S
    while True:
        private_dir(study_folder)
        path = study_folder / PIN_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o600)
        except OSError as exc:
            logger.warning(
                "PACS cache: a study could not be pinned across processes (%s)", type(exc).__name__
            )
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # an evictor is deleting it right now: wait, then pin the folder made again
            if time.monotonic() > deadline:
                logger.warning("PACS cache: a study could not be pinned across processes (busy)")
                return None
            time.sleep(0.02)
            continue
        if _same_file(fd, path):
            return fd
        os.close(fd)  # pinned the file of a folder deleted meanwhile: pin the new one


def release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing drops the lock


@contextlib.contextmanager
def exclusive(study_folder: Path) -> Iterator[bool]:
    """Yield whether no process pins ``study_folder`` (True: it may be deleted while this holds).
    Where pins are in-process only, always True (the cache checks its own count)."""
    if fcntl is None:
        yield True
        return
    try:
        fd = os.open(study_folder / PIN_FILE, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o600)
    except OSError:
        yield not study_folder.exists()  # gone already, or unreadable: never delete what we cannot lock
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created 0600) for a short read-modify-write shared by processes;
    waits at most a few seconds, then goes on (the index is rebuilt from disk when it is wrong)."""
    if fcntl is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + _PIN_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    logger.warning("PACS cache: the index lock is busy; going on without it")
                    break
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)
