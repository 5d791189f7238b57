"""Where studies come from and how to get them again (Qt-free): :class:`SourceRef` (local files or a
PACS node, by name and protocol) and the :class:`StudyLocator` protocol with its local implementation;
the PACS one is :class:`viewer.core.pacs.locator.PacsStudyLocator`."""

from viewer.core.location.locator import (
    LocalStudyLocator,
    LocatedStudy,
    StudyLocator,
    StudyLocators,
)
from viewer.core.location.ref import SourceKind, SourceRef

__all__ = [
    "LocalStudyLocator",
    "LocatedStudy",
    "SourceKind",
    "SourceRef",
    "StudyLocator",
    "StudyLocators",
]
