"""The AI node against a real Orthanc: instances C-STOREd to the node (by Orthanc itself, or by a
pynetdicom SCU) are analysed once per series when quiet, and the result SR arrives in Orthanc under the
same study; a refused calling AE; out-of-scope series recorded as refused and not analysed; kill -9 of the
node process mid-series and a restart lose nothing and analyse nothing twice; the DICOMweb watcher.

Orthanc here is this module's own (the node stores results into it, which the shared one must not get).
Every wait is a poll with a deadline; every node (thread or process) is stopped in a ``finally``.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from tests.core.inference_models import build_model, write_bleed_series
from tests.factories import CANARY_ID, CANARY_NAME
from tests.pacs.orthanc import (
    ORTHANC_AET,
    PASSWORD,
    USER,
    Orthanc,
    free_port,
    running_orthanc,
    unavailable_reason,
)
from viewer.core.ainode.node import AiNode, NodeConfig, StoreProtocol
from viewer.core.ainode.queue import NodeQueue, ResultState, SeriesState
from viewer.core.ainode.scp import IntakeScp
from viewer.core.ainode.watch import DicomWebWatcher
from viewer.core.applicability.codes import ScopeCode
from viewer.core.inference.cache import PredictionCache
from viewer.core.inference.engine import InferenceEngine
from viewer.core.pacs import AuthKind, DicomWebClient, LocalAe, PacsNode

NODE_AET, SENDER_AET = "SLICEWISE_AI", "CT_SCANNER"
QUIET_S = 0.5
LONG_QUIET_S = 30.0  # longer than any test waits: only a released association ends it early
WAIT_S = 15.0
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Pacs:
    server: Orthanc
    node_port: int  # where the module's node listens (Orthanc's "ainode" modality)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    node_port = free_port()
    folder = tmp_path_factory.mktemp("orthanc-ainode")
    modalities = {"ainode": [NODE_AET, "127.0.0.1", node_port], "sender": [SENDER_AET, "127.0.0.1", 104]}
    with running_orthanc(folder, DicomModalities=modalities) as server:
        yield Pacs(server, node_port)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def store_target(server: Orthanc) -> PacsNode:
    return PacsNode(
        name="orthanc", host="127.0.0.1", port=server.dicom_port, called_ae=ORTHANC_AET, calling_ae=NODE_AET
    )


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def node(pacs: Pacs, model: Path, tmp_path: Path) -> Iterator[tuple[AiNode, IntakeScp]]:
    engine = InferenceEngine(model, provider="cpu", threads=1, cache=PredictionCache(tmp_path / "cache"))
    config = NodeConfig(tmp_path / "state", store_target(pacs.server), quiet_s=QUIET_S, poll_s=0.05)
    ai = AiNode(config, engine)
    scp = IntakeScp(
        ai, LocalAe(NODE_AET, "127.0.0.1", pacs.node_port), allowed_calling_aes=[ORTHANC_AET, SENDER_AET]
    )
    try:
        scp.start()
        ai.start()
        yield ai, scp
    finally:
        scp.stop()
        ai.stop(timeout_s=10)


def send(paths: Sequence[Path], port: int, calling: str = SENDER_AET, abort: bool = False) -> list[int]:
    """C-STORE files to the node like a scanner; one status per file. ``abort`` ends the association with an
    A-ABORT (a sender cut off) instead of a release."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    assert assoc.is_established, "the node did not accept the association"
    try:
        return [int(assoc.send_c_store(p).Status) for p in paths]
    finally:
        if abort:
            assoc.abort()
        else:
            assoc.release()


def orthanc_sr(server: Orthanc, study_uid: str) -> list[Dataset]:
    """The SR instances Orthanc holds in ``study_uid``."""
    found = server.request("POST", "/tools/lookup", study_uid.encode(), content_type="text/plain")
    studies = [item["ID"] for item in found if item["Type"] == "Study"]
    out = []
    for study in studies:
        for series in server.request("GET", f"/studies/{study}/series"):
            if series["MainDicomTags"].get("Modality") != "SR":
                continue
            for inst in series["Instances"]:
                out.append(dcmread(io.BytesIO(server.request("GET", f"/instances/{inst}/file"))))
    return out


