"""``slicewise watch``: poll a DICOMweb server (QIDO-RS) for new studies, retrieve their new CT series
(WADO-RS) and feed them to the AI node's queue, as if a modality had sent them.

QIDO-RS cannot ask "stored since"; the watcher asks for studies dated from the day of its last poll
(persisted in the queue, one day of overlap) and remembers, per series, how many instances it took: a
series is retrieved again only when the server holds more instances than last time (instances already
received are ignored by the queue). The first poll starts at ``since`` (default: today).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone

from viewer.core.ainode.node import AiNode
from viewer.core.dicom.sources import read_source_bytes
from viewer.core.errors import DicomError, PacsError, PacsResponseError
from viewer.core.pacs.cache import InstanceCache
from viewer.core.pacs.dicomweb import DicomWebClient
from viewer.core.pacs.models import StudyQuery

log = logging.getLogger(__name__)

LAST_POLL_KEY = "watch:last-poll-date"
SEEN_PREFIX = "watch:series:"
WATCHED_MODALITIES = ("CT",)


def _today() -> date:
    return datetime.now(timezone.utc).date()


class DicomWebWatcher:
    def __init__(
        self,
        node: AiNode,
        client: DicomWebClient,
        *,
        since: date | None = None,
        today: Callable[[], date] = _today,
    ) -> None:
        self.node = node
        self.client = client
        self.since = since
        self._today = today
        self.cache = InstanceCache(node.config.state_dir / "retrieve")

    def _from_date(self) -> date:
        stored = self.node.queue.get_meta(LAST_POLL_KEY)
        if stored:
            return date.fromisoformat(stored) - timedelta(days=1)
        return self.since or self._today()

    def poll_once(self) -> int:
        """One poll: returns the number of new instances fed to the queue. Raises :class:`PacsError` when
        the server cannot be queried (the next poll tries again)."""
        today = self._today()
        queue = self.node.queue
        fed = 0
        for study in self.client.find_studies(StudyQuery(date_from=self._from_date())):
            for series in self.client.find_series(study.study_uid):
                if series.modality not in WATCHED_MODALITIES:
                    continue
                key = SEEN_PREFIX + series.series_uid
                seen = int(queue.get_meta(key) or -1)
                if series.num_instances is not None and series.num_instances <= seen:
                    continue
                fed += self._take(study.study_uid, series.series_uid)
                queue.set_meta(key, str(series.num_instances if series.num_instances is not None else 0))
        queue.set_meta(LAST_POLL_KEY, today.isoformat())
        return fed

    def _take(self, study_uid: str, series_uid: str) -> int:
        tag = self.node.queue.tag(series_uid)
        report = self.client.retrieve_series(study_uid, series_uid, self.cache)
        fed = 0
        batch = ("watch", series_uid)  # the retrieved series, like one sender's association
        try:
            for item in report.instances:
                try:
                    if self.node.ingest(read_source_bytes(item.source), association=batch).value == "new":
                        fed += 1
                except (PacsResponseError, DicomError) as exc:
                    log.warning("AI node watch: series %s: an instance was refused: %s", tag, exc)
        finally:
            shutil.rmtree(report.folder, ignore_errors=True)
            # everything the PACS had of the series is in: analysed after the release quiet time, not
            # after the full quiet time (nor, with a short one, half-way through the batch)
            self.node.association_released(batch)
        if report.failed:
            log.warning("AI node watch: series %s: %d instance(s) not retrieved", tag, len(report.failed))
        log.info("AI node watch: series %s: %d new instance(s) queued", tag, fed)
        return fed

    def run(self, interval_s: float, stop: Callable[[float], bool]) -> None:
        """Poll every ``interval_s`` until ``stop(timeout)`` returns True (e.g. ``Event.wait``)."""
        while True:
            try:
                self.poll_once()
            except PacsError as exc:
                log.warning("AI node watch: poll failed (%s: %s); trying again", type(exc).__name__, exc)
            if stop(interval_s):
                return
