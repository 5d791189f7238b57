"""PACS faults, each against the real Orthanc or a real socket: server down or unreachable, association
rejected (called / calling AE), wrong credentials, damaged and missing instances, a connection cut
mid-series, and a hostile HTTP server. Errors are typed, name host:port and never a patient value."""

from __future__ import annotations

import contextlib
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.factories import CANARY_ID, CANARY_NAME, write_ct_series
from tests.pacs.conftest import Loaded, dimse_node, kept_sources, web_node
from tests.pacs.netfaults import CuttingRelay, HoldingRelay
from tests.pacs.orthanc import CLIENT_AET, free_port
from viewer.core.errors import (
    PacsAssociationRejectedError,
    PacsAuthenticationError,
    PacsError,
    PacsResponseError,
    PacsUnreachableError,
)
from viewer.core.pacs import (
    AuthKind,
    DicomWebClient,
    DimseClient,
    InstanceCache,
    LocalAe,
    PacsClient,
    PacsNode,
    RetrievedInstance,
    RetrieveMethod,
    StorageScp,
    StudyQuery,
)


def _no_identifiers(message: str, orthanc: Loaded | None = None) -> None:
    for word in (CANARY_NAME, CANARY_ID, "SYNTH", "CANARY"):
        assert word not in message
    if orthanc is not None:
        assert orthanc.demo_study_uid not in message


# --- server down / unreachable -------------------------------------------------------------------
def test_nothing_listening_dimse() -> None:
    port = free_port()
    node = PacsNode("down", host="127.0.0.1", port=port, called_ae="ORTHANC")
    with pytest.raises(PacsUnreachableError, match=rf"127\.0\.0\.1:{port}: connection refused"):
        DimseClient(node).echo()


def test_nothing_listening_dicomweb() -> None:
    port = free_port()
    node = PacsNode("down", dicomweb_url=f"http://127.0.0.1:{port}/dicom-web")
    with pytest.raises(PacsUnreachableError, match=rf"127\.0\.0\.1:{port}: connection refused"):
        DicomWebClient(node).find_studies(StudyQuery(patient_id="X*"))


def test_unknown_host() -> None:
    node = PacsNode(
        "typo", host="pacs.invalid", port=104, called_ae="PACS", dicomweb_url="http://pacs.invalid/dw"
    )
    with pytest.raises(PacsUnreachableError, match=r"pacs\.invalid:104"):
        DimseClient(node).echo()
    with pytest.raises(PacsUnreachableError, match=r"pacs\.invalid:80"):
        DicomWebClient(node).echo()


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port whose backlog is full: connects hang (SYN not answered) like a firewalled host."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(4):  # fill the accept queue; later SYNs are dropped
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    yield port
    for s in fillers:
        s.close()
    listener.close()


def test_connect_timeout_names_the_address(silent_listener: int) -> None:
    port = silent_listener
    web = PacsNode(
        "slow", dicomweb_url=f"http://127.0.0.1:{port}/dw", connect_timeout_s=1.0, read_timeout_s=1.0
    )
    with pytest.raises(PacsError, match=rf"127\.0\.0\.1:{port}") as info:
        DicomWebClient(web).echo()
    assert isinstance(info.value, PacsUnreachableError | PacsResponseError)
    dimse = PacsNode(
        "slow", host="127.0.0.1", port=port, called_ae="X", connect_timeout_s=1.0, read_timeout_s=1.0
    )
    with pytest.raises(PacsError, match=rf"127\.0\.0\.1:{port}"):
        DimseClient(dimse).echo()


# --- association rejected -----------------------------------------------------------------------
def test_wrong_called_ae_is_named(orthanc: Loaded) -> None:
    client = DimseClient(dimse_node(orthanc.server, called_ae="NOT-ORTHANC"))
    with pytest.raises(PacsAssociationRejectedError, match=r"its AE title is not 'NOT-ORTHANC'"):
        client.echo()


def test_unknown_calling_ae_is_named(orthanc: Loaded) -> None:
    client = DimseClient(dimse_node(orthanc.server, calling_ae="STRANGER"))
    with pytest.raises(PacsAssociationRejectedError, match=r"calling AE title 'STRANGER'") as info:
        client.find_studies(StudyQuery(patient_id="SYNTH*"))
    assert f"127.0.0.1:{orthanc.server.dicom_port}" in str(info.value)
    _no_identifiers(str(info.value), orthanc)