def evidence_uids(sr: Dataset) -> list[str]:
    return [
        str(inst.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for inst in series.ReferencedSOPSequence
    ]


def decision(sr: Dataset) -> str:
    """The study decision in the AI Result SR: the Presence ('Present' or 'Absent') in the measurement
    group whose finding type is SCT 1386000 Intracranial hemorrhage (the model's 'any' class)."""

    def groups(items: Sequence[Dataset]) -> Iterator[Sequence[Dataset]]:
        for item in items:
            children = item.get("ContentSequence", [])
            if children:
                yield children
                yield from groups(children)

    def code(item: Dataset, sequence: str) -> str:
        found = item.get(sequence)
        return str(found[0].get("CodeValue", "")) if found else ""

    for children in groups(sr.ContentSequence):
        if any(code(item, "ConceptCodeSequence") == "1386000" for item in children):
            for item in children:
                if code(item, "ConceptNameCodeSequence") == "705057003":  # Presence
                    return str(item.ConceptCodeSequence[0].CodeMeaning)
    raise AssertionError("no study decision in the SR")


def test_watch_polls_dicomweb_and_stores_the_result_by_stow(pacs: Pacs, model: Path, tmp_path: Path) -> None:
    server = pacs.server
    files = write_bleed_series(tmp_path / "w", 6, bleed=(2,))
    head = dcmread(files[0], stop_before_pixels=True)
    server.upload(files)
    web = PacsNode(
        name="orthanc-web",
        dicomweb_url=server.dicomweb_url,
        auth=AuthKind.BASIC,
        username=USER,
        secret=PASSWORD,
    )
    engine = InferenceEngine(model, provider="cpu", threads=1, cache=PredictionCache(tmp_path / "cache"))
    config = NodeConfig(tmp_path / "state", web, store_via=StoreProtocol.DICOMWEB, quiet_s=0.0, poll_s=0.05)
    ai = AiNode(config, engine)
    try:
        with DicomWebClient(web) as client:
            watcher = DicomWebWatcher(ai, client, since=date(2026, 1, 1), today=lambda: date(2026, 1, 2))
            assert watcher.poll_once() == 6
            while ai.run_once():
                pass
            assert watcher.poll_once() == 0  # remembered: nothing retrieved again
        row = ai.queue.series(str(head.SeriesInstanceUID))
        assert row is not None and row.state is SeriesState.DONE
        (result,) = ai.queue.results(str(head.SeriesInstanceUID))
        assert result.state is ResultState.STORED and "stow-rs" in result.store_status
    finally:
        ai.stop()
    (sr,) = orthanc_sr(server, str(head.StudyInstanceUID))
    assert len(evidence_uids(sr)) == 6 and decision(sr) == "Present"


def test_orthanc_sends_a_study_and_the_result_sr_arrives_in_its_study(
    pacs: Pacs, node: tuple[AiNode, IntakeScp], tmp_path: Path
) -> None:
    ai, scp = node
    server = pacs.server
    files = write_bleed_series(tmp_path / "bleed", 40, bleed=(18, 19, 20))
    head = dcmread(files[0], stop_before_pixels=True)
    study_uid, series_uid = str(head.StudyInstanceUID), str(head.SeriesInstanceUID)
    server.upload(files)
    # Orthanc routes the study to the node, like a PACS forwarding rule
    answer = server.request("POST", "/modalities/ainode/store", server.lookup(study_uid, "Study").encode())
    assert answer["InstancesCount"] == 40 and answer["FailedInstancesCount"] == 0
    wait_for("the SR in Orthanc", lambda: bool(orthanc_sr(server, study_uid)))
    wait_for(
        "the store recorded", lambda: getattr(ai.queue.series(series_uid), "state", None) is SeriesState.DONE
    )
    (sr,) = orthanc_sr(server, study_uid)
    assert str(sr.StudyInstanceUID) == study_uid and str(sr.PatientID) == str(head.PatientID)
    assert sorted(evidence_uids(sr)) == sorted(
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files
    )
    assert decision(sr) == "Present"
    # one Orthanc study holds the images, the AI Result SR and (positive) the key images KOS
    study_id = server.lookup(study_uid, "Study")
    series = server.request("GET", f"/studies/{study_id}/series")
    assert sorted(s["MainDicomTags"]["Modality"] for s in series) == ["CT", "KO", "SR"]
    row = ai.queue.series(series_uid)
    assert row is not None and row.state is SeriesState.DONE and row.instances == 40 and row.analyses == 1
    (result,) = ai.queue.results(series_uid)
    assert result.state is ResultState.STORED and result.model_runs == 1
    assert result.object_uid == str(sr.SOPInstanceUID) and "0x0000" in result.store_status
    assert scp.received == 40
    # the same series sent again (the study now holds the SR, which the node does not take): nothing new
    # is analysed or stored
    server.request("POST", "/modalities/ainode/store", server.lookup(series_uid, "Series").encode())
    time.sleep(QUIET_S * 3)
    ai.drain(WAIT_S)
    assert scp.duplicates == 40 and len(orthanc_sr(server, study_uid)) == 1
    assert ai.queue.results(series_uid)[0].model_runs == 1


def test_a_calling_ae_not_allowed_is_refused(pacs: Pacs, node: tuple[AiNode, IntakeScp]) -> None:
    ai, _ = node
    ae = AE(ae_title="INTRUDER")
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", pacs.node_port, ae_title=NODE_AET)
    try:
        assert assoc.is_rejected
        assert int(assoc.acceptor.primitive.diagnostic) == 3  # calling AE title not recognised
    finally:
        if assoc.is_established:
            assoc.release()
    assert ai.queue.all_series() == []


def test_out_of_scope_series_are_refused_with_the_reason_and_not_analysed(
    pacs: Pacs, node: tuple[AiNode, IntakeScp], tmp_path: Path
) -> None:
    import tests.scope_cases as sc

    ai, _ = node
    cases = {"chest": sc.write_body(tmp_path / "chest", "chest"), "mr": sc.write_mr(tmp_path / "mr")}
    series = {}
    for name, folder in cases.items():
        files = sorted(folder.glob("*.dcm"))
        assert set(send(files, pacs.node_port)) == {0}
        series[name] = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    wait_for(
        "both series decided",
        lambda: all(
            (r := ai.queue.series(uid)) is not None and r.state is SeriesState.REFUSED
            for uid in series.values()
        ),
    )
    (chest,) = ai.queue.results(series["chest"])
    (mr,) = ai.queue.results(series["mr"])
    assert {ScopeCode.NOT_HEAD.value, ScopeCode.BODY_PART.value} & set(chest.codes) and chest.reason
    assert ScopeCode.MODALITY.value in mr.codes and "MR" in mr.reason
    for result in (chest, mr):
        assert result.state is ResultState.REFUSED and result.model_runs == 0 and result.object_uid == ""
    assert not list(ai.spool.outbox.iterdir())


# --- the node as a process ----------------------------------------------------------------------------
def start_node(pacs: Pacs, model: Path, state: Path, log: Path, quiet_s: float) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "viewer",
        "listen",
        "--ae-title",
        NODE_AET,
        "--port",
        str(pacs.node_port),
        "--host",
        "127.0.0.1",
        "--allow",
        SENDER_AET,
        "--store-to",
        f"dicom://{ORTHANC_AET}@127.0.0.1:{pacs.server.dicom_port}",
        "--state",
        str(state),
        "--quiet",
        str(quiet_s),
        "--model",
        str(model),
        "--provider",
        "cpu",
        "--threads",
        "1",
    ]
    env = dict(os.environ, SLICEWISE_DATA_DIR=str(state.parent / "data"))
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    ae = AE(ae_title=SENDER_AET)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 2
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the node exited with {proc.returncode}: {log.read_text()[-2000:]}")
        assoc = ae.associate("127.0.0.1", pacs.node_port, ae_title=NODE_AET)
        if assoc.is_established:
            assoc.release()
            return proc
        time.sleep(0.1)
    stop_process(proc)
    raise AssertionError(f"the node did not answer within {WAIT_S} s: {log.read_text()[-2000:]}")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def queue_state(state: Path, series_uid: str) -> SeriesState | None:
    queue = NodeQueue(state / "queue.sqlite3")
    try:
        row = queue.series(series_uid)
        return None if row is None else row.state
    finally:
        queue.close()


