"""Pins and the index of the retrieved-instance cache, on real files: a study pinned by this or another
process is never evicted (a pin ends with its process, ``kill -9`` included); when only pinned studies are
over the budget every file is kept and the report says so; eviction reads the per-study index instead of
walking every file, and the index is rebuilt from disk when missing or damaged."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.factories import CANARY_ID, CANARY_NAME, write_ct_series
from viewer.core.pacs import InstanceCache, cache_index, cache_pins

WAIT_S = 20.0


def _add_study(cache: InstanceCache, tmp_path: Path, name: str, n: int = 2) -> tuple[Path, str]:
    paths = write_ct_series(tmp_path / name, n, rows=32, columns=32)
    head = dcmread(paths[0], stop_before_pixels=True)
    folder = cache.series_folder("node", str(head.StudyInstanceUID), str(head.SeriesInstanceUID))
    for p in paths:
        cache.put(folder, p.read_bytes())
    return folder.parent, str(head.StudyInstanceUID)


def _files(study: Path) -> list[Path]:
    return sorted(study.rglob("*.dcm"))


_PINNER = """
import sys, time
from pathlib import Path
from viewer.core.pacs import InstanceCache
root, study, ready = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
cache = InstanceCache(root)
cache.pin(study)
ready.write_text("pinned")
end = time.monotonic() + 60
while time.monotonic() < end:
    time.sleep(0.05)
"""


@pytest.mark.skipif(not cache_pins.cross_process(), reason="pins are in-process only without fcntl (Windows)")
def test_a_study_pinned_by_another_process_is_kept_until_that_process_ends(tmp_path: Path) -> None:
    cache = InstanceCache(tmp_path / "cache")
    pinned, _ = _add_study(cache, tmp_path, "a")
    other, _ = _add_study(cache, tmp_path, "b")
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", _PINNER, str(cache.root), str(pinned), str(ready)],
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        end = time.monotonic() + WAIT_S
        while not ready.exists() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.02)
        assert ready.exists(), "the pinning process did not start"
        assert cache.is_pinned(pinned) and not cache.is_pinned(other)
        cache.budget_bytes = 1
        report = cache.evict()
        assert report.removed == (other,)
        assert report.pinned_kept == 1 and report.over_budget_bytes > 0
        assert len(_files(pinned)) == 2 and all(f.stat().st_size > 0 for f in _files(pinned))
    finally:
        proc.send_signal(signal.SIGKILL)  # however the process ends, its pins end with it
        proc.wait(timeout=WAIT_S)
    assert not cache.is_pinned(pinned)
    assert cache.evict().removed == (pinned,)


def test_when_everything_is_pinned_the_files_are_kept_and_the_overrun_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cache = InstanceCache(tmp_path / "cache", budget_bytes=1)
    a, uid_a = _add_study(cache, tmp_path, "a")
    b, uid_b = _add_study(cache, tmp_path, "b")
    with cache.lease(a), cache.lease(b):
        report = cache.evict()
        assert report.removed == () and report.pinned_kept == 2
        assert report.over_budget_bytes == report.total_bytes - 1 > 0
        assert cache.last_eviction == report
        assert len(_files(a)) == 2 and len(_files(b)) == 2
        cache.pin(a)  # pins count: one more pin, one more unpin
    assert cache.evict().removed == (b,)  # a is still pinned once
    cache.unpin(a)
    assert cache.evict().removed == (a,)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "over its 0 MB budget; 2 studies in use are kept" in messages
    for secret in (uid_a, uid_b, a.name, b.name, str(tmp_path), CANARY_NAME, CANARY_ID):
        assert secret not in messages


def test_a_pinned_study_survives_another_instance_of_the_cache_in_this_process(tmp_path: Path) -> None:
    """Two windows of one process, each with its own cache object over one folder."""
    first = InstanceCache(tmp_path / "cache")
    study, _ = _add_study(first, tmp_path, "a")
    second = InstanceCache(tmp_path / "cache", budget_bytes=1)
    with first.lease(study):
        expected = () if cache_pins.cross_process() else (study,)
        assert second.evict().removed == expected
    if cache_pins.cross_process():
        assert second.evict().removed == (study,)


def test_eviction_reads_the_index_not_every_file(tmp_path: Path) -> None:
    """A file slipped into a study behind the cache's back is not seen: a study is measured when it is
    written, not at every check (the check costs one entry per study)."""
    cache = InstanceCache(tmp_path / "cache")
    a, _ = _add_study(cache, tmp_path, "a")
    b, _ = _add_study(cache, tmp_path, "b")
    first = cache.evict()
    size_b = cache_index.tree_size(b)
    assert first.total_bytes == cache_index.tree_size(a) + size_b
    index = json.loads((cache.root / cache_index.INDEX_FILE).read_text())
    assert index["schema"] == 1
    assert {k: v["bytes"] for k, v in index["studies"].items()} == {
        a.name: cache_index.tree_size(a),
        b.name: size_b,
    }
    assert not any(v["dirty"] for v in index["studies"].values())
    (b / "unnoticed").write_bytes(b"x" * 5000)
    assert cache.evict().total_bytes == first.total_bytes
    cache.touch(b, writing=True)  # written again: measured again at the next check
    assert cache.evict().total_bytes == first.total_bytes + 5000


@pytest.mark.parametrize("damage", ["missing", "garbage", "wrong schema", "bad value"])
def test_a_missing_or_damaged_index_is_rebuilt_from_disk(tmp_path: Path, damage: str) -> None:
    cache = InstanceCache(tmp_path / "cache")
    a, _ = _add_study(cache, tmp_path, "a")
    b, _ = _add_study(cache, tmp_path, "b")
    cache.touch(a)  # a is the most recently used
    total = cache.evict().total_bytes
    path = cache.root / cache_index.INDEX_FILE
    if damage == "missing":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b'{"schema": 1, "stud\x00')
    elif damage == "wrong schema":
        path.write_text(json.dumps({"schema": 99, "studies": {}}))
    else:
        path.write_text(json.dumps({"schema": 1, "studies": {a.name: {"bytes": -5, "used": 0}}}))
    fresh = InstanceCache(tmp_path / "cache")
    assert fresh.evict().total_bytes == total
    assert set(json.loads(path.read_text())["studies"]) == {a.name, b.name}
    fresh.budget_bytes = cache_index.tree_size(a) + 10
    assert fresh.evict().removed == (b,)  # the last use survived the rebuild (the studies' stamps)


def test_a_study_written_by_a_process_that_died_is_measured_again(tmp_path: Path) -> None:
    """The index marks a study before it is written: a writer killed before its eviction check leaves it
    marked, and the next check (any process) measures it."""
    cache = InstanceCache(tmp_path / "cache")
    a, _ = _add_study(cache, tmp_path, "a")
    cache.evict()
    b, _ = _add_study(cache, tmp_path, "b")  # no eviction check after it: as if the process died here
    fresh = InstanceCache(tmp_path / "cache")
    assert fresh.evict().total_bytes == cache_index.tree_size(a) + cache_index.tree_size(b)


def test_the_index_and_pin_files_are_private(tmp_path: Path) -> None:
    cache = InstanceCache(tmp_path / "cache")
    a, _ = _add_study(cache, tmp_path, "a")
    with cache.lease(a):
        cache.evict()
    if os.name == "posix":
        for path in (cache.root / cache_index.INDEX_FILE, a / cache_pins.PIN_FILE):
            assert path.stat().st_mode & 0o077 == 0