# --- authentication -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        {"secret": "wrong"},
        {"auth": AuthKind.NONE, "username": "", "secret": ""},
        {"auth": AuthKind.BEARER, "secret": "t"},
    ],
)
def test_dicomweb_authentication_failure(orthanc: Loaded, changes: dict[str, object]) -> None:
    client = DicomWebClient(web_node(orthanc.server, **changes))
    with pytest.raises(
        PacsAuthenticationError, match=rf"127\.0\.0\.1:{orthanc.server.http_port}.*HTTP 401"
    ) as info:
        client.find_studies(StudyQuery(patient_id="SYNTH*"))
    assert "wrong" not in str(info.value)  # the secret is never repeated


def test_secret_is_not_in_repr(orthanc: Loaded) -> None:
    assert "test-only-password" not in repr(web_node(orthanc.server))


# --- damaged / missing instances on the server ----------------------------------------------------
@pytest.fixture
def upload_series(orthanc: Loaded, tmp_path: Path) -> Iterator[Callable[[int], tuple[str, str, list[str]]]]:
    """Upload a 6-slice series to damage; its study is deleted after the test (queries stay clean)."""
    studies: list[str] = []

    def upload(seed: int) -> tuple[str, str, list[str]]:
        paths = write_ct_series(tmp_path / f"series-{seed}", 6, rows=64, columns=64, seed=seed)
        orthanc.server.upload(paths)
        heads = [dcmread(p, stop_before_pixels=True) for p in paths]
        studies.append(str(heads[0].StudyInstanceUID))
        return studies[-1], str(heads[0].SeriesInstanceUID), [str(h.SOPInstanceUID) for h in heads]

    yield upload
    for study in studies:
        orthanc.server.delete_study(study)


def _damage_pixels(stored: Path) -> None:
    """Keep a well-formed file (Orthanc still serves it) whose pixel data lost its second half."""
    ds = dcmread(stored)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(stored)


@pytest.mark.parametrize("kind", ["c-get", "c-move", "dicomweb"])
def test_damaged_instance_is_listed_the_rest_arrive(
    orthanc: Loaded,
    upload_series: Callable[[int], tuple[str, str, list[str]]],
    cache: InstanceCache,
    kind: str,
) -> None:
    study, series, sops = upload_series(len(kind))
    _damage_pixels(orthanc.server.stored_file(sops[2]))
    with contextlib.ExitStack() as stack:
        client = _client(kind, orthanc, stack)
        report = client.retrieve_series(study, series, cache)
    assert sorted(i.sop_instance_uid for i in report.received) == sorted(set(sops) - {sops[2]})
    (failure,) = report.failed
    assert failure.sop_instance_uid == sops[2] and "Pixel data truncated" in failure.reason
    _no_identifiers(failure.reason)
    assert not report.complete
    assert len(kept_sources(report.folder)) == 5  # nothing damaged was kept


def test_missing_instance_is_listed_the_rest_arrive(
    orthanc: Loaded, upload_series: Callable[[int], tuple[str, str, list[str]]], cache: InstanceCache
) -> None:
    study, series, sops = upload_series(99)
    orthanc.server.stored_file(sops[4]).unlink()  # the archive lost the file
    report = DimseClient(dimse_node(orthanc.server)).retrieve_series(study, series, cache)
    assert sorted(i.sop_instance_uid for i in report.received) == sorted(set(sops) - {sops[4]})
    (failure,) = report.failed
    assert failure.sop_instance_uid == sops[4]
    _no_identifiers(failure.reason)


def test_missing_instance_over_dicomweb_is_a_typed_error(
    orthanc: Loaded, upload_series: Callable[[int], tuple[str, str, list[str]]], cache: InstanceCache
) -> None:
    """Orthanc's QIDO-RS answers HTTP 500 for a whole series when one file is gone (it reads each file for
    the instance attributes): a typed error naming the server, no partial guess."""
    study, series, sops = upload_series(98)
    orthanc.server.stored_file(sops[0]).unlink()
    with pytest.raises(PacsResponseError, match=rf"127\.0\.0\.1:{orthanc.server.http_port}.*HTTP 500"):
        DicomWebClient(web_node(orthanc.server)).retrieve_series(study, series, cache)


