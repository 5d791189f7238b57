"""A hostile DICOMweb server on loopback (a real socket, no Orthanc): oversized, endless, malformed and
silent answers end in typed errors within the limits, never a hang or unbounded memory. Also the
wildcard rewrite Orthanc needs."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.factories import write_ct_series
from tests.pacs.netfaults import REQUEST, HostileHttpServer
from viewer.core.errors import PacsAuthenticationError, PacsResponseError, PacsResponseTooLargeError
from viewer.core.pacs import DicomWebClient, InstanceCache, PacsNode, StudyQuery
from viewer.core.pacs.http_guard import unquote_wildcards

MB = 1024**2


def _head(status: str, content_type: str, extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nConnection: close\r\n{extra}\r\n".encode()


def endless_json(conn: socket.socket) -> None:
    conn.sendall(_head("200 OK", "application/dicom+json") + b"[")
    item = b'{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}},' * 1000
    while True:
        conn.sendall(item)


def garbage_json(conn: socket.socket) -> None:
    conn.sendall(_head("200 OK", "application/dicom+json", "Content-Length: 11\r\n") + b"[{not json!")


def wrong_shape_json(conn: socket.socket) -> None:
    body = b"42"
    conn.sendall(_head("200 OK", "application/dicom+json", f"Content-Length: {len(body)}\r\n") + body)


def not_http(conn: socket.socket) -> None:
    conn.sendall(b"\x00\x01\x02 this is not HTTP at all \xff\xfe\r\n\r\n")


def silent(conn: socket.socket) -> None:
    time.sleep(10)


def unauthorised(conn: socket.socket) -> None:
    conn.sendall(_head("401 Unauthorized", "text/plain", "Content-Length: 0\r\n"))


def endless_part(conn: socket.socket) -> None:
    """A multipart answer whose first part never ends."""
    conn.sendall(_head("200 OK", 'multipart/related; type="application/dicom"; boundary=BOUNDARY'))
    conn.sendall(b"--BOUNDARY\r\nContent-Type: application/dicom\r\n\r\n")
    chunk = b"\0" * 65536
    while True:
        conn.sendall(chunk)


def broken_parts(conn: socket.socket) -> None:
    """Well-framed multipart whose parts are not DICOM."""
    body = b"--B\r\nContent-Type: application/dicom\r\n\r\nnot dicom\r\n--B\r\n\r\nalso not\r\n--B--"
    conn.sendall(
        _head(
            "200 OK",
            'multipart/related; type="application/dicom"; boundary=B',
            f"Content-Length: {len(body)}\r\n",
        )
        + body
    )


def instances_then(respond_retrieve: Callable[[socket.socket], None]) -> Callable[[socket.socket], None]:
    """The instance query (QIDO-RS) lists one instance, any other request gets ``respond_retrieve`` (the
    client asks both at once, on two connections)."""

    def respond(conn: socket.socket) -> None:
        if b"/instances" in REQUEST.head.split(b"\r\n", 1)[0]:
            body = b'[{"00080018": {"vr": "UI", "Value": ["1.2.3.4"]}}]'
            conn.sendall(_head("200 OK", "application/dicom+json", f"Content-Length: {len(body)}\r\n") + body)
        else:
            respond_retrieve(conn)

    return respond


def _client(server: HostileHttpServer, **changes: float) -> DicomWebClient:
    node = PacsNode(
        "hostile", dicomweb_url=server.url, connect_timeout_s=2.0, read_timeout_s=changes.get("read", 5.0)
    )
    return DicomWebClient(node, max_response_bytes=4 * MB, max_instance_bytes=8 * MB)


def _studies_answer(uids: list[str]) -> Callable[[socket.socket], None]:
    return lambda conn: _send_json(conn, uids)


def _send_json(conn: socket.socket, uids: list[str]) -> None:
    items = ",".join(f'{{"0020000D": {{"vr": "UI", "Value": ["{uid}"]}}}}' for uid in uids)
    body = f"[{items}]".encode()
    conn.sendall(_head("200 OK", "application/dicom+json", f"Content-Length: {len(body)}\r\n") + body)


def _paging_asked() -> tuple[int | None, int]:
    """The limit and offset of the request being answered."""
    args = parse_qs(urlsplit(REQUEST.head.split(b" ", 2)[1].decode()).query)
    limit = int(args["limit"][0]) if "limit" in args else None
    return limit, int(args.get("offset", ["0"])[0])


STUDIES = [f"1.2.826.0.1.{k}" for k in range(1, 12)]


def pages_as_asked(conn: socket.socket) -> None:
    limit, offset = _paging_asked()
    _send_json(conn, STUDIES[offset:][:limit])


def limit_only(conn: socket.socket) -> None:
    """Honours limit, ignores offset: every page starts at the first study."""
    limit, _ = _paging_asked()
    _send_json(conn, STUDIES[:limit])


def endless_pages(conn: socket.socket) -> None:
    """Every page full of studies never seen before."""
    limit, offset = _paging_asked()
    _send_json(conn, [f"1.2.826.0.2.{offset + k}" for k in range(limit or 1)])


@pytest.mark.parametrize(
    "respond",
    [pages_as_asked, _studies_answer(STUDIES), limit_only],
    ids=["pages", "ignores-limit-and-offset", "ignores-offset"],
)
def test_a_study_query_gets_every_study_once_in_order_whether_or_not_the_server_pages(
    respond: Callable[[socket.socket], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    import viewer.core.pacs.dicomweb as dicomweb_module

    monkeypatch.setattr(dicomweb_module, "PACS_FIRST_PAGE", 2)
    monkeypatch.setattr(dicomweb_module, "PACS_QUERY_PAGE", 3)
    with HostileHttpServer(respond) as server, _client(server) as client:
        assert [m.study_uid for m in client.find_studies(StudyQuery(patient_id="X*"))] == STUDIES
        limited = client.find_studies(StudyQuery(patient_id="X*", limit=4))
        assert [m.study_uid for m in limited] == STUDIES[:4]


def test_study_query_pages_grow_from_the_first_up_to_the_largest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 2, then 3, 6, 12 ... capped at 4 (each page costs a server such as Orthanc a lookup of
    every match): 11 studies in four requests, plus at most one asked beyond the end."""
    import viewer.core.pacs.dicomweb as dicomweb_module

    monkeypatch.setattr(dicomweb_module, "PACS_FIRST_PAGE", 2)
    monkeypatch.setattr(dicomweb_module, "PACS_QUERY_PAGE", 3)
    monkeypatch.setattr(dicomweb_module, "PACS_QUERY_PAGE_MAX", 4)
    asked: list[tuple[int | None, int]] = []

    def recording(conn: socket.socket) -> None:
        asked.append(_paging_asked())
        pages_as_asked(conn)

    with HostileHttpServer(recording) as server, _client(server) as client:
        assert [m.study_uid for m in client.find_studies(StudyQuery(patient_id="X*"))] == STUDIES
    assert sorted(asked, key=lambda a: a[1])[:4] == [(2, 0), (3, 2), (4, 5), (4, 9)]
    assert len(asked) <= 5


