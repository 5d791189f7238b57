"""The AI node's work queue: a small SQLite database (WAL, ``synchronous=FULL``) of the instances received
and the series they form, so that a restart resumes where the node stopped and nothing acknowledged is
lost.

An instance is recorded here (after its file is in the spool) *before* the C-STORE response goes back, so
what the sender was told is stored is on disk. A series is RECEIVING while instances arrive; once it has
been quiet for the configured time (or, once the sender released its association, for the shorter
release quiet time) the worker takes it (ANALYSING), and records what happened per stack
(a series may hold a localizer beside the axial stack): DONE (result stored back), REFUSED (out of scope,
with the reason codes), FAILED (unreadable), or STORE_PENDING (analysed, the PACS did not take the result
yet: retried with backoff, never re-analysed). A new instance for a finished series makes it RECEIVING
again; the result key (pixel digest + model hash) then decides whether anything is analysed or stored
again.

The database holds UIDs (needed to group and to store back) but no names, IDs or dates; it lives in the
node's private (0700) state folder, file 0600. Logs name a series by :meth:`NodeQueue.tag`, a salted
hash, never by its UID.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from viewer.core.errors import AiNodeError
from viewer.core.review.fileutil import create_private_file

SCHEMA_VERSION = 2  # 2: series.released

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    file TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances (series_uid);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    last_received REAL NOT NULL,
    instances INTEGER NOT NULL DEFAULT 0,
    analyses INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    released REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS results (
    result_key TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    stack_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    codes TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    decision TEXT NOT NULL DEFAULT '',
    model_runs INTEGER NOT NULL DEFAULT 0,
    object_uid TEXT NOT NULL DEFAULT '',
    object_file TEXT NOT NULL DEFAULT '',
    store_status TEXT NOT NULL DEFAULT '',
    store_attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_series ON results (series_uid);
"""


class SeriesState(str, Enum):
    RECEIVING = "receiving"  # instances arrive; analysed once quiet
    ANALYSING = "analysing"  # taken by the worker (back to RECEIVING after a crash)
    DONE = "done"  # every stack analysed (results stored) or refused
    REFUSED = "refused"  # nothing in the series is in the model's scope
    FAILED = "failed"  # the series could not be read
    STORE_PENDING = "store-pending"  # analysed; a result is waiting for the PACS to take it


class ResultState(str, Enum):
    STORED = "stored"  # the result object is in the PACS
    STORE_PENDING = "store-pending"  # built and kept in the outbox; the PACS did not take it yet
    REFUSED = "refused"  # out of scope: not analysed, nothing stored
    FAILED = "failed"  # analysis failed (decode, model): nothing stored


@dataclass(frozen=True)
class SeriesRow:
    series_uid: str
    study_uid: str
    state: SeriesState
    last_received: float
    instances: int
    analyses: int
    attempts: int
    next_try: float
    reason: str


@dataclass(frozen=True)
class ResultRow:
    result_key: str
    series_uid: str
    stack_uid: str
    state: ResultState
    codes: tuple[str, ...]
    reason: str
    decision: str
    model_runs: int
    object_uid: str
    object_file: str
    store_status: str
    store_attempts: int