def _client(kind: str, orthanc: Loaded, stack: contextlib.ExitStack, **changes: object) -> PacsClient:
    server = orthanc.server
    if kind == "dicomweb":
        return DicomWebClient(web_node(server, **changes))
    if kind == "c-move":
        scp = stack.enter_context(StorageScp(LocalAe(CLIENT_AET, "127.0.0.1", server.scp_port)))
        return DimseClient(dimse_node(server, **changes), storage=scp, method=RetrieveMethod.MOVE)
    return DimseClient(dimse_node(server, **changes))


# --- connection cut mid-series --------------------------------------------------------------------
@pytest.mark.parametrize("cut_after", [60_000, 2_000_000], ids=["before-the-first-instance", "mid-series"])
@pytest.mark.parametrize("kind", ["c-get", "dicomweb"])
def test_connection_cut_mid_series_resumes_without_duplicates(
    orthanc: Loaded, cache: InstanceCache, kind: str, cut_after: int
) -> None:
    server = orthanc.server
    target = server.dicom_port if kind == "c-get" else server.http_port
    with CuttingRelay(target, cut_after=cut_after, cuts=1) as relay:
        if kind == "c-get":
            client: PacsClient = DimseClient(dimse_node(server, port=relay.port))
        else:
            client = DicomWebClient(web_node(server, dicomweb_url=f"http://127.0.0.1:{relay.port}/dicom-web"))
        calls: list[RetrievedInstance] = []
        report = client.retrieve_series(
            orthanc.demo_study_uid, orthanc.demo_series_uid, cache, on_instance=calls.append
        )
    assert relay.cuts_done == 1
    assert report.attempts - 1 > 0  # it had to resume
    assert report.complete and report.failed == []
    counts = Counter(i.sop_instance_uid for i in calls)
    assert len(counts) == len(orthanc.demo_files) and set(counts.values()) == {1}


@pytest.mark.parametrize("kind", ["c-get", "dicomweb"])
def test_interrupted_retrieve_lists_what_is_missing_and_a_later_one_fetches_only_that(
    orthanc: Loaded, cache: InstanceCache, kind: str
) -> None:
    server = orthanc.server
    target = server.dicom_port if kind == "c-get" else server.http_port
    with CuttingRelay(target, cut_after=2_000_000, cuts=1000) as relay:
        if kind == "c-get":
            client: PacsClient = DimseClient(dimse_node(server, port=relay.port))
        else:
            client = DicomWebClient(web_node(server, dicomweb_url=f"http://127.0.0.1:{relay.port}/dicom-web"))
        first = client.retrieve_series(orthanc.demo_study_uid, orthanc.demo_series_uid, cache, attempts=1)
    assert 0 < len(first.received) < len(orthanc.demo_files)
    assert {f.sop_instance_uid for f in first.failed} and all(
        "not received" in f.reason for f in first.failed
    )
    second = _client(kind, orthanc, contextlib.ExitStack()).retrieve_series(
        orthanc.demo_study_uid, orthanc.demo_series_uid, cache
    )
    assert second.complete
    assert {i.sop_instance_uid for i in second.received} == {f.sop_instance_uid for f in first.failed}
    assert len(second.cached) == len(first.received)


def test_the_series_count_is_asked_while_the_series_stream_is_read(
    orthanc: Loaded, cache: InstanceCache
) -> None:
    """A WADO-RS series retrieve asks the series' instance count (QIDO-RS, which ends the retrieve when it
    equals what arrived) beside the stream, not after it: the relay holds the stream mid-series until the
    count's request has passed through it (before, the hold ran out: the count was asked only after the
    last part). The retrieve is whole, and the instance list was not needed."""
    server = orthanc.server
    with HoldingRelay(server.http_port, hold_after=2_000_000, release_on=b"/series?") as relay:
        client = DicomWebClient(web_node(server, dicomweb_url=f"http://127.0.0.1:{relay.port}/dicom-web"))
        report = client.retrieve_series(orthanc.demo_study_uid, orthanc.demo_series_uid, cache)
    assert relay.held.is_set()  # the stream was held mid-series
    assert relay.released_by_request is True
    assert report.complete and report.attempts == 1 and report.failed == []
    assert len(report.received) == len(orthanc.demo_files)
