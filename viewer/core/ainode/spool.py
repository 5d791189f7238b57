"""The AI node's spool: received instances and built result objects on disk, durable before they are
acknowledged.

Layout under the node's state folder (every folder 0700, every file 0600)::

    spool/<series key>/<instance key>.dcm    instances as received (encoded bytes, never decoded here)
    outbox/<result key>/<object UID>.dcm     result objects waiting for, or already taken by, the PACS

Keys are SHA-256 prefixes of the UIDs, so no file or folder name holds patient data or a source UID (a
result object is named by its own UID, derived from hashes). Every file
is written whole under a temporary name, fsynced, renamed into place and its folder fsynced
(:func:`~viewer.core.review.fileutil.atomic_write_bytes`): a kill or power cut leaves either the whole
file or none.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from viewer.core.review.fileutil import atomic_write_bytes, private_dir


def name_key(kind: str, uid: str) -> str:
    return hashlib.sha256(f"{kind}\0{uid}".encode()).hexdigest()[:32]


class Spool:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = private_dir(state_dir)
        self.instances = private_dir(state_dir / "spool")
        self.outbox = private_dir(state_dir / "outbox")

    def instance_file(self, series_uid: str, sop_uid: str) -> str:
        """The spool-relative name of an instance's file (what the queue records)."""
        return f"{name_key('series', series_uid)}/{name_key('instance', sop_uid)}.dcm"

    def write_instance(self, series_uid: str, sop_uid: str, data: bytes) -> str:
        name = self.instance_file(series_uid, sop_uid)
        path = self.instances / name
        private_dir(path.parent)
        atomic_write_bytes(path, data)
        return name

    def path(self, name: str) -> Path:
        return self.instances / name

    def result_folder(self, result_key: str, *, create: bool = True) -> Path:
        """The outbox folder of one result's objects (created 0700)."""
        folder = self.outbox / result_key
        return private_dir(folder) if create else folder
