"""Radiologist review sessions: a crash-safe SQLite store, exports and a DICOM SR writer (no Qt)."""

from viewer.core.review.models import (
    DECISIONS,
    AIResult,
    Finding,
    Position,
    SessionInfo,
    StoreWarning,
    StoreWarningCode,
    StudyReview,
)
from viewer.core.review.store import SCHEMA_VERSION, ReviewSession, ReviewStore

__all__ = [
    "DECISIONS",
    "SCHEMA_VERSION",
    "AIResult",
    "Finding",
    "Position",
    "ReviewSession",
    "ReviewStore",
    "SessionInfo",
    "StoreWarning",
    "StoreWarningCode",
    "StudyReview",
]
