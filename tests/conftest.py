"""Shared test setup: offscreen Qt, a private user-data folder, and DICOM factories."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


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
