"""Python's cyclic garbage collector, run on the GUI thread only.

With automatic collection, whichever thread allocates when a collection is due frees all the cyclic
garbage there is: a loader, decoder or inference thread may free the plot items and windows a reader
closed a moment ago. Qt objects must be destroyed on the thread they live in, PySide runs C++ destructors
with the GIL released, and PySide's registry of Python slot connections is not guarded against two
threads. Measured here: in the Qt tests about 1 collection in 20 ran on a worker thread (loader, MPR and
decoder threads), freeing thousands of objects there, and two full test runs hung for good in a PySide
signal disconnect on the GUI thread.

The remedy is pyqtgraph's (``pyqtgraph.util.garbage_collector``): automatic collection off, and the
same generational collection driven by a timer on the GUI thread. pyqtgraph's version collects the
oldest generation every tenth time the middle one is collected; this one keeps CPython's rule that a
full collection waits until the objects promoted since the last one are a quarter of those that survived
it, so a large loaded study does not make every few seconds a full collection on the GUI thread.
"""

from __future__ import annotations

import gc
import logging
import threading

from PySide6.QtCore import QTimer

logger = logging.getLogger(__name__)

CHECK_INTERVAL_MS = 100  # how often the GUI thread looks whether a generation is due (a counter read)
FULL_COLLECTION_FRACTION = 4  # CPython's: full collection when pending > survivors / 4


class GuiThreadCollector:
    """Generational collection on the thread that created it, with CPython's thresholds and rules."""

    def __init__(self) -> None:
        self._thresholds = gc.get_threshold()
        gc.disable()
        self._survivors = len(gc.get_objects(generation=2))  # of the last full collection
        self._pending = 0  # objects promoted into the oldest generation since then
        self._timer = QTimer()
        self._timer.setInterval(CHECK_INTERVAL_MS)
        self._timer.timeout.connect(self.collect_due)
        self._timer.start()
        self._gui_thread = threading.get_ident()
        self.off_thread_collections = 0  # started elsewhere (gc re-enabled, gc.collect() on a worker)
        gc.callbacks.append(self._watch)

    def _watch(self, phase: str, info: dict[str, int]) -> None:
        if phase != "start" or threading.get_ident() == self._gui_thread:
            return
        self.off_thread_collections += 1
        if self.off_thread_collections == 1:
            logger.warning(
                "A garbage collection (generation %d) ran off the GUI thread: Qt objects may be freed there",
                info["generation"],
            )

    def collect_due(self) -> None:
        """Collect the oldest generation that is due, as CPython would have on its next allocation."""
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] <= self._thresholds[generation]:
                continue
            if generation == 2 and self._pending < self._survivors // FULL_COLLECTION_FRACTION:
                continue
            self._collect(generation)
            return

    def _collect(self, generation: int) -> None:
        if generation == 2:
            gc.collect(2)
            self._survivors = len(gc.get_objects(generation=2))
            self._pending = 0
        elif generation == 1:
            young = len(gc.get_objects(generation=0)) + len(gc.get_objects(generation=1))
            self._pending += max(young - gc.collect(1), 0)
        else:
            gc.collect(0)


_collector: GuiThreadCollector | None = None


def collect_on_gui_thread() -> GuiThreadCollector:
    """Turn automatic collection off and collect on a GUI-thread timer instead (once per process).

    Call on the GUI thread once the QApplication exists.
    """
    global _collector
    if _collector is None:
        _collector = GuiThreadCollector()
    return _collector


def collect_due() -> None:
    """Run the generation that is due now, on the calling (GUI) thread: for tests, which often do not
    spin the event loop. Nothing before :func:`collect_on_gui_thread`."""
    if _collector is not None:
        _collector.collect_due()
