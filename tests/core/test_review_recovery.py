"""Review store faults beyond kill -9: a damaged ``-wal``, an empty file, read-only files and folders,
interrupted migrations (issue 14, RELIABILITY.md §5).

This file is also the child program: ``python test_review_recovery.py writer DB N`` adds N reader
findings, printing an acknowledgement after each commit returns, then dies without closing the
database (``os._exit``), so its write-ahead log is left as a crash leaves it.
"""

from __future__ import annotations

import os
import random
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.test_review_store import _v1_database
from viewer.core.errors import ReviewStoreError
from viewer.core.review import ReviewStore, StoreWarningCode
from viewer.core.review.export import export_csv

ROOT = Path(__file__).resolve().parents[2]
STUDY = "1.2.826.0.1.3680043.8.498.91"
WAL_HEADER = 32
WAL_FRAME_HEADER = 24


def _child_writer(db: str, n: str) -> None:
    from viewer.core.inference.results import SliceRange

    store = ReviewStore.open(db)
    session = store.create_session("wal")
    session.add_study(STUDY)
    for i in range(int(n)):
        session.add_reader_finding(STUDY, "subdural", SliceRange(i, i))
        sys.stdout.write(f"F {i}\n")
        sys.stdout.flush()
    os._exit(0)  # like a crash: no close, no checkpoint, the WAL stays as it is


def _write_and_die(db: Path, n: int) -> list[int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, __file__, "writer", str(db), str(n)], env=env, text=True,
                         capture_output=True, timeout=120, check=True).stdout
    return [int(line.split()[1]) for line in out.splitlines() if line.startswith("F ")]


def _flip_bytes_in_frame(wal: Path, frame_fraction: float, n_bytes: int, seed: int) -> None:
    data = bytearray(wal.read_bytes())
    page_size = int.from_bytes(data[8:12], "big")
    frame = WAL_FRAME_HEADER + page_size
    n_frames = (len(data) - WAL_HEADER) // frame
    assert n_frames > 100, n_frames  # the writer's commits are still in the log, not checkpointed
    k = int(n_frames * frame_fraction)
    start = WAL_HEADER + k * frame + WAL_FRAME_HEADER
    rng = random.Random(seed)
    for pos in rng.sample(range(start, start + page_size), n_bytes):
        data[pos] ^= 0xFF
    wal.write_bytes(bytes(data))


