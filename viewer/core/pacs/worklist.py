"""A reading worklist from the PACS (issue 13 item 4): the CT heads of a date range, each with the AI
result that Slicewise's AI node (or a viewer's "Send AI result") stored into the study, ordered so that
AI-positive studies are read first.

For every CT study of the range (``ModalitiesInStudy = CT``; head studies by their series'
BodyPartExamined where the PACS answers it, else by Study Description, every CT where it gives neither)
the SR series of the study are listed, retrieved
(small objects, kept in the instance cache so a refresh does not download them again) and read. A
Slicewise AI Result SR is recognised by its Contributing Equipment (Manufacturer "Slicewise", Purpose of
Reference 99IHE 1630 "Processing Algorithm", see :mod:`viewer.core.airesults.ai_sr`); other SRs (a
reader's review SR, other vendors' reports) are ignored. The study decision is that of the viewer
(``StackPrediction.study_positive``): positive when a finding group's Presence is Present (the ``any``
group, or a subtype), negative when all are Absent; the probability shown is the ``any`` group's. An
applicability group saying "Out of scope" makes the row "out of scope". Studies without such an SR are
"not analysed" (the viewer analyses them when they are opened).

Order: AI-positive first; then by probability (highest first, rows without one last); then by study
date and time (oldest first: the longest waiting). Nothing here logs patient data: only counts and
error types.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from enum import Enum
from typing import Final

from viewer.core.dicom.model import SliceSource
from viewer.core.errors import PacsError
from viewer.core.pacs.cache import InstanceCache
from viewer.core.pacs.models import CancelFn, SeriesMatch, StudyMatch, StudyQuery
from viewer.core.pacs.protocol import PacsClient

logger = logging.getLogger(__name__)

# Words of a Study Description that name a head / brain examination (upper-case substrings)
HEAD_WORDS: Final[tuple[str, ...]] = (
    "HEAD", "BRAIN", "CRANI", "SKULL", "NEURO", "CEREB", "STROKE", "KOPF", "SCHAED", "SCHÄD", "CCT", "CT CH",
)
# BodyPartExamined values (CID 4031) of a head examination
HEAD_BODY_PARTS: Final[tuple[str, ...]] = ("HEAD", "BRAIN", "SKULL")
ProgressFn = Callable[[int, int], None]


class AiStatus(str, Enum):
    POSITIVE = "AI positive"
    NEGATIVE = "AI negative"
    OUT_OF_SCOPE = "out of scope"
    UNREADABLE = "AI result unreadable"
    NOT_ANALYSED = "not analysed"


@dataclass(frozen=True)
class AiStudyResult:
    """What one Slicewise AI Result SR says about its study."""

    status: AiStatus
    probability: float | None
    model: str = ""  # "name version"
    sop_instance_uid: str = ""


@dataclass(frozen=True)
class WorklistRow:
    study: StudyMatch
    status: AiStatus
    probability: float | None = None
    model: str = ""
    ai_results: int = 0  # Slicewise AI SRs found in the study

    def sort_key(self) -> tuple[bool, bool, float, str]:
        prob = self.probability
        return (
            self.status is not AiStatus.POSITIVE,
            prob is None,
            -(prob or 0.0),
            (self.study.study_date or "99999999") + (self.study.study_time or ""),
        )


def order_rows(rows: Sequence[WorklistRow]) -> list[WorklistRow]:
    """AI-positive first, then by probability (highest first, none last), then oldest first."""
    return sorted(rows, key=WorklistRow.sort_key)


def is_head_study(study: StudyMatch, series: Sequence[SeriesMatch] = ()) -> bool:
    """A head examination: by its series' BodyPartExamined where the PACS gives one (HEAD, BRAIN,
    SKULL), else by its Study Description; True when the PACS gives neither."""
    parts = {s.body_part.replace(" ", "").replace("_", "") for s in series if s.body_part.strip()}
    if parts:
        return bool(parts & set(HEAD_BODY_PARTS))
    text = study.study_description.strip().upper()
    return not text or any(word in text for word in HEAD_WORDS)


def _rank(result: AiStudyResult) -> tuple[int, float]:
    order = {AiStatus.POSITIVE: 0, AiStatus.NEGATIVE: 1, AiStatus.OUT_OF_SCOPE: 2, AiStatus.UNREADABLE: 3}
    return order.get(result.status, 4), -(result.probability or 0.0)


def study_ai_results(
    client: PacsClient,
    study_uid: str,
    cache: InstanceCache,
    cancel: CancelFn | None = None,
    series_list: Sequence[SeriesMatch] | None = None,
) -> list[AiStudyResult]:
    """The Slicewise AI results stored in ``study_uid``: its SR series (of ``series_list``, else asked
    for) retrieved into ``cache`` and read."""
    results = []
    for series in client.find_series(study_uid) if series_list is None else series_list:
        if series.modality.upper() != "SR":
            continue
        report = client.retrieve_series(study_uid, series.series_uid, cache, cancel=cancel)
        if report.failed:
            logger.info("AI worklist: %d SR instances did not arrive", len(report.failed))
        for inst in report.instances:
            result = _read_file(inst.source)
            if result is not None:
                results.append(result)
        if report.cancelled:
            break
    return results


def _read_file(source: SliceSource) -> AiStudyResult | None:
    """Read one cached SR in the helper process (highdicom stays out of the viewer's process)."""
    from viewer.core.airesults import process

    try:
        result = process.call_named("viewer.core.pacs.ai_sr_reader:read_ai_result_file", source).result(
            timeout=process.RESULT_TIMEOUT_S
        )
    except (RuntimeError, TimeoutError, OSError) as exc:  # a dead or stuck helper process
        logger.info("AI worklist: an SR could not be read (%s)", type(exc).__name__)
        return None
    return result if isinstance(result, AiStudyResult) else None


def build_worklist(
    client: PacsClient,
    cache: InstanceCache,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    head_only: bool = True,
    on_progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> list[WorklistRow]:
    """The ordered worklist of the CT (head) studies from ``date_from`` to ``date_to`` (both default to
    today). A study whose AI results cannot be fetched (a :class:`PacsError` for that study) is listed
    as :attr:`AiStatus.UNREADABLE`; a failure of the study query itself raises. On cancel, the rows made
    so far are returned (the rest as "not analysed" is not claimed: they are left out)."""
    today = date.today()
    query = StudyQuery(date_from=date_from or today, date_to=date_to or date_from or today, modality="CT")
    studies = [s for s in client.find_studies(query) if not s.modalities or "CT" in s.modalities]
    rows: list[WorklistRow] = []
    for k, study in enumerate(studies):
        if cancel is not None and cancel():
            break
        row = _study_row(client, study, cache, cancel, head_only)
        if row is not None:
            rows.append(row)
        if on_progress is not None:
            on_progress(k + 1, len(studies))
    logger.info(
        "AI worklist: %d studies, %d AI-positive, %d not analysed",
        len(rows),
        sum(r.status is AiStatus.POSITIVE for r in rows),
        sum(r.status is AiStatus.NOT_ANALYSED for r in rows),
    )
    return order_rows(rows)


def _study_row(
    client: PacsClient, study: StudyMatch, cache: InstanceCache, cancel: CancelFn | None, head_only: bool
) -> WorklistRow | None:
    """The study's row; None when only head studies are wanted and this is not one."""
    try:
        series = client.find_series(study.study_uid)
        if head_only and not is_head_study(study, series):
            return None
        results = study_ai_results(client, study.study_uid, cache, cancel, series)
    except PacsError as exc:
        logger.info("AI worklist: a study's AI results could not be fetched (%s)", type(exc).__name__)
        return WorklistRow(study, AiStatus.UNREADABLE) if not head_only or is_head_study(study) else None
    if not results:
        return WorklistRow(study, AiStatus.NOT_ANALYSED)
    best = min(results, key=_rank)
    return WorklistRow(study, best.status, best.probability, best.model, len(results))
