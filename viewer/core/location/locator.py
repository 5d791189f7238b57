"""One protocol for "where to get a study again": :class:`StudyLocator`.

``locate(study_uid, source)`` turns a recorded :class:`~viewer.core.location.ref.SourceRef` into paths
the ordinary loader opens (:func:`viewer.core.dicom.loader.load_paths`): a local source resolves to
its files (those still there), a PACS source retrieves the study by UID into the bounded instance cache
(:class:`viewer.core.pacs.locator.PacsStudyLocator`; only what the cache no longer holds is fetched).
:class:`StudyLocators` picks the locator for the source's kind. Failures are
:class:`~viewer.core.errors.StudySourceError` (or the PACS's own :class:`~viewer.core.errors.PacsError`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from viewer.core.errors import StudySourceError
from viewer.core.location.ref import SourceKind, SourceRef

ProgressFn = Callable[[int, int], None]  # (done, total)
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class LocatedStudy:
    """A study found again: open ``paths`` with the ordinary loader, and record ``source`` for it."""

    study_uid: str
    source: SourceRef
    paths: tuple[Path, ...]
    problems: tuple[str, ...] = ()  # what could not be had (shown on screen; may name paths)
    retrieved: int = 0  # instances fetched from the PACS now
    cached: int = 0  # instances the PACS cache still held
    cancelled: bool = False

    @property
    def complete(self) -> bool:
        return not self.problems and not self.cancelled


class StudyLocator(Protocol):
    """Finds a study again from its recorded source (may block: run it off the GUI thread)."""

    def locate(
        self,
        study_uid: str,
        source: SourceRef,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> LocatedStudy: ...


class StudyLocators:
    """A :class:`StudyLocator` that hands each source to the locator of its kind."""

    def __init__(self, locators: Mapping[SourceKind, StudyLocator]) -> None:
        self._locators = dict(locators)

    def locate(
        self,
        study_uid: str,
        source: SourceRef,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> LocatedStudy:
        locator = self._locators.get(source.kind)
        if locator is None:
            raise StudySourceError(f"Studies from {source.kind.label} cannot be opened again here")
        return locator.locate(study_uid, source, progress=progress, cancel=cancel)


class LocalStudyLocator:
    """A local source resolves to the recorded files, folders, archives or DICOMDIRs still present."""

    def locate(
        self,
        study_uid: str,
        source: SourceRef,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> LocatedStudy:
        if source.kind is not SourceKind.LOCAL:
            raise StudySourceError(f"Not a local study source: {source.kind.label}")
        if not source.paths:
            raise StudySourceError("No files are recorded for this study: open it from its folder")
        present = tuple(Path(p) for p in source.paths if Path(p).exists())
        gone = [p for p in source.paths if not Path(p).exists()]
        if progress is not None:
            progress(len(source.paths), len(source.paths))
        if not present:
            n = len(source.paths)
            raise StudySourceError(
                f"The study's {'file or folder' if n == 1 else f'{n} files or folders'} no longer "
                "exist (moved or deleted): open it again from where it is now"
            )
        problems = tuple(f"{p}: no longer exists" for p in gone)
        return LocatedStudy(study_uid, source, present, problems)
