"""PACS clients against a real Orthanc: echo, wildcard queries, retrieve (C-GET, C-MOVE, WADO-RS) in
the stored encoding into the cache, streaming, the local loader on the result, and store (C-STORE,
STOW-RS)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from tests.factories import write_ct_series
from tests.pacs.conftest import Loaded, dimse_node, kept_sources, read_kept, web_node
from tests.pacs.orthanc import CLIENT_AET
from viewer.core.dicom.loader import load_paths
from viewer.core.pacs import (
    DicomWebClient,
    DimseClient,
    InstanceCache,
    LocalAe,
    PacsClient,
    RetrievedInstance,
    RetrieveMethod,
    StorageScp,
    StudyQuery,
)

KINDS = ("c-get", "c-move", "dicomweb")


@pytest.fixture(params=KINDS)
def client(request: pytest.FixtureRequest, orthanc: Loaded) -> Iterator[PacsClient]:
    server = orthanc.server
    if request.param == "dicomweb":
        with DicomWebClient(web_node(server)) as web:
            yield web
    elif request.param == "c-get":
        yield DimseClient(dimse_node(server))
    else:
        with StorageScp(LocalAe(CLIENT_AET, "127.0.0.1", server.scp_port)) as scp:
            yield DimseClient(dimse_node(server), storage=scp, method=RetrieveMethod.MOVE)


def test_echo(client: PacsClient) -> None:
    assert client.echo() > 0


@pytest.mark.parametrize(
    ("query", "found"),
    [
        (StudyQuery(patient_id="SYNTH*"), True),
        (StudyQuery(patient_name="SYN?H*"), True),
        (StudyQuery(patient_name="*0001"), True),
        (StudyQuery(patient_id="NOBODY*"), False),
        (StudyQuery(date_from=date(2026, 1, 1), date_to=date(2026, 1, 1), modality="CT"), True),
        (StudyQuery(date_from=date(2026, 1, 2)), False),
        (StudyQuery(study_description="CT HEAD*"), True),
        (StudyQuery(patient_name="SYNTH^0001"), True),
        (StudyQuery(patient_name="SYNTH^0002"), False),
    ],
)
def test_study_queries_with_wildcards(
    client: PacsClient, orthanc: Loaded, query: StudyQuery, found: bool
) -> None:
    uids = [m.study_uid for m in client.find_studies(query)]
    assert (orthanc.demo_study_uid in uids) is found
    if found:
        (match,) = [m for m in client.find_studies(query) if m.study_uid == orthanc.demo_study_uid]
        assert match.patient_id == "SYNTH-0001"
        assert match.num_instances == len(orthanc.demo_files)


@pytest.mark.parametrize("kind", ["dimse", "dicomweb"])
def test_a_study_query_hands_its_first_page_over_early_and_returns_every_match(
    orthanc: Loaded, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Pages of 2 (the page size is a constant; Orthanc holds more studies than that here). C-FIND: the
    first page once its matches and a next one have arrived; QIDO-RS: a second request for the first
    page, handed over only if it comes before the whole answer. Either way: at most once, before the
    query returns, and every study it holds is in the answer."""
    import viewer.core.pacs.dicomweb as dicomweb_module
    import viewer.core.pacs.dimse as dimse_module

    monkeypatch.setattr(dimse_module, "PACS_FIRST_PAGE", 2)
    monkeypatch.setattr(dicomweb_module, "PACS_FIRST_PAGE", 2)
    pages: list[list[str]] = []
    query = StudyQuery(patient_id="*")
    if kind == "dimse":
        client: PacsClient = DimseClient(dimse_node(orthanc.server))
    else:
        client = DicomWebClient(web_node(orthanc.server))
    with contextlib.closing(client):
        found = [m.study_uid for m in client.find_studies(query, on_first_page=lambda page: pages.append(
            [m.study_uid for m in page]
        ))]
        delivered = [list(page) for page in pages]
        plain = [m.study_uid for m in client.find_studies(query)]
    assert len(found) > 2 and sorted(found) == sorted(plain)
    assert len(delivered) <= 1 and pages == delivered  # nothing after the query returned
    if kind == "dimse":
        assert delivered == [found[:2]]
    for page in delivered:
        assert len(page) == 2 and set(page) <= set(found)


def test_a_study_query_in_small_pages_gives_the_unpaged_answer(
    orthanc: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QIDO-RS pages (limit / offset, two requests at once): pages of one study against Orthanc give the
    same studies in the same order as one request for everything, each once; with a limit, its first
    studies."""
    import viewer.core.pacs.dicomweb as dicomweb_module

    monkeypatch.setattr(dicomweb_module, "PACS_FIRST_PAGE", 1)
    monkeypatch.setattr(dicomweb_module, "PACS_QUERY_PAGE", 1)
    query = StudyQuery(patient_id="*")
    with DicomWebClient(web_node(orthanc.server)) as client:
        whole = [m.study_uid for m in client._studies(query, None)]
        paged = [m.study_uid for m in client.find_studies(query)]
        limited = [m.study_uid for m in client.find_studies(StudyQuery(patient_id="*", limit=3))]
    assert len(whole) >= 4  # several pages
    assert paged == whole
    assert limited == whole[:3]


def test_associations_we_request_ask_for_unlimited_pdus(orthanc: Loaded) -> None:
    """The AE's maximum PDU size (0: no limit) applies only to associations it accepts; requested ones
    took pynetdicom's 16 kB default, so a C-GET of 512 x 512 slices arrived in ~32 PDUs each."""
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    client = DimseClient(dimse_node(orthanc.server))
    ae = client._ae()
    ae.add_requested_context(Verification)
    with client._association(ae) as assoc:
        assert assoc.requestor.maximum_length == 0


def test_series_and_instance_queries(client: PacsClient, orthanc: Loaded) -> None:
    (series,) = client.find_series(orthanc.demo_study_uid)
    assert series.series_uid == orthanc.demo_series_uid
    assert series.modality == "CT" and series.num_instances == len(orthanc.demo_files)
    instances = client.find_instances(orthanc.demo_study_uid, orthanc.demo_series_uid)
    want = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in orthanc.demo_files}
    assert {m.sop_instance_uid for m in instances} == want


