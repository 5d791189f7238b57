"""The review database schema and its forward-only migrations.

Each entry of :data:`MIGRATIONS` takes the database from version ``N - 1`` to ``N``; version 0 is an
empty file. Never edit a released step: append a new one.
"""

from __future__ import annotations

from typing import Final

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

#: MIGRATIONS[n - 1] upgrades version n - 1 to version n.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (_V1, _V2)
SCHEMA_VERSION: Final = len(MIGRATIONS)
