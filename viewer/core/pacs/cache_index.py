"""The PACS cache's index: each study folder's size and last use in one small JSON file.

Eviction reads it instead of walking every cached file, so its cost grows with the number of studies,
not files. ``<root>/.index.json`` is ``{"schema": 1, "studies": {folder name: {"bytes", "used",
"dirty"}}}``, written atomically (temporary file, rename) but not fsynced: like the cached files
themselves (never fsynced) it promises nothing across a power cut, after which it may be a previous
version (a study then measured again only when next written) or damaged (rebuilt). Its fsyncs (four
per series retrieve: two saves, file and folder) took 1-29 ms together here, on a retrieve whose
download takes ~0.1 s. A study being written is marked
``dirty`` first and measured again (only its own files) at the next eviction check, so a process killed
mid-retrieve leaves the study to be measured, not a wrong size. A missing or damaged index is rebuilt by
measuring every study folder once; folders the index does not know (written by an older Slicewise) are
measured and added, entries whose folder is gone are dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from viewer.core.review.fileutil import atomic_write_bytes

logger = logging.getLogger(__name__)

INDEX_FILE = ".index.json"
INDEX_LOCK = ".index.lock"
SCHEMA = 1
STAMP = ".last-used"


@dataclass
class StudyEntry:
    """One cached study: its bytes on disk, when it was last written or opened (epoch seconds), and
    whether it may have changed since it was measured."""

    bytes: int
    used: float
    dirty: bool = False


def tree_size(folder: Path) -> int:
    """The bytes of every file under ``folder``."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total


def last_used(folder: Path) -> float:
    """A study folder's last use: its stamp's time, else the folder's."""
    try:
        return (folder / STAMP).stat().st_mtime
    except OSError:
        with contextlib.suppress(OSError):
            return folder.stat().st_mtime
    return 0.0


def measure(folder: Path) -> StudyEntry:
    return StudyEntry(tree_size(folder), last_used(folder))


def load(root: Path) -> dict[str, StudyEntry] | None:
    """The index's entries; None when the file is missing or damaged (then the caller rebuilds it)."""
    try:
        raw = json.loads((root / INDEX_FILE).read_bytes())
        studies = raw.get("studies") if isinstance(raw, dict) else None
        if not isinstance(studies, dict) or raw.get("schema") != SCHEMA:
            raise ValueError("unexpected layout")
        entries: dict[str, StudyEntry] = {}
        for name, item in studies.items():
            if not isinstance(name, str) or not isinstance(item, dict):
                raise ValueError("unexpected entry")
            size, used, dirty = item.get("bytes"), item.get("used"), item.get("dirty", False)
            if not isinstance(size, int) or size < 0 or not isinstance(used, (int, float)):
                raise ValueError("unexpected value")
            entries[name] = StudyEntry(size, float(used), bool(dirty))
        return entries
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        logger.warning("PACS cache: the index is damaged (%s); rebuilding it from disk", type(exc).__name__)
        return None


def save(root: Path, entries: dict[str, StudyEntry]) -> None:
    studies = {name: {"bytes": e.bytes, "used": e.used, "dirty": e.dirty} for name, e in entries.items()}
    data = json.dumps({"schema": SCHEMA, "studies": studies}).encode()
    atomic_write_bytes(root / INDEX_FILE, data, durable=False)


def study_names(root: Path) -> set[str]:
    """The study folders under ``root`` (one directory listing)."""
    with os.scandir(root) as it:
        return {e.name for e in it if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")}


def reconciled(root: Path) -> dict[str, StudyEntry]:
    """The index made to agree with the study folders present: rebuilt when missing or damaged, unknown
    folders measured, vanished ones dropped. Dirty entries are left for the caller to measure."""
    entries = load(root)
    names = study_names(root)
    if entries is None:
        entries = {}
        if names:
            logger.info("PACS cache: rebuilding the index of %d studies from disk", len(names))
    for name in set(entries) - names:
        del entries[name]
    for name in names - set(entries):
        entries[name] = measure(root / name)
    return entries
