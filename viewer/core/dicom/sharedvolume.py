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
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MEMFD_NAME = "slicewise-volume"  # shown in /proc/PID/fd and /proc/PID/maps as memfd:slicewise-volume


@dataclass(frozen=True)
class SharedTarget:
    """Where a decoder process writes decoded slices: the volume's memory file (a descriptor valid in
    the viewer's process, sent to the decoder separately), its shape and dtype."""

    fd: int
    shape: tuple[int, int, int]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


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
        self._fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC)
        try:
            os.ftruncate(self._fd, nbytes)
            flags = mmap.MAP_SHARED  # not MAP_POPULATE: each decoder faults its slices in, on its core
            buf = mmap.mmap(self._fd, nbytes, flags=flags)
        except BaseException:
            os.close(self._fd)
            raise
        count = int(np.prod(shape))
        self.array: np.ndarray = np.frombuffer(buf, dtype=self.dtype, count=count).reshape(shape)

    @property
    def target(self) -> SharedTarget:
        if self._fd < 0:
            raise ValueError("the shared volume is closed")
        return SharedTarget(self._fd, self.shape, self.dtype.str)

    def close(self) -> None:
        """Close the descriptor (idempotent); the array stays valid."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

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
