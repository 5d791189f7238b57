"""Review store: round-trip, migrations, permissions, locking, read-only cases."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.factories import CANARY_ID, CANARY_NAME
from viewer.core.errors import ReviewStoreError, SessionLockedError
from viewer.core.inference.results import ClassFinding, SliceRange, StackPrediction
from viewer.core.review import SCHEMA_VERSION, ReviewStore
from viewer.core.review.schema import MIGRATIONS

CLASSES = ("any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")


def make_prediction(
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    positives: dict[str, Sequence[tuple[int, int]]] | None = None,
    n_slices: int = 20,
) -> StackPrediction:
    """A StackPrediction whose positive classes are flagged over the given inclusive ranges."""
    positives = {"subdural": [(5, 9)]} if positives is None else positives
    if positives and "any" not in positives:
        positives = {**positives, "any": [r for rs in positives.values() for r in rs]}
    probs = np.full((n_slices, len(CLASSES)), 0.05, dtype=np.float32)
    findings = []
    for k, name in enumerate(CLASSES):
        ranges = tuple(SliceRange(a, b) for a, b in positives.get(name, ()))
        for r in ranges:
            probs[r.start : r.stop + 1, k] = 0.9
        peak = int(np.argmax(probs[:, k]))
        prob = float(probs[:, k].max())
        findings.append(
            ClassFinding(name, prob, 0.5, ranges, peak, float(probs[peak, k]), study_threshold=0.5,
                         positive=bool(ranges))
        )
    series = study_uid + ".1"
    return StackPrediction(
        stack_uid=series, study_instance_uid=study_uid, series_instance_uid=series,
        slice_uids=tuple(f"{series}.{i + 1}" for i in range(n_slices)), class_names=CLASSES,
        slice_probs=probs, study_probs=probs.max(axis=0), thresholds=(0.5,) * len(CLASSES),
        findings=tuple(findings), model_name="slicewise-ich", model_version="1.0.0", model_sha256="ab" * 32,
        provider="CPUExecutionProvider", provider_note="", elapsed_s=0.1, intended_use="Research use only.",
    )


def test_round_trip_everything_persists(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    store = ReviewStore.open(db)
    session = store.create_session("Batch A", reader="Dr Reader")
    session.add_study("1.2.3", ["/data/a"])
    session.record_ai_result(make_prediction("1.2.4"), paths=["/data/b"])
    study = session.study("1.2.4")
    sdh = next(f for f in study.findings if f.class_name == "subdural")
    assert sdh.ai_positive and sdh.ranges == (SliceRange(5, 9),) and sdh.jump_slice == sdh.peak_slice
    session.set_decision(sdh.id, "confirmed")
    session.set_correction(sdh.id, corrected_range=SliceRange(4, 9))
    edh = next(f for f in study.findings if f.class_name == "epidural")
    session.set_decision(edh.id, "rejected")
    fid = session.add_reader_finding("1.2.4", "subarachnoid", SliceRange(2, 3))
    session.set_note("1.2.4", "note text")
    session.set_impression("1.2.4", "acute SDH")
    session.set_done("1.2.4")
    session.set_last_position("1.2.4", "1.2.4.1", 7)
    session.close()
    store.close()

    store = ReviewStore.open(db)
    (info,) = store.list_sessions()
    assert (info.name, info.reader, info.progress) == ("Batch A", "Dr Reader", "1/2")
    session = store.open_session(info.id)
    assert not session.read_only
    study = session.study("1.2.4")
    got = {f.class_name: f for f in study.findings}
    assert got["subdural"].decision == "confirmed" and got["subdural"].decision_at
    assert got["subdural"].corrected_range == SliceRange(4, 9)
    assert got["epidural"].decision == "rejected"
    reader = study.finding(fid)
    assert (reader.source, reader.class_name) == ("reader", "subarachnoid")
    assert reader.ranges == (SliceRange(2, 3),)
    assert (study.note, study.impression, study.done) == ("note text", "acute SDH", True)
    assert study.ai is not None and study.ai.model_sha256 == "ab" * 32 and study.ai.positive
    assert study.ai.slice_uids[0] == "1.2.4.1.1" and study.paths == ("/data/b",)
    pos = session.last_position()
    assert pos is not None and (pos.study_uid, pos.stack_uid, pos.slice_index) == ("1.2.4", "1.2.4.1", 7)
    # worklist orders: AI-positive first, or as added
    assert [s.study_uid for s in session.worklist("ai_first")] == ["1.2.4", "1.2.3"]
    assert [s.study_uid for s in session.worklist("original")] == ["1.2.3", "1.2.4"]
    assert session.next_unreviewed("1.2.4") == "1.2.3"
    assert session.next_unreviewed("1.2.3") is None  # the only other study is done
    kinds = [e[3] for e in session.events()]
    assert kinds.count("decision") == 2 and "done" in kinds
    assert store.last_session_id() == info.id
    assert "position" not in kinds  # slice positions are saved but not audited
    session.set_decision(got["epidural"].id, None)
    assert session.study("1.2.4").finding(got["epidural"].id).decision is None
    with pytest.raises(ValueError):
        session.set_decision(got["epidural"].id, "maybe")
    session.remove_reader_finding(fid)
    with pytest.raises(ReviewStoreError):
        session.remove_reader_finding(got["subdural"].id)
    store.rename_session(info.id, "Batch B")
    assert store.list_sessions()[0].name == "Batch B"
    store.forget_last_session(info.id)  # closed on purpose: no resume offer
    assert store.last_session_id() is None


def test_rerecording_ai_result_keeps_decisions(tmp_path: Path) -> None:
    store = ReviewStore.open(tmp_path / "r.sqlite3")
    session = store.create_session("s")
    session.record_ai_result(make_prediction("9.9"))
    sdh = next(f for f in session.study("9.9").findings if f.class_name == "subdural")
    session.set_decision(sdh.id, "uncertain")
    session.record_ai_result(make_prediction("9.9", {"subdural": [(6, 8)]}))
    study = session.study("9.9")
    assert len(study.findings) == len(CLASSES)
    again = study.finding(sdh.id)
    assert again.decision == "uncertain" and again.ranges == (SliceRange(6, 8),)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_files_are_private_and_in_user_data(_private_user_data: Path) -> None:
    store = ReviewStore.open()
    session = store.create_session("s")
    session.add_study("1.2")
    assert store.path.is_relative_to(_private_user_data)
    for p in (store.path, Path(f"{store.path}-wal"), Path(f"{store.path}-shm")):
        assert p.exists() and _mode(p) == 0o600, p
    assert _mode(store.path.parent) == 0o700
    for lock in (store.path.parent / "locks").iterdir():
        assert _mode(lock) == 0o600
    assert store.path.name == "review-sessions.sqlite3"
    assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_no_patient_identifiers_in_file_names_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = ReviewStore.open(tmp_path / "r.sqlite3")
    session = store.create_session(f"{CANARY_NAME} batch", reader=CANARY_NAME)
    session.record_ai_result(make_prediction("7.7"), paths=[f"/x/{CANARY_NAME}_{CANARY_ID}/1.dcm"])
    session.set_note("7.7", f"patient {CANARY_NAME} {CANARY_ID}")
    f = session.study("7.7").findings[0]
    session.set_decision(f.id, "confirmed")
    session.close()
    other = store.open_session(session.id)
    other.close()
    names = " ".join(str(p) for p in tmp_path.rglob("*"))
    text = caplog.text
    for canary in (CANARY_NAME, CANARY_ID, "CANARY"):
        assert canary not in names
        assert canary not in text
    assert caplog.records  # the store does log (so the check above is meaningful)


def test_second_open_is_read_only_with_clear_message(tmp_path: Path) -> None:
    store = ReviewStore.open(tmp_path / "r.sqlite3")
    first = store.create_session("s")
    first.add_study("1.1")
    second = store.open_session(first.id)  # a second window of the same process
    assert second.read_only and "another window" in second.read_only_reason
    assert f"PID {os.getpid()}" in second.read_only_reason
    with pytest.raises(SessionLockedError):
        second.set_done("1.1")
    with pytest.raises(SessionLockedError):
        store.open_session(first.id, require_write=True)
    assert [s.study_uid for s in second.worklist()] == ["1.1"]  # reading works
    first.close()
    third = store.open_session(first.id, require_write=True)
    third.set_done("1.1")
    assert third.study("1.1").done
    with pytest.raises(ReviewStoreError):
        first.set_done("1.1", False)  # a closed session cannot write


def _v1_database(path: Path) -> None:
    """A version-1 database written by hand (as the first release created it)."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL,
                                     app_version TEXT NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
        CREATE TABLE sessions (id TEXT PRIMARY KEY, name TEXT NOT NULL, reader TEXT NOT NULL,
                               created_at TEXT NOT NULL, modified_at TEXT NOT NULL);
        CREATE TABLE studies (id INTEGER PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions(id),
            study_uid TEXT NOT NULL, position INTEGER NOT NULL, paths TEXT NOT NULL DEFAULT '[]',
            note TEXT NOT NULL DEFAULT '', note_at TEXT, impression TEXT NOT NULL DEFAULT '',
            impression_at TEXT, done INTEGER NOT NULL DEFAULT 0, done_at TEXT, added_at TEXT NOT NULL,
            updated_at TEXT NOT NULL, UNIQUE (session_id, study_uid));
        CREATE TABLE ai_results (study_id INTEGER PRIMARY KEY, stack_uid TEXT NOT NULL,
            series_uid TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
            model_sha256 TEXT NOT NULL, class_names TEXT NOT NULL, study_probs TEXT NOT NULL,
            thresholds TEXT NOT NULL, slice_uids TEXT NOT NULL, sop_class_uid TEXT NOT NULL,
            badge TEXT NOT NULL, positive INTEGER NOT NULL, recorded_at TEXT NOT NULL);
        CREATE TABLE findings (id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL, source TEXT NOT NULL,
            class_name TEXT NOT NULL, ai_positive INTEGER, study_prob REAL, threshold REAL,
            ranges TEXT NOT NULL DEFAULT '[]', peak_slice INTEGER, decision TEXT, decision_at TEXT,
            corrected_start INTEGER, corrected_stop INTEGER, created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL);
        CREATE INDEX findings_study ON findings (study_id);
        INSERT INTO schema_version VALUES (1, '2026-01-01T00:00:00+00:00', '0.0.1');
        INSERT INTO sessions VALUES ('s1', 'Old batch', 'R', '2026-01-01', '2026-01-01');
        INSERT INTO studies (id, session_id, study_uid, position, done, added_at, updated_at)
            VALUES (1, 's1', '5.5', 0, 1, '2026-01-01', '2026-01-01');
        INSERT INTO findings (study_id, source, class_name, ranges, decision, decision_at, created_at,
                              updated_at)
            VALUES (1, 'reader', 'subdural', '[[3, 4]]', 'confirmed', '2026-01-01', '2026-01-01',
                    '2026-01-01');
        """
    )
    conn.commit()
    conn.close()


def test_migration_from_v1_keeps_data_and_backs_up(tmp_path: Path) -> None:
    assert SCHEMA_VERSION == len(MIGRATIONS) == 3
    db = tmp_path / "r.sqlite3"
    _v1_database(db)
    store = ReviewStore.open(db)
    assert store.schema_version == SCHEMA_VERSION and store.migrated_from == 1
    assert store.backup_path == tmp_path / "r.sqlite3.v1.bak"
    bak = sqlite3.connect(store.backup_path)
    assert bak.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
    assert bak.execute("SELECT COUNT(*) FROM findings").fetchone()[0] == 1
    bak.close()
    if os.name == "posix":
        assert _mode(store.backup_path) == 0o600
    (info,) = store.list_sessions()
    assert info.progress == "1/1"
    session = store.open_session(info.id)
    (finding,) = session.study("5.5").findings
    assert finding.decision == "confirmed" and finding.corrected_class is None
    session.set_correction(finding.id, corrected_class="epidural")  # a v2 column
    session.set_last_position("5.5", "5.5.1", 3)  # a v2 table
    assert session.study("5.5").finding(finding.id).corrected_class == "epidural"
    store.close()
    # reopening a current database neither migrates nor backs up again
    again = ReviewStore.open(db)
    assert again.migrated_from is None and again.backup_path is None


def test_newer_schema_opens_read_only(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    store = ReviewStore.open(db)
    sid = store.create_session("s").id
    store.close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_version VALUES (?, 'x', '9.9')", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    store = ReviewStore.open(db)
    assert store.read_only and "newer Slicewise" in store.read_only_reason
    assert [s.id for s in store.list_sessions()] == [sid]
    session = store.open_session(sid)
    assert session.read_only
    with pytest.raises(ReviewStoreError, match="newer"):
        session.add_study("1.2")
    with pytest.raises(ReviewStoreError):
        store.create_session("t")


def test_damaged_file_is_refused_clearly(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ReviewStoreError, match="review database"):
        ReviewStore.open(db)


def test_shared_store_is_one_object_per_path(tmp_path: Path) -> None:
    a = ReviewStore.shared(tmp_path / "r.sqlite3")
    b = ReviewStore.shared(tmp_path / "r.sqlite3")
    assert a is b
    a.close()
    assert ReviewStore.shared(tmp_path / "r.sqlite3") is not a
