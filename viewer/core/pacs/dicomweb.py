"""DICOMweb client (QIDO-RS, WADO-RS, STOW-RS) on top of ``dicomweb-client``.

Every call goes through :func:`_translated`, which turns ``requests``/``dicomweb-client`` failures into
the :class:`PacsError` family with the server's ``host:port`` in the message (never a URL with UIDs in
it, never a query value). The HTTP session is :func:`guarded_session` (wildcards, timeouts, limits).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from viewer.core.constants import (
    PACS_FIRST_PAGE,
    PACS_MAX_INSTANCE_BYTES,
    PACS_MAX_RESPONSE_BYTES,
    PACS_MAX_STUDY_MATCHES,
    PACS_QUERY_PAGE,
    PACS_QUERY_PAGE_MAX,
    PACS_QUERY_PAGES_IN_FLIGHT,
    PACS_RETRIEVE_ATTEMPTS,
)
from viewer.core.errors import (
    PacsAuthenticationError,
    PacsCancelled,
    PacsConnectionLostError,
    PacsError,
    PacsResponseError,
    PacsUnreachableError,
)
from viewer.core.pacs.cache import InstanceCache
from viewer.core.pacs.http_guard import Limits, guarded_session, multipart_boundary
from viewer.core.pacs.models import (
    CancelFn,
    InstanceCallback,
    InstanceMatch,
    RetrieveReport,
    SeriesMatch,
    StoreOutcome,
    StudiesCallback,
    StudyMatch,
    StudyQuery,
)
from viewer.core.pacs.multipart import MultipartParts
from viewer.core.pacs.node import AuthKind, PacsNode
from viewer.core.pacs.pages import PagePlan, Pager
from viewer.core.pacs.retrieve import InstanceSink, retrieve_series
from viewer.core.pacs.writer import BackgroundWriter

logger = logging.getLogger(__name__)
# dicomweb-client logs every request's study/series/instance UIDs at INFO: keep it to warnings
if logging.getLogger("dicomweb_client").level < logging.WARNING:
    logging.getLogger("dicomweb_client").setLevel(logging.WARNING)

# DICOM JSON tags (PS3.18 F.2)
_STUDY_UID, _SERIES_UID, _SOP_UID, _SOP_CLASS = "0020000D", "0020000E", "00080018", "00080016"
_PATIENT_NAME, _PATIENT_ID, _STUDY_DATE, _STUDY_TIME = "00100010", "00100020", "00080020", "00080030"
_ACCESSION, _STUDY_DESC, _MODALITIES, _MODALITY = "00080050", "00081030", "00080061", "00080060"
_N_SERIES, _N_STUDY_INSTANCES, _N_SERIES_INSTANCES = "00201206", "00201208", "00201209"
_SERIES_NUMBER, _SERIES_DESC, _INSTANCE_NUMBER = "00200011", "0008103E", "00200013"
_FAILED_SOP_SEQUENCE, _REFERENCED_SOP_SEQUENCE, _FAILURE_REASON = "00081198", "00081199", "00081197"
_REFERENCED_SOP_UID, _BODY_PART = "00081155", "00180015"
_CHUNK_BYTES = 1 << 20  # read size of a series stream


def _value(item: dict[str, Any], tag: str) -> Any:
    element = item.get(tag)
    if not isinstance(element, dict):
        return None
    values = element.get("Value")
    if not isinstance(values, list) or not values:
        return None
    first = values[0]
    if isinstance(first, dict):  # PN
        return first.get("Alphabetic", "")
    return first


def _text(item: dict[str, Any], tag: str) -> str:
    value = _value(item, tag)
    return "" if value is None else str(value)


def _int(item: dict[str, Any], tag: str) -> int | None:
    value = _value(item, tag)
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _all(item: dict[str, Any], tag: str) -> tuple[str, ...]:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return tuple(str(v) for v in values) if isinstance(values, list) else ()


def _objects(answer: Any) -> list[dict[str, Any]]:
    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        raise ValueError("not a DICOM JSON array")  # _translated names the server
    return answer


class DicomWebClient:
    """A :class:`PacsClient` over DICOMweb. One client per thread (a series retrieve asks its series count
    on a thread of its own; the byte limits are per thread and per request)."""

    def __init__(
        self,
        node: PacsNode,
        *,
        max_response_bytes: int = PACS_MAX_RESPONSE_BYTES,
        max_instance_bytes: int = PACS_MAX_INSTANCE_BYTES,
    ) -> None:
        if not node.dicomweb_url:
            raise PacsError(f"PACS {node.name!r} has no DICOMweb URL")
        self.node = node
        self._max_response = max_response_bytes
        self._max_instance = max_instance_bytes
        self._limits = Limits()
        session = guarded_session(self._limits, (node.connect_timeout_s, node.read_timeout_s))
        headers: dict[str, str] = {}
        if node.auth is AuthKind.BASIC:
            session.auth = (node.username, node.secret)
        elif node.auth is AuthKind.BEARER:
            headers["Authorization"] = f"Bearer {node.secret}"
        self._session = session
        self._series_headers = {
            **headers,
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
        }
        self._client = DICOMwebClient(
            node.dicomweb_url.rstrip("/"),
            session=session,
            headers=headers or None,
            timeout=(node.connect_timeout_s, node.read_timeout_s),
        )
        self._client.set_http_retry_params(retry=False)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> DicomWebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- errors -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _translated(self, what: str, *, total: int | None = None, part: int | None = None) -> Iterator[None]:
        self._limits.total = total if total is not None else self._max_response
        self._limits.part = part if part is not None else self._max_response
        where = self.node.web_address
        try:
            yield
        except PacsError:
            raise
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            if code in (401, 403):
                raise PacsAuthenticationError(
                    f"The DICOMweb server at {where} refused the credentials (HTTP {code}) for {what}"
                ) from None
            raise PacsResponseError(
                f"The DICOMweb server at {where} answered HTTP {code} to {what}"
            ) from None
        except requests.exceptions.ConnectTimeout:
            raise PacsUnreachableError(
                f"Cannot connect to the DICOMweb server at {where}: no answer within "
                f"{self.node.connect_timeout_s:g} s"
            ) from None
        except requests.exceptions.ReadTimeout:
            raise PacsResponseError(
                f"The DICOMweb server at {where} stopped answering {what} for {self.node.read_timeout_s:g} s"
            ) from None
        except requests.exceptions.ConnectionError as exc:
            if _is_connect_failure(exc):
                raise PacsUnreachableError(
                    f"Cannot connect to the DICOMweb server at {where}: {_connect_reason(exc)}"
                ) from None
            raise PacsConnectionLostError(
                f"The connection to the DICOMweb server at {where} was lost during {what}"
            ) from None
        except requests.exceptions.ChunkedEncodingError:  # the body stopped mid-way (reset, closed)
            raise PacsConnectionLostError(
                f"The connection to the DICOMweb server at {where} was lost during {what}"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise PacsResponseError(
                f"The DICOMweb server at {where} sent a malformed answer to {what} ({type(exc).__name__})"
            ) from None
        except (
            ValueError,
            KeyError,
            TypeError,
            IndexError,
            AttributeError,
            EOFError,
            InvalidDicomError,
        ) as exc:
            raise PacsResponseError(
                f"The DICOMweb server at {where} sent a malformed answer to {what} ({type(exc).__name__})"
            ) from None

    # --- connection test --------------------------------------------------------------------------
    def echo(self) -> float:
        """Seconds for a minimal QIDO-RS query (the DICOMweb counterpart of C-ECHO)."""
        start = time.perf_counter()
        with self._translated("a connection test"):
            _objects(self._client.search_for_studies(limit=1, fields=[_STUDY_UID]))
        return time.perf_counter() - start

    # --- QIDO-RS ----------------------------------------------------------------------------------
    def find_studies(
        self, query: StudyQuery, on_first_page: StudiesCallback | None = None
    ) -> list[StudyMatch]:
        """The matching studies (QIDO-RS), fetched as pages, :data:`PACS_QUERY_PAGES_IN_FLIGHT` requests
        at a time, each on its own connection (see :mod:`viewer.core.pacs.pages`): the first page of
        :data:`PACS_FIRST_PAGE` is handed to ``on_first_page`` as soon as it comes (when it is full: a
        shorter one is the whole answer). A server that does not page is asked once for everything."""
        plan = PagePlan(
            first=PACS_FIRST_PAGE,
            size=PACS_QUERY_PAGE,
            max_size=PACS_QUERY_PAGE_MAX,
            in_flight=PACS_QUERY_PAGES_IN_FLIGHT,
            limit=query.limit,
            cap=PACS_MAX_STUDY_MATCHES,
        )
        if query.limit is not None and query.limit <= plan.first:
            return self._studies(query, query.limit)
        pager: Pager[StudyMatch] = Pager(plan, key=lambda match: match.study_uid, on_first_page=on_first_page)

        def fetch_on_another_connection() -> None:
            try:
                with self._sibling() as other:
                    pager.work(lambda offset, count: other._studies(query, count, offset))
            except Exception as exc:  # a client that cannot even be made: the pages left are ours
                logger.debug("No second connection for a study query (%s)", type(exc).__name__)

        others = [
            threading.Thread(target=fetch_on_another_connection, name="pacs-query-page", daemon=True)
            for _ in range(plan.in_flight - 1)
        ]
        for thread in others:
            thread.start()
        pager.work(lambda offset, count: self._studies(query, count, offset))
        for thread in others:  # each ends after its current request: bounded by the node's timeouts
            thread.join(self.node.connect_timeout_s + self.node.read_timeout_s + 1.0)
        answer = pager.result()
        return answer if answer is not None else self._studies(query, query.limit)

    def _sibling(self) -> DicomWebClient:
        """Another client of the same node and limits (one client per thread)."""
        return DicomWebClient(
            self.node, max_response_bytes=self._max_response, max_instance_bytes=self._max_instance
        )

    def _studies(self, query: StudyQuery, limit: int | None, offset: int | None = None) -> list[StudyMatch]:
        filters: dict[str, str] = {}
        for key, value in (
            ("PatientName", query.patient_name),
            ("PatientID", query.patient_id),
            ("StudyDate", query.date_range()),
            ("ModalitiesInStudy", query.modality),
            ("AccessionNumber", query.accession_number),
            ("StudyDescription", query.study_description),
            ("StudyInstanceUID", query.study_uid),
        ):
            if value:
                filters[key] = value
        fields = [
            "StudyTime",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
            "StudyDescription",
            "AccessionNumber",
        ]
        with self._translated("a study query"):
            answer = _objects(
                self._client.search_for_studies(
                    search_filters=filters, fields=fields, limit=limit, offset=offset or None
                )
            )
            return [
                StudyMatch(
                    study_uid=_text(item, _STUDY_UID),
                    patient_name=_text(item, _PATIENT_NAME),
                    patient_id=_text(item, _PATIENT_ID),
                    study_date=_text(item, _STUDY_DATE),
                    study_time=_text(item, _STUDY_TIME),
                    accession_number=_text(item, _ACCESSION),
                    study_description=_text(item, _STUDY_DESC),
                    modalities=_all(item, _MODALITIES),
                    num_series=_int(item, _N_SERIES),
                    num_instances=_int(item, _N_STUDY_INSTANCES),
                )
                for item in answer
                if _text(item, _STUDY_UID)
            ]

    def find_series(self, study_uid: str) -> list[SeriesMatch]:
        fields = [
            "SeriesDescription",
            "SeriesNumber",
            "Modality",
            "NumberOfSeriesRelatedInstances",
            "BodyPartExamined",
        ]
        with self._translated("a series query"):
            answer = _objects(self._client.search_for_series(study_instance_uid=study_uid, fields=fields))
            return [
                SeriesMatch(
                    study_uid=study_uid,
                    series_uid=_text(item, _SERIES_UID),
                    modality=_text(item, _MODALITY),
                    series_number=_int(item, _SERIES_NUMBER),
                    series_description=_text(item, _SERIES_DESC),
                    num_instances=_int(item, _N_SERIES_INSTANCES),
                    body_part=_text(item, _BODY_PART).upper(),
                )
                for item in answer
                if _text(item, _SERIES_UID)
            ]

    def find_instances(self, study_uid: str, series_uid: str) -> list[InstanceMatch]:
        with self._translated("an instance query"):
            answer = _objects(
                self._client.search_for_instances(
                    study_instance_uid=study_uid,
                    series_instance_uid=series_uid,
                    fields=["SOPClassUID", "InstanceNumber"],
                )
            )
            return [
                InstanceMatch(
                    study_uid=study_uid,
                    series_uid=series_uid,
                    sop_instance_uid=_text(item, _SOP_UID),
                    sop_class_uid=_text(item, _SOP_CLASS),
                    instance_number=_int(item, _INSTANCE_NUMBER),
                )
                for item in answer
                if _text(item, _SOP_UID)
            ]

    # --- WADO-RS ----------------------------------------------------------------------------------
    def series_metadata(self, study_uid: str, series_uid: str) -> list[Dataset]:
        """The series' instances as headers without bulk data (WADO-RS metadata)."""
        with self._translated("a metadata request"):
            answer = _objects(self._client.retrieve_series_metadata(study_uid, series_uid))
            return [Dataset.from_json(item) for item in answer]

    def instance(self, study_uid: str, series_uid: str, sop_uid: str) -> Dataset:
        """One instance in its stored transfer syntax (WADO-RS)."""
        with self._translated("an instance retrieve", total=self._max_instance, part=self._max_instance):
            return self._client.retrieve_instance(
                study_uid, series_uid, sop_uid, media_types=(("application/dicom", "*"),)
            )

    def frames(self, study_uid: str, series_uid: str, sop_uid: str, numbers: Sequence[int]) -> list[bytes]:
        """Frames (1-based numbers) of one instance as the server sends them (WADO-RS frames)."""
        with self._translated("a frame retrieve", total=self._max_instance, part=self._max_instance):
            return list(self._client.retrieve_instance_frames(study_uid, series_uid, sop_uid, list(numbers)))

    def retrieve_series(
        self,
        study_uid: str,
        series_uid: str,
        cache: InstanceCache,
        *,
        on_instance: InstanceCallback | None = None,
        cancel: CancelFn | None = None,
        attempts: int = PACS_RETRIEVE_ATTEMPTS,
    ) -> RetrieveReport:
        """Retrieve a series in its stored transfer syntax into ``cache``; ``on_instance`` is called as
        each instance is written (about stream order), so the viewer can show the first one at once."""

        # the series' instance count of the round: asked on another thread while the stream is read (a
        # new list each round: a count that ends after its round was given up lands in that round's)
        counted: list[list[int | None]] = [[]]

        def count() -> int | None:
            counts = [m.num_instances for m in self.find_series(study_uid) if m.series_uid == series_uid]
            return counts[0] if len(counts) == 1 else None

        def count_while_streaming() -> None:
            into = counted[0]
            try:
                into.append(count())
            except PacsError as exc:  # asked again once the round has ended
                logger.debug("Series count not had during the stream (%s)", type(exc).__name__)

        def expected(received: Collection[str]) -> list[str]:
            # after a whole-series stream: when the series holds as many instances as arrived (each
            # checked to be of this series, none twice), those are all; else ask for the list (QIDO-RS)
            if received and (counted[0].pop() if counted[0] else count()) == len(received):
                return list(received)
            return [m.sop_instance_uid for m in self.find_instances(study_uid, series_uid)]

        def fetch(sop_uids: Sequence[str] | None, sink: InstanceSink) -> None:
            counted[0] = []
            if sop_uids is None:
                self._fetch_series(study_uid, series_uid, sink, answering=count_while_streaming)
            else:
                self._fetch_instances(study_uid, series_uid, sop_uids, sink)

        return retrieve_series(
            node_name=self.node.name,
            cache=cache,
            study_uid=study_uid,
            series_uid=series_uid,
            expected=expected,
            fetch=fetch,
            on_instance=on_instance,
            cancel=cancel,
            attempts=attempts,
        )

    def _fetch_series(
        self,
        study_uid: str,
        series_uid: str,
        sink: InstanceSink,
        *,
        answering: Callable[[], None] | None = None,
    ) -> None:
        """One WADO-RS request for the whole series, streamed: each part's bytes go to writer threads
        (:class:`~viewer.core.pacs.writer.BackgroundWriter`) that read its header, check it and write the
        bytes as received (the stored transfer syntax, no re-encoding) while the stream is read on.
        ``answering`` runs on its own thread from the moment the server has begun its answer (the series
        count is asked then, beside the stream, not after it: one request's time less at the end); this
        returns once it has ended (or after the node's timeouts; at once after a cancel)."""
        url = f"{self.node.dicomweb_url.rstrip('/')}/studies/{study_uid}/series/{series_uid}"
        beside: threading.Thread | None = None
        try:
            with (
                self._translated("a series retrieve", total=2**62, part=self._max_instance),
                self._session.get(url, headers=self._series_headers, stream=True) as response,
            ):
                response.raise_for_status()
                boundary = multipart_boundary(response.headers.get("Content-Type", ""))
                if boundary is None:
                    raise PacsResponseError(
                        f"The DICOMweb server at {self.node.web_address} answered a series retrieve "
                        "without a multipart body"
                    )
                if answering is not None:
                    beside = threading.Thread(target=answering, name="pacs-series-count", daemon=True)
                    beside.start()
                parts = MultipartParts(response.iter_content(_CHUNK_BYTES), boundary)
                # headers read, files written on writer threads while the stream is read on; bytes that
                # are not DICOM (the answer is malformed) are raised here at the next put or the end
                with sink.packed(), BackgroundWriter(sink) as writer:  # the round's instances: one pack
                    for data in parts:
                        if sink.cancelled():
                            raise PacsCancelled("Retrieve cancelled")
                        writer.put(data)
                if not parts.complete:
                    raise PacsConnectionLostError(
                        f"The connection to the DICOMweb server at {self.node.web_address} was lost during "
                        "a series retrieve (the answer ended early)"
                    )
        finally:
            if beside is not None and not sink.cancelled():  # a cancel does not wait for the count
                beside.join(self.node.connect_timeout_s + self.node.read_timeout_s + 1.0)

    def _fetch_instances(
        self, study_uid: str, series_uid: str, sop_uids: Sequence[str], sink: InstanceSink
    ) -> None:
        with sink.packed():  # a resume round's instances: one new pack
            for uid in sop_uids:
                if sink.cancelled():
                    raise PacsCancelled("Retrieve cancelled")
                try:
                    ds = self.instance(study_uid, series_uid, uid)
                except PacsResponseError as exc:
                    if "HTTP" not in str(exc):
                        raise  # the connection, not this instance: let the retrieve resume
                    sink.fail(uid, str(exc))
                    continue
                sink.accept_dataset(ds, uid)

    # --- STOW-RS ----------------------------------------------------------------------------------
    def store(self, paths: Sequence[Path]) -> list[StoreOutcome]:
        """Send files by STOW-RS; one outcome per file, from the server's per-instance answer."""
        datasets: dict[int, Dataset] = {}
        outcomes: dict[int, StoreOutcome] = {}
        for k, path in enumerate(paths):
            try:
                datasets[k] = dcmread(path)
            except Exception as exc:
                outcomes[k] = StoreOutcome(
                    "", False, None, f"not a readable DICOM file ({type(exc).__name__})"
                )
        if not datasets:
            return [outcomes[k] for k in range(len(paths))]
        with self._translated("a store (STOW-RS)"):
            try:
                answer = self._client.store_instances(list(datasets.values()))
            except requests.exceptions.HTTPError as exc:
                if exc.response is None or exc.response.status_code in (401, 403) or not exc.response.content:
                    raise
                answer = Dataset.from_json(exc.response.json())  # 409 / 202 bodies list per-instance results
        ok_uids = {
            str(item.get("ReferencedSOPInstanceUID", "")) for item in answer.get("ReferencedSOPSequence", [])
        }
        failed = {
            str(item.get("ReferencedSOPInstanceUID", "")): int(item.get("FailureReason", 0xC000))
            for item in answer.get("FailedSOPSequence", [])
        }
        for k, ds in datasets.items():
            uid = str(ds.SOPInstanceUID)
            if uid in ok_uids:
                outcomes[k] = StoreOutcome(uid, True, 0)
            elif uid in failed:
                outcomes[k] = StoreOutcome(
                    uid, False, failed[uid], f"refused (failure reason 0x{failed[uid]:04X})"
                )
            else:
                outcomes[k] = StoreOutcome(uid, False, None, "not acknowledged by the server")
        return [outcomes[k] for k in range(len(paths))]


def _is_connect_failure(exc: requests.exceptions.ConnectionError) -> bool:
    text = repr(exc)
    return any(
        key in text
        for key in (
            "NewConnectionError",
            "Connection refused",
            "Name or service not known",
            "NameResolutionError",
            "Failed to establish",
            "No route to host",
            "Network is unreachable",
        )
    )


def _connect_reason(exc: requests.exceptions.ConnectionError) -> str:
    text = repr(exc)
    if "refused" in text:
        return "connection refused (nothing listens there)"
    if "NameResolution" in text or "not known" in text or isinstance(exc.__context__, socket.gaierror):
        return "unknown host name"
    if "unreachable" in text or "No route" in text:
        return "network unreachable"
    return "connection failed"
