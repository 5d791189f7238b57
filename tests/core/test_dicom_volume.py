"""StackVolume: lazy slices, bounded cache, prefetch, whole-volume loads (threads and process pool)."""

from __future__ import annotations

import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.factories import compress_files, write_ct_series
from viewer.core.constants import WINDOW_PRESETS, Window
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import Stack
from viewer.core.dicom.volume import StackVolume
from viewer.core.errors import DicomError, LoadCancelled


def _stack(folder: Path) -> Stack:
    (stack,) = load_paths([folder]).all_stacks()
    return stack


@pytest.fixture
def series(tmp_path: Path) -> Stack:
    write_ct_series(tmp_path / "s", 30, rows=32, columns=32)
    return _stack(tmp_path / "s")


def test_get_slice_is_lazy_cached_and_read_only(series: Stack) -> None:
    with StackVolume(series) as vol:
        assert len(vol) == 30 and vol.stack is series
        assert vol.cached(5) is None
        a = vol.get_slice(5)
        assert a.dtype == np.int16 and a.shape == (32, 32) and a[0, 0] == 5
        assert vol.get_slice(5) is a  # from the cache
        assert not a.flags.writeable
        with pytest.raises(IndexError):
            vol.get_slice(30)


def test_cache_is_bounded(series: Stack) -> None:
    slice_bytes = 32 * 32 * 2  # int16
    with StackVolume(series, cache_bytes=3 * slice_bytes) as vol:
        for i in range(10):
            vol.get_slice(i)
        assert [i for i in range(30) if vol.cached(i) is not None] == [7, 8, 9]


def test_prefetch_fills_outward_and_newer_call_wins(series: Stack) -> None:
    slice_bytes = 32 * 32 * 2  # int16
    with StackVolume(series, cache_bytes=10 * slice_bytes) as vol:
        vol.prefetch(15)
        deadline = time.monotonic() + 20
        while (vol.cached(12) is None or vol.cached(19) is None) and time.monotonic() < deadline:
            time.sleep(0.01)
        cached = {i for i in range(30) if vol.cached(i) is not None}
        assert cached == set(range(12, 20))  # 8 slices (80 % of the cache) outward from 15
        vol.prefetch(2)
        deadline = time.monotonic() + 20
        while vol.cached(0) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert vol.cached(0) is not None and vol.cached(2) is not None


def test_concurrent_get_slice_from_threads(series: Stack) -> None:
    with StackVolume(series, cache_bytes=5 * 32 * 32 * 2) as vol:
        errors: list[BaseException] = []

        def reader(offset: int) -> None:
            try:
                for k in range(60):
                    i = (k * 7 + offset) % 30
                    assert vol.get_slice(i)[0, 0] == i
                    vol.prefetch(i)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


def test_load_all_uncompressed(series: Stack) -> None:
    seen: list[tuple[int, int]] = []
    with StackVolume(series) as vol:
        vol.get_slice(3)
        volume = vol.load_all(progress=lambda d, t: seen.append((d, t)))
    assert volume.shape == (30, 32, 32) and volume.dtype == np.int16
    assert [int(v) for v in volume[:, 0, 0]] == list(range(30))
    assert volume[7, 16, 16] == 30.0 and volume[7, 31, 31] == -1000.0
    assert seen[-1] == (30, 30)


def test_load_all_compressed_uses_process_pool(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "rle", 12, rows=32, columns=32)
    compress_files(paths)
    stack = _stack(tmp_path / "rle")
    assert stack.slices[0].transfer_syntax_uid == "1.2.840.10008.1.2.5"
    assert all(s.pixel_offset is None for s in stack.slices)
    with StackVolume(stack) as vol:
        volume = vol.load_all()
        assert vol.bad_slices == {}
    assert [int(v) for v in volume[:, 0, 0]] == list(range(12))


def test_load_all_cancel(series: Stack) -> None:
    with StackVolume(series) as vol, pytest.raises(LoadCancelled):
        vol.load_all(cancel=lambda: True)


