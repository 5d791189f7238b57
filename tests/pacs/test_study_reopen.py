"""Studies got again from the PACS they were retrieved from (issue 13 item 1), against the real Orthanc:
the PACS study locator re-retrieves what the bounded cache evicted, falls back to the cached copy when
the PACS is down, and a review session reopens a retrieved study through it after the cache was
cleared (real window, real review store, real retrieve)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from tests.pacs.conftest import Loaded, controller, dimse_node, kept_sources, no_system_keyring, web_node
from tests.pacs.orthanc import free_port
from viewer.core.dicom.loader import load_paths
from viewer.core.errors import PacsUnreachableError, StudySourceError
from viewer.core.location import SourceKind, SourceRef
from viewer.core.pacs import DicomWebClient, DimseClient, InstanceCache, PacsClient
from viewer.core.pacs.locator import PacsStudyLocator, pacs_source_of_cache_paths
from viewer.qt.main_window import MainWindow
from viewer.qt.pacs.nodes import NodeEntry, NodeProtocol

WAIT_MS = 30_000
KINDS = (SourceKind.DICOMWEB, SourceKind.DIMSE)


def _connect(orthanc: Loaded, **changes: object) -> Callable[[SourceRef], PacsClient]:
    def connect(source: SourceRef) -> PacsClient:
        if source.kind is SourceKind.DICOMWEB:
            return DicomWebClient(web_node(orthanc.server, name=source.node, **changes))
        return DimseClient(dimse_node(orthanc.server, name=source.node, **changes))

    return connect


def _evict_all(cache: InstanceCache) -> None:
    """What the cache does when other studies push it over its budget: every study removed."""
    budget, cache.budget_bytes = cache.budget_bytes, 0
    try:
        cache.evict()
    finally:
        cache.budget_bytes = budget
    assert not kept_sources(cache.root)


@pytest.mark.parametrize("kind", KINDS)
def test_pacs_source_is_retrieved_again_after_eviction(
    orthanc: Loaded, cache: InstanceCache, kind: SourceKind
) -> None:
    n = len(orthanc.demo_files)
    locator = PacsStudyLocator(_connect(orthanc), cache)
    source = SourceRef.pacs("test-orthanc", kind)
    progress: list[tuple[int, int]] = []
    first = locator.locate(orthanc.demo_study_uid, source, progress=lambda d, t: progress.append((d, t)))
    assert first.complete and first.retrieved == n and first.cached == 0 and first.source == source
    assert progress[-1] == (n, n)
    (stack,) = load_paths(list(first.paths)).all_stacks()
    assert stack.study_instance_uid == orthanc.demo_study_uid and len(stack) == n
    # still cached: nothing is asked for again
    again = locator.locate(orthanc.demo_study_uid, source)
    assert again.complete and (again.retrieved, again.cached) == (0, n) and again.paths == first.paths
    # evicted: retrieved again by UID, the same files in the same places
    _evict_all(cache)
    after = locator.locate(orthanc.demo_study_uid, source)
    assert after.complete and (after.retrieved, after.cached) == (n, 0) and after.paths == first.paths
    (stack,) = load_paths(list(after.paths)).all_stacks()
    assert len(stack) == n


def test_recorded_series_only_and_what_the_pacs_no_longer_holds(
    orthanc: Loaded, cache: InstanceCache
) -> None:
    locator = PacsStudyLocator(_connect(orthanc), cache)
    gone = "1.2.826.0.1.3680043.8.498.999999"
    source = SourceRef.pacs("test-orthanc", SourceKind.DICOMWEB, [orthanc.demo_series_uid, gone])
    located = locator.locate(orthanc.demo_study_uid, source)
    assert located.retrieved == len(orthanc.demo_files) and len(located.paths) == 1
    assert located.problems == (f"Series {gone} is no longer on PACS “test-orthanc”",)
    with pytest.raises(StudySourceError, match="no longer holds this study"):
        locator.locate(gone, SourceRef.pacs("test-orthanc", SourceKind.DIMSE))


def test_pacs_down_opens_the_cached_copy_else_says_so(orthanc: Loaded, cache: InstanceCache) -> None:
    source = SourceRef.pacs("test-orthanc", SourceKind.DIMSE)
    PacsStudyLocator(_connect(orthanc), cache).locate(orthanc.demo_study_uid, source)
    down = PacsStudyLocator(_connect(orthanc, port=free_port()), cache)
    located = down.locate(orthanc.demo_study_uid, source)
    assert len(located.paths) == 1 and not located.complete
    assert "may be incomplete" in located.problems[0] and "127.0.0.1" in located.problems[0]
    assert len(load_paths(list(located.paths)).all_stacks()[0]) == len(orthanc.demo_files)
    _evict_all(cache)
    with pytest.raises(PacsUnreachableError):
        down.locate(orthanc.demo_study_uid, source)


def test_cache_folders_recorded_as_paths_become_the_pacs_source(
    orthanc: Loaded, cache: InstanceCache
) -> None:
    """Review databases written before sources were kept a retrieved study as its cache folders."""
    with DicomWebClient(web_node(orthanc.server)) as client:
        report = client.retrieve_series(orthanc.demo_study_uid, orthanc.demo_series_uid, cache)
    legacy = SourceRef.local([report.folder])
    nodes = {"other": SourceKind.DIMSE, "test-orthanc": SourceKind.DICOMWEB}
    upgraded = pacs_source_of_cache_paths(legacy, orthanc.demo_study_uid, cache, nodes)
    assert upgraded == SourceRef.pacs("test-orthanc", SourceKind.DICOMWEB)
    assert pacs_source_of_cache_paths(legacy, "1.2.3", cache, nodes) is None  # another study's
    assert (
        pacs_source_of_cache_paths(SourceRef.local(["/data/a"]), orthanc.demo_study_uid, cache, nodes) is None
    )
    _evict_all(cache)
    located = PacsStudyLocator(_connect(orthanc), cache).locate(orthanc.demo_study_uid, upgraded)
    assert located.retrieved == len(orthanc.demo_files)


def _second_window(qtbot: QtBot) -> MainWindow:
    from viewer.qt.app import build_main_window

    with no_system_keyring():
        win = build_main_window(offer_resume=False)
    qtbot.addWidget(win)
    win.show()
    return win


def test_review_session_reopens_a_pacs_study_after_the_cache_was_cleared(
    qtbot: QtBot, window: MainWindow, orthanc: Loaded
) -> None:
    from viewer.qt.review import ReviewController

    pacs = controller(window)
    pacs.save_node(NodeEntry(web_node(orthanc.server), NodeProtocol.DICOMWEB), "")
    with qtbot.waitSignal(window.load_finished, timeout=WAIT_MS):
        assert pacs.retrieve("test-orthanc", orthanc.demo_study_uid, []) is not None
    qtbot.waitUntil(lambda: window.current_stack() is not None, timeout=WAIT_MS)
    stack = window.current_stack()
    assert stack is not None and stack.study_instance_uid == orthanc.demo_study_uid
    assert window.stack_source(stack.uid) == SourceRef.pacs("test-orthanc", SourceKind.DICOMWEB)
    assert window.source_paths(stack.uid) == []  # the cache folders are not where the study "is"
    review = window.review_controller  # type: ignore[attr-defined]
    assert isinstance(review, ReviewController)
    session = review.new_session("PACS reading")
    assert session is not None
    assert session.study(orthanc.demo_study_uid).source == SourceRef.pacs("test-orthanc", SourceKind.DICOMWEB)
    window.set_slice(7)
    review.save_position()
    pos = session.last_position()
    assert pos is not None and pos.slice_index == 7 and pos.slice_key == stack.slice_key(7)
    # as if the study had been sorted otherwise when this was saved: the UIDs, not the index, decide
    session.set_last_position(stack.study_instance_uid, stack.uid, 0, stack.slice_key(7))
    window.close()  # releases the session
    _evict_all(pacs.cache)

    win2 = _second_window(qtbot)
    try:
        review2 = win2.review_controller  # type: ignore[attr-defined]
        with qtbot.waitSignal(win2.load_finished, timeout=WAIT_MS):
            assert review2.resume(session.id)
        qtbot.waitUntil(lambda: win2.current_stack() is not None, timeout=WAIT_MS)
        shown = win2.current_stack()
        assert shown is not None and shown.study_instance_uid == orthanc.demo_study_uid
        assert len(shown) == len(orthanc.demo_files) and win2.current_slice() == 7  # same slice, by UIDs
        assert len(kept_sources(controller(win2).cache.root)) == len(orthanc.demo_files)
        assert win2.stack_source(shown.uid) == SourceRef.pacs("test-orthanc", SourceKind.DICOMWEB)
    finally:
        controller(win2).shutdown()
        win2.close()


def test_review_says_why_a_study_cannot_be_had_again(
    qtbot: QtBot, window: MainWindow, tmp_path: Path
) -> None:
    review = window.review_controller  # type: ignore[attr-defined]
    session = review.new_session("Gone")
    assert session is not None
    session.add_study("1.2.3", source=SourceRef.pacs("removed-node", SourceKind.DIMSE))
    session.add_study("1.2.4", [tmp_path / "moved"])
    for uid, why in (("1.2.3", "“removed-node” is no longer configured"), ("1.2.4", "no longer exist")):
        job = review.reopen_study(session.study(uid))
        assert job is not None
        qtbot.waitUntil(lambda: review._locate_job is None, timeout=WAIT_MS)
        assert why in review.panel.banner.text(), review.panel.banner.text()
    assert not window.is_loading()