def test_damaged_wal_is_detected_by_the_high_water_mark(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    acked = _write_and_die(db, 100)
    assert acked == list(range(100))
    wal = Path(f"{db}-wal")
    _flip_bytes_in_frame(wal, 0.6, 20, seed=7)
    damaged = wal.read_bytes()

    store = ReviewStore.open(db)
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    kept = {int(r[0]) for r in conn.execute("SELECT json_extract(ranges, '$[0][0]') FROM findings")}
    conn.close()
    lost = len(acked) - len(kept)
    assert lost > 0  # SQLite dropped every commit from the damaged frame on, without an error
    (warning,) = store.warnings
    assert warning.code == StoreWarningCode.BEHIND
    assert warning.missing_changes == lost  # one acknowledged change per finding
    assert f"{lost} acknowledged change(s) are missing" in warning.message
    assert warning.kept_aside and (tmp_path / warning.kept_aside[0]).read_bytes() == damaged
    if os.name == "posix":
        assert stat.S_IMODE((tmp_path / warning.kept_aside[0]).stat().st_mode) == 0o600
    store.close()

    again = ReviewStore.open(db)  # nothing changed since: it still warns
    assert [w.code for w in again.warnings] == [StoreWarningCode.BEHIND]
    session = again.open_session(again.list_sessions()[0].id)
    session.set_note(STUDY, "after the loss")  # a new change: numbered above the lost ones
    session.close()
    again.close()
    assert ReviewStore.open(db).warnings == ()


def test_undamaged_wal_after_a_crash_opens_without_warning(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    acked = _write_and_die(db, 30)
    store = ReviewStore.open(db)
    assert store.warnings == ()
    session = store.open_session(store.list_sessions()[0].id)
    assert sorted(f.ranges[0].start for f in session.study(STUDY).findings) == acked


def test_lost_database_file_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    store = ReviewStore.open(db)
    session = store.create_session("s")
    session.add_study("1.2")
    session.set_done("1.2")
    session.close()
    store.close()
    db.unlink()
    store = ReviewStore.open(db)
    (warning,) = store.warnings
    assert warning.code == StoreWarningCode.BEHIND and warning.missing_changes >= 3
    assert store.list_sessions() == []


def test_log_without_its_database_is_never_replayed_into_a_new_one(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    _write_and_die(db, 20)  # a crash leaves a -wal full of commits ...
    db.unlink()  # ... and the database goes (a sync tool, a restore of only one file)
    store = ReviewStore.open(db)
    codes = [w.code for w in store.warnings]
    assert StoreWarningCode.ORPHAN_LOG in codes and StoreWarningCode.BEHIND in codes
    orphan = next(w for w in store.warnings if w.code == StoreWarningCode.ORPHAN_LOG)
    assert (tmp_path / orphan.kept_aside[0]).stat().st_size > 0
    assert store.list_sessions() == []  # a fresh database, not half of the old one


def test_two_processes_creating_the_store_at_once_share_one_file(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import sys; from viewer.core.review import ReviewStore; s = ReviewStore.open(sys.argv[1]); "
            "print(len(s.warnings), s.create_session('x').id)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], env=env, text=True,
                              stdout=subprocess.PIPE) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert [o[0] for o in outs] == ["0"] * 4  # nobody found an empty file to set aside
    store = ReviewStore.open(db)
    assert sorted(s.id for s in store.list_sessions()) == sorted(o[1] for o in outs)


def test_a_replaced_database_is_protected_from_its_first_change(tmp_path: Path) -> None:
    from viewer.core.review.highwater import HighWater, path_for, read_mark

    db = tmp_path / "r.sqlite3"
    _store_with_a_session(db)  # several changes: the side file's slots hold high numbers
    old = read_mark(path_for(db))
    assert old is not None and old.seq >= 4
    other = tmp_path / "other.sqlite3"
    store = ReviewStore.open(other)
    store.create_session("replacement").close()  # changes in another database...
    store.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    other.replace(db)  # ... put in its place (a restore from a backup, say)
    store = ReviewStore.open(db)
    assert store.warnings == ()  # another database file: nothing of it was lost
    new = read_mark(path_for(db))
    assert new is not None and new.store_id == store.store_id and new.seq < old.seq
    session = store.open_session(store.list_sessions()[0].id)
    session.add_study("1.3")  # its first change after the swap is what the mark holds
    assert read_mark(path_for(db)) == HighWater(store.store_id, new.seq + 2)
    store.close()


def test_empty_database_file_is_kept_aside_with_a_warning(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    db.write_bytes(b"")
    store = ReviewStore.open(db)
    (warning,) = store.warnings
    assert warning.code == StoreWarningCode.EMPTY_FILE and "0 bytes" in warning.message
    aside = tmp_path / warning.kept_aside[0]
    assert aside.exists() and aside.stat().st_size == 0 and aside.name.startswith("r.sqlite3.empty-")
    store.create_session("new").close()  # the new database works
    store.close()
    assert ReviewStore.open(db).warnings == ()


def _store_with_a_session(db: Path) -> str:
    store = ReviewStore.open(db)
    session = store.create_session("s")
    session.add_study("1.2")
    session.set_note("1.2", "note")
    sid = session.id
    session.close()
    store.close()
    return sid


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_read_only_folder_opens_read_only_and_keeps_its_mode(tmp_path: Path) -> None:
    folder = tmp_path / "review"
    folder.mkdir()
    db = folder / "r.sqlite3"
    sid = _store_with_a_session(db)
    for p in folder.iterdir():
        p.chmod(0o400)
    folder.chmod(0o500)
    try:
        store = ReviewStore.open(db)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o500  # the user's choice stands
        assert store.read_only and "read-only" in store.read_only_reason
        assert "permissions" in store.read_only_reason
        session = store.open_session(sid)
        assert session.read_only and session.study("1.2").note == "note"
        with pytest.raises(ReviewStoreError):
            session.set_done("1.2")
        out = export_csv(session, tmp_path / "out.csv")  # reading and exporting work
        assert "1.2" in out.read_text()
        store.close()
    finally:
        folder.chmod(0o700)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_read_only_file_in_a_writable_folder_opens_read_only(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    sid = _store_with_a_session(db)
    db.chmod(0o400)
    store = ReviewStore.open(db)
    assert store.read_only and "permissions" in store.read_only_reason
    assert store.open_session(sid).study("1.2").note == "note"
    assert stat.S_IMODE(db.stat().st_mode) == 0o400


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_private_folder_is_tightened_but_never_loosened(tmp_path: Path) -> None:
    from viewer.core.review.fileutil import private_dir

    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert stat.S_IMODE(private_dir(loose).stat().st_mode) == 0o700
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    assert stat.S_IMODE(private_dir(locked).stat().st_mode) == 0o500
    locked.chmod(0o700)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_read_only_user_data_folder_stays_read_only(_private_user_data: Path) -> None:
    from viewer.core.paths import user_data_path

    sid = _store_with_a_session(ReviewStore.default_path())
    review = ReviewStore.default_path().parent
    _private_user_data.chmod(0o500)
    review.chmod(0o500)
    try:
        assert user_data_path() == _private_user_data
        assert stat.S_IMODE(_private_user_data.stat().st_mode) == 0o500
        store = ReviewStore.open()
        assert store.read_only and store.open_session(sid).study("1.2").note == "note"
        assert stat.S_IMODE(review.stat().st_mode) == 0o500
    finally:
        review.chmod(0o700)
        _private_user_data.chmod(0o700)


def test_interrupted_migrations_leave_one_backup(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    _v1_database(db)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE positions (x)")  # makes the v2 step fail, as an interruption would
    conn.commit()
    conn.close()
    for _ in range(3):
        with pytest.raises(ReviewStoreError, match="Migrating"):
            ReviewStore.open(db)
    assert sorted(p.name for p in tmp_path.iterdir() if ".bak" in p.name) == ["r.sqlite3.v1.bak"]
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE positions")
    conn.commit()
    conn.close()
    store = ReviewStore.open(db)
    assert store.migrated_from == 1 and store.backup_path == tmp_path / "r.sqlite3.v1.bak"
    assert sorted(p.name for p in tmp_path.iterdir() if ".bak" in p.name) == ["r.sqlite3.v1.bak"]
    bak = sqlite3.connect(store.backup_path)
    assert bak.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
    bak.close()


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        _child_writer(sys.argv[2], sys.argv[3])
