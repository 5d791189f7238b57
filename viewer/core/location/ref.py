"""Where a study came from: :class:`SourceRef`, a frozen value the review store keeps per study.

A study opened from files is a *local* source (the folders, files, zip archives or DICOMDIRs the reader
opened); a study retrieved from a PACS is a *PACS* source (the node's name as configured under
File › PACS nodes…, its protocol, and the series retrieved). The slices themselves are named by UIDs
(:class:`viewer.core.dicom.model.SliceKey`); a source only says where to get the study again
(:mod:`viewer.core.location.locator`).

Stored as three values (:meth:`SourceRef.to_columns`): the kind, the node name and a small JSON
*locator* (``{"paths": [...]}`` for local sources, ``{"series_uids": [...]}`` for PACS ones, ``[]``
meaning the whole study). Paths may hold patient names: never logged, exported on opt-in only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from viewer.core.errors import StudySourceError


class SourceKind(str, Enum):
    """Where a study's bytes come from (the value is what the review store keeps)."""

    LOCAL = "local"  # files, folders, zip archives, gzip files, a DICOMDIR
    DICOMWEB = "dicomweb"  # a PACS node, by QIDO-RS / WADO-RS
    DIMSE = "dimse"  # a PACS node, by C-FIND / C-GET (or C-MOVE)

    @property
    def is_pacs(self) -> bool:
        return self is not SourceKind.LOCAL

    @property
    def label(self) -> str:
        return {"local": "local files", "dicomweb": "DICOMweb", "dimse": "DIMSE"}[self.value]


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(i) for i in items if str(i)))


@dataclass(frozen=True)
class SourceRef:
    """A study's source. Build with :meth:`local` or :meth:`pacs`."""

    kind: SourceKind
    node: str = ""  # PACS node name (PACS kinds only)
    paths: tuple[str, ...] = ()  # local: what was opened (PHI: never logged)
    series_uids: tuple[str, ...] = ()  # PACS: the series retrieved; () is the whole study

    def __post_init__(self) -> None:
        if not isinstance(self.kind, SourceKind):
            raise StudySourceError(f"Unknown study source kind {self.kind!r}")
        if self.kind.is_pacs:
            if not self.node:
                raise StudySourceError(f"A {self.kind.label} study source needs the PACS node's name")
            if self.paths:
                raise StudySourceError("A PACS study source holds no local paths")
        elif self.node or self.series_uids:
            raise StudySourceError("A local study source names no PACS node or series")

    @classmethod
    def local(cls, paths: Sequence[str | Path]) -> SourceRef:
        return cls(SourceKind.LOCAL, paths=_unique(str(p) for p in paths))

    @classmethod
    def pacs(cls, node: str, kind: SourceKind, series_uids: Sequence[str] = ()) -> SourceRef:
        if not kind.is_pacs:
            raise StudySourceError(f"{kind.label} is not a PACS protocol")
        return cls(kind, node=node, series_uids=_unique(series_uids))

    @property
    def is_pacs(self) -> bool:
        return self.kind.is_pacs

    @property
    def is_empty(self) -> bool:
        """A local source without paths: nowhere to get the study again."""
        return not self.is_pacs and not self.paths

    def describe(self) -> str:
        """One line for the screen (no path): 'local files (2 paths)', 'PACS “main” (DICOMweb)'."""
        if self.is_pacs:
            what = f"{len(self.series_uids)} series" if self.series_uids else "whole study"
            return f"PACS “{self.node}” ({self.kind.label}, {what})"
        n = len(self.paths)
        return f"local files ({n} path{'' if n == 1 else 's'})"

    def merged(self, newer: SourceRef) -> SourceRef:
        """This source updated by ``newer`` (the study was opened again): the same local source or PACS
        node gains the new paths or series (a whole-study retrieve covers every series); another source
        replaces this one (the reader now gets the study from there)."""
        if newer.is_empty:
            return self
        if newer.kind is not self.kind or newer.node != self.node:
            return newer
        if self.is_pacs:
            if not self.series_uids or not newer.series_uids:
                return SourceRef.pacs(self.node, newer.kind)
            return SourceRef.pacs(self.node, newer.kind, (*self.series_uids, *newer.series_uids))
        return SourceRef.local((*self.paths, *newer.paths))

    # --- storage -------------------------------------------------------------------------------------
    def locator(self) -> dict[str, list[str]]:
        return {"series_uids": list(self.series_uids)} if self.is_pacs else {"paths": list(self.paths)}

    def to_columns(self) -> tuple[str, str, str]:
        """(kind, node, locator JSON) as the review store keeps them."""
        return self.kind.value, self.node, json.dumps(self.locator())

    @classmethod
    def from_columns(cls, kind: str, node: str, locator: str) -> SourceRef:
        """The inverse of :meth:`to_columns`; :class:`StudySourceError` names what is malformed."""
        try:
            source_kind = SourceKind(kind)
        except ValueError:
            raise StudySourceError(f"Unknown study source kind {kind!r}") from None
        try:
            data: Any = json.loads(locator or "{}")
        except json.JSONDecodeError as exc:
            raise StudySourceError(f"The {source_kind.label} study locator is not JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise StudySourceError(f"The {source_kind.label} study locator is not a JSON object")
        key = "series_uids" if source_kind.is_pacs else "paths"
        items = data.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise StudySourceError(f"The {source_kind.label} study locator's {key!r} is not a list of texts")
        if source_kind.is_pacs:
            return cls.pacs(node, source_kind, items)
        return cls.local(items)

    def to_dict(self) -> dict[str, object]:
        """For exports (with identifiers: paths may hold patient names)."""
        return {"kind": self.kind.value, "node": self.node, **self.locator()}
