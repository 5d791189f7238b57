"""DICOM objects (AI results, measurement SRs) built and written in one helper process, not in the
viewer's.

highdicom's first use in a process parses the DICOM standard's module tables (``json.loads`` of a large
file) in one C call that holds the GIL for about a second; run on a thread of the viewer, that froze
its event loop for 0.9-1.6 s after the first Analyze (the heartbeat of
tests/qt/test_responsiveness.py). The helper process pays that once and keeps the tables; the viewer
only pickles the prediction and the stack (a few hundred kB). The process is started on first use
(spawn: the viewer has threads), dies with the viewer (:func:`~viewer.core.dicom.limits.die_with_parent`)
and is shut down at exit.
"""

from __future__ import annotations

import atexit
import importlib
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TypeVar

from viewer.core.airesults.identity import SourceSeries
from viewer.core.dicom.model import Stack
from viewer.core.inference.results import StackPrediction

_T = TypeVar("_T")
Writer = Callable[[StackPrediction, SourceSeries, Path, bool], list[Path]]

RESULT_TIMEOUT_S = 60.0  # a caller that waits for the helper waits at most this long
_LOCK = threading.Lock()
_EXECUTOR: list[ProcessPoolExecutor] = []


def _start_child(parent_pid: int) -> None:
    from viewer.core.dicom.limits import die_with_parent

    die_with_parent(parent_pid)


def write_objects(
    writer: Writer, prediction: StackPrediction, stack: Stack, folder: Path, include_identity: bool
) -> list[Path]:
    """Read the stack's first header and write the objects (runs in the helper process; also callable
    in-process)."""
    from viewer.core.airesults.identity import read_first_header, source_from_stack

    return writer(prediction, source_from_stack(stack, read_first_header(stack)), folder, include_identity)


def submit(
    writer: Writer, prediction: StackPrediction, stack: Stack, folder: Path, include_identity: bool
) -> Future[list[Path]]:
    """Write ``prediction``'s objects into ``folder`` in the helper process; the future holds the paths
    (or the exception). ``writer`` must be a module-level function (it is pickled by name)."""
    return call(write_objects, writer, prediction, stack, folder, include_identity)


def call(fn: Callable[..., _T], *args: object) -> Future[_T]:
    """Run the module-level ``fn(*args)`` in the helper process (started on first use)."""
    for _attempt in range(2):
        with _LOCK:
            if not _EXECUTOR:
                _EXECUTOR.append(
                    ProcessPoolExecutor(
                        max_workers=1,
                        mp_context=multiprocessing.get_context("spawn"),
                        initializer=_start_child,
                        initargs=(os.getpid(),),
                    )
                )
            executor = _EXECUTOR[0]
        try:
            return executor.submit(fn, *args)
        except BrokenProcessPool:  # the helper died (killed, out of memory): start a new one
            with _LOCK:
                if _EXECUTOR and _EXECUTOR[0] is executor:
                    _EXECUTOR.clear()
    raise BrokenProcessPool("The AI results helper process could not be started")


def run_named(target: str, *args: object) -> object:
    """Import ``target`` ("package.module:function") and call it (runs in the helper process)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(*args)


def call_named(target: str, *args: object) -> Future[object]:
    """:func:`call` for a function named "package.module:function": its module (highdicom, say) is
    imported in the helper process only, never in the viewer's."""
    return call(run_named, target, *args)


def shutdown() -> None:
    """Stop the helper process (queued writes are dropped, a running one finishes)."""
    with _LOCK:
        executors = list(_EXECUTOR)
        _EXECUTOR.clear()
    for executor in executors:
        executor.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)
