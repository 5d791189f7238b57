"""The AI node without a PACS: the durable queue (quiet rule, restart, re-sends), intake checks, out-of-scope
refusals, a store that cannot reach the PACS, the spool's names and modes, the store target and the CLI's
usage errors. (The node against a real Orthanc: tests/pacs/test_ainode.py.)"""

from __future__ import annotations

import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.core.inference_models import build_model, write_bleed_series
from tests.factories import CANARY_ID, CANARY_NAME
from viewer.core.ainode.node import AiNode, Ingested, NodeConfig, StoreProtocol
from viewer.core.ainode.queue import NodeQueue, ResultState, SeriesState
from viewer.core.ainode.target import parse_store_target
from viewer.core.applicability.codes import ScopeCode
from viewer.core.errors import PacsConfigError, PacsResponseError
from viewer.core.inference.cache import PredictionCache
from viewer.core.inference.engine import InferenceEngine
from viewer.core.pacs import PacsNode
from viewer.node_cli import main as node_main


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[AiNode]:
    engine = InferenceEngine(
        build_model(tmp_path / "m.onnx"), provider="cpu", threads=1, cache=PredictionCache(tmp_path / "cache")
    )
    nowhere = PacsNode(name="down", host="127.0.0.1", port=closed_port(), called_ae="PACS", calling_ae="AI")
    ai = AiNode(NodeConfig(tmp_path / "state", nowhere, quiet_s=5.0), engine)
    yield ai
    ai.stop()


def test_queue_quiet_rule_resends_and_restart(tmp_path: Path) -> None:
    queue = NodeQueue(tmp_path / "q.sqlite3")
    assert queue.add_instance("1.1", "S1", "ST", "a/1.dcm")
    assert not queue.add_instance("1.1", "S1", "ST", "a/1b.dcm")  # a re-send: the first copy is kept
    assert queue.add_instance("1.2", "S1", "ST", "a/2.dcm")
    row = queue.series("S1")
    assert row is not None and row.state is SeriesState.RECEIVING and row.instances == 2
    assert queue.files("S1") == ["a/1.dcm", "a/2.dcm"]
    assert queue.take_due(5.0) is None  # not quiet yet
    taken = queue.take_due(5.0, now=row.last_received + 5.0)
    assert taken is not None and taken.series_uid == "S1"
    assert queue.take_due(5.0, now=row.last_received + 60) is None  # taken once
    queue.close()
    # killed while analysing: the restart takes the series back, quiet from now
    queue = NodeQueue(tmp_path / "q.sqlite3")
    assert queue.recover() == 1
    row = queue.series("S1")
    assert row is not None and row.state is SeriesState.RECEIVING
    assert queue.take_due(5.0) is None
    assert queue.take_due(5.0, now=row.last_received + 5.0) is not None
    # an instance arriving while the series is analysed keeps it receiving
    assert queue.add_instance("1.3", "S1", "ST", "a/3.dcm")
    queue.finish_series("S1", SeriesState.DONE)
    row = queue.series("S1")
    assert row is not None and row.state is SeriesState.RECEIVING and row.instances == 3
    queue.close()
    assert stat.S_IMODE((tmp_path / "q.sqlite3").stat().st_mode) == 0o600


def test_log_tags_are_salted_hashes(tmp_path: Path) -> None:
    one, two = NodeQueue(tmp_path / "1.sqlite3"), NodeQueue(tmp_path / "2.sqlite3")
    uid = "1.2.840.113619.2.55.3"
    assert one.tag(uid) == one.tag(uid) and one.tag(uid) != two.tag(uid)
    assert uid not in one.tag(uid) and len(one.tag(uid)) == 12
    one.close()
    two.close()


def test_ingest_spools_instances_under_hashed_names(node: AiNode, tmp_path: Path) -> None:
    files = write_bleed_series(tmp_path / "s", 4, bleed=())
    assert [node.ingest(p.read_bytes()) for p in files] == [Ingested.NEW] * 4
    assert node.ingest(files[0].read_bytes()) is Ingested.DUPLICATE
    head = dcmread(files[0], stop_before_pixels=True)
    names = node.queue.files(str(head.SeriesInstanceUID))
    assert len(names) == 4
    for name in names:
        path = node.spool.path(name)
        assert path.read_bytes() in {p.read_bytes() for p in files}
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for uid in (str(head.SeriesInstanceUID), str(head.StudyInstanceUID), CANARY_NAME, CANARY_ID):
            assert uid not in str(path)
    assert stat.S_IMODE(node.spool.instances.stat().st_mode) == 0o700


def test_ingest_refuses_what_is_not_a_whole_instance(node: AiNode, tmp_path: Path) -> None:
    (path,) = write_bleed_series(tmp_path / "s", 1, bleed=())
    data = path.read_bytes()
    with pytest.raises(PacsResponseError, match="truncated"):
        node.ingest(data[:-1000])
    with pytest.raises(PacsResponseError, match="not a readable DICOM"):
        node.ingest(b"\0" * 128 + b"NOPE" + b"\0" * 64)
    assert node.queue.all_series() == [] and not any(node.spool.instances.iterdir())


