"""C-FIND answers read straight from pynetdicom's DIMSE provider (``DimseClient``'s direct loop, see
``viewer.core.pacs.dimse.DIRECT_FIND``): against a real Orthanc the same matches as through pynetdicom's
own C-FIND loop at every level (character sets, a multi-valued ModalitiesInStudy, counts); against
real peers (a pynetdicom Find SCP, a relay that cuts the connection) the faults told apart: no answer
within the read timeout, the peer's abort, the connection lost."""

from __future__ import annotations

import threading
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pynetdicom
import pytest
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

import viewer.core.pacs.dimse as dimse_module
from tests.factories import make_ct_slice
from tests.pacs.conftest import dimse_node
from tests.pacs.netfaults import CuttingRelay
from tests.pacs.orthanc import Orthanc, running_orthanc, unavailable_reason
from viewer.core.errors import PacsAssociationRejectedError, PacsConnectionLostError, PacsResponseError
from viewer.core.pacs import DimseClient, InstanceMatch, PacsNode, SeriesMatch, StudyMatch, StudyQuery

TWO_SERIES_STUDY = generate_uid()
NON_ASCII_NAME = "Müller^Jörg"  # Orthanc answers in its default Latin-1 (ISO_IR 100)


def _two_series_study(folder: Path) -> list[Path]:
    """One study, a CT and an MR series of one slice each, its patient's name outside ASCII (UTF-8)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, modality in enumerate(("CT", "MR")):
        ds = make_ct_slice(
            np.zeros((8, 8), dtype=np.int16),
            position=(0, 0, 0),
            study_uid=TWO_SERIES_STUDY,
            series_uid=generate_uid(),
            frame_of_reference_uid=generate_uid(),
            patient_name=NON_ASCII_NAME,
            patient_id="CFIND-DIRECT",
        )
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.Modality = modality
        path = folder / f"{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """An Orthanc of its own (the session's is shared): the two-series study and pydicom's character
    set files (those Orthanc takes: it refuses a file without the UIDs it indexes)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("orthanc-cfind")
    files = [*_two_series_study(folder / "files"), *(Path(p) for p in sorted(get_charset_files("chr*.dcm")))]
    with running_orthanc(folder / "server") as orthanc:
        for path in files:
            try:
                orthanc.upload([path])
            except urllib.error.HTTPError:
                continue
        yield orthanc


Levels = tuple[list[StudyMatch], list[SeriesMatch], list[InstanceMatch]]


def _every_level(client: DimseClient) -> Levels:
    studies = sorted(client.find_studies(StudyQuery()), key=lambda m: m.study_uid)
    series = sorted(
        (s for m in studies for s in client.find_series(m.study_uid)), key=lambda s: s.series_uid
    )
    instances = sorted(
        (i for s in series for i in client.find_instances(s.study_uid, s.series_uid)),
        key=lambda i: i.sop_instance_uid,
    )
    return studies, series, instances


def test_pynetdicom_is_a_version_the_direct_loop_was_checked_with() -> None:
    """Another pynetdicom: re-check ``DimseClient._direct_answers`` against its
    ``Association._wrap_find_responses`` (what it does with each answer, the reactor pause that
    ``send_c_find`` sets up), then add the version to ``DIRECT_FIND_VERSIONS`` (until then the client
    goes through pynetdicom's own loop)."""
    assert pynetdicom.__version__.startswith(dimse_module.DIRECT_FIND_VERSIONS), pynetdicom.__version__
    assert dimse_module.DIRECT_FIND


def test_direct_answers_equal_those_of_pynetdicoms_own_loop(
    server: Orthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = DimseClient(dimse_node(server))
    direct = _every_level(client)
    monkeypatch.setattr(dimse_module, "DIRECT_FIND", False)
    through_pynetdicom = _every_level(client)
    assert direct == through_pynetdicom
    studies, series, instances = direct
    assert len(studies) > 2 and len(instances) >= len(series) >= len(studies)
    (two,) = [m for m in studies if m.study_uid == TWO_SERIES_STUDY]
    assert sorted(two.modalities) == ["CT", "MR"]  # a multi-valued answer
    assert (two.num_series, two.num_instances) == (2, 2)
    assert two.patient_name == NON_ASCII_NAME
    assert len(studies) > 5  # pydicom's character set files are among them


def test_a_connection_cut_mid_answer_is_a_lost_connection(server: Orthanc) -> None:
    with CuttingRelay(server.dicom_port, cut_after=1500) as relay:
        client = DimseClient(dimse_node(server, port=relay.port))
        with pytest.raises(PacsConnectionLostError, match=rf"127\.0\.0\.1:{relay.port}.*study query"):
            client.find_studies(StudyQuery())
        assert relay.cuts_done == 1


@contextmanager
def _find_scp(handler: Any, syntax: str | None = None) -> Iterator[int]:
    """A pynetdicom Find SCP on a free loopback port (shut down afterwards); ``syntax``: the only
    transfer syntax it accepts."""
    ae = AE(ae_title="PEER")
    if syntax is None:
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    else:
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind, syntax)
    scp = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, handler)])
    assert scp is not None  # not blocking: the server is returned
    try:
        yield int(scp.server_address[1])
    finally:
        scp.shutdown()


def _peer(port: int) -> PacsNode:
    return PacsNode("peer", host="127.0.0.1", port=port, called_ae="PEER", read_timeout_s=1.0)


def _match(uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    return ds


def test_no_answer_within_the_read_timeout_says_so() -> None:
    release = threading.Event()

    def stall(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        release.wait(10)
        yield 0x0000, None

    with _find_scp(stall) as port:
        try:
            with pytest.raises(PacsResponseError, match=rf"127\.0\.0\.1:{port}.*no answer.*within 1 s"):
                DimseClient(_peer(port)).find_studies(StudyQuery())
        finally:
            release.set()


def test_the_peer_aborting_mid_answer_is_named() -> None:
    def abort_after_one(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        yield 0xFF00, _match("1.2.3.4")
        event.assoc.abort()

    with _find_scp(abort_after_one) as port:
        aborted = pytest.raises(PacsAssociationRejectedError, match=rf"127\.0\.0\.1:{port}.*aborted the")
        with aborted:
            DimseClient(_peer(port)).find_studies(StudyQuery())


def test_a_failure_status_is_a_response_error() -> None:
    def fail(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        yield 0xFF00, _match("1.2.3.4")
        yield 0xC001, None

    with _find_scp(fail) as port:
        refused = pytest.raises(PacsResponseError, match=r"refused the study query.*0xC001")
        with refused:
            DimseClient(_peer(port)).find_studies(StudyQuery())


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]
)
def test_answers_in_every_transfer_syntax_give_the_same_row(syntax: str) -> None:
    """Little endian identifiers are read from their bytes; big endian and deflated ones by pydicom."""

    def answer(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        ds = _match("1.2.3.4")
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = NON_ASCII_NAME
        ds.PatientID = "ID\\2"
        ds.ModalitiesInStudy = ["CT", "SR"]
        ds.NumberOfStudyRelatedSeries = 2
        ds.NumberOfStudyRelatedInstances = 41
        ds.StudyDate = "20260101"
        yield 0xFF00, ds

    with _find_scp(answer, syntax) as port:
        (row,) = DimseClient(_peer(port)).find_studies(StudyQuery())
    assert row == StudyMatch(
        study_uid="1.2.3.4",
        patient_name=NON_ASCII_NAME,
        patient_id="ID\\2",
        study_date="20260101",
        modalities=("CT", "SR"),
        num_series=2,
        num_instances=41,
    )
