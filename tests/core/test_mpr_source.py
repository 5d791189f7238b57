"""MPR sources: the volume loaded off the caller's thread, planes resliced on the viewport's own thread."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from tests.core.geometry_cases import load_stack
from tests.factories import write_geometry_series
from viewer.core.errors import ViewerStateError
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.reslice import Slab, SlabMode
from viewer.core.state.catalogue import CatalogueEntry
from viewer.core.state.mpr import PlaneSlices, VolumeLoader
from viewer.core.state.viewport import ViewportState

SLICES, ROWS, COLS = 5, 6, 7
_K, _J, _I = np.meshgrid(np.arange(SLICES), np.arange(ROWS), np.arange(COLS), indexing="ij")
HU = (100 * _K + 10 * _J + _I).astype(np.int16)
WAIT_S = 20


@pytest.fixture
def entry(tmp_path: Path) -> CatalogueEntry:
    write_geometry_series(tmp_path / "v", HU, positions=[(0.0, 0.0, 3.0 * k) for k in range(SLICES)])
    return CatalogueEntry.of(load_stack(tmp_path / "v"))


def _requested(planes: PlaneSlices, index: int) -> np.ndarray:
    """Request a plane as the slice view does and wait (bounded) for the reslice thread's callback."""
    done = threading.Event()
    got: list[int] = []

    def callback(i: int) -> None:
        got.append(i)
        done.set()

    now = planes.request_slice(index, callback)
    if now is not None:
        return now
    assert done.wait(WAIT_S), "the reslice thread never called back"
    assert got == [index]
    image = planes.cached(index)
    assert image is not None
    return image


def test_planes_are_resliced_off_the_calling_thread_and_cached(entry: CatalogueEntry) -> None:
    loader = VolumeLoader(entry.stack)
    try:
        vp = ViewportState(stack_key=entry.key, orientation=Orientation.CORONAL)
        planes = PlaneSlices(loader, entry, vp)
        assert len(planes) == ROWS  # one coronal plane per image row (0.5 mm apart)
        assert planes.cached(2) is None and planes.needs_decoder(2)  # nothing resliced on this thread
        np.testing.assert_array_equal(_requested(planes, 2), HU[::-1, 2, :])
        assert not planes.needs_decoder(2)
        assert planes.nearest_cached(4) == 2  # the stand-in while plane 4 is resliced
        sagittal = PlaneSlices(
            loader, entry, ViewportState(stack_key=entry.key, orientation=Orientation.SAGITTAL)
        )
        # the sagittal normal points to the patient's right (-x): plane 0 is the leftmost column
        np.testing.assert_array_equal(_requested(sagittal, 1), HU[::-1, :, COLS - 2])
        slab = PlaneSlices(
            loader, entry, ViewportState(stack_key=entry.key, orientation=Orientation.CORONAL,
                                         slab=Slab(SlabMode.MIP, 1.0))
        )
        np.testing.assert_array_equal(_requested(slab, 3), HU[::-1, 2:5, :].max(axis=1))
        for p in (planes, sagittal, slab):
            p.close()
        assert planes.cached(2) is None  # the cache went with it
        assert planes.request_slice(3, lambda _i: None) is None  # closed: nothing starts
    finally:
        loader.close()


def test_a_newer_request_supersedes_an_unstarted_one_and_every_callback_comes(entry: CatalogueEntry) -> None:
    loader = VolumeLoader(entry.stack)
    try:
        planes = PlaneSlices(
            loader, entry, ViewportState(stack_key=entry.key, orientation=Orientation.CORONAL)
        )
        events = {i: threading.Event() for i in range(ROWS)}
        for i in range(ROWS):
            assert planes.request_slice(i, lambda k: events[k].set()) is None
        assert all(e.wait(WAIT_S) for e in events.values())
        np.testing.assert_array_equal(planes.cached(ROWS - 1), HU[::-1, ROWS - 1, :])  # the newest is there
        planes.close()
    finally:
        loader.close()


def test_a_native_viewport_has_no_planes(entry: CatalogueEntry) -> None:
    loader = VolumeLoader(entry.stack)
    try:
        with pytest.raises(ViewerStateError, match="native viewport"):
            PlaneSlices(loader, entry, ViewportState(stack_key=entry.key))
    finally:
        loader.close()
