"""The review database schema and its forward-only migrations.

Each entry of :data:`MIGRATIONS` takes the database from version ``N - 1`` to ``N``; version 0 is an
empty file. A step is an SQL statement or a function of the connection (for conversions SQL cannot say
safely); all steps of all versions run in one transaction. Never edit a released step: append a new one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Final, TypeAlias

Step: TypeAlias = "str | Callable[[sqlite3.Connection], None]"

_V1: Final[tuple[str, ...]] = (
    """CREATE TABLE schema_version (
        version INTEGER NOT NULL,
        applied_at TEXT NOT NULL,
        app_version TEXT NOT NULL)""",
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL)""",
    """CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        reader TEXT NOT NULL,
        created_at TEXT NOT NULL,
        modified_at TEXT NOT NULL)""",
    """CREATE TABLE studies (
        id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        study_uid TEXT NOT NULL,
        position INTEGER NOT NULL,
        paths TEXT NOT NULL DEFAULT '[]',
        note TEXT NOT NULL DEFAULT '',
        note_at TEXT,
        impression TEXT NOT NULL DEFAULT '',
        impression_at TEXT,
        done INTEGER NOT NULL DEFAULT 0,
        done_at TEXT,
        added_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (session_id, study_uid))""",
    """CREATE TABLE ai_results (
        study_id INTEGER PRIMARY KEY REFERENCES studies(id) ON DELETE CASCADE,
        stack_uid TEXT NOT NULL,
        series_uid TEXT NOT NULL,
        model_name TEXT NOT NULL,
        model_version TEXT NOT NULL,
        model_sha256 TEXT NOT NULL,
        class_names TEXT NOT NULL,
        study_probs TEXT NOT NULL,
        thresholds TEXT NOT NULL,
        slice_uids TEXT NOT NULL,
        sop_class_uid TEXT NOT NULL,
        badge TEXT NOT NULL,
        positive INTEGER NOT NULL,
        recorded_at TEXT NOT NULL)""",
    """CREATE TABLE findings (
        id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
        source TEXT NOT NULL CHECK (source IN ('ai', 'reader')),
        class_name TEXT NOT NULL,
        ai_positive INTEGER,
        study_prob REAL,
        threshold REAL,
        ranges TEXT NOT NULL DEFAULT '[]',
        peak_slice INTEGER,
        decision TEXT CHECK (decision IS NULL OR decision IN ('confirmed', 'rejected', 'uncertain')),
        decision_at TEXT,
        corrected_start INTEGER,
        corrected_stop INTEGER,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL)""",
    "CREATE INDEX findings_study ON findings (study_id)",
)

_V2: Final[tuple[str, ...]] = (
    "ALTER TABLE findings ADD COLUMN corrected_class TEXT",
    """CREATE TABLE positions (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
        study_uid TEXT NOT NULL,
        stack_uid TEXT NOT NULL,
        slice_index INTEGER NOT NULL,
        updated_at TEXT NOT NULL)""",
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL,
        session_id TEXT NOT NULL,
        study_uid TEXT,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL)""",
    "CREATE INDEX events_session ON events (session_id, seq)",
)



def _paths_to_local_sources(conn: sqlite3.Connection) -> None:
    """v3: every study recorded before sources were (by the JSON list in ``paths``) becomes a local
    source with those paths. ``paths`` itself is left as it was (older versions read it)."""
    rows = conn.execute("SELECT id, paths FROM studies").fetchall()
    for study_id, paths in rows:
        try:
            items = json.loads(paths or "[]")
        except ValueError:
            items = []
        if not isinstance(items, list):
            items = []
        kept = list(dict.fromkeys(str(p) for p in items if isinstance(p, str) and p))
        conn.execute("UPDATE studies SET locator = ? WHERE id = ?", (json.dumps({"paths": kept}), study_id))


# v3: studies are referenced by UID *and source* (local files, or a PACS node by name and protocol, see
# viewer.core.location.SourceRef), so a study retrieved from a PACS is retrieved again when the cache
# has evicted it; positions name the slice by UIDs (viewer.core.dicom.model.SliceKey), not only its index.
_V3: Final[tuple[Step, ...]] = (
    "ALTER TABLE studies ADD COLUMN source_kind TEXT NOT NULL DEFAULT 'local'"
    " CHECK (source_kind IN ('local', 'dicomweb', 'dimse'))",
    "ALTER TABLE studies ADD COLUMN source_node TEXT NOT NULL DEFAULT ''",
    """ALTER TABLE studies ADD COLUMN locator TEXT NOT NULL DEFAULT '{"paths": []}'""",
    _paths_to_local_sources,
    "ALTER TABLE positions ADD COLUMN series_uid TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE positions ADD COLUMN sop_instance_uid TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE positions ADD COLUMN frame INTEGER NOT NULL DEFAULT 0",
)

#: MIGRATIONS[n - 1] upgrades version n - 1 to version n.
MIGRATIONS: Final[tuple[tuple[Step, ...], ...]] = (_V1, _V2, _V3)
SCHEMA_VERSION: Final = len(MIGRATIONS)