def test_kill_9_mid_series_loses_nothing_and_analyses_each_series_once(
    pacs: Pacs, model: Path, tmp_path: Path
) -> None:
    server = pacs.server
    state, log = tmp_path / "state", tmp_path / "node.log"
    first = write_bleed_series(tmp_path / "a", 8, bleed=())
    second = write_bleed_series(tmp_path / "b", 16, bleed=(7, 8))
    uid_a = str(dcmread(first[0], stop_before_pixels=True).SeriesInstanceUID)
    uid_b = str(dcmread(second[0], stop_before_pixels=True).SeriesInstanceUID)
    study_a = str(dcmread(first[0], stop_before_pixels=True).StudyInstanceUID)
    study_b = str(dcmread(second[0], stop_before_pixels=True).StudyInstanceUID)
    # A long quiet time: a released series is analysed 0.5 s after its release, while B's half, sent over
    # an aborted association, must wait the full quiet time (however slow the machine, nothing of B runs)
    proc = start_node(pacs, model, state, log, quiet_s=LONG_QUIET_S)
    try:
        assert set(send(first, pacs.node_port)) == {0}
        wait_for("series A done", lambda: queue_state(state, uid_a) is SeriesState.DONE)
        assert set(send(second[:8], pacs.node_port, abort=True)) == {0}  # half of B acknowledged...
        os.kill(proc.pid, signal.SIGKILL)  # ...and the node killed before B is quiet
        proc.wait(timeout=10)
    finally:
        stop_process(proc)
    # the sender resumes within the quiet time
    proc = start_node(pacs, model, state, log, quiet_s=LONG_QUIET_S)
    try:
        assert set(send(second[8:], pacs.node_port)) == {0}
        wait_for("series B done", lambda: queue_state(state, uid_b) is SeriesState.DONE)
    finally:
        stop_process(proc)
    assert proc.returncode == 0
    queue = NodeQueue(state / "queue.sqlite3")
    try:
        row_a, row_b = queue.series(uid_a), queue.series(uid_b)
        assert row_a is not None and row_b is not None
        assert row_b.instances == 16 and len(queue.files(uid_b)) == 16  # nothing acknowledged was lost
        assert row_a.analyses == 1 and row_b.analyses == 1  # the restart analysed nothing again
        for uid in (uid_a, uid_b):
            (result,) = queue.results(uid)
            assert result.state is ResultState.STORED and result.model_runs == 1
    finally:
        queue.close()
    (sr_a,) = orthanc_sr(server, study_a)
    (sr_b,) = orthanc_sr(server, study_b)
    assert len(evidence_uids(sr_a)) == 8 and len(evidence_uids(sr_b)) == 16
    assert decision(sr_a) == "Absent" and decision(sr_b) == "Present"
    text = log.read_text()
    assert "series" in text and "stored" in text
    sop_uids = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in [*first, *second]]
    for secret in (CANARY_NAME, CANARY_ID, uid_a, uid_b, study_a, study_b, *sop_uids, str(tmp_path)):
        assert secret not in text, "the node log names a patient, a UID or a path"