def test_a_paged_study_query_stops_at_the_match_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    import viewer.core.pacs.dicomweb as dicomweb_module

    monkeypatch.setattr(dicomweb_module, "PACS_MAX_STUDY_MATCHES", 40)
    with (
        HostileHttpServer(endless_pages) as server,
        _client(server) as client,
        pytest.raises(PacsResponseTooLargeError, match="More than 40 studies match"),
    ):
        client.find_studies(StudyQuery(patient_id="X*"))


def test_endless_json_answer_is_cut_at_the_limit() -> None:
    with (
        HostileHttpServer(endless_json) as server,
        pytest.raises(PacsResponseTooLargeError, match="4 MB limit"),
    ):
        _client(server).find_studies(StudyQuery(patient_id="X*"))


@pytest.mark.parametrize("respond", [garbage_json, wrong_shape_json, not_http])
def test_malformed_answers_are_typed_errors(respond: Callable[[socket.socket], None]) -> None:
    with (
        HostileHttpServer(respond) as server,
        pytest.raises(PacsResponseError, match=rf"127\.0\.0\.1:{server.port}"),
    ):
        _client(server).find_studies(StudyQuery())


def test_silent_server_times_out() -> None:
    with HostileHttpServer(silent) as server, pytest.raises(PacsResponseError, match="stopped answering"):
        _client(server, read=1.0).echo()


def test_401_is_an_authentication_error() -> None:
    with HostileHttpServer(unauthorised) as server, pytest.raises(PacsAuthenticationError, match="HTTP 401"):
        _client(server).echo()


def test_endless_multipart_part_is_cut_at_the_instance_limit(tmp_path: Path) -> None:
    with (
        HostileHttpServer(instances_then(endless_part)) as server,
        pytest.raises(PacsResponseTooLargeError, match=r"One part .* 8 MB limit"),
    ):
        _client(server).retrieve_series("1.2.3", "1.2.3.1", InstanceCache(tmp_path / "c"))


def test_parts_that_are_not_dicom_are_a_typed_error_and_nothing_is_kept(tmp_path: Path) -> None:
    cache = InstanceCache(tmp_path / "c")
    with (
        HostileHttpServer(instances_then(broken_parts)) as server,
        pytest.raises(PacsResponseError, match=r"malformed answer to a series retrieve"),
    ):
        _client(server).retrieve_series("1.2.3", "1.2.3.1", cache, attempts=1)
    bookkeeping = {".last-used", ".index.json", ".index.lock", ".pinned"}  # no instance data in them
    assert [p for p in cache.root.rglob("*") if p.is_file() and p.name not in bookkeeping] == []


def test_an_instance_of_another_series_is_refused(tmp_path: Path) -> None:
    path = write_ct_series(tmp_path / "s", 1, rows=8, columns=8)[0]
    data = path.read_bytes()

    def one_instance(conn: socket.socket) -> None:
        body = b"--B\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--B--"
        ct = 'multipart/related; type="application/dicom"; boundary=B'
        conn.sendall(_head("200 OK", ct, f"Content-Length: {len(body)}\r\n") + body)

    with HostileHttpServer(instances_then(one_instance)) as server:
        report = _client(server).retrieve_series(
            "1.2.3", "1.2.3.1", InstanceCache(tmp_path / "c"), attempts=1
        )
    assert report.received == [] and "another series" in report.failed[0].reason


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("http://h/dw/studies?PatientName=DOE%2A", "http://h/dw/studies?PatientName=DOE*"),
        ("http://h/dw/studies?PatientID=7%3F", "http://h/dw/studies?PatientID=7?"),
        ("http://h/dw/studies?PatientName=DOE%5EJOHN", "http://h/dw/studies?PatientName=DOE?JOHN"),
        ("http://h/dw/studies?StudyDescription=CT+HEAD", "http://h/dw/studies?StudyDescription=CT?HEAD"),
        ("http://h/dw/studies?AccessionNumber=A%2B1", "http://h/dw/studies?AccessionNumber=A%2B1"),
        ("http://h/dw%2A/studies", "http://h/dw%2A/studies"),
    ],
)
def test_wildcards_reach_orthanc_unencoded(url: str, sent: str) -> None:
    assert unquote_wildcards(url) == sent