def test_retrieve_streams_stored_encoding_into_cache_for_the_loader(
    client: PacsClient, orthanc: Loaded, cache: InstanceCache
) -> None:
    originals = {str(dcmread(p).SOPInstanceUID): p for p in orthanc.demo_files}
    seen: list[RetrievedInstance] = []
    files_at_first: list[int] = []

    def arrived(item: RetrievedInstance) -> None:
        if not seen:
            files_at_first.append(len(kept_sources(item.path.parent)))
        seen.append(item)

    report = client.retrieve_series(
        orthanc.demo_study_uid, orthanc.demo_series_uid, cache, on_instance=arrived
    )
    assert report.complete and report.failed == [] and report.expected == len(originals)
    assert sorted(i.sop_instance_uid for i in seen) == sorted(originals)  # each instance exactly once
    assert files_at_first[0] < len(originals)  # the first callback came while the rest was on its way
    for item in report.received:
        original = dcmread(originals[item.sop_instance_uid])
        got = read_kept(item)
        assert got.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID  # RLE as stored
        assert got.PixelData == original.PixelData
    loaded = load_paths([report.folder])
    (stack,) = loaded.all_stacks()
    assert len(stack.slices) == len(originals) and not loaded.skipped


def test_retrieve_keeps_compressed_encodings(
    client: PacsClient, orthanc: Loaded, cache: InstanceCache
) -> None:
    for path in orthanc.vendor_files:
        original = dcmread(path)
        report = client.retrieve_series(
            str(original.StudyInstanceUID), str(original.SeriesInstanceUID), cache
        )
        (item,) = [i for i in report.instances if i.sop_instance_uid == original.SOPInstanceUID]
        got = read_kept(item)
        assert got.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID, path.name
        np.testing.assert_array_equal(got.pixel_array, original.pixel_array)


def test_second_retrieve_comes_from_the_cache(
    client: PacsClient, orthanc: Loaded, cache: InstanceCache
) -> None:
    first = client.retrieve_series(orthanc.demo_study_uid, orthanc.demo_series_uid, cache)
    again = client.retrieve_series(orthanc.demo_study_uid, orthanc.demo_series_uid, cache)
    assert len(first.received) == len(orthanc.demo_files)
    assert again.received == [] and len(again.cached) == len(orthanc.demo_files) and again.attempts == 0


def test_cache_is_private_and_names_hold_no_patient_data_or_uids(
    orthanc: Loaded, cache: InstanceCache
) -> None:
    client = DimseClient(dimse_node(orthanc.server))
    report = client.retrieve_series(orthanc.demo_study_uid, orthanc.demo_series_uid, cache)
    forbidden = ["SYNTH", "0001", orthanc.demo_study_uid, orthanc.demo_series_uid]
    forbidden += [i.sop_instance_uid for i in report.received]
    for dirpath, dirs, files in os.walk(cache.root):
        for name in [*dirs, *files]:
            assert not any(word in name for word in forbidden), name
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700
        for name in files:
            assert stat.S_IMODE(os.stat(Path(dirpath) / name).st_mode) == 0o600


def test_cancel_stops_the_retrieve(client: PacsClient, orthanc: Loaded, cache: InstanceCache) -> None:
    seen: list[RetrievedInstance] = []
    report = client.retrieve_series(
        orthanc.demo_study_uid,
        orthanc.demo_series_uid,
        cache,
        on_instance=seen.append,
        cancel=lambda: len(seen) >= 3,
    )
    assert report.cancelled and not report.complete
    assert 3 <= len(report.received) < len(orthanc.demo_files) and report.failed == []


@pytest.mark.parametrize("kind", ["c-store", "stow-rs"])
def test_store_new_series(orthanc: Loaded, tmp_path: Path, kind: str) -> None:
    paths = write_ct_series(tmp_path / "new", 4, rows=32, columns=32)
    junk = tmp_path / "not-dicom.dcm"
    junk.write_bytes(b"hello")
    store: PacsClient = (
        DimseClient(dimse_node(orthanc.server))
        if kind == "c-store"
        else DicomWebClient(web_node(orthanc.server))
    )
    outcomes = store.store([*paths, junk])
    assert [o.ok for o in outcomes] == [True] * 4 + [False]
    assert "not a readable DICOM file" in outcomes[-1].reason
    head = dcmread(paths[0], stop_before_pixels=True)
    found = store.find_instances(str(head.StudyInstanceUID), str(head.SeriesInstanceUID))
    assert {m.sop_instance_uid for m in found} == {o.sop_instance_uid for o in outcomes[:4]}
