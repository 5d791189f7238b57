"""Shared test setup: offscreen Qt, a private user-data folder, and DICOM factories."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# A test still running after this long is hung (pytest-timeout ends the run at 300 s; faulthandler prints
# the Python stacks at 120 s): the native stacks of every thread are printed too, by gdb where it is
# installed and may attach, since a hang inside Qt or PySide shows only its Python caller otherwise.
NATIVE_STACKS_AFTER_S = 150.0
_running: dict[str, float] = {}  # the current test's node id -> its start (time.monotonic())


def _native_stack_watchdog(config: pytest.Config) -> None:
    dumped: set[str] = set()
    while True:
        time.sleep(5.0)
        for nodeid, start in list(_running.items()):
            if nodeid in dumped or time.monotonic() - start < NATIVE_STACKS_AFTER_S:
                continue
            dumped.add(nodeid)
            gdb = shutil.which("gdb")
            if gdb is None:
                continue
            command = [gdb, "-p", str(os.getpid()), "-batch", "-ex", "thread apply all bt 30"]
            result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
            capture = config.pluginmanager.getplugin("capturemanager")
            if capture is not None:  # as pytest-timeout prints its stacks: past the test's capture
                capture.suspend_global_capture(in_=True)
            try:
                sys.stderr.write(f"\n==== native stacks: {nodeid} after {NATIVE_STACKS_AFTER_S:.0f} s\n")
                sys.stderr.write(result.stdout + result.stderr)
                sys.stderr.flush()
            finally:
                if capture is not None:
                    capture.resume_global_capture()


def pytest_configure(config: pytest.Config) -> None:
    threading.Thread(
        target=_native_stack_watchdog, args=(config,), name="native-stack-watchdog", daemon=True
    ).start()


@pytest.fixture(autouse=True)
def _watch_for_hangs(request: pytest.FixtureRequest) -> Iterator[None]:
    _running[request.node.nodeid] = time.monotonic()
    yield
    _running.pop(request.node.nodeid, None)


@pytest.fixture(autouse=True)
def _private_user_data(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own Slicewise data folder and Qt settings, never the user's."""
    data = tmp_path_factory.mktemp("slicewise-data")
    monkeypatch.setenv("SLICEWISE_DATA_DIR", str(data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(data / "config"))
    return data


@pytest.fixture(autouse=True)
def _collect_garbage_on_the_gui_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    """Qt tests get the application as the app sets it up, garbage collection on the GUI thread included
    (viewer.qt.gui_thread_gc); from then on every test gets its due collections here, since many do not
    spin the event loop."""
    if {"qtbot", "qapp"} & set(request.fixturenames):
        from viewer.qt.app import create_application

        create_application()
    yield
    module = sys.modules.get("viewer.qt.gui_thread_gc")
    if module is not None:
        module.collect_due()
        collector = module._collector
        if collector is not None and collector.off_thread_collections:
            collector.off_thread_collections = 0
            pytest.fail("a garbage collection ran off the GUI thread in this test (viewer.qt.gui_thread_gc)")
