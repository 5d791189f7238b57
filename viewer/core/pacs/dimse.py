"""DIMSE client (C-ECHO, C-FIND, C-GET, C-MOVE, C-STORE) on top of ``pynetdicom``.

- Association failures become typed errors naming ``host:port`` and the AE title at fault: a rejection's
  diagnostic says whether the PACS did not know the *calling* or the *called* AE title; a PACS that
  accepts the association and then aborts the first request (Orthanc with an unknown calling AE) is
  reported as not knowing the calling AE title; no connection at all says whether the connection was
  refused, the host is unknown, or nothing answered within the connect timeout.
- C-GET proposes one presentation context per (SOP class, transfer syntax) for the SOP classes the
  series holds (from a C-FIND at image level), so the PACS sends what it stores instead of transcoding.
- Instances are handed over as encoded bytes (``event.encoded_dataset()``): never decoded here.
- pynetdicom's own DEBUG output dumps datasets (patient data), so its logger is held at WARNING.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, cast

from pydicom import dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pydicom.values import convert_value
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom import __version__ as _pynetdicom_version
from pynetdicom import _config as _pynetdicom_config
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import decode
from pynetdicom.presentation import AllStoragePresentationContexts, build_role
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from viewer.core.constants import PACS_FIRST_PAGE, PACS_RETRIEVE_ATTEMPTS
from viewer.core.dicom.rawheader import RawElement, RawHeader, parse_dataset
from viewer.core.errors import (
    PacsAssociationRejectedError,
    PacsCancelled,
    PacsConnectionLostError,
    PacsError,
    PacsResponseError,
    PacsUnreachableError,
)
from viewer.core.pacs.cache import InstanceCache
from viewer.core.pacs.models import (
    CancelFn,
    InstanceCallback,
    InstanceMatch,
    QueryLevel,
    RetrieveMethod,
    RetrieveReport,
    SeriesMatch,
    StoreOutcome,
    StudiesCallback,
    StudyMatch,
    StudyQuery,
)
from viewer.core.pacs.node import LocalAe, PacsNode
from viewer.core.pacs.retrieve import InstanceSink, retrieve_series

logger = logging.getLogger(__name__)
if logging.getLogger("pynetdicom").level < logging.WARNING:
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
# pynetdicom formats every C-FIND identifier (patient data) line by line for its INFO log before the
# logger's level is checked: ~0.3 ms a match, a third of a 1,000-study C-FIND here. Never wanted.
_pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
_pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
# Nor its "standard" event handlers: bound to every association, they run for each PDU and DIMSE message
# (a C-FIND answer is two PDUs a match), take the association's lock (which its C-FIND generator holds
# while decoding each identifier on the calling thread) and only format DEBUG lines, which the WARNING
# level above drops: 0.16 s of pynetdicom's reactor thread's CPU for a 1,000-study C-FIND, 0.18 s with
# them (2026-11-29).
_pynetdicom_config.LOG_HANDLER_LEVEL = "none"
# C-FIND answers are read straight from the association's DIMSE provider (``assoc.dimse.get_msg``, the
# queue of C_FIND primitives that pynetdicom's reactor fills and that its own C-FIND loop reads), not
# through that loop (the generator ``send_c_find`` returns, never started): for each match it builds a
# status Dataset, formats two log lines and decodes the whole identifier with pydicom on the calling
# thread, ~75 us a match here, a quarter of a 1,000-study C-FIND's CPU while pynetdicom's reactor
# thread needs ~0.16 ms a match of the same GIL (2026-11-29). The study query then reads its few
# values from the identifier's bytes (the raw header reader). The loop below does what pynetdicom's
# does with each answer (tested against Orthanc, both ways); it was checked with the pynetdicom versions
# named here (tests/pacs/test_pacs_cfind_direct.py pins them): with any other, the answers go through
# pynetdicom's own loop as before.
DIRECT_FIND_VERSIONS = ("3.0.",)
DIRECT_FIND = _pynetdicom_version.startswith(DIRECT_FIND_VERSIONS)

# The transfer syntaxes a C-GET proposes for each SOP class, one context each (PS3.5 10 / Annex A)
STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
)
MAX_CONTEXTS = 128  # odd presentation context IDs 1..255

# PS3.8 9.3.4: A-ASSOCIATE-RJ (source, diagnostic) -> what to tell the user
_REJECT_REASONS = {
    (1, 2): "it does not support the DICOM application context",
    (1, 3): "it does not know the calling AE title {calling!r} (add it to the PACS's list of modalities)",
    (1, 7): "its AE title is not {called!r} (check the called AE title)",
    (2, 2): "it does not support the protocol version",
    (3, 1): "it is busy (temporary congestion); try again later",
    (3, 2): "it has reached its limit of associations; try again later",
}

_STATUS_MEANING = {
    0xA700: "out of resources",
    0xA701: "out of resources (cannot count matches)",
    0xA702: "out of resources (cannot perform sub-operations)",
    0xA801: "move destination unknown",
    0xA900: "identifier does not match SOP class",
    0xB000: "some sub-operations failed",
    0xC000: "unable to process",
    0x0122: "SOP class not supported",
    0x0124: "not authorised",
}


def _status_text(code: int) -> str:
    meaning = _STATUS_MEANING.get(code) or ("unable to process" if 0xC000 <= code <= 0xCFFF else "failure")
    return f"status 0x{code:04X} ({meaning})"


def _probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """Can a TCP connection to ``host:port`` be made, and if not why (tried only after a failed
    association, to tell the user which of the two failed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except socket.gaierror:
        return False, "unknown host name"
    except ConnectionRefusedError:
        return False, "connection refused (nothing listens there)"
    except TimeoutError:
        return False, f"no answer within {timeout:g} s"
    except OSError as exc:
        return False, f"connection failed ({exc.strerror or type(exc).__name__})"


class DimseClient:
    """A :class:`PacsClient` over DIMSE. ``storage`` is Slicewise's own Storage SCP (needed for C-MOVE)."""

    def __init__(
        self,
        node: PacsNode,
        *,
        storage: StorageScp | None = None,
        method: RetrieveMethod = RetrieveMethod.GET,
    ) -> None:
        if not node.host:
            raise PacsError(f"PACS {node.name!r} has no DIMSE host")
        if method is RetrieveMethod.MOVE and storage is None:
            raise PacsError("C-MOVE needs Slicewise's Storage SCP running")
        self.node = node
        self.storage = storage
        self.method = method

    def close(self) -> None:
        """Nothing is held between operations (one association per operation)."""

    def __enter__(self) -> DimseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- associations -----------------------------------------------------------------------------
    def _ae(self) -> AE:
        ae = AE(ae_title=self.node.calling_ae)
        ae.connection_timeout = self.node.connect_timeout_s
        ae.acse_timeout = self.node.read_timeout_s
        ae.dimse_timeout = self.node.read_timeout_s
        ae.network_timeout = self.node.read_timeout_s
        ae.maximum_pdu_size = 0  # no limit on what we receive: fewer, larger PDUs
        return ae

    def _open(
        self, ae: AE, *, ext_neg: list[Any] | None = None, handlers: list[Any] | None = None
    ) -> Association:
        """Request an association; a typed error saying why when it is not established."""
        node = self.node

        def request() -> Association:
            try:
                # the AE's maximum_pdu_size only applies to associations it accepts: asked here too, a
                # C-GET of 300 512 x 512 slices from Orthanc took 1.34 s and 0.78 s of CPU against 1.53
                # and 0.91 s at pynetdicom's default 16 kB (4 rounds interleaved, 2026-11-29)
                return ae.associate(
                    node.host,
                    node.port,
                    ae_title=node.called_ae,
                    max_pdu=ae.maximum_pdu_size,
                    ext_neg=ext_neg,
                    evt_handlers=handlers,
                )
            except OSError as exc:  # e.g. the host name does not resolve
                _, why = _probe(node.host, node.port, node.connect_timeout_s)
                raise PacsUnreachableError(
                    f"Cannot connect to the PACS at {node.dimse_address}: {why or type(exc).__name__}"
                ) from None

        assoc = request()
        if not (assoc.is_established or assoc.is_rejected):
            # pynetdicom marks a failed TCP connect as aborted too: look at the connection itself
            reachable, why = _probe(node.host, node.port, node.connect_timeout_s)
            if not reachable:
                raise PacsUnreachableError(f"Cannot connect to the PACS at {node.dimse_address}: {why}")
            # It also reports an abort when the peer rejects the request and closes the connection
            # before the rejection has been read (2 of 100 requests with a wrong called AE title against
            # Orthanc here): ask once more, for the reason (a request changes nothing on the peer)
            assoc = request()
        self._raise_unless_established(assoc)
        return assoc

    @contextmanager
    def _association(self, ae: AE) -> Iterator[Association]:
        assoc = self._open(ae)
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _raise_unless_established(self, assoc: Association) -> None:
        """Nothing when ``assoc`` is established; else why not, for a peer that answers on its port."""
        node = self.node
        if assoc.is_established:
            return
        if assoc.is_rejected:
            prim = assoc.acceptor.primitive
            key = (int(getattr(prim, "result_source", 0) or 0), int(getattr(prim, "diagnostic", 0) or 0))
            why = _REJECT_REASONS.get(key, f"reason {key[0]}/{key[1]}").format(
                calling=node.calling_ae, called=node.called_ae
            )
            raise PacsAssociationRejectedError(
                f"The PACS at {node.dimse_address} rejected the association: {why}"
            )
        raise PacsAssociationRejectedError(
            f"The PACS at {node.dimse_address} aborted the association request "
            f"(calling AE {node.calling_ae!r}, called AE {node.called_ae!r})"
        )

    def _refused(self, assoc: Association, what: str) -> PacsError:
        """An empty status: the peer aborted or the connection dropped during ``what``."""
        return self._aborted(what) if assoc.is_aborted else self._lost(what)

    def _aborted(self, what: str) -> PacsAssociationRejectedError:
        return PacsAssociationRejectedError(
            f"The PACS at {self.node.dimse_address} aborted the {what}: it probably does not know "
            f"or allow the calling AE title {self.node.calling_ae!r}"
        )

    def _lost(self, what: str) -> PacsConnectionLostError:
        return PacsConnectionLostError(
            f"The connection to the PACS at {self.node.dimse_address} was lost during the {what}"
        )

    # --- C-ECHO -----------------------------------------------------------------------------------
    def echo(self) -> float:
        """Seconds for a C-ECHO round trip (association included)."""
        start = time.perf_counter()
        ae = self._ae()
        ae.add_requested_context(Verification)
        with self._association(ae) as assoc:
            status = assoc.send_c_echo()
            if not status:
                raise self._refused(assoc, "C-ECHO")
            if status.Status != 0x0000:
                raise PacsResponseError(
                    f"The PACS at {self.node.dimse_address} answered C-ECHO with "
                    f"{_status_text(status.Status)}"
                )
        return time.perf_counter() - start

    # --- C-FIND -----------------------------------------------------------------------------------
    def _find(self, identifier: Dataset, what: str) -> Iterator[Dataset]:
        """The matches of one C-FIND as pydicom Datasets, each as soon as it has arrived (the association
        is released when the iteration ends or is closed)."""
        for answer in self._answers(identifier, what):
            found = answer.dataset() if isinstance(answer, _Identifier) else answer
            if found is not None:
                yield found

    def _answers(self, identifier: Dataset, what: str) -> Iterator[_Identifier | Dataset]:
        """The matches of one C-FIND as received (:data:`DIRECT_FIND`) or as pynetdicom's own C-FIND loop
        decodes them, each as soon as it has arrived."""
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        with self._association(ae) as assoc:
            responses = assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
            if DIRECT_FIND:
                yield from self._direct_answers(assoc, what)
                return
            for status, found in responses:
                if not status:
                    raise self._refused(assoc, what)
                code = int(status.Status)
                if code in (0xFF00, 0xFF01):
                    if found is not None:
                        yield found
                elif code != 0x0000:
                    raise self._find_refused(what, code)

    def _direct_answers(self, assoc: Association, what: str) -> Iterator[_Identifier]:
        """The C-FIND answers taken from the association's DIMSE provider, after ``send_c_find`` sent the
        request (see :data:`DIRECT_FIND`), with what pynetdicom's loop does on each: no message within
        the DIMSE timeout aborts the association (a peer's abort or a closed connection ends it
        already); a message that is not a valid C-FIND response aborts it; a final status ends the
        loop (the association is released by the caller). Unlike pynetdicom's loop, which leaves the
        three cases to be told apart by its reactor thread afterwards, the error says which it was."""
        syntaxes = {cx.context_id: UID(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        while True:
            context_id, rsp = assoc.dimse.get_msg(block=True)
            if rsp is None:
                if assoc.acse.is_aborted("a-abort"):
                    raise self._aborted(what)
                if assoc.acse.is_aborted("a-p-abort") or not assoc.is_established:
                    raise self._lost(what)
                assoc.abort()
                raise PacsResponseError(
                    f"The PACS at {self.node.dimse_address} sent no answer to the {what} within "
                    f"{self.node.read_timeout_s:g} s"
                )
            if not isinstance(rsp, C_FIND) or not rsp.is_valid_response:
                assoc.abort()
                raise self._refused(assoc, what)
            code = int(cast(int, rsp.Status))  # a valid response has one
            if code in (0xFF00, 0xFF01):
                data = rsp.Identifier.getvalue() if isinstance(rsp.Identifier, BytesIO) else b""
                syntax = syntaxes.get(context_id) if context_id is not None else None
                if data and syntax is not None:
                    yield _Identifier(data, syntax)
            elif code == 0x0000:
                return
            else:
                raise self._find_refused(what, code)

    def _find_refused(self, what: str, code: int) -> PacsResponseError:
        return PacsResponseError(
            f"The PACS at {self.node.dimse_address} refused the {what}: {_status_text(code)}"
        )

    def find_studies(
        self, query: StudyQuery, on_first_page: StudiesCallback | None = None
    ) -> list[StudyMatch]:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.QueryRetrieveLevel = QueryLevel.STUDY.value
        ds.StudyInstanceUID = query.study_uid
        ds.PatientName = query.patient_name
        ds.PatientID = query.patient_id
        ds.StudyDate = query.date_range()
        ds.StudyTime = ""
        ds.AccessionNumber = query.accession_number
        ds.StudyDescription = query.study_description
        ds.ModalitiesInStudy = query.modality
        ds.NumberOfStudyRelatedSeries = None
        ds.NumberOfStudyRelatedInstances = None
        # each match becomes a row as it arrives, while the PACS sends the next ones (converting 1,000
        # after the last one came took ~0.1 s here); the first PACS_FIRST_PAGE are handed over as soon
        # as a next one has come (then they are a page, not the whole answer)
        paging = on_first_page is not None and (query.limit is None or query.limit > PACS_FIRST_PAGE)
        matches: list[StudyMatch] = []
        seen: _Seen = {}
        for answer in self._answers(ds, "study query (C-FIND)"):
            item = answer.header() if isinstance(answer, _Identifier) else answer
            if item is None:
                continue
            match = _study_match(item, seen)
            if match is None:
                continue
            matches.append(match)
            if paging and on_first_page is not None and len(matches) == PACS_FIRST_PAGE + 1:
                on_first_page(matches[:PACS_FIRST_PAGE])
        return matches if query.limit is None else matches[: query.limit]

    def find_series(self, study_uid: str) -> list[SeriesMatch]:
        ds = Dataset()
        ds.QueryRetrieveLevel = QueryLevel.SERIES.value
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = ""
        ds.Modality = ""
        ds.SeriesNumber = None
        ds.SeriesDescription = ""
        ds.NumberOfSeriesRelatedInstances = None
        ds.BodyPartExamined = ""
        return [
            SeriesMatch(
                study_uid=study_uid,
                series_uid=_s(item, "SeriesInstanceUID"),
                modality=_s(item, "Modality"),
                series_number=_i(item, "SeriesNumber"),
                series_description=_s(item, "SeriesDescription"),
                num_instances=_i(item, "NumberOfSeriesRelatedInstances"),
                body_part=_s(item, "BodyPartExamined").upper(),
            )
            for item in self._find(ds, "series query (C-FIND)")
            if _s(item, "SeriesInstanceUID")
        ]

    def find_instances(
        self, study_uid: str, series_uid: str, *, with_class: bool = True
    ) -> list[InstanceMatch]:
        ds = Dataset()
        ds.QueryRetrieveLevel = QueryLevel.IMAGE.value
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ""
        if with_class:
            ds.SOPClassUID = ""
        ds.InstanceNumber = None
        return [
            InstanceMatch(
                study_uid=study_uid,
                series_uid=series_uid,
                sop_instance_uid=_s(item, "SOPInstanceUID"),
                sop_class_uid=_s(item, "SOPClassUID"),
                instance_number=_i(item, "InstanceNumber"),
            )
            for item in self._find(ds, "instance query (C-FIND)")
            if _s(item, "SOPInstanceUID")
        ]

    # --- C-GET / C-MOVE ---------------------------------------------------------------------------
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
        """Retrieve a series into ``cache`` by C-GET (or C-MOVE to our Storage SCP); ``on_instance`` is
        called as each instance is written. After a dropped connection only missing instances are asked
        for again (an image-level request listing their UIDs)."""
        try:
            matches = self.find_instances(study_uid, series_uid)
        except PacsResponseError:
            # Orthanc reads every file to answer SOPClassUID, and fails the whole query when one is
            # gone; its index answers the UIDs alone. Without the classes, C-GET proposes them all.
            matches = self.find_instances(study_uid, series_uid, with_class=False)
        expected = [m.sop_instance_uid for m in matches]
        sop_classes = sorted({m.sop_class_uid for m in matches if m.sop_class_uid})

        def fetch(sop_uids: Sequence[str] | None, sink: InstanceSink) -> None:
            identifier = Dataset()
            identifier.StudyInstanceUID = study_uid
            identifier.SeriesInstanceUID = series_uid
            if sop_uids is None:
                identifier.QueryRetrieveLevel = QueryLevel.SERIES.value
            else:
                identifier.QueryRetrieveLevel = QueryLevel.IMAGE.value
                identifier.SOPInstanceUID = list(sop_uids)
            if self.method is RetrieveMethod.MOVE:
                self._move(identifier, sink)
            else:
                self._get(identifier, sink, sop_classes)

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

    def _get(self, identifier: Dataset, sink: InstanceSink, sop_classes: Sequence[str]) -> None:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        room = MAX_CONTEXTS - 1
        classes: list[str] = list(sop_classes) or [
            str(cx.abstract_syntax) for cx in AllStoragePresentationContexts[:room]
        ]
        if len(classes) * len(STORAGE_TRANSFER_SYNTAXES) <= room:
            for sop in classes:  # one context per (class, syntax): the PACS sends what it stores
                for ts in STORAGE_TRANSFER_SYNTAXES:
                    ae.add_requested_context(sop, ts)
        else:  # too many classes for one context each: one context per class, the PACS picks
            classes = classes[:room]
            for sop in classes:
                ae.add_requested_context(sop, list(STORAGE_TRANSFER_SYNTAXES))
        roles: list[Any] = [build_role(sop, scp_role=True) for sop in classes]

        def on_store(event: Any) -> int:
            if sink.cancelled():
                return 0xA700
            data = event.encoded_dataset(include_meta=True)
            return 0x0000 if sink.accept(data, str(event.request.AffectedSOPInstanceUID or "")) else 0xC000

        ae_handlers: list[Any] = [(evt.EVT_C_STORE, on_store)]
        assoc = self._open(ae, ext_neg=roles, handlers=ae_handlers)
        self._run_retrieve(assoc, identifier, sink, StudyRootQueryRetrieveInformationModelGet, "C-GET")

    def _move(self, identifier: Dataset, sink: InstanceSink) -> None:
        assert self.storage is not None
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        with self.storage.receiving(sink):
            assoc = self._open(ae)
            self._run_retrieve(assoc, identifier, sink, StudyRootQueryRetrieveInformationModelMove, "C-MOVE")

    def _run_retrieve(
        self, assoc: Association, identifier: Dataset, sink: InstanceSink, model: UID, what: str
    ) -> None:
        node = self.node
        before = len(sink.received)
        try:
            if what == "C-MOVE":
                assert self.storage is not None
                responses = assoc.send_c_move(identifier, self.storage.local.ae_title, model)
            else:
                responses = assoc.send_c_get(identifier, model)
            final: int | None = None
            for status, found in responses:
                if sink.cancelled():
                    assoc.abort()
                    raise PacsCancelled("Retrieve cancelled")
                if not status:
                    if len(sink.received) > before:  # instances came: the connection dropped
                        raise PacsConnectionLostError(
                            f"The connection to the PACS at {node.dimse_address} was lost during the {what}"
                        )
                    raise self._refused(assoc, what)
                code = int(status.Status)
                if code == 0xFF00:
                    continue
                final = code
                failed = _multi(found, "FailedSOPInstanceUIDList") if found is not None else ()
                for uid in failed:
                    sink.fail(uid, f"the PACS could not send it ({what} {_status_text(code)})")
            if final is not None and final not in (0x0000, 0xB000, 0xFE00):
                if final == 0xA801:
                    raise PacsAssociationRejectedError(
                        f"The PACS at {node.dimse_address} does not know the move destination "
                        f"{self.storage.local.ae_title if self.storage else ''!r}"
                    )
                raise PacsResponseError(
                    f"The PACS at {node.dimse_address} answered the {what} with {_status_text(final)}"
                )
        finally:
            if assoc.is_established:
                assoc.release()

    # --- C-STORE ----------------------------------------------------------------------------------
    def store(self, paths: Sequence[Path]) -> list[StoreOutcome]:
        """Send files by C-STORE, one association; one outcome per file (with the PACS's status)."""
        items: list[tuple[Path, str, str, str]] = []
        outcomes: dict[int, StoreOutcome] = {}
        for k, path in enumerate(paths):
            try:
                meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                items.append(
                    (
                        path,
                        str(meta.file_meta.MediaStorageSOPClassUID),
                        str(meta.file_meta.TransferSyntaxUID),
                        str(meta.file_meta.MediaStorageSOPInstanceUID),
                    )
                )
            except Exception as exc:
                outcomes[k] = StoreOutcome(
                    "", False, None, f"not a readable DICOM file ({type(exc).__name__})"
                )
                items.append((path, "", "", ""))
        ae = self._ae()
        contexts = sorted({(sop, ts) for _, sop, ts, _ in items if sop})
        for sop, ts in contexts[:MAX_CONTEXTS]:
            ae.add_requested_context(sop, ts)
        if contexts:
            with self._association(ae) as assoc:
                for k, (path, _sop, _ts, uid) in enumerate(items):
                    if k in outcomes:
                        continue
                    try:
                        status = assoc.send_c_store(path)
                    except (ValueError, RuntimeError) as exc:  # no accepted context for it
                        outcomes[k] = StoreOutcome(
                            uid, False, None, f"not accepted by the PACS ({type(exc).__name__})"
                        )
                        continue
                    if not status:
                        raise self._refused(assoc, "C-STORE")
                    code = int(status.Status)
                    ok = code == 0x0000 or 0xB000 <= code <= 0xBFFF
                    outcomes[k] = StoreOutcome(uid, ok, code, "" if ok else _status_text(code))
        return [outcomes[k] for k in range(len(items))]


@dataclass(frozen=True, slots=True)
class _Identifier:
    """One C-FIND match's identifier as received, in its presentation context's transfer syntax."""

    data: bytes
    syntax: UID

    def dataset(self) -> Dataset | None:
        """Decoded by pydicom, as pynetdicom's C-FIND loop does; None where that fails (as there: the
        match is left out and the failure logged)."""
        syntax = self.syntax
        try:
            return decode(
                BytesIO(self.data), syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
            )
        except Exception as exc:  # pynetdicom's loop catches every decoding failure too
            logger.error("A C-FIND identifier could not be decoded (%s): left out", type(exc).__name__)
            return None

    def header(self) -> RawHeader | Dataset | None:
        """For the study row: the raw header reader's view (little endian, not deflated), else
        :meth:`dataset`."""
        syntax = self.syntax
        if syntax.is_little_endian and not syntax.is_deflated:
            header = parse_dataset(self.data, syntax.is_implicit_VR)
            if header is not None:
                return header
        return self.dataset()


def _study_match(item: Dataset | RawHeader, seen: _Seen | None = None) -> StudyMatch | None:
    """One C-FIND study identifier as a row (None without a Study Instance UID). ``seen`` keeps the
    values already converted in this answer (see :class:`_Values`)."""
    v = _Values(item, {} if seen is None else seen)
    uid = _text(v("StudyInstanceUID"))
    if not uid:
        return None
    return StudyMatch(
        study_uid=uid,
        patient_name=_text(v("PatientName")),
        patient_id=_text(v("PatientID")),
        study_date=_text(v("StudyDate")),
        study_time=_text(v("StudyTime")),
        accession_number=_text(v("AccessionNumber")),
        study_description=_text(v("StudyDescription")),
        modalities=_texts(v("ModalitiesInStudy")),
        num_series=_integer(v("NumberOfStudyRelatedSeries")),
        num_instances=_integer(v("NumberOfStudyRelatedInstances")),
    )


class _Values:
    """The values of a C-FIND identifier, each converted by pydicom's ``convert_value`` straight from
    the raw element (with the identifier's character set), not through Dataset attribute access: that
    path (keyword lookup, element objects, hooks) made turning 1,000 matches into rows take 0.27 s, now
    0.11 s here. An element that is not a plain raw one goes through the Dataset as before. The
    identifier is a pydicom Dataset or the raw header reader's view of its bytes (the same calls); an
    element without a VR (implicit VR) takes the data dictionary's, as pydicom does for these tags.

    The matches of one answer repeat most values (the character set, dates, modalities, descriptions,
    counts): ``seen`` maps (tag, VR, encoded bytes, character set) to the value converted the first time,
    the same value ``convert_value`` returns for the same input, so each is converted once an answer
    (7 of the 10 values of a row in bench_pacs's 1,000 studies; ~60 to ~25 us a row here)."""

    def __init__(self, item: Dataset | RawHeader, seen: _Seen) -> None:
        self._item = item
        self._seen = seen
        raw = item.get_item(_CHARSET_TAG)
        key = None
        if isinstance(raw, RawDataElement | RawElement) and isinstance(raw.value, bytes):
            key = (_CHARSET_TAG, "CS", raw.value, ())
        if key is not None and key in seen:
            encodings = seen[key]
        else:
            charset = item.get("SpecificCharacterSet")
            encodings = tuple(convert_encodings(charset) if charset else [default_encoding])
            if key is not None:
                seen[key] = encodings
        self._encodings: tuple[str, ...] = encodings

    def __call__(self, keyword: str) -> Any:
        tag = _STUDY_TAGS[keyword]
        element = self._item.get_item(tag)
        if element is None:
            return None
        if isinstance(element, RawDataElement | RawElement) and isinstance(element.value, bytes):
            vr = element.VR or _STUDY_VRS[tag]
            if vr == "UN":
                return self._item.get(keyword)
            if not element.value:
                return None
            key = (tag, vr, element.value, self._encodings)
            if key in self._seen:
                return self._seen[key]
            with contextlib.suppress(Exception):  # what pydicom's Dataset would say is said below
                # a RawElement has the fields convert_value reads (tag, length, value, encoding)
                value = convert_value(vr, cast(RawDataElement, element), list(self._encodings))
                self._seen[key] = value
                return value
        return self._item.get(keyword)


# converted C-FIND values of one answer: (tag, VR, encoded value, character set) -> value
_Seen = dict[tuple[int, str, bytes, tuple[str, ...]], Any]


_CHARSET_TAG = 0x00080005
_STUDY_TAGS = {
    "StudyInstanceUID": 0x0020000D,
    "PatientName": 0x00100010,
    "PatientID": 0x00100020,
    "StudyDate": 0x00080020,
    "StudyTime": 0x00080030,
    "AccessionNumber": 0x00080050,
    "StudyDescription": 0x00081030,
    "ModalitiesInStudy": 0x00080061,
    "NumberOfStudyRelatedSeries": 0x00201206,
    "NumberOfStudyRelatedInstances": 0x00201208,
}
_STUDY_VRS = {tag: str(dictionary_VR(tag)) for tag in _STUDY_TAGS.values()}  # none is ambiguous


def _text(value: Any) -> str:
    """A value as the table shows it (a multi-value joined by backslashes)."""
    if value is None:
        return ""
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__") or hasattr(value, "family_name"):
        return str(value)
    return "\\".join(str(v) for v in value)


def _texts(value: Any) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def _integer(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _s(ds: Dataset | None, keyword: str) -> str:
    return "" if ds is None else _text(ds.get(keyword))


def _multi(ds: Dataset | None, keyword: str) -> tuple[str, ...]:
    return () if ds is None else _texts(ds.get(keyword))


def _i(ds: Dataset | None, keyword: str) -> int | None:
    return None if ds is None else _integer(ds.get(keyword))


class StorageScp:
    """Slicewise's own Storage SCP, the destination of C-MOVE. Instances it receives go to the sink of
    the retrieve in progress (one C-MOVE at a time per SCP); anything else is refused."""

    def __init__(self, local: LocalAe, *, allowed_calling_aes: Sequence[str] = ()) -> None:
        self.local = local
        self._allowed = set(allowed_calling_aes)
        self._lock = threading.Lock()
        self._move_lock = threading.Lock()
        self._sink: InstanceSink | None = None
        self._server: Any = None

    def start(self) -> int:
        """Start listening; returns the port (useful when ``local.port`` is 0)."""
        ae = AE(ae_title=self.local.ae_title)
        ae.maximum_pdu_size = 0
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        if self._allowed:
            ae.require_calling_aet = sorted(self._allowed)
        try:
            self._server = ae.start_server(
                (self.local.host, self.local.port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
            )
        except OSError as exc:
            raise PacsError(
                f"Cannot listen on {self.local.host}:{self.local.port} for the Storage SCP ({exc.strerror})"
            ) from None
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> StorageScp:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextmanager
    def receiving(self, sink: InstanceSink) -> Iterator[None]:
        with self._move_lock:
            with self._lock:
                self._sink = sink
            try:
                yield
            finally:
                with self._lock:
                    self._sink = None

    def _on_store(self, event: Any) -> int:
        with self._lock:
            sink = self._sink
        if sink is None:
            return 0xA700  # nothing asked for it: refuse rather than store unrequested data
        data = event.encoded_dataset(include_meta=True)
        return 0x0000 if sink.accept(data, str(event.request.AffectedSOPInstanceUID or "")) else 0xC000


class StorageScpPool:
    """Slicewise's running Storage SCPs, one per (AE title, port), started on first use and kept
    listening (a workstation that retrieves by C-MOVE must be reachable while it waits) until
    :meth:`stop_all`. Thread-safe: retrieve jobs ask for their SCP from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[str, int], StorageScp] = {}

    def get(self, local: LocalAe, *, allowed_calling_aes: Sequence[str] = ()) -> StorageScp:
        """The SCP listening as ``local`` (started now if needed; :class:`PacsError` if it cannot
        listen). ``allowed_calling_aes`` applies when it is started."""
        key = (local.ae_title, local.port)
        with self._lock:
            scp = self._running.get(key)
            if scp is None:
                scp = StorageScp(local, allowed_calling_aes=allowed_calling_aes)
                scp.start()
                self._running[key] = scp
            return scp

    def stop_all(self) -> None:
        with self._lock:
            running, self._running = list(self._running.values()), {}
        for scp in running:
            scp.stop()