class NodeQueue:
    """The queue database. Thread-safe: the Storage SCP's association threads and the worker share one
    connection under a lock (every write is one short transaction)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists()
        if new:
            create_private_file(path)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            version = self._meta("schema")
            if version is not None and int(version) > SCHEMA_VERSION:
                raise AiNodeError(
                    f"The AI node queue was written by a newer Slicewise (schema {version}); "
                    f"this one reads schema {SCHEMA_VERSION}"
                )
            if version is not None and int(version) < 2:
                self._db.execute("ALTER TABLE series ADD COLUMN released REAL NOT NULL DEFAULT 0")
            if version is None or int(version) < SCHEMA_VERSION:
                self._set_meta("schema", str(SCHEMA_VERSION))
            salt = self._meta("log_salt")
            if salt is None:
                salt = secrets.token_hex(16)
                self._set_meta("log_salt", salt)
        except sqlite3.DatabaseError as exc:
            raise AiNodeError(f"The AI node queue database cannot be opened ({exc})") from exc
        self._salt = salt
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            return self._meta(key)

    def set_meta(self, key: str, value: str) -> None:
        with self._tx():
            self._set_meta(key, value)

    def tag(self, uid: str) -> str:
        """A salted hash of a UID for log lines (the salt is this queue's own, so the lines can be matched
        to the queue by whoever holds it, and by nobody else)."""
        return hashlib.sha256(f"{self._salt}|{uid}".encode()).hexdigest()[:12]

    # --- intake -----------------------------------------------------------------------------------
    def has_instance(self, sop_uid: str) -> bool:
        with self._lock:
            return (
                self._db.execute("SELECT 1 FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone() is not None
            )

    def add_instance(self, sop_uid: str, series_uid: str, study_uid: str, file: str) -> bool:
        """Record one received instance (durably, before returning); False when it was already there
        (a re-send: the first copy is kept). Its series becomes RECEIVING, quiet from now."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO instances (sop_uid, series_uid, file, received) VALUES (?, ?, ?, ?)",
                (sop_uid, series_uid, file, now),
            )
            if cur.rowcount == 0:
                return False
            db.execute(
                "INSERT INTO series (series_uid, study_uid, state, last_received, instances, updated) "
                "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT(series_uid) DO UPDATE SET "
                "state=excluded.state, last_received=excluded.last_received, instances=instances+1, "
                "next_try=0, attempts=0, updated=excluded.updated",
                (series_uid, study_uid, SeriesState.RECEIVING.value, now, now),
            )
        return True

    def files(self, series_uid: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT file FROM instances WHERE series_uid=? ORDER BY received", (series_uid,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    # --- work -------------------------------------------------------------------------------------
    def recover(self) -> int:
        """After a restart: series a dead worker had taken go back to RECEIVING (to be analysed again;
        the result cache and result keys keep that from running or storing anything twice), and every
        RECEIVING series is quiet from now, so a sender cut off by the restart has the quiet time to
        resume before its series is analysed. Returns the number of series taken back."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE series SET state=?, updated=? WHERE state=?",
                (SeriesState.RECEIVING.value, now, SeriesState.ANALYSING.value),
            )
            db.execute(
                "UPDATE series SET last_received=MAX(last_received, ?) WHERE state=?",
                (now, SeriesState.RECEIVING.value),
            )
            return int(cur.rowcount)

    def mark_released(self, series_uids: Iterable[str], now: float | None = None) -> None:
        """The sender released (normally ended) the association that sent these series' latest
        instances: each is due ``release_quiet_s`` after this instead of ``quiet_s`` after its last
        instance. An instance received later (another association) clears this again."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.executemany(
                "UPDATE series SET released=? WHERE series_uid=? AND state=?",
                [(now, uid, SeriesState.RECEIVING.value) for uid in series_uids],
            )

    def take_due(
        self, quiet_s: float, now: float | None = None, *, release_quiet_s: float | None = None
    ) -> SeriesRow | None:
        """The oldest series quiet for ``quiet_s`` -- or released by its sender ``release_quiet_s`` ago
        with nothing received since -- (or a result store due for a retry), marked ANALYSING; returned
        as it was (its state says which)."""
        now = time.time() if now is None else now
        released_before = now - (quiet_s if release_quiet_s is None else release_quiet_s)
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_SERIES_COLS} FROM series WHERE (state=? AND (last_received<=? OR "
                "(released>=last_received AND released<=?))) "
                "OR (state=? AND next_try<=?) ORDER BY last_received LIMIT 1",
                (
                    SeriesState.RECEIVING.value,
                    now - quiet_s,
                    released_before,
                    SeriesState.STORE_PENDING.value,
                    now,
                ),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE series SET state=?, updated=? WHERE series_uid=?",
                (SeriesState.ANALYSING.value, now, row[0]),
            )
        return _series_row(row)

    def finish_series(
        self, series_uid: str, state: SeriesState, reason: str = "", *, retry_in_s: float | None = None
    ) -> None:
        """Record how the worker left a series (unless an instance arrived meanwhile: then it stays
        RECEIVING and is looked at again once quiet)."""
        now = time.time()
        with self._tx() as db:
            if state is SeriesState.STORE_PENDING:
                db.execute(
                    "UPDATE series SET state=?, reason=?, attempts=attempts+1, next_try=?, updated=? "
                    "WHERE series_uid=? AND state=?",
                    (
                        state.value,
                        reason,
                        now + (retry_in_s or 0.0),
                        now,
                        series_uid,
                        SeriesState.ANALYSING.value,
                    ),
                )
            else:
                db.execute(
                    "UPDATE series SET state=?, reason=?, attempts=0, next_try=0, updated=? "
                    "WHERE series_uid=? AND state=?",
                    (state.value, reason, now, series_uid, SeriesState.ANALYSING.value),
                )

    def count_analysis(self, series_uid: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE series SET analyses=analyses+1 WHERE series_uid=?", (series_uid,))

    # --- results ----------------------------------------------------------------------------------
    def result(self, result_key: str) -> ResultRow | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_RESULT_COLS} FROM results WHERE result_key=?", (result_key,)
            ).fetchone()
        return None if row is None else _result_row(row)

    def results(self, series_uid: str | None = None) -> list[ResultRow]:
        with self._lock:
            if series_uid is None:
                rows = self._db.execute(f"SELECT {_RESULT_COLS} FROM results ORDER BY updated").fetchall()
            else:
                rows = self._db.execute(
                    f"SELECT {_RESULT_COLS} FROM results WHERE series_uid=? ORDER BY updated", (series_uid,)
                ).fetchall()
        return [_result_row(r) for r in rows]

    def put_result(
        self,
        result_key: str,
        series_uid: str,
        stack_uid: str,
        state: ResultState,
        *,
        codes: tuple[str, ...] = (),
        reason: str = "",
        decision: str = "",
        model_ran: bool = False,
        object_uid: str = "",
        object_file: str = "",
    ) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO results (result_key, series_uid, stack_uid, state, codes, reason, decision, "
                "model_runs, object_uid, object_file, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(result_key) DO UPDATE SET state=excluded.state, codes=excluded.codes, "
                "reason=excluded.reason, decision=excluded.decision, "
                "model_runs=model_runs+excluded.model_runs, object_uid=excluded.object_uid, "
                "object_file=excluded.object_file, updated=excluded.updated",
                (
                    result_key,
                    series_uid,
                    stack_uid,
                    state.value,
                    ";".join(codes),
                    reason,
                    decision,
                    int(model_ran),
                    object_uid,
                    object_file,
                    now,
                ),
            )

    def record_store(self, result_key: str, ok: bool, status: str) -> None:
        state = ResultState.STORED if ok else ResultState.STORE_PENDING
        with self._tx() as db:
            db.execute(
                "UPDATE results SET state=?, store_status=?, store_attempts=store_attempts+1, updated=? "
                "WHERE result_key=?",
                (state.value, status, time.time(), result_key),
            )

    # --- retention --------------------------------------------------------------------------------
    def forget_finished(self, before: float) -> list[tuple[str, list[str], list[str]]]:
        """Drop series finished (done, refused, failed) before ``before`` from the queue: their instance
        rows and series row go, their results stay (so the same pixels are still never stored twice).
        Returns (series UID, its instance files, its stored results' outbox files) for the caller to
        delete; a series that received an instance meanwhile is left alone."""
        finished = (SeriesState.DONE.value, SeriesState.REFUSED.value, SeriesState.FAILED.value)
        dropped = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT series_uid FROM series WHERE state IN (?, ?, ?) AND updated<?", (*finished, before)
            ).fetchall()
            for (uid,) in rows:
                files = [
                    str(r[0]) for r in db.execute("SELECT file FROM instances WHERE series_uid=?", (uid,))
                ]
                outbox = [
                    str(r[0])
                    for r in db.execute(
                        "SELECT object_file FROM results WHERE series_uid=? AND state=? AND object_file!=''",
                        (uid, ResultState.STORED.value),
                    )
                ]
                db.execute("DELETE FROM instances WHERE series_uid=?", (uid,))
                db.execute("DELETE FROM series WHERE series_uid=?", (uid,))
                dropped.append((str(uid), files, outbox))
        return dropped

    # --- reading ----------------------------------------------------------------------------------
    def series(self, series_uid: str) -> SeriesRow | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_SERIES_COLS} FROM series WHERE series_uid=?", (series_uid,)
            ).fetchone()
        return None if row is None else _series_row(row)

    def all_series(self) -> list[SeriesRow]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_SERIES_COLS} FROM series ORDER BY last_received").fetchall()
        return [_series_row(r) for r in rows]

    def size_on_disk(self) -> int:
        return sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal")) if os.path.exists(p))


_SERIES_COLS = "series_uid, study_uid, state, last_received, instances, analyses, attempts, next_try, reason"
_RESULT_COLS = (
    "result_key, series_uid, stack_uid, state, codes, reason, decision, model_runs, object_uid, "
    "object_file, store_status, store_attempts"
)


def _series_row(row: Any) -> SeriesRow:
    return SeriesRow(
        series_uid=str(row[0]),
        study_uid=str(row[1]),
        state=SeriesState(str(row[2])),
        last_received=float(row[3]),
        instances=int(row[4]),
        analyses=int(row[5]),
        attempts=int(row[6]),
        next_try=float(row[7]),
        reason=str(row[8]),
    )


def _result_row(row: Any) -> ResultRow:
    codes = str(row[4])
    return ResultRow(
        result_key=str(row[0]),
        series_uid=str(row[1]),
        stack_uid=str(row[2]),
        state=ResultState(str(row[3])),
        codes=tuple(codes.split(";")) if codes else (),
        reason=str(row[5]),
        decision=str(row[6]),
        model_runs=int(row[7]),
        object_uid=str(row[8]),
        object_file=str(row[9]),
        store_status=str(row[10]),
        store_attempts=int(row[11]),
    )