def test_a_result_the_pacs_refuses_is_kept_and_stored_later_without_analysing_again(
    pacs: Pacs, model: Path, tmp_path: Path
) -> None:
    server = pacs.server
    files = write_bleed_series(tmp_path / "r", 6, bleed=())
    head = dcmread(files[0], stop_before_pixels=True)
    series_uid = str(head.SeriesInstanceUID)
    engine = InferenceEngine(model, provider="cpu", threads=1, cache=PredictionCache(tmp_path / "cache"))
    wrong = PacsNode(
        name="orthanc", host="127.0.0.1", port=server.dicom_port, called_ae="NOT-ORTHANC", calling_ae=NODE_AET
    )
    ai = AiNode(NodeConfig(tmp_path / "state", wrong, quiet_s=0.0), engine)
    try:
        for path in files:
            ai.ingest(path.read_bytes())
        assert ai.run_once()
        row = ai.queue.series(series_uid)
        assert row is not None and row.state is SeriesState.STORE_PENDING and row.next_try > time.time()
        (result,) = ai.queue.results(series_uid)
        assert result.state is ResultState.STORE_PENDING and "called AE" in result.store_status
        assert (ai.spool.result_folder(result.object_file) / f"{result.object_uid}.dcm").is_file()
        assert not orthanc_sr(server, str(head.StudyInstanceUID))
    finally:
        ai.stop()
    # restarted with the right called AE: the kept object is stored when its retry is due, no new analysis
    ai = AiNode(NodeConfig(tmp_path / "state", store_target(server), quiet_s=0.0), engine)
    try:
        assert ai.run_once(now=time.time() + 3600)
        (result,) = ai.queue.results(series_uid)
        assert result.state is ResultState.STORED and result.model_runs == 1 and result.store_attempts == 2
        row = ai.queue.series(series_uid)
        assert row is not None and row.state is SeriesState.DONE and row.analyses == 1
    finally:
        ai.stop()
    (sr,) = orthanc_sr(server, str(head.StudyInstanceUID))
    assert str(sr.SOPInstanceUID) == result.object_uid


