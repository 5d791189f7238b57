"""The review store: one SQLite database (WAL, synchronous=FULL) holding every review session.

Guarantees
- Every change is one transaction that is committed (and fsynced, ``synchronous=FULL``) before the
  method returns: there is no unsaved state. ``kill -9`` or a power cut loses at most the change in
  flight, never an acknowledged one, and never corrupts the file (SQLite's WAL design).
- All writes of a process go through :meth:`ReviewStore._transaction` on one connection.
- A session is written by one window at a time (:class:`SessionLock`); another window or process
  opening it gets a read-only :class:`ReviewSession` that says who holds it.
- The file and its ``-wal``/``-shm`` companions are created 0600 in a 0700 folder.
- Forward-only migrations, with one ``*.v<N>.bak`` copy first (replaced atomically by each attempt);
  a newer schema, or a file or folder the user made read-only, opens read-only.
- Every committed change is numbered; the number is fsynced to a side file (``*.hwm``, see
  :mod:`viewer.core.review.highwater`) so a database that opens behind it (a damaged ``-wal``) warns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

from viewer.core.dicom.model import SliceKey
from viewer.core.errors import ReviewStoreError, SessionLockedError, StudySourceError
from viewer.core.inference.results import SliceRange, StackPrediction
from viewer.core.location.ref import SourceRef
from viewer.core.paths import user_data_path
from viewer.core.review import highwater
from viewer.core.review.fileutil import (
    atomic_write_bytes,
    create_private_file,
    fsync_dir,
    fsync_path,
    is_writable,
    private_dir,
)
from viewer.core.review.highwater import HighWater, HighWaterMark, read_mark
from viewer.core.review.lock import SessionLock
from viewer.core.review.models import (
    DECISIONS,
    AIResult,
    Finding,
    Position,
    SessionInfo,
    StoreWarning,
    StoreWarningCode,
    StudyReview,
    WorklistOrder,
)
from viewer.core.review.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.2"
DB_FILENAME: Final = "review-sessions.sqlite3"
_T = TypeVar("_T")
_NOT_AUDITED: Final = frozenset({"position"})  # frequent, not a decision: no audit-trail row
_SEQ_KEY: Final = "change_seq"  # meta: number of the last committed change (the high-water mark's twin)
_STORE_ID_KEY: Final = "store_id"  # meta: random id of this database file (ties the side file to it)
_UPSERT_META: Final = (
    "INSERT INTO meta (key, value, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _app_version() -> str:
    try:
        from importlib.metadata import version

        return version("slicewise")
    except Exception:
        return "unknown"


def _ranges_json(ranges: Sequence[SliceRange]) -> str:
    return json.dumps([[r.start, r.stop] for r in ranges])


def _ranges_from_json(text: str) -> tuple[SliceRange, ...]:
    return tuple(SliceRange(int(a), int(b)) for a, b in json.loads(text))


def _check_range(r: SliceRange) -> SliceRange:
    if r.start < 0 or r.stop < r.start:
        raise ValueError(f"Invalid slice range {r.start}..{r.stop}")
    return r


def _schema_version(conn: sqlite3.Connection) -> int:
    sql = "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
    row = conn.execute(sql).fetchone()
    if row is None:
        return 0
    value = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    return int(value or 0)


class ReviewStore:
    """The review database of this user. Use :meth:`open` (or :meth:`shared` in the GUI)."""

    _shared: ClassVar[dict[Path, ReviewStore]] = {}

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        *,
        read_only_reason: str = "",
        backup_path: Path | None = None,
        migrated_from: int | None = None,
    ) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.RLock()
        self.read_only_reason = read_only_reason
        self.backup_path = backup_path
        self.migrated_from = migrated_from
        self.warnings: tuple[StoreWarning, ...] = ()
        self.store_id = ""
        self._hwm: HighWaterMark | None = None
        self._seq_floor = 0  # new changes are numbered above this (the high-water mark, when behind it)
        self._closed = False

    # --- opening -------------------------------------------------------------------------------
    @staticmethod
    def default_path() -> Path:
        return user_data_path() / "review" / DB_FILENAME  # open() creates the folder (0700)

    @classmethod
    def shared(cls, path: Path | str | None = None) -> ReviewStore:
        """The one store object of this process for ``path`` (all windows write through it)."""
        key = Path(path).resolve() if path is not None else cls.default_path().resolve()
        store = cls._shared.get(key)
        if store is None or store._closed:
            store = cls.open(key)
            cls._shared[key] = store
        return store

    @classmethod
    def open(cls, path: Path | str | None = None, *, high_water_mark: bool = True) -> ReviewStore:
        """Open (creating, checking and migrating) the database at ``path`` (default: user data folder).

        A folder or file the user made read-only opens read-only (sessions can be read and exported).
        ``warnings`` says when the database holds fewer changes than were acknowledged (a damaged
        ``-wal`` file) or when an empty file was kept aside. ``high_water_mark=False`` leaves the side
        file out (for measuring its cost only).

        Raises :class:`ReviewStoreError` when the file is damaged or not a database.
        """
        path = Path(path) if path is not None else cls.default_path()
        try:
            private_dir(path.parent)
        except OSError as exc:
            raise ReviewStoreError(f"The review database folder cannot be created: {exc.strerror}") from exc
        mark = read_mark(highwater.path_for(path)) if high_water_mark else None
        if not is_writable(path.parent) or (path.exists() and not is_writable(path)):
            store = cls._open_read_only(path)
            if high_water_mark:
                store._check_high_water(mark, created=False)
            return store
        warnings: list[StoreWarning] = []
        created = not path.exists()
        if not created and path.stat().st_size == 0:
            warnings.append(cls._set_aside(path, "empty"))
            created = True
        try:
            if created:
                warnings.extend(cls._create(path))
            for p in (Path(f"{path}-wal"), Path(f"{path}-shm")):
                create_private_file(p)
        except (OSError, sqlite3.Error) as exc:
            raise ReviewStoreError(f"The review database cannot be created: {exc}") from exc
        try:
            conn = cls._connect(path)
        except sqlite3.DatabaseError as exc:
            raise ReviewStoreError(f"The review database cannot be opened: {exc}") from exc
        version = cls._checked_version(conn)
        if version > SCHEMA_VERSION:
            conn.close()
            reason = (
                f"This review database was written by a newer Slicewise (schema {version}; this version "
                f"knows up to {SCHEMA_VERSION}). It is open read-only: update Slicewise to change it."
            )
            log.warning("Review store schema %d is newer than %d: read-only", version, SCHEMA_VERSION)
            return cls(path, cls._connect_read_only(path), read_only_reason=reason)
        backup = None
        migrated_from = None
        if version < SCHEMA_VERSION:
            if version > 0:
                backup = cls._backup(conn, path, version)
                migrated_from = version
            try:
                cls._migrate(conn)
            except sqlite3.Error as exc:
                conn.close()
                raise ReviewStoreError(f"Migrating the review database failed: {exc}") from exc
            if backup is not None:
                cls._remove_stale_backups(path, keep=backup)
        store = cls(path, conn, backup_path=backup, migrated_from=migrated_from)
        store.warnings = tuple(warnings)
        if high_water_mark:
            store._attach_high_water(mark, created=created)
        return store

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        conn.execute("PRAGMA busy_timeout = 10000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise ReviewStoreError(f"The review database cannot use WAL journaling (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @staticmethod
    def _connect_read_only(path: Path) -> sqlite3.Connection:
        """A read-only connection; where SQLite cannot create its ``-shm`` file (a read-only folder)
        and no ``-wal`` holds uncheckpointed changes, the file is opened as immutable."""
        uri = path.resolve().as_uri()
        wal = Path(f"{path}-wal")
        options = ["mode=ro"]
        if not (wal.exists() and wal.stat().st_size > 0):
            options.append("mode=ro&immutable=1")
        last: sqlite3.Error | None = None
        for option in options:
            try:
                conn = sqlite3.connect(
                    f"{uri}?{option}", uri=True, isolation_level=None, check_same_thread=False, timeout=10
                )
            except sqlite3.Error as exc:
                last = exc
                continue
            try:
                _schema_version(conn)  # the first read is where SQLite says whether it can
            except sqlite3.Error as exc:
                conn.close()
                last = exc
                continue
            return conn
        raise ReviewStoreError(f"The review database cannot be opened read-only: {last}")

    @classmethod
    def _open_read_only(cls, path: Path) -> ReviewStore:
        if not path.exists() or path.stat().st_size == 0:
            raise ReviewStoreError(
                "The review database folder is read-only and holds no review database: nothing to open"
            )
        conn = cls._connect_read_only(path)
        version = cls._checked_version(conn)
        if version < SCHEMA_VERSION:
            conn.close()
            raise ReviewStoreError(
                f"The review database is read-only (file or folder permissions) and uses an older schema "
                f"({version}) that needs migrating: make it writable to open it"
            )
        log.warning("Review store is read-only (permissions): opened read-only")
        reason = (
            "The review database is read-only (file or folder permissions): sessions can be read and "
            "exported but not changed."
        )
        if version > SCHEMA_VERSION:
            reason = (
                f"This review database was written by a newer Slicewise (schema {version}) and is "
                "read-only (permissions): sessions can be read and exported but not changed."
            )
        return cls(path, conn, read_only_reason=reason)

    @staticmethod
    def _set_aside(path: Path, why: str) -> StoreWarning:
        """Move a database's files aside as ``<name>.<why>-<time>[-wal|-shm]`` (the ``-wal`` may hold
        pages a recovery tool can use); says so in a warning."""
        stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
        kept = []
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                dst = src.with_name(f"{path.name}.{why}-{stamp}{suffix}")
                os.replace(src, dst)
                kept.append(dst.name)
        fsync_dir(path.parent)
        log.warning("Review store files set aside (%s)", why)
        if why == "empty":
            return StoreWarning(
                StoreWarningCode.EMPTY_FILE,
                f"The review database file was empty (0 bytes). It was kept aside as {kept[0]} and a new, "
                "empty review database was created.",
                kept_aside=tuple(kept),
            )
        return StoreWarning(
            StoreWarningCode.ORPHAN_LOG,
            f"A write-ahead log without its database was kept aside as {', '.join(kept)}.",
            kept_aside=tuple(kept),
        )

    @classmethod
    def _create(cls, path: Path) -> list[StoreWarning]:
        """Create the database complete (schema, 0600) under a temporary name, then link it into place:
        a 0-byte file at ``path`` is then never Slicewise's own, and of two processes creating it at
        once, one wins and both open the same file."""
        for suffix in ("-wal", "-shm"):
            stale = Path(f"{path}{suffix}")
            if stale.exists() and stale.stat().st_size == 0:
                stale.unlink()
        warnings = []
        if Path(f"{path}-wal").exists():  # a log without its database must never be replayed into a new one
            warnings.append(cls._set_aside(path, "orphan"))
        tmp = path.with_name(f".{path.name}.new-{uuid.uuid4().hex[:12]}")
        create_private_file(tmp)
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")  # switching later needs every other process out
                cls._migrate(conn)
            finally:
                conn.close()
            fsync_path(tmp)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            for leftover in (tmp, *(Path(f"{tmp}{x}") for x in ("-journal", "-wal", "-shm"))):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        fsync_dir(path.parent)
        return warnings

    # --- the high-water mark -----------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _db_seq(self) -> int:
        try:
            return int(self._meta(_SEQ_KEY) or 0)
        except (ValueError, sqlite3.Error):
            return 0

    def _check_high_water(self, mark: HighWater | None, *, created: bool) -> None:
        """Warn when the database holds fewer changes than the side file says were acknowledged."""
        try:
            store_id = self._meta(_STORE_ID_KEY) or ""
        except sqlite3.Error:
            store_id = ""
        self.store_id = store_id
        if mark is None or mark.seq <= 0:
            return
        db_seq = self._db_seq()
        if created:
            db_seq = 0
        elif mark.store_id != store_id:
            log.info("Review store: the high-water mark belongs to another database file; restarted")
            return
        if db_seq >= mark.seq:
            return
        missing = mark.seq - db_seq
        kept = self._keep_wal_copy() if not created else ()
        log.warning("Review store opens %d acknowledged change(s) behind its high-water mark", missing)
        where = f" A copy of the damaged write-ahead log was kept as {kept[0]}." if kept else ""
        what = "was missing or empty" if created else "is damaged (its write-ahead log failed its checks)"
        message = (
            f"The review database {what}: {missing} acknowledged change(s) are missing (the last saved "
            f"change was #{mark.seq}, the database holds up to #{db_seq}).{where} Review the latest "
            "decisions before going on."
        )
        self.warnings += (StoreWarning(StoreWarningCode.BEHIND, message, missing, kept),)
        self._seq_floor = mark.seq  # never reuse the numbers of the lost changes

    def _keep_wal_copy(self) -> tuple[str, ...]:
        wal = Path(f"{self.path}-wal")
        if not wal.exists() or wal.stat().st_size == 0:
            return ()
        dst = wal.with_name(f"{self.path.name}-wal.behind-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}")
        try:
            atomic_write_bytes(dst, wal.read_bytes())
        except OSError:
            return ()
        return (dst.name,)

    def _attach_high_water(self, mark: HighWater | None, *, created: bool) -> None:
        self._check_high_water(mark, created=created)
        if not self.store_id:
            # a database recreated in place of a lost one keeps the side file's id: it warns until used
            self.store_id = mark.store_id if created and mark is not None else uuid.uuid4().hex
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute(_UPSERT_META, (_STORE_ID_KEY, self.store_id, now_iso()))
                self._conn.execute("COMMIT")
        try:
            self._hwm = HighWaterMark(highwater.path_for(self.path))
            current = HighWater(self.store_id, self._db_seq())
            if not self._seq_floor and mark != current:  # behind: keep the mark until the next change
                self._hwm.write(current, both_slots=True)
        except OSError as exc:
            log.warning("Review store high-water mark cannot be written (%s): not kept", type(exc).__name__)
            self._hwm = None

    def _record_high_water(self, seq: int) -> None:
        hwm = self._hwm
        if hwm is None:
            return
        try:
            hwm.write(HighWater(self.store_id, seq))
        except OSError as exc:  # the change itself is committed: say so in the log, keep going
            log.warning("Review store high-water mark not updated (%s)", type(exc).__name__)

    @staticmethod
    def _check_integrity(conn: sqlite3.Connection) -> None:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if rows != ["ok"]:
            raise ReviewStoreError("The review database failed its integrity check: " + "; ".join(rows[:5]))

    @classmethod
    def _checked_version(cls, conn: sqlite3.Connection) -> int:
        """The schema version of a database that passes its integrity check; ``conn`` is closed and a
        :class:`ReviewStoreError` raised when it does not (or is not a database at all)."""
        try:
            cls._check_integrity(conn)
            return _schema_version(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ReviewStoreError(f"The review database is damaged or not a database: {exc}") from exc
        except ReviewStoreError:
            conn.close()
            raise

    @staticmethod
    def _backup(conn: sqlite3.Connection, path: Path, version: int) -> Path:
        """One ``*.v<N>.bak`` per version, replaced atomically by each attempt to migrate from N."""
        bak = path.with_name(f"{path.name}.v{version}.bak")
        tmp = bak.with_name(f".{bak.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # left by an attempt that was killed
        create_private_file(tmp)
        dst = sqlite3.connect(tmp)
        try:
            conn.backup(dst)
        finally:
            dst.close()
        fsync_path(tmp)
        os.replace(tmp, bak)
        fsync_dir(path.parent)
        log.info("Review store backed up before migrating from schema %d", version)
        return bak

    @staticmethod
    def _remove_stale_backups(path: Path, keep: Path) -> None:
        """After a successful migration: drop the extra, time-stamped backups earlier versions of
        Slicewise left at each interrupted attempt (``*.v<N>.<time>.bak``); ``keep`` stays."""
        for stale in path.parent.glob(f"{path.name}.v*.*.bak"):
            if stale != keep:
                with contextlib.suppress(OSError):
                    stale.unlink()

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = _schema_version(conn)  # re-read under the write lock: another process may have won
            for target in range(current + 1, SCHEMA_VERSION + 1):
                for step in MIGRATIONS[target - 1]:
                    if isinstance(step, str):
                        conn.execute(step)
                    else:
                        step(conn)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at, app_version) VALUES (?, ?, ?)",
                    (target, now_iso(), _app_version()),
                )
                log.info("Review store migrated to schema %d", target)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # --- state -------------------------------------------------------------------------------------
    @property
    def read_only(self) -> bool:
        return bool(self.read_only_reason)

    @property
    def schema_version(self) -> int:
        with self._lock:
            return _schema_version(self._conn)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._conn.close()
                if self._hwm is not None:
                    self._hwm.close()
                self._closed = True

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the single write path ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One committed (fsynced) transaction; raises ReviewStoreError if it cannot be."""
        if self.read_only:
            raise ReviewStoreError(self.read_only_reason)
        with self._lock:
            if self._closed:
                raise ReviewStoreError("The review store is closed")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise ReviewStoreError(f"The review database is busy or not writable: {exc}") from exc
            try:
                yield self._conn
                seq = self._bump_seq() if self._hwm is not None else 0
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise ReviewStoreError(f"Saving the review decision failed: {exc}") from exc
            if seq:
                self._record_high_water(seq)

    def _bump_seq(self) -> int:
        """Number this change (inside its transaction): one above the database's and the floor."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (_SEQ_KEY,)).fetchone()
        seq = max(int(row[0]) if row else 0, self._seq_floor) + 1
        self._conn.execute(_UPSERT_META, (_SEQ_KEY, str(seq), now_iso()))
        return seq

    def _write(
        self,
        session_id: str,
        kind: str,
        study_uid: str | None,
        payload: dict[str, Any],
        action: Callable[[sqlite3.Connection, str], _T],
    ) -> _T:
        """Run ``action(conn, now)`` and log the event, in one transaction."""
        try:
            with self._transaction() as conn:
                ts = now_iso()
                result = action(conn, ts)
                if kind not in _NOT_AUDITED:
                    conn.execute(
                        "INSERT INTO events (ts, session_id, study_uid, kind, payload)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (ts, session_id, study_uid, kind, json.dumps(payload)),
                    )
                conn.execute("UPDATE sessions SET modified_at = ? WHERE id = ?", (ts, session_id))
                return result
        except sqlite3.IntegrityError as exc:
            raise ReviewStoreError(f"Invalid review change ({kind}): {exc}") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            if self._closed:
                raise ReviewStoreError("The review store is closed")
            cur = self._conn.execute(sql, tuple(params))
            cur.row_factory = sqlite3.Row
            return cur.fetchall()

    # --- sessions ----------------------------------------------------------------------------------
    def create_session(self, name: str, reader: str = "") -> ReviewSession:
        """Create a session and open it for writing."""
        name = name.strip() or "Review session"
        session_id = uuid.uuid4().hex

        def action(conn: sqlite3.Connection, ts: str) -> None:
            conn.execute(
                "INSERT INTO sessions (id, name, reader, created_at, modified_at) VALUES (?, ?, ?, ?, ?)",
                (session_id, name, reader.strip(), ts, ts),
            )

        self._write(session_id, "create_session", None, {}, action)
        log.info("Review session %s created", session_id[:8])
        return self.open_session(session_id)

    def list_sessions(self) -> list[SessionInfo]:
        """All sessions, most recently modified first, with their progress."""
        rows = self._read(
            """SELECT s.id, s.name, s.reader, s.created_at, s.modified_at,
                      COUNT(st.id) AS n, COALESCE(SUM(st.done), 0) AS n_done
               FROM sessions s LEFT JOIN studies st ON st.session_id = s.id
               GROUP BY s.id ORDER BY s.modified_at DESC"""
        )
        return [
            SessionInfo(
                r["id"],
                r["name"],
                r["reader"],
                r["created_at"],
                r["modified_at"],
                int(r["n"]),
                int(r["n_done"]),
            )
            for r in rows
        ]

    def session_info(self, session_id: str) -> SessionInfo:
        for info in self.list_sessions():
            if info.id == session_id:
                return info
        raise ReviewStoreError(f"No review session with id {session_id[:8]}")

    def rename_session(self, session_id: str, name: str) -> None:
        name = name.strip()
        if not name:
            raise ValueError("A session name cannot be empty")
        self.session_info(session_id)

        def action(conn: sqlite3.Connection, ts: str) -> None:
            conn.execute("UPDATE sessions SET name = ? WHERE id = ?", (name, session_id))

        self._write(session_id, "rename", None, {"name": name}, action)

    def open_session(self, session_id: str, *, require_write: bool = False) -> ReviewSession:
        """Open a session: for writing if no other window holds it, else read-only (or raise)."""
        self.session_info(session_id)
        if self.read_only:
            if require_write:
                raise SessionLockedError(self.read_only_reason)
            return ReviewSession(self, session_id, None, self.read_only_reason)
        lock = SessionLock(private_dir(self.path.parent / "locks") / f"{session_id}.lock")
        if not lock.acquired:
            message = f"Session open in another window ({lock.owner()}): opened read-only."
            lock.release()
            if require_write:
                raise SessionLockedError(message)
            log.info("Review session %s is locked by another window: read-only", session_id[:8])
            return ReviewSession(self, session_id, None, message)
        with contextlib.suppress(ReviewStoreError):
            self._set_meta("last_session", session_id)
        return ReviewSession(self, session_id, lock, "")

    def last_session_id(self) -> str | None:
        """The session opened for writing most recently (for 'resume'), if it still exists."""
        rows = self._read(
            "SELECT m.value FROM meta m JOIN sessions s ON s.id = m.value WHERE m.key = 'last_session'"
        )
        return str(rows[0][0]) if rows else None

    def forget_last_session(self, session_id: str) -> None:
        """The reader closed this session on purpose: do not offer to resume it."""
        if self.read_only:
            return
        with self._transaction() as conn:
            conn.execute("DELETE FROM meta WHERE key = 'last_session' AND value = ?", (session_id,))

    def _set_meta(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute(_UPSERT_META, (key, value, now_iso()))


class ReviewSession:
    """One open session. Every setter commits before returning; read-only sessions raise on write."""

    def __init__(self, store: ReviewStore, session_id: str, lock: SessionLock | None, read_only_reason: str):
        self.store = store
        self.id = session_id
        self._lock = lock
        self.read_only_reason = read_only_reason
        self._closed = False

    @property
    def read_only(self) -> bool:
        return bool(self.read_only_reason) or self._closed

    @property
    def info(self) -> SessionInfo:
        return self.store.session_info(self.id)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._closed = True

    def __enter__(self) -> ReviewSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes ------------------------------------------------------------------------------------
    def _write(
        self,
        kind: str,
        study_uid: str | None,
        payload: dict[str, Any],
        action: Callable[[sqlite3.Connection, str], _T],
    ) -> _T:
        if self._closed:
            raise ReviewStoreError("This review session is closed")
        if self.read_only_reason:
            raise SessionLockedError(self.read_only_reason)
        return self.store._write(self.id, kind, study_uid, payload, action)

    def _study_id(self, conn: sqlite3.Connection, study_uid: str) -> int:
        row = conn.execute(
            "SELECT id FROM studies WHERE session_id = ? AND study_uid = ?", (self.id, study_uid)
        ).fetchone()
        if row is None:
            raise ReviewStoreError(f"Study {study_uid} is not in this session's worklist")
        return int(row[0])

    @staticmethod
    def _ensure_study(
        conn: sqlite3.Connection, session_id: str, study_uid: str, source: SourceRef, ts: str
    ) -> int:
        """The study's row id, adding it when new. Its source is merged with ``source``
        (:meth:`SourceRef.merged`); the legacy ``paths`` column keeps every local path ever recorded."""
        row = conn.execute(
            "SELECT id, paths, source_kind, source_node, locator FROM studies "
            "WHERE session_id = ? AND study_uid = ?",
            (session_id, study_uid),
        ).fetchone()
        if row is not None:
            known = list(json.loads(row[1]))
            new = [p for p in source.paths if p not in known]
            try:
                current: SourceRef | None = SourceRef.from_columns(row[2], row[3], row[4])
            except StudySourceError:
                log.warning("Review store: a study's recorded source was unreadable; replaced")
                current = None
            merged = source if current is None else current.merged(source)
            if new or merged != current:
                conn.execute(
                    "UPDATE studies SET paths = ?, source_kind = ?, source_node = ?, locator = ?,"
                    " updated_at = ? WHERE id = ?",
                    (json.dumps(known + new), *merged.to_columns(), ts, row[0]),
                )
            return int(row[0])
        pos = conn.execute(
            "SELECT COALESCE(MAX(position) + 1, 0) FROM studies WHERE session_id = ?", (session_id,)
        ).fetchone()[0]
        cur = conn.execute(
            "INSERT INTO studies (session_id, study_uid, position, paths, source_kind, source_node, locator,"
            " added_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, study_uid, int(pos), json.dumps(list(source.paths)), *source.to_columns(), ts, ts),
        )
        return int(cur.lastrowid or 0)

    @staticmethod
    def _source(paths: Sequence[str | Path], source: SourceRef | None) -> SourceRef:
        if source is not None and paths:
            raise ValueError("Give a study's paths or its source, not both")
        return source if source is not None else SourceRef.local(paths)

    def add_study(
        self, study_uid: str, paths: Sequence[str | Path] = (), *, source: SourceRef | None = None
    ) -> None:
        """Append a study to the worklist (idempotent), opened from ``paths`` (a local source) or from
        ``source`` (local files or a PACS node); a known study's source is merged
        (:meth:`SourceRef.merged`: new paths or series join, another source replaces it)."""
        if not study_uid:
            raise ValueError("A study needs a StudyInstanceUID")
        ref = self._source(paths, source)
        self._write(
            "add_study",
            study_uid,
            {"n_paths": len(ref.paths), "source": ref.kind.value},
            lambda conn, ts: self._ensure_study(conn, self.id, study_uid, ref, ts),
        )

    def record_ai_result(
        self,
        prediction: StackPrediction,
        *,
        paths: Sequence[str | Path] = (),
        source: SourceRef | None = None,
        sop_class_uid: str = CT_IMAGE_STORAGE,
    ) -> None:
        """Store the model's result for the prediction's study (added to the worklist if new, opened
        from ``paths`` or ``source`` as in :meth:`add_study`).

        AI findings are kept per class: recording a new result for the same study updates them and
        keeps the reader's decisions.
        """
        study_uid = prediction.study_instance_uid
        ref = self._source(paths, source)
        positive = bool(prediction.positive_findings())

        def action(conn: sqlite3.Connection, ts: str) -> None:
            study_id = self._ensure_study(conn, self.id, study_uid, ref, ts)
            conn.execute(
                """INSERT INTO ai_results (study_id, stack_uid, series_uid, model_name, model_version,
                       model_sha256, class_names, study_probs, thresholds, slice_uids, sop_class_uid, badge,
                       positive, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(study_id) DO UPDATE SET stack_uid = excluded.stack_uid,
                       series_uid = excluded.series_uid, model_name = excluded.model_name,
                       model_version = excluded.model_version, model_sha256 = excluded.model_sha256,
                       class_names = excluded.class_names, study_probs = excluded.study_probs,
                       thresholds = excluded.thresholds, slice_uids = excluded.slice_uids,
                       sop_class_uid = excluded.sop_class_uid, badge = excluded.badge,
                       positive = excluded.positive, recorded_at = excluded.recorded_at""",
                (
                    study_id,
                    prediction.stack_uid,
                    prediction.series_instance_uid,
                    prediction.model_name,
                    prediction.model_version,
                    prediction.model_sha256,
                    json.dumps(list(prediction.class_names)),
                    json.dumps([float(p) for p in prediction.study_probs]),
                    json.dumps([float(t) for t in prediction.thresholds]),
                    json.dumps(list(prediction.slice_uids)),
                    sop_class_uid,
                    prediction.badge(),
                    int(positive),
                    ts,
                ),
            )
            for f in prediction.findings:
                values = (
                    int(f.positive),
                    float(f.study_prob),
                    float(f.threshold),
                    _ranges_json(f.flagged_ranges),
                    int(f.peak_slice),
                    ts,
                )
                row = conn.execute(
                    "SELECT id FROM findings WHERE study_id = ? AND source = 'ai' AND class_name = ?",
                    (study_id, f.class_name),
                ).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO findings (study_id, source, class_name, ai_positive, study_prob,"
                        " threshold, ranges, peak_slice, updated_at, created_at)"
                        " VALUES (?, 'ai', ?, ?, ?, ?, ?, ?, ?, ?)",
                        (study_id, f.class_name, *values, ts),
                    )
                else:
                    conn.execute(
                        "UPDATE findings SET ai_positive = ?, study_prob = ?, threshold = ?, ranges = ?,"
                        " peak_slice = ?, updated_at = ? WHERE id = ?",
                        (*values, row[0]),
                    )

        payload = {
            "model": prediction.model_name,
            "version": prediction.model_version,
            "sha256": prediction.model_sha256,
            "positive": positive,
        }
        self._write("ai_result", study_uid, payload, action)

    def _finding_row(self, conn: sqlite3.Connection, finding_id: int) -> tuple[str, str]:
        row = conn.execute(
            "SELECT st.study_uid, f.source FROM findings f JOIN studies st ON st.id = f.study_id "
            "WHERE f.id = ? AND st.session_id = ?",
            (finding_id, self.id),
        ).fetchone()
        if row is None:
            raise ReviewStoreError(f"Finding {finding_id} is not in this session")
        return str(row[0]), str(row[1])

    def _study_of_finding(self, finding_id: int) -> str:
        rows = self.store._read(
            "SELECT st.study_uid FROM findings f JOIN studies st ON st.id = f.study_id "
            "WHERE f.id = ? AND st.session_id = ?",
            (finding_id, self.id),
        )
        if not rows:
            raise ReviewStoreError(f"Finding {finding_id} is not in this session")
        return str(rows[0][0])

    def set_decision(self, finding_id: int, decision: str | None) -> None:
        """confirmed / rejected / uncertain (None clears it), committed at once."""
        if decision is not None and decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS} or None, not {decision!r}")
        study_uid = self._study_of_finding(finding_id)

        def action(conn: sqlite3.Connection, ts: str) -> None:
            self._finding_row(conn, finding_id)
            conn.execute(
                "UPDATE findings SET decision = ?, decision_at = ?, updated_at = ? WHERE id = ?",
                (decision, ts if decision else None, ts, finding_id),
            )

        self._write("decision", study_uid, {"finding": finding_id, "decision": decision}, action)

    def set_correction(
        self,
        finding_id: int,
        *,
        corrected_class: str | None = None,
        corrected_range: SliceRange | None = None,
    ) -> None:
        """The reader's class and/or slice range where they disagree with the AI (None clears)."""
        if corrected_range is not None:
            _check_range(corrected_range)
        study_uid = self._study_of_finding(finding_id)
        start = corrected_range.start if corrected_range else None
        stop = corrected_range.stop if corrected_range else None

        def action(conn: sqlite3.Connection, ts: str) -> None:
            conn.execute(
                "UPDATE findings SET corrected_class = ?, corrected_start = ?, corrected_stop = ?,"
                " updated_at = ? WHERE id = ?",
                (corrected_class, start, stop, ts, finding_id),
            )

        payload = {"finding": finding_id, "class": corrected_class, "range": [start, stop]}
        self._write("correction", study_uid, payload, action)

    def add_reader_finding(self, study_uid: str, class_name: str, slice_range: SliceRange) -> int:
        """A finding the AI missed; returns its id."""
        _check_range(slice_range)
        if not class_name:
            raise ValueError("A finding needs a class")

        def action(conn: sqlite3.Connection, ts: str) -> int:
            study_id = self._study_id(conn, study_uid)
            cur = conn.execute(
                "INSERT INTO findings (study_id, source, class_name, ranges, created_at, updated_at)"
                " VALUES (?, 'reader', ?, ?, ?, ?)",
                (study_id, class_name, _ranges_json([slice_range]), ts, ts),
            )
            return int(cur.lastrowid or 0)

        payload = {"class": class_name, "range": [slice_range.start, slice_range.stop]}
        return self._write("add_finding", study_uid, payload, action)

    def remove_reader_finding(self, finding_id: int) -> None:
        study_uid = self._study_of_finding(finding_id)

        def action(conn: sqlite3.Connection, ts: str) -> None:
            if self._finding_row(conn, finding_id)[1] != "reader":
                raise ReviewStoreError("Only reader-added findings can be removed")
            conn.execute("DELETE FROM findings WHERE id = ?", (finding_id,))

        self._write("remove_finding", study_uid, {"finding": finding_id}, action)

    def _set_study_field(
        self, study_uid: str, kind: str, sql: str, values: tuple[Any, ...], payload: dict[str, Any]
    ) -> None:
        def action(conn: sqlite3.Connection, ts: str) -> None:
            study_id = self._study_id(conn, study_uid)
            conn.execute(sql, (*values, ts, ts, study_id))

        self._write(kind, study_uid, payload, action)

    def set_note(self, study_uid: str, text: str) -> None:
        self._set_study_field(
            study_uid,
            "note",
            "UPDATE studies SET note = ?, note_at = ?, updated_at = ? WHERE id = ?",
            (text,),
            {"text": text},
        )

    def set_impression(self, study_uid: str, text: str) -> None:
        self._set_study_field(
            study_uid,
            "impression",
            "UPDATE studies SET impression = ?, impression_at = ?, updated_at = ? WHERE id = ?",
            (text,),
            {"text": text},
        )

    def set_done(self, study_uid: str, done: bool = True) -> None:
        def action(conn: sqlite3.Connection, ts: str) -> None:
            study_id = self._study_id(conn, study_uid)
            conn.execute(
                "UPDATE studies SET done = ?, done_at = ?, updated_at = ? WHERE id = ?",
                (int(done), ts if done else None, ts, study_id),
            )

        self._write("done", study_uid, {"done": done}, action)

    def set_last_position(
        self, study_uid: str, stack_uid: str, slice_index: int, slice_key: SliceKey | None = None
    ) -> None:
        """Where the reader is; ``slice_key`` names the slice by UIDs (found again after a reopen that
        sorts or splits the study differently)."""
        key = slice_key or SliceKey(study_uid, "", "", 0)

        def action(conn: sqlite3.Connection, ts: str) -> None:
            conn.execute(
                "INSERT INTO positions (session_id, study_uid, stack_uid, slice_index, series_uid,"
                " sop_instance_uid, frame, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(session_id) DO UPDATE SET study_uid = excluded.study_uid,"
                " stack_uid = excluded.stack_uid, slice_index = excluded.slice_index,"
                " series_uid = excluded.series_uid, sop_instance_uid = excluded.sop_instance_uid,"
                " frame = excluded.frame, updated_at = excluded.updated_at",
                (
                    self.id,
                    study_uid,
                    stack_uid,
                    int(slice_index),
                    key.series_uid,
                    key.sop_instance_uid,
                    int(key.frame),
                    ts,
                ),
            )

        self._write("position", study_uid, {"slice": int(slice_index)}, action)

    # --- reads -------------------------------------------------------------------------------------
    def last_position(self) -> Position | None:
        rows = self.store._read("SELECT * FROM positions WHERE session_id = ?", (self.id,))
        if not rows:
            return None
        r = rows[0]
        key = None
        if r["sop_instance_uid"]:
            key = SliceKey(r["study_uid"], r["series_uid"], r["sop_instance_uid"], int(r["frame"]))
        return Position(r["study_uid"], r["stack_uid"], int(r["slice_index"]), r["updated_at"], key)

    def studies(self) -> list[StudyReview]:
        """Every study of the worklist, in original order."""
        rows = self.store._read("SELECT * FROM studies WHERE session_id = ? ORDER BY position", (self.id,))
        ai_rows = {
            int(r["study_id"]): r
            for r in self.store._read(
                "SELECT a.* FROM ai_results a JOIN studies st ON st.id = a.study_id WHERE st.session_id = ?",
                (self.id,),
            )
        }
        findings: dict[int, list[sqlite3.Row]] = {}
        for r in self.store._read(
            "SELECT f.* FROM findings f JOIN studies st ON st.id = f.study_id WHERE st.session_id = ? "
            "ORDER BY f.id",
            (self.id,),
        ):
            findings.setdefault(int(r["study_id"]), []).append(r)
        return [
            self._study_from_rows(r, ai_rows.get(int(r["id"])), findings.get(int(r["id"]), [])) for r in rows
        ]

    @staticmethod
    def _study_from_rows(r: sqlite3.Row, a: sqlite3.Row | None, frows: list[sqlite3.Row]) -> StudyReview:
        ai = None
        if a is not None:
            ai = AIResult(
                stack_uid=a["stack_uid"],
                series_instance_uid=a["series_uid"],
                model_name=a["model_name"],
                model_version=a["model_version"],
                model_sha256=a["model_sha256"],
                class_names=tuple(json.loads(a["class_names"])),
                study_probs=tuple(float(p) for p in json.loads(a["study_probs"])),
                thresholds=tuple(float(t) for t in json.loads(a["thresholds"])),
                slice_uids=tuple(json.loads(a["slice_uids"])),
                sop_class_uid=a["sop_class_uid"],
                badge=a["badge"],
                positive=bool(a["positive"]),
                recorded_at=a["recorded_at"],
            )
        found = []
        for f in frows:
            corrected = None
            if f["corrected_start"] is not None and f["corrected_stop"] is not None:
                corrected = SliceRange(int(f["corrected_start"]), int(f["corrected_stop"]))
            found.append(
                Finding(
                    id=int(f["id"]),
                    study_uid=r["study_uid"],
                    source=f["source"],
                    class_name=f["class_name"],
                    ai_positive=None if f["ai_positive"] is None else bool(f["ai_positive"]),
                    study_prob=f["study_prob"],
                    threshold=f["threshold"],
                    ranges=_ranges_from_json(f["ranges"]),
                    peak_slice=f["peak_slice"],
                    decision=f["decision"],
                    decision_at=f["decision_at"],
                    corrected_class=f["corrected_class"],
                    corrected_range=corrected,
                    created_at=f["created_at"],
                    updated_at=f["updated_at"],
                )
            )
        paths = tuple(json.loads(r["paths"]))
        try:
            source = SourceRef.from_columns(r["source_kind"], r["source_node"], r["locator"])
        except StudySourceError:
            log.warning("Review store: a study's recorded source is unreadable; using its paths")
            source = SourceRef.local(paths)
        return StudyReview(
            study_uid=r["study_uid"],
            position=int(r["position"]),
            paths=paths,
            source=source,
            added_at=r["added_at"],
            updated_at=r["updated_at"],
            ai=ai,
            findings=tuple(found),
            note=r["note"],
            note_at=r["note_at"],
            impression=r["impression"],
            impression_at=r["impression_at"],
            done=bool(r["done"]),
            done_at=r["done_at"],
        )

    def study(self, study_uid: str) -> StudyReview:
        for s in self.studies():
            if s.study_uid == study_uid:
                return s
        raise ReviewStoreError(f"Study {study_uid} is not in this session's worklist")

    def worklist(self, order: WorklistOrder = "ai_first") -> list[StudyReview]:
        """The worklist: AI-positive studies first ('ai_first'), else the order studies were added."""
        studies = self.studies()
        if order == "ai_first":
            studies.sort(key=lambda s: (not s.ai_positive, s.position))
        elif order != "original":
            raise ValueError(f"Unknown worklist order {order!r}")
        return studies

    def next_unreviewed(
        self, current: str | None, step: int = 1, order: WorklistOrder = "ai_first"
    ) -> str | None:
        """The next (step=1) or previous (step=-1) study not marked done, wrapping around."""
        uids = [s.study_uid for s in self.worklist(order)]
        done = {s.study_uid for s in self.studies() if s.done}
        if not uids:
            return None
        start = uids.index(current) if current in uids else (-1 if step > 0 else 0)
        for k in range(1, len(uids) + 1):
            uid = uids[(start + step * k) % len(uids)]
            if uid not in done and uid != current:
                return uid
        return None

    def events(self) -> list[tuple[int, str, str | None, str]]:
        """(seq, ts, study_uid, kind) of every change, oldest first (the audit trail)."""
        rows = self.store._read(
            "SELECT seq, ts, study_uid, kind FROM events WHERE session_id = ? ORDER BY seq", (self.id,)
        )
        return [(int(r[0]), str(r[1]), r[2], str(r[3])) for r in rows]


__all__ = ["CT_IMAGE_STORAGE", "SCHEMA_VERSION", "ReviewSession", "ReviewStore", "now_iso"]
