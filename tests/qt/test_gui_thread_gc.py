"""Qt objects in reference cycles are freed on the GUI thread, never on a worker that happens to allocate."""

from __future__ import annotations

import gc
import threading
import weakref

from PySide6.QtCore import QObject
from pytestqt.qtbot import QtBot

from viewer.qt.app import create_application
from viewer.qt.gui_thread_gc import collect_due, collect_on_gui_thread


class _Cycle:
    """A Python object in a reference cycle that owns a QObject, as plot items and jobs are."""

    def __init__(self) -> None:
        self.me = self
        self.qobject = QObject()


def _freed_on(qtbot: QtBot, worker_allocations: int) -> list[str]:
    freed: list[str] = []
    cycle = _Cycle()
    weakref.finalize(cycle, lambda: freed.append(threading.current_thread().name))
    del cycle

    loaded: list[list[int]] = []

    def load() -> None:  # a loader's work: container objects that it hands over
        loaded.extend([i] for i in range(worker_allocations))

    worker = threading.Thread(target=load, name="worker")
    worker.start()
    worker.join(30)
    qtbot.waitUntil(lambda: bool(freed), timeout=5000)
    loaded.clear()
    return freed


def test_cyclic_garbage_is_freed_on_the_gui_thread(qtbot: QtBot) -> None:
    create_application()
    assert not gc.isenabled()  # automatic collection (on whatever thread allocates) is off
    # Enough allocations on the worker for collections to fall due (generation 0 every 700).
    freed = _freed_on(qtbot, worker_allocations=50_000)
    assert freed == [threading.main_thread().name]


def test_collect_due_frees_garbage_without_the_event_loop() -> None:
    create_application()
    freed: list[bool] = []
    for _ in range(2000):  # more than generation 0's threshold
        cycle = _Cycle()
        weakref.finalize(cycle, lambda: freed.append(True))
        del cycle
    collect_due()
    assert len(freed) >= 700


def test_a_collection_off_the_gui_thread_is_reported() -> None:
    collector = collect_on_gui_thread()
    before = collector.off_thread_collections
    worker = threading.Thread(target=gc.collect, name="worker")  # what a worker must never do
    worker.start()
    worker.join(30)
    assert collector.off_thread_collections == before + 1
    collector.off_thread_collections = before  # handled here: not a failure of this test