def test_watch_command_once_stores_the_result_of_todays_study(
    pacs: Pacs, model: Path, tmp_path: Path
) -> None:
    server = pacs.server
    files = write_bleed_series(tmp_path / "t", 6, bleed=(3,))
    now = datetime.now(timezone.utc)
    for path in files:  # polled from today: the module's other studies (dated 2026-01-01) are not taken
        ds = dcmread(path)
        ds.StudyDate = now.strftime("%Y%m%d")
        ds.save_as(path, enforce_file_format=True)
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    server.upload(files)
    secret = tmp_path / "secret"
    secret.write_text(PASSWORD)
    secret.chmod(0o600)
    args = [
        *("watch", "--dicomweb", server.dicomweb_url, "--user", USER, "--secret-file", str(secret)),
        # a long quiet time: the watched series is whole once retrieved, so it is analysed after the
        # release quiet time (with --quiet 0 it could be taken half-way through the batch)
        *("--state", str(tmp_path / "state"), "--quiet", "30", "--model", str(model)),
        *("--provider", "cpu", "--threads", "1", "--once", "--since", now.date().isoformat()),
    ]
    env = dict(os.environ, SLICEWISE_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run(
        [sys.executable, "-m", "viewer", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    log = done.stderr.decode()
    assert done.returncode == 0, log[-2000:]
    (sr,) = orthanc_sr(server, study_uid)
    assert len(evidence_uids(sr)) == 6 and decision(sr) == "Present"
    assert "result stored (stow-rs, 2 object(s))" in log and PASSWORD not in log and CANARY_NAME not in log


def test_kill_9_mid_analysis_then_restart_stores_one_result(pacs: Pacs, tmp_path: Path) -> None:
    slow = build_model(tmp_path / "slow.onnx", slow_matmuls=100)  # ~3 s per analysis on one thread
    state, log = tmp_path / "state", tmp_path / "node.log"
    files = write_bleed_series(tmp_path / "k", 4, bleed=(1,))
    head = dcmread(files[0], stop_before_pixels=True)
    series_uid = str(head.SeriesInstanceUID)
    proc = start_node(pacs, slow, state, log, quiet_s=0.2)
    try:
        assert set(send(files, pacs.node_port)) == {0}
        wait_for("the analysis to start", lambda: queue_state(state, series_uid) is SeriesState.ANALYSING)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        stop_process(proc)
    assert queue_state(state, series_uid) is SeriesState.ANALYSING  # killed before it finished
    proc = start_node(pacs, slow, state, log, quiet_s=0.2)
    try:
        wait_for("the series done", lambda: queue_state(state, series_uid) is SeriesState.DONE)
    finally:
        stop_process(proc)
    queue = NodeQueue(state / "queue.sqlite3")
    try:
        row = queue.series(series_uid)
        assert row is not None and row.analyses == 2 and row.instances == 4  # taken again after the kill
        (result,) = queue.results(series_uid)
        assert result.state is ResultState.STORED and result.model_runs == 1
    finally:
        queue.close()
    (sr,) = orthanc_sr(pacs.server, str(head.StudyInstanceUID))
    assert str(sr.SOPInstanceUID) == result.object_uid and decision(sr) == "Present"