def test_load_all_refuses_colour(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    (stack,) = load_paths([str(get_testdata_file("SC_rgb.dcm"))]).all_stacks()
    with StackVolume(stack) as vol:
        assert vol.get_slice(0).shape == (100, 100, 3)
        with pytest.raises(DicomError, match="colour"):
            vol.load_all()


def test_volume_from_zip_members(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "src", 9, rows=16, columns=16)
    archive = tmp_path / "s.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in paths:
            zf.write(p, p.name)
    stack = _stack(archive)
    with StackVolume(stack) as vol:
        assert vol.get_slice(4)[0, 0] == 4
        assert [int(v) for v in vol.load_all()[:, 0, 0]] == list(range(9))


def test_default_window_from_header_then_data(series: Stack, tmp_path: Path) -> None:
    with StackVolume(series) as vol:
        assert vol.default_window() == Window(80, 40)
    from pydicom import dcmread

    paths = write_ct_series(tmp_path / "nowin", 3, rows=16, columns=16)
    for p in paths:
        ds = dcmread(p)
        del ds.WindowWidth, ds.WindowCenter
        ds.save_as(p)
    with StackVolume(_stack(tmp_path / "nowin")) as vol:
        assert vol.default_window() == WINDOW_PRESETS["brain"]  # CT without one: the brain window
    for p in paths:
        ds = dcmread(p)
        ds.Modality = "MR"
        ds.save_as(p)
    with StackVolume(_stack(tmp_path / "nowin")) as vol:  # other modalities: the data's range
        window = vol.default_window()
        assert window.low <= -999 and window.high >= 29


def test_close_is_idempotent(series: Stack) -> None:
    vol = StackVolume(series)
    vol.prefetch(10)
    vol.close()
    vol.close()
    vol.prefetch(3)  # ignored after close


def test_allocate_volume_prefaults_large_volumes_only() -> None:
    import mmap
    import sys

    from viewer.core.constants import PREFAULT_MIN_BYTES
    from viewer.core.dicom.pool import allocate_volume

    small = allocate_volume((2, 8, 8))
    assert small.dtype == np.float32 and small.shape == (2, 8, 8) and not isinstance(small.base, mmap.mmap)
    rows = 512
    n = PREFAULT_MIN_BYTES // (rows * rows * 4) + 1
    big = allocate_volume((n, rows, rows))
    assert big.dtype == np.float32 and big.shape == (n, rows, rows) and big.flags.writeable
    big[n - 1] = 7.0  # the whole mapping is usable
    assert float(big[n - 1, rows - 1, rows - 1]) == 7.0
    owner = big.base
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if isinstance(owner, memoryview):
        owner = owner.obj
    if sys.platform.startswith("linux"):
        assert isinstance(owner, mmap.mmap)


def test_compressed_pixels_are_never_decoded_in_the_viewer_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import viewer.core.dicom.isolated as isolated
    import viewer.core.dicom.volume as volume_module

    paths = write_ct_series(tmp_path / "rle", 24, rows=32, columns=32)
    compress_files(paths)
    stack = _stack(tmp_path / "rle")
    in_process: list[int] = []
    original = volume_module.decode_frame

    def counting(*args: object, **kwargs: object) -> np.ndarray:
        in_process.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(volume_module, "decode_frame", counting)
    monkeypatch.setattr(isolated, "decode_frame", counting)
    with StackVolume(stack) as vol:
        assert float(vol.get_slice(5)[0, 0]) == 5.0
        volume = vol.load_all()
        assert vol.bad_slices == {}
    assert [int(v) for v in volume[:, 0, 0]] == list(range(24))
    assert in_process == []  # the slice decoder and the pool's processes did it all


@pytest.mark.skipif(not hasattr(__import__("os"), "nice"), reason="POSIX priority")
def test_decoder_processes_run_below_the_gui_priority() -> None:
    import os

    from viewer.core.dicom import pool

    parent = os.nice(0)
    proc = pool.acquire()
    assert proc is not None
    try:
        worker = proc.call(os.nice, 0)
    finally:
        pool.release(proc)
    assert worker == min(parent + pool.WORKER_NICE, 19)


def test_get_slice_after_close_decodes_but_keeps_nothing(series: Stack) -> None:
    vol = StackVolume(series)
    vol.get_slice(3)
    vol.close()
    assert vol.cached(3) is None
    assert float(vol.get_slice(5)[0, 0]) == 5.0  # a late reader still gets its pixels
    assert vol.cached(5) is None  # but a closed volume holds no memory
