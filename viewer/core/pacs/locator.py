"""Get a study again from the PACS it was retrieved from: the :class:`StudyLocator` of PACS sources.

A PACS source (:class:`~viewer.core.location.SourceRef`: node name, protocol, series) resolves by
retrieving the study by UID into the bounded :class:`~viewer.core.pacs.cache.InstanceCache` with the
ordinary :meth:`PacsClient.retrieve_series`: instances the cache still holds are not asked for again,
what it evicted is retrieved again. The paths returned are the cache's series folders, which the
ordinary loader opens. When the PACS cannot be reached, whatever the cache still holds of the study
is opened, with a note saying it may be incomplete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from viewer.core.errors import PacsUnreachableError, StudySourceError
from viewer.core.location.locator import CancelFn, LocatedStudy, ProgressFn
from viewer.core.location.ref import SourceKind, SourceRef
from viewer.core.pacs.cache import InstanceCache
from viewer.core.pacs.models import RetrievedInstance, RetrieveReport
from viewer.core.pacs.protocol import PacsClient

logger = logging.getLogger(__name__)

#: a new client for the source's node (raises StudySourceError when the node is no longer configured)
ConnectFn = Callable[[SourceRef], PacsClient]


class PacsStudyLocator:
    """Resolves PACS sources through ``cache``; ``connect`` makes a client for a source's node (one per
    call: DICOMweb sessions are not shared between threads)."""

    def __init__(self, connect: ConnectFn, cache: InstanceCache) -> None:
        self._connect = connect
        self.cache = cache

    def locate(
        self,
        study_uid: str,
        source: SourceRef,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> LocatedStudy:
        if not source.is_pacs:
            raise StudySourceError(f"Not a PACS study source: {source.kind.label}")
        client = self._connect(source)
        try:
            try:
                matches = client.find_series(study_uid)
            except PacsUnreachableError as exc:
                cached = self.cache.cached_series_folders(source.node, study_uid, source.series_uids)
                if not cached:
                    raise
                logger.warning("PACS unreachable (%s): opening a study's cached copy", type(exc).__name__)
                self.cache.touch(self.cache.study_folder(source.node, study_uid))
                note = f"{exc} — opened the copy in the local cache, which may be incomplete"
                return LocatedStudy(study_uid, source, tuple(cached), (note,))
            found = {m.series_uid for m in matches}
            wanted = [m for m in matches if not source.series_uids or m.series_uid in source.series_uids]
            problems = [
                f"Series {uid} is no longer on PACS “{source.node}”"
                for uid in source.series_uids
                if uid not in found
            ]
            if not wanted:
                raise StudySourceError(
                    f"PACS “{source.node}” no longer holds this study"
                    + (" (none of its recorded series)" if source.series_uids else "")
                )
            total = sum(m.num_instances or 0 for m in wanted)
            arrived = 0

            def on_instance(_item: RetrievedInstance) -> None:
                nonlocal arrived
                arrived += 1
                if progress is not None:
                    progress(arrived, max(total, arrived))

            reports: list[RetrieveReport] = []
            for match in wanted:
                if cancel is not None and cancel():
                    break
                report = client.retrieve_series(
                    study_uid, match.series_uid, self.cache, on_instance=on_instance, cancel=cancel
                )
                reports.append(report)
                if report.cancelled:
                    break
        finally:
            client.close()
        cancelled = len(reports) < len(wanted) or any(r.cancelled for r in reports)
        problems += [f"{f.sop_instance_uid or 'an instance'}: {f.reason}" for r in reports for f in r.failed]
        return LocatedStudy(
            study_uid,
            source,
            tuple(r.folder for r in reports if r.instances),
            tuple(problems),
            retrieved=sum(len(r.received) for r in reports),
            cached=sum(len(r.cached) for r in reports),
            cancelled=cancelled,
        )


def pacs_source_of_cache_paths(
    source: SourceRef, study_uid: str, cache: InstanceCache, nodes: Mapping[str, SourceKind]
) -> SourceRef | None:
    """The PACS source of a *local* source whose paths are all series folders of ``study_uid`` in the
    cache, retrieved from one of ``nodes`` (name -> protocol): how review databases written before
    sources were recorded kept PACS studies (by their cache folders, which eviction removes). None when
    the paths are anything else."""
    if source.is_pacs or not source.paths:
        return None
    parents = {Path(p).parent for p in source.paths}
    if len(parents) != 1:
        return None
    (parent,) = parents
    for name, kind in nodes.items():
        if kind.is_pacs and parent == cache.study_folder(name, study_uid):
            return SourceRef.pacs(name, kind)  # the series keys are hashes: the whole study
    return None
