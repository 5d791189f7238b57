"""kill -9 durability and multi-process access of the review store (RELIABILITY.md T6, T7).

This file is also the child program: ``python test_review_durability.py writer DB SESSION`` records
decisions forever, printing an acknowledgement after each commit returns.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUDY = "1.2.826.0.1.3680043.8.498.77"
DECISION_CYCLE = ("confirmed", "rejected", "uncertain")


def _child_writer(db: str, session_id: str) -> None:
    from viewer.core.inference.results import SliceRange
    from viewer.core.review import ReviewStore

    store = ReviewStore.open(db)
    session = store.open_session(session_id, require_write=True)
    existing = [f.ranges[0].start for f in session.study(STUDY).findings]
    i = max(existing, default=-1) + 1
    out = sys.stdout
    out.write("READY\n")
    out.flush()
    while True:
        fid = session.add_reader_finding(STUDY, "subdural", SliceRange(i, i))
        out.write(f"F {i} {fid}\n")
        out.flush()
        session.set_decision(fid, DECISION_CYCLE[i % 3])
        out.write(f"D {i}\n")
        out.flush()
        session.set_note(STUDY, f"note {i}")
        out.write(f"N {i}\n")
        out.flush()
        i += 1


def _child_concurrent(db: str, session_id: str, n: str) -> None:
    """Hold a session for writing and write ``n`` decisions through SQLite's locking."""
    from viewer.core.errors import SessionLockedError
    from viewer.core.inference.results import SliceRange
    from viewer.core.review import ReviewStore

    store = ReviewStore.open(db)
    try:
        session = store.open_session(session_id, require_write=True)
    except SessionLockedError as exc:
        print(f"LOCKED {exc}", flush=True)
        return
    print("WRITER", flush=True)
    for i in range(int(n)):
        fid = session.add_reader_finding(STUDY, "epidural", SliceRange(i, i))
        session.set_decision(fid, DECISION_CYCLE[i % 3])
    print("DONE", flush=True)
    time.sleep(2.0)  # keep the lock a little so the sibling sees it


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _new_session(db: Path) -> str:
    from viewer.core.review import ReviewStore

    store = ReviewStore.open(db)
    session = store.create_session("durability")
    session.add_study(STUDY)
    sid = session.id
    session.close()
    store.close()
    return sid


def _zygote() -> None:
    """Fork server: import once, then fork one writer per 'go DB SESSION' line (fast restarts).

    Prints 'PID n' for each child and 'EXIT n status' once it is reaped, so every line the child
    wrote before it died comes before its EXIT line.
    """
    import viewer.core.review  # noqa: F401  (warm imports, shared by every child)

    for line in sys.stdin:
        _go, db, sid = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                _child_writer(db, sid)
            finally:
                os._exit(1)
        # one write() per line: print() may write the text and its newline separately, and a child's
        # line can land between them on the shared pipe ('PID 15387READY' was seen under load)
        sys.stdout.write(f"PID {pid}\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"EXIT {pid} {status}\n")
        sys.stdout.flush()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="SIGKILL + fork")
def test_kill_9_never_loses_an_acknowledged_decision(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    sid = _new_session(db)
    rng = random.Random(1234)
    acked_f: dict[int, int] = {}
    acked_d: set[int] = set()
    acked_n = -1
    kills = 300
    zygote = subprocess.Popen([sys.executable, __file__, "zygote"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=_env(), text=True)
    assert zygote.stdin is not None and zygote.stdout is not None
    def record(kind: str, num: str, rest: list[str]) -> None:
        nonlocal acked_n
        if kind == "F":
            acked_f[int(num)] = int(rest[0])
        elif kind == "D":
            acked_d.add(int(num))
        elif kind == "N":
            acked_n = max(acked_n, int(num))

    try:
        for _ in range(kills):
            zygote.stdin.write(f"go {db} {sid}\n")
            zygote.stdin.flush()
            pid, decided = None, False
            # kill once this writer has acknowledged a decision (so every life does real work, however
            # slow the disk), then at a random moment of the writes that follow
            while pid is None or not decided:
                line = zygote.stdout.readline().split()
                assert line, "the fork server died"
                if line[0] == "PID":
                    pid = int(line[1])
                elif line[0] in ("F", "D", "N"):
                    record(line[0], line[1], line[2:])
                    decided = decided or line[0] == "D"
            time.sleep(rng.uniform(0.0, 0.02))
            os.kill(pid, signal.SIGKILL)
            while True:
                kind, num, *rest = zygote.stdout.readline().split()
                if kind == "EXIT":
                    assert os.WIFSIGNALED(int(rest[0])) and os.WTERMSIG(int(rest[0])) == signal.SIGKILL
                    break
                record(kind, num, rest)
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=30)
    assert len(acked_d) > kills  # the writer did real work between kills

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    from viewer.core.review import ReviewStore

    store = ReviewStore.open(db)
    assert store.warnings == ()  # the high-water mark never runs ahead of what was committed
    session = store.open_session(sid)
    study = session.study(STUDY)
    by_start = {f.ranges[0].start: f for f in study.findings}
    missing = [i for i in acked_f if i not in by_start or by_start[i].id != acked_f[i]]
    assert missing == []
    wrong = [i for i in acked_d if by_start[i].decision != DECISION_CYCLE[i % 3]]
    assert wrong == []
    # the note is at least the last acknowledged one (a later unacknowledged write may have landed)
    assert int(study.note.split()[1]) >= acked_n
    # at most the one change in flight per kill is unacknowledged
    assert len(by_start) - len(acked_f) <= kills


@pytest.mark.skipif(os.name != "posix", reason="flock semantics checked on POSIX")
def test_two_processes_one_gets_read_only_and_nothing_is_corrupted(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    sid_a = _new_session(db)
    sid_b = _new_session(db)
    n = 150
    cmd = [sys.executable, __file__, "concurrent", str(db)]
    procs = [
        subprocess.Popen([*cmd, sid, str(n)], stdout=subprocess.PIPE, env=_env(), text=True)
        for sid in (sid_a, sid_a, sid_b)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    same = outs[:2]
    assert sorted(o.split()[0] for o in same) == ["LOCKED", "WRITER"]  # exactly one writer per session
    locked = next(o for o in same if o.startswith("LOCKED"))
    assert "another window" in locked and "PID" in locked
    assert outs[2].split() == ["WRITER", "DONE"]  # another session of the same file writes concurrently

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    from viewer.core.review import ReviewStore

    store = ReviewStore.open(db)
    for sid in (sid_a, sid_b):
        findings = store.open_session(sid).study(STUDY).findings
        assert sorted(f.ranges[0].start for f in findings) == list(range(n))
        assert all(f.decision == DECISION_CYCLE[f.ranges[0].start % 3] for f in findings)


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        _child_writer(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "zygote":
        _zygote()
    elif sys.argv[1] == "concurrent":
        _child_concurrent(sys.argv[2], sys.argv[3], sys.argv[4])