def test_out_of_scope_is_refused_and_an_unreachable_pacs_keeps_the_result(
    node: AiNode, tmp_path: Path
) -> None:
    import tests.scope_cases as sc

    mr = sorted(sc.write_mr(tmp_path / "mr").glob("*.dcm"))
    ct = write_bleed_series(tmp_path / "ct", 6, bleed=(2, 3))
    for path in [*mr, *ct]:
        node.ingest(path.read_bytes())
    later = time.time() + 60  # both series quiet
    assert node.run_once(now=later) and node.run_once(now=later)
    assert not node.run_once(now=time.time() + 1)  # the store retry is not due yet
    mr_uid = str(dcmread(mr[0], stop_before_pixels=True).SeriesInstanceUID)
    ct_uid = str(dcmread(ct[0], stop_before_pixels=True).SeriesInstanceUID)
    mr_row, ct_row = node.queue.series(mr_uid), node.queue.series(ct_uid)
    assert mr_row is not None and mr_row.state is SeriesState.REFUSED and "MR" in mr_row.reason
    (refused,) = node.queue.results(mr_uid)
    assert refused.state is ResultState.REFUSED and ScopeCode.MODALITY.value in refused.codes
    assert refused.model_runs == 0 and refused.object_file == ""
    assert ct_row is not None and ct_row.state is SeriesState.STORE_PENDING
    (pending,) = node.queue.results(ct_uid)
    assert pending.state is ResultState.STORE_PENDING and pending.model_runs == 1
    assert "PacsUnreachableError" in pending.store_status and "refused" in pending.store_status
    assert pending.decision.startswith("ICH suspected")
    objects = sorted(node.spool.result_folder(pending.object_file).glob("*.dcm"))
    assert sorted(dcmread(p).Modality for p in objects) == ["KO", "SR"]  # positive: the AI SR and a KOS
    sr = dcmread(node.spool.result_folder(pending.object_file) / f"{pending.object_uid}.dcm")
    assert sr.Modality == "SR" and str(sr.SOPInstanceUID) == pending.object_uid
    assert str(sr.PatientID) == CANARY_ID  # with identity: it goes back to the study in the PACS
    assert str(sr.StudyInstanceUID) == str(dcmread(ct[0], stop_before_pixels=True).StudyInstanceUID)
    # the retry (backoff) does not analyse again
    assert node.run_once(now=time.time() + 3600)
    (pending,) = node.queue.results(ct_uid)
    assert pending.model_runs == 1 and pending.store_attempts == 2
    row = node.queue.series(ct_uid)
    assert row is not None and row.analyses == 1 and row.attempts == 2


def test_store_targets() -> None:
    node, via = parse_store_target("dicom://ORTHANC@pacs.local:4242", calling_ae="SLICEWISE_AI")
    assert (node.host, node.port, node.called_ae, node.calling_ae) == (
        "pacs.local",
        4242,
        "ORTHANC",
        "SLICEWISE_AI",
    )
    assert via is StoreProtocol.DIMSE
    node, via = parse_store_target("https://pacs/dicom-web", calling_ae="X", username="ai", secret="pw")
    assert via is StoreProtocol.DICOMWEB and node.username == "ai" and node.secret == "pw"
    assert "pw" not in repr(node)
    for bad in (
        "dicom://pacs:4242",
        "ftp://pacs",
        "https://user:pw@pacs/dicom-web",
        "dicom://TOO_LONG_AE_TITLE_X@h:1",
    ):
        with pytest.raises(PacsConfigError):
            parse_store_target(bad, calling_ae="X")


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert node_main("listen", ["--port", "0"]) == 2
    assert "--ae-title" in capsys.readouterr().err
    code = node_main(
        "listen", ["--ae-title", "AI", "--port", "0", "--store-to", "ftp://x", "--state", str(tmp_path / "s")]
    )
    assert code == 2 and "dicom://CALLED_AE@host:port" in capsys.readouterr().err
    missing = str(tmp_path / "missing")
    assert node_main("watch", ["--dicomweb", "http://127.0.0.1:1/dicom-web", "--secret-file", missing]) == 2
    assert "cannot read the secret file" in capsys.readouterr().err


def test_finished_series_leave_the_spool_after_the_retention_time(node: AiNode, tmp_path: Path) -> None:
    import tests.scope_cases as sc

    mr = sorted(sc.write_mr(tmp_path / "mr").glob("*.dcm"))
    ct = write_bleed_series(tmp_path / "ct", 4, bleed=())
    for path in [*mr, *ct]:
        node.ingest(path.read_bytes())
    later = time.time() + 60
    assert node.run_once(now=later) and node.run_once(now=later)  # MR refused; CT waits for the PACS
    mr_uid = str(dcmread(mr[0], stop_before_pixels=True).SeriesInstanceUID)
    ct_uid = str(dcmread(ct[0], stop_before_pixels=True).SeriesInstanceUID)
    mr_files = [node.spool.path(n) for n in node.queue.files(mr_uid)]
    assert node.purge() == 0  # within the retention time
    assert node.purge(now=time.time() + node.config.keep_s + 1) == 1  # the refused MR only
    assert not any(p.exists() for p in mr_files) and not mr_files[0].parent.exists()
    assert node.queue.series(mr_uid) is None and node.queue.results(mr_uid)  # the decision is kept
    ct_row = node.queue.series(ct_uid)
    assert (
        ct_row is not None
        and ct_row.state is SeriesState.STORE_PENDING
        and len(node.queue.files(ct_uid)) == 4
    )
    assert node.ingest(mr[0].read_bytes()) is Ingested.NEW  # a late re-send is received again


