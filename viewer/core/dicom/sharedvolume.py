"""A whole volume in shared memory that decoder processes write their slices into (Linux).

Without it every decoded slice of a compressed volume is pickled by its decoder process, sent through
a pipe, unpickled and copied into the volume by the viewer's process (about 5 passes over 150 MB for a
300-slice CT, on the cores the decoders need). Here the viewer's process maps the volume from an
anonymous memory file (``memfd_create``), hands the file descriptor to each decoder process with its
chunk (``SCM_RIGHTS`` over the process's socket), and the decoder applies the modality LUT straight into
the slice's place; the answer is a few bytes.

The memory file has no name: nothing is left in ``/dev/shm`` whatever happens to any process (a
cancelled load, a killed decoder, a killed viewer). The viewer's descriptor is closed when the load
ends (:meth:`SharedVolume.close`); a decoder maps the file only while it works on a chunk; the
volume's own mapping (and the descriptor Python's ``mmap`` keeps with it) lives as long as the returned
array.

A load's threads may outlive it (one still starting a decoder process when the load is cancelled):
the descriptor is sent only under :meth:`SharedTarget.sending`, which holds it open meanwhile and
refuses once the volume is closed. Sending the number after the close would send whatever file was
opened next under that number (the next load's volume, a read-write file) for a decoder to write into.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from viewer.core.errors import LoadCancelled

MEMFD_NAME = "slicewise-volume"  # shown in /proc/PID/fd and /proc/PID/maps as memfd:slicewise-volume


class _Descriptor:
    """A volume's descriptor (-1 once closed) and the lock that orders sending it against closing it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()


@dataclass(frozen=True)
class SharedTarget:
    """Where a decoder process writes decoded slices: the volume's memory file (a descriptor valid in
    the viewer's process, sent to the decoder separately, see :meth:`sending`), its shape and dtype."""

    fd: int
    shape: tuple[int, int, int]
    dtype: str
    descriptor: _Descriptor | None = field(default=None, compare=False, repr=False)  # not pickled

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    @contextlib.contextmanager
    def sending(self) -> Iterator[int]:
        """The descriptor to send, held open for the block; :class:`LoadCancelled` once the volume is
        closed (its load is over: its number may name another file by now)."""
        if self.descriptor is None:
            yield self.fd
            return
        with self.descriptor.lock:
            if self.descriptor.fd != self.fd:
                raise LoadCancelled("The load's volume is closed")
            yield self.fd

    def for_child(self) -> SharedTarget:
        """The picklable part (the descriptor itself travels separately)."""
        return SharedTarget(-1, self.shape, self.dtype)


def shared_volumes_supported() -> bool:
    """memfd_create and descriptor passing exist here (Linux)."""
    return sys.platform.startswith("linux") and hasattr(os, "memfd_create")


class SharedVolume:
    """An uninitialised ``(S, rows, cols)`` array in an anonymous memory file (see the module docstring).

    ``array`` owns its mapping (it is unmapped when the array is freed); :meth:`close` closes the
    descriptor decoders are sent, after which no new decoder can write into the volume.
    """

    def __init__(self, shape: tuple[int, int, int], dtype: np.dtype | type) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = shape
        nbytes = max(int(np.prod(shape)) * self.dtype.itemsize, 1)
        fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, nbytes)
            flags = mmap.MAP_SHARED  # not MAP_POPULATE: each decoder faults its slices in, on its core
            buf = mmap.mmap(fd, nbytes, flags=flags)
        except BaseException:
            os.close(fd)
            raise
        self._descriptor = _Descriptor(fd)
        count = int(np.prod(shape))
        self.array: np.ndarray = np.frombuffer(buf, dtype=self.dtype, count=count).reshape(shape)

    @property
    def target(self) -> SharedTarget:
        fd = self._descriptor.fd
        if fd < 0:
            raise ValueError("the shared volume is closed")
        return SharedTarget(fd, self.shape, self.dtype.str, self._descriptor)

    def close(self) -> None:
        """Close the descriptor (idempotent; waits for a send in progress); the array stays valid."""
        with self._descriptor.lock:
            if self._descriptor.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._descriptor.fd)
                self._descriptor.fd = -1

    def __enter__(self) -> SharedVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_slices(fd: int, target: SharedTarget, write: Callable[[Callable[[int], np.ndarray]], None]) -> None:
    """Decoder side: map the volume ``fd`` (received for one chunk; closed here at once) and call
    ``write(slot)``, where ``slot(i)`` is slice ``i``'s place in the volume; unmapped afterwards."""
    try:
        buf = mmap.mmap(fd, target.nbytes, flags=mmap.MAP_SHARED)
    finally:
        os.close(fd)
    dtype = np.dtype(target.dtype)
    _, rows, cols = target.shape
    count = rows * cols

    def slot(i: int) -> np.ndarray:
        offset = i * count * dtype.itemsize
        return np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(rows, cols)

    try:
        write(slot)
    finally:
        with contextlib.suppress(BufferError):  # a view still referenced: unmapped when it is freed
            buf.close()
