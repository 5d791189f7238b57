"""MPR sources: a stack's whole volume loaded once in the background, and the planes a viewport scrolls
through, resliced from it.

:class:`PlaneSlices` looks like a :class:`~viewer.core.dicom.volume.StackVolume` to the slice view
(``len``, ``cached``, ``get_slice``, ``request_slice`` ...): its "slices" are the planes of the viewport's
scroll grid (axial / coronal / sagittal / oblique, optionally a thick slab). Nothing here decodes or
reslices on the caller's (GUI) thread: the volume is loaded by :class:`VolumeLoader`'s thread, and each
plane not in the cache is resliced on the viewport's own reslice thread (1-20 ms; a sagittal plane of an
axial stack is a memory-bound gather), newest request first: planes asked for meanwhile and no longer
wanted are skipped. Until a plane arrives the view shows the nearest plane it has (or its placeholder).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from viewer.core.constants import Window
from viewer.core.dicom.model import Stack
from viewer.core.dicom.volume import StackVolume
from viewer.core.errors import GeometryError, PixelDecodeError, ViewerStateError
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.plane import Plane
from viewer.core.geometry.reslice import ResliceResult, Slab, reslice
from viewer.core.geometry.stack import StackGeometry
from viewer.core.state.catalogue import CatalogueEntry
from viewer.core.state.planes import ScrollGrid, base_plane, scroll_grid
from viewer.core.state.viewport import ViewportState

log = logging.getLogger(__name__)

PLANE_CACHE = 8  # resliced planes kept per viewport (back-and-forth scrolling, repaints)


class VolumeLoader:
    """Loads one stack's whole volume (modality values, ``(slices, rows, cols)``) once, on its own thread.

    ``on_ready`` callbacks run on the loader's thread when the load ends (loaded, failed or cancelled);
    they must only post to the GUI thread (a queued signal), never touch widgets.
    """

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self._volume = StackVolume(stack)
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mpr-load")
        self._future: Future[np.ndarray] = self._pool.submit(self._volume.load_all, None, self._cancel.is_set)
        self._future.add_done_callback(self._done)
        self._fill: float | None = None

    @property
    def invert_display(self) -> bool:
        return bool(getattr(self._volume, "invert_display", False))

    def known_window(self) -> Window | None:
        return self._volume.known_window()

    def ready(self) -> bool:
        return self._future.done() and not self._future.cancelled() and self._future.exception() is None

    def array(self) -> np.ndarray | None:
        """The loaded volume, or None while loading (or when loading failed: see :meth:`error`)."""
        return self._future.result() if self.ready() else None

    def error(self) -> str | None:
        if not self._future.done() or self._future.cancelled():
            return None
        exc = self._future.exception()
        return None if exc is None else f"{type(exc).__name__}: {exc}"

    def fill_value(self) -> float:
        """What lies outside the volume in a resliced plane: the volume's minimum (air for CT)."""
        arr = self.array()
        if arr is None:
            return 0.0
        if self._fill is None:
            self._fill = float(arr.min()) if arr.size else 0.0
        return self._fill

    def on_ready(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the load has ended (at once, on this thread, if it has)."""
        with self._lock:
            if not self._future.done():
                self._callbacks.append(callback)
                return
        callback()

    def _done(self, future: Future[np.ndarray]) -> None:
        if not future.cancelled() and future.exception() is not None and not self._cancel.is_set():
            log.warning("Volume for MPR not loaded (%s)", type(future.exception()).__name__)
        with self._lock:
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb()

    def close(self) -> None:
        """Cancel a running load (load_all checks every 0.1 s) and free the volume once it has stopped;
        never waits (idempotent)."""
        self._cancel.set()
        with self._lock:
            self._callbacks.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._future.add_done_callback(lambda _f: self._volume.close())  # at once when already done


class PlaneSlices:
    """The planes one MPR viewport scrolls through, as a slice source for the slice view."""

    def __init__(self, loader: VolumeLoader, entry: CatalogueEntry, vp: ViewportState) -> None:
        if entry.geometry is None:
            raise ViewerStateError("The stack has no patient geometry: no MPR planes")
        if vp.orientation is Orientation.NATIVE:
            raise ViewerStateError("A native viewport shows the stack's own slices, not resliced planes")
        self.loader = loader
        self.stack = entry.stack
        self.geometry: StackGeometry = entry.geometry
        self.orientation = vp.orientation
        self.slab: Slab | None = vp.slab
        self.grid: ScrollGrid = scroll_grid(entry, vp)
        self._base: Plane = base_plane(entry.geometry, vp)
        self._count = round((self.grid.high - self.grid.low) / self.grid.step) + 1
        self._cache: OrderedDict[int, ResliceResult] = OrderedDict()
        self._lock = threading.Lock()  # the cache and the wanted plane (GUI and reslice threads)
        self._wanted: int | None = None  # the newest plane requested
        self._pool: ThreadPoolExecutor | None = None  # the reslice thread, started on the first request
        self._closed = False
        self.bad_slices: dict[int, str] = {}

    # --- geometry ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    @property
    def invert_display(self) -> bool:
        return self.loader.invert_display

    def position(self, index: int) -> float:
        """Where plane ``index`` lies along the normal (mm)."""
        return self.grid.low + self._check(index) * self.grid.step

    def index_of(self, position_mm: float) -> int:
        """The plane nearest a position along the normal (mm), clamped to the volume."""
        i = round((float(position_mm) - self.grid.low) / self.grid.step)
        return min(max(i, 0), self._count - 1)

    def plane(self, index: int) -> Plane:
        return self._base.shifted(self.position(index) - self._base.position_mm)

    def warnings(self) -> tuple[str, ...]:
        """Why the planes are resampled (uneven spacing, gantry tilt), once a plane was made."""
        with self._lock:
            for result in self._cache.values():
                return result.warnings
        return ()

    # --- the slice-source protocol of the slice view -------------------------------------------------
    def needs_decoder(self, index: int) -> bool:
        """True until the plane is resliced (a failed load needs nothing more: get_slice says why)."""
        return self.cached(index) is None and self.loader.error() is None

    def cached(self, index: int) -> np.ndarray | None:
        """The plane when it is resliced already, else None (never reslices here)."""
        with self._lock:
            hit = self._cache.get(index)
            if hit is None:
                return None
            self._cache.move_to_end(index)
            return hit.image

    def result(self, index: int) -> ResliceResult:
        """Plane ``index``, from the cache or resliced now on the calling thread."""
        index = self._check(index)
        if index in self.bad_slices:
            raise PixelDecodeError(self.bad_slices[index])
        with self._lock:
            hit = self._cache.get(index)
        if hit is not None:
            return hit
        volume = self.loader.array()
        if volume is None:
            error = self.loader.error()
            if error is not None:
                raise PixelDecodeError(f"The volume could not be loaded for MPR ({error})")
            raise ViewerStateError("The volume for this plane is not loaded yet")
        try:
            result = reslice(volume, self.geometry, self.plane(index), slab=self.slab,
                             fill=self.loader.fill_value())
        except GeometryError as exc:
            self.bad_slices[index] = str(exc)
            raise PixelDecodeError(f"Plane {index + 1} cannot be resliced ({exc})") from exc
        with self._lock:
            self._cache[index] = result
            while len(self._cache) > PLANE_CACHE:
                self._cache.popitem(last=False)
        return result

    def get_slice(self, index: int) -> np.ndarray:
        return self.result(index).image

    def request_slice(
        self, index: int, callback: Callable[[int], None], *, requester: Hashable = None
    ) -> np.ndarray | None:
        """The plane now when it is resliced already, else None and ``callback(index)`` from the reslice
        thread once it is (or once a newer request made it unwanted: the view then ignores it). One
        viewport's planes: ``requester`` is accepted like :meth:`StackVolume.request_slice`'s."""
        if not self.needs_decoder(index):
            return self.get_slice(index)
        index = self._check(index)
        with self._lock:
            self._wanted = index
        self.loader.on_ready(lambda: self._submit(index, callback))
        return None

    def _submit(self, index: int, callback: Callable[[int], None]) -> None:
        with self._lock:
            if self._closed:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="reslice")
            pool = self._pool
        try:
            pool.submit(self._run, index, callback)
        except RuntimeError:  # closed meanwhile
            return

    def _run(self, index: int, callback: Callable[[int], None]) -> None:
        with self._lock:
            wanted = self._wanted == index and not self._closed
        if wanted and self.loader.ready():
            try:
                self.result(index)
            except PixelDecodeError as exc:  # recorded in bad_slices; the view shows why
                log.warning("Plane not resliced (%s)", type(exc.__cause__).__name__)
            except Exception as exc:  # never let the reslice thread die silently
                log.error("Reslicing failed (%s)", type(exc).__name__)
                self.bad_slices[index] = f"Reslicing failed ({type(exc).__name__})"
        callback(index)

    def nearest_cached(self, index: int, reach: int = 64) -> int | None:
        """The resliced plane nearest ``index`` (shown while ``index`` is resliced)."""
        with self._lock:
            near = [k for k in self._cache if abs(k - index) <= reach]
        return min(near, key=lambda k: abs(k - index)) if near else None

    def prefetch(self, index: int) -> None:
        """Nothing to prefetch: the loader loads the whole volume."""

    def prefetch_reach(self, centre: int) -> list[int]:
        return []

    def known_window(self) -> Window | None:
        return self.loader.known_window()

    def default_window(self) -> Window:
        known = self.loader.known_window()
        if known is not None:
            return known
        volume = self.loader.array()
        if volume is None or volume.size == 0:
            return Window(400, 40)
        low, high = (float(v) for v in np.percentile(volume[len(volume) // 2], [0.5, 99.5]))
        return Window.from_levels(low, high) if high > low else Window(400, 40)

    def close(self) -> None:
        """Stop the reslice thread (a plane being resliced finishes; queued ones are dropped) and free the
        cache. The loader is shared by the stack's MPR viewports and closed by its owner."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            self._cache.clear()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _check(self, index: int) -> int:
        if not 0 <= index < self._count:
            raise IndexError(f"Plane {index} is outside 0..{self._count - 1}")
        return int(index)