def test_a_released_series_is_due_after_the_release_quiet_time(tmp_path: Path) -> None:
    queue = NodeQueue(tmp_path / "q.sqlite3")
    queue.add_instance("1.1", "S1", "ST", "a/1.dcm")
    queue.add_instance("2.1", "S2", "ST", "b/1.dcm")
    row = queue.series("S1")
    assert row is not None
    t0 = row.last_received
    queue.mark_released(["S1"], now=t0 + 0.1)
    assert queue.take_due(30.0, now=t0 + 0.3, release_quiet_s=0.5) is None  # released 0.2 s ago
    taken = queue.take_due(30.0, now=t0 + 0.7, release_quiet_s=0.5)
    assert taken is not None and taken.series_uid == "S1"
    assert queue.take_due(30.0, now=t0 + 0.7, release_quiet_s=0.5) is None  # S2 was never released
    # a series continued by another association after its release waits the full quiet time again
    queue.mark_released(["S2"], now=time.time())
    queue.add_instance("2.2", "S2", "ST", "b/2.dcm")
    later = time.time() + 1.0
    assert queue.take_due(30.0, now=later, release_quiet_s=0.5) is None
    assert queue.take_due(30.0, now=later + 30.0, release_quiet_s=0.5) is not None
    queue.close()


def test_a_version_1_queue_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "q.sqlite3"
    queue = NodeQueue(path)
    queue.add_instance("1.1", "S1", "ST", "a/1.dcm")
    queue.close()
    db = sqlite3.connect(str(path))  # what schema 1 wrote: no `released` column
    db.execute("ALTER TABLE series DROP COLUMN released")
    db.execute("UPDATE meta SET value='1' WHERE key='schema'")
    db.commit()
    db.close()
    queue = NodeQueue(path)
    assert queue.get_meta("schema") == "2"
    row = queue.series("S1")
    assert row is not None and row.state is SeriesState.RECEIVING and row.instances == 1
    queue.mark_released(["S1"], now=row.last_received + 0.1)
    assert queue.take_due(30.0, now=row.last_received + 1.0, release_quiet_s=0.5) is not None
    queue.close()


def _send_series(port: int, files: list[Path], *, abort: bool) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    ae = AE(ae_title="CT_SCANNER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="SLICEWISE_AI")
    assert assoc.is_established
    assert [int(assoc.send_c_store(p).Status) for p in files] == [0] * len(files)
    assoc.abort() if abort else assoc.release()


def test_the_scp_analyses_a_series_once_its_sender_releases_the_association(tmp_path: Path) -> None:
    """With a 60 s quiet time, a series whose association was released is taken within seconds; one whose
    association was aborted keeps waiting (the sender may come back)."""
    from viewer.core.ainode.scp import IntakeScp
    from viewer.core.pacs import LocalAe

    engine = InferenceEngine(
        build_model(tmp_path / "m.onnx"), provider="cpu", threads=1, cache=PredictionCache(tmp_path / "cache")
    )
    nowhere = PacsNode(name="down", host="127.0.0.1", port=closed_port(), called_ae="PACS", calling_ae="AI")
    config = NodeConfig(tmp_path / "state", nowhere, quiet_s=60.0, release_quiet_s=0.2, poll_s=0.05)
    ai = AiNode(config, engine)
    scp = IntakeScp(ai, LocalAe("SLICEWISE_AI", "127.0.0.1", 0), allowed_calling_aes=["CT_SCANNER"])
    released = write_bleed_series(tmp_path / "released", 4, bleed=(1, 2))
    aborted = write_bleed_series(tmp_path / "aborted", 4, bleed=(1, 2))
    uid_released = str(dcmread(released[0], stop_before_pixels=True).SeriesInstanceUID)
    uid_aborted = str(dcmread(aborted[0], stop_before_pixels=True).SeriesInstanceUID)
    try:
        port = scp.start()
        ai.start()
        _send_series(port, aborted, abort=True)
        _send_series(port, released, abort=False)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            row = ai.queue.series(uid_released)
            if row is not None and row.state not in (SeriesState.RECEIVING, SeriesState.ANALYSING):
                break
            time.sleep(0.05)
        row = ai.queue.series(uid_released)
        assert row is not None and row.state is not SeriesState.RECEIVING and row.analyses == 1
        time.sleep(0.5)  # the release quiet time has passed twice over for the aborted series too
        other = ai.queue.series(uid_aborted)
        assert other is not None and other.state is SeriesState.RECEIVING and other.analyses == 0
    finally:
        scp.stop()
        ai.stop(timeout_s=10)
