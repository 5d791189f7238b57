"""The one interface the viewer uses for a PACS, whatever the protocol underneath."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from viewer.core.constants import PACS_RETRIEVE_ATTEMPTS
from viewer.core.pacs.cache import InstanceCache
from viewer.core.pacs.models import (
    CancelFn,
    InstanceCallback,
    InstanceMatch,
    RetrieveReport,
    SeriesMatch,
    StoreOutcome,
    StudiesCallback,
    StudyMatch,
    StudyQuery,
)
from viewer.core.pacs.node import PacsNode


class PacsClient(Protocol):
    """Query, retrieve and store. Implemented by :class:`DicomWebClient` and :class:`DimseClient`; every
    failure is a :class:`viewer.core.errors.PacsError`."""

    node: PacsNode

    def echo(self) -> float:
        """Test the connection; seconds for the round trip."""
        ...

    def find_studies(
        self, query: StudyQuery, on_first_page: StudiesCallback | None = None
    ) -> list[StudyMatch]:
        """The matching studies. ``on_first_page``, when given, may be called once, before this
        returns and maybe from another thread, with the first matches (about
        :data:`~viewer.core.constants.PACS_FIRST_PAGE`) so a table can show them while the rest
        arrive; the return value holds every match."""
        ...

    def find_series(self, study_uid: str) -> list[SeriesMatch]: ...

    def find_instances(self, study_uid: str, series_uid: str) -> list[InstanceMatch]: ...

    def retrieve_series(
        self,
        study_uid: str,
        series_uid: str,
        cache: InstanceCache,
        *,
        on_instance: InstanceCallback | None = None,
        cancel: CancelFn | None = None,
        attempts: int = PACS_RETRIEVE_ATTEMPTS,
    ) -> RetrieveReport:
        """Bring a series into ``cache`` (resuming, never duplicating); failures are listed, not raised."""
        ...

    def store(self, paths: Sequence[Path]) -> list[StoreOutcome]:
        """Send DICOM files; one outcome per file."""
        ...

    def close(self) -> None: ...


def retrieve_study(
    client: PacsClient,
    study_uid: str,
    cache: InstanceCache,
    *,
    on_instance: InstanceCallback | None = None,
    cancel: CancelFn | None = None,
) -> list[RetrieveReport]:
    """Every series of a study, one after the other (stops at cancel)."""
    reports = []
    for series in client.find_series(study_uid):
        report = client.retrieve_series(
            study_uid, series.series_uid, cache, on_instance=on_instance, cancel=cancel
        )
        reports.append(report)
        if report.cancelled:
            break
    return reports
