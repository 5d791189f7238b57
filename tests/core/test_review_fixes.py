"""Regression tests for defects found in the core review."""

from __future__ import annotations

import zipfile
from pathlib import Path

from viewer.core.dicom.sources import ArchiveCache


def test_archive_read_after_close_keeps_no_handle_open(tmp_path: Path) -> None:
    # A prefetch thread may still read a zip member after StackVolume.close() closed the cache:
    # that read must work without re-caching (and so leaking) an open ZipFile.
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("x.dcm", b"payload")
    cache = ArchiveCache()
    assert cache.read_member(archive, "x.dcm") == b"payload"
    cache.close()
    assert cache.read_member(archive, "x.dcm") == b"payload"
    assert cache._open == {}
