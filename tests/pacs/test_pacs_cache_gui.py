"""A study on screen is pinned in the PACS cache: another retrieve that pushes the cache over its budget
evicts other studies, never the one the window shows (its slices are read lazily from those files); it
is released when the study is closed. Real Orthanc, real window (offscreen), real files."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.pacs.conftest import Loaded, controller, kept_sources, read_kept, web_node
from tests.pacs.test_pacs_gui import WAIT_MS, _select_series
from viewer.core.pacs import DicomWebClient, InstanceCache
from viewer.qt.main_window import MainWindow
from viewer.qt.pacs.nodes import NodeEntry, NodeProtocol


def test_the_study_on_screen_is_never_evicted_until_it_is_closed(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded, tmp_path: Path
) -> None:
    pacs = controller(window)
    cache = pacs._cache = InstanceCache(tmp_path / "cache", budget_bytes=1)  # every study is over it
    # an older study already in the cache, not in use
    paths = write_ct_series(tmp_path / "old", 3, rows=32, columns=32)
    head = dcmread(paths[0], stop_before_pixels=True)
    old = cache.series_folder("test-orthanc", str(head.StudyInstanceUID), str(head.SeriesInstanceUID))
    for p in paths:
        cache.put(old, p.read_bytes())

    _select_series(qtbot, window, orthanc, NodeProtocol.DICOMWEB)
    with qtbot.waitSignal(window.load_finished, timeout=WAIT_MS):
        pacs.panel.btn_retrieve.click()
    shown = cache.study_folder("test-orthanc", orthanc.demo_study_uid)
    n = len(orthanc.demo_files)
    assert len(kept_sources(shown)) == n  # kept although the cache is over its budget
    assert not old.parent.exists()  # the study not in use went first
    assert "studies in use are kept" in pacs.panel.status.text()

    # another retrieve (another client into the same cache) pushes it over its budget again
    vendor = dcmread(orthanc.vendor_files[0], stop_before_pixels=True)
    client = DicomWebClient(web_node(orthanc.server))
    try:
        report = client.retrieve_series(str(vendor.StudyInstanceUID), str(vendor.SeriesInstanceUID), cache)
    finally:
        client.close()
    assert report.instances and not report.folder.exists()  # not in use: evicted at once
    eviction = cache.last_eviction
    assert eviction is not None and eviction.pinned_kept == 1 and eviction.over_budget_bytes > 0
    kept = kept_sources(shown)
    assert len(kept) == n and all(read_kept(s).PixelData for s in kept)
    stack = window.current_stack()
    assert stack is not None and len(stack.slices) == n
    window.set_slice(n - 1)
    assert window.current_slice() == n - 1
    volume = window.current_volume()
    assert volume.get_slice(n - 1).shape == (stack.slices[-1].rows, stack.slices[-1].columns)  # from the file

    window.close_study()  # closed: released, and evicted by the next check
    assert not pacs.studies_in_use()
    assert cache.evict().removed == (shown,)
    assert not kept_sources(cache.root) and not list(cache.root.rglob("*.pack"))


def test_the_review_sessions_current_study_stays_pinned_after_its_stacks_close(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded, tmp_path: Path
) -> None:
    from viewer.qt.review import ReviewController

    pacs = controller(window)
    cache = pacs._cache = InstanceCache(tmp_path / "cache")
    pacs.save_node(NodeEntry(web_node(orthanc.server), NodeProtocol.DICOMWEB), "")
    with qtbot.waitSignal(window.load_finished, timeout=WAIT_MS):
        assert pacs.retrieve("test-orthanc", orthanc.demo_study_uid, []) is not None
    review = window.review_controller
    assert isinstance(review, ReviewController)
    assert review.new_session("PACS reading") is not None
    assert review.current_study_uid == orthanc.demo_study_uid
    shown = cache.study_folder("test-orthanc", orthanc.demo_study_uid)
    window.close_study()  # no stack of it open any more, but it is the study under review
    assert pacs.studies_in_use() == {shown}
    cache.budget_bytes = 1
    assert cache.evict().removed == () and len(kept_sources(shown)) == len(orthanc.demo_files)
    review.close_session()
    assert not pacs.studies_in_use()
    assert cache.evict().removed == (shown,)
