"""Shared test setup: offscreen Qt, a private user-data folder, and DICOM factories."""

from __future__ import annotations

import os
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
