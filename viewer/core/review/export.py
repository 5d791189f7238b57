"""CSV / JSON exports of a review session and the AI-vs-reader agreement summary.

De-identified by default: no session name, reader name or source paths (paths can carry patient
names), no free text (notes, impressions) unless asked. The store holds no patient names, IDs or birth
dates at all. DICOM UIDs are kept so results can be matched to the images. Slice numbers in exports
are 1-based, in the stack's display order (ascending along the slice normal), ranges inclusive.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from viewer.core.constants import INTENDED_USE, RSNA_CLASSES
from viewer.core.inference.results import SliceRange
from viewer.core.review.fileutil import atomic_write_bytes
from viewer.core.review.models import Finding, StudyReview
from viewer.core.review.store import ReviewSession, now_iso

EXPORT_FORMAT_VERSION: Final = 1

CSV_COLUMNS: Final[tuple[str, ...]] = (
    "session_id",
    "study_uid",
    "study_position",
    "series_uid",
    "stack_uid",
    "model_name",
    "model_version",
    "model_sha256",
    "ai_recorded_at",
    "finding_id",
    "finding_source",
    "class_name",
    "ai_positive",
    "ai_study_prob",
    "ai_threshold",
    "ai_ranges",
    "ai_peak_slice",
    "reader_range",
    "decision",
    "decision_at",
    "corrected_class",
    "corrected_range",
    "reader_truth",
    "study_done",
    "done_at",
    "intended_use",
)
IDENTIFIER_COLUMNS: Final[tuple[str, ...]] = ("session_name", "reader", "source_paths")
FREE_TEXT_COLUMNS: Final[tuple[str, ...]] = ("note", "impression")


def _ranges_text(ranges: Sequence[SliceRange]) -> str:
    return ";".join(str(r) for r in ranges)  # SliceRange.__str__ is 1-based


def _ranges_1based(ranges: Sequence[SliceRange]) -> list[list[int]]:
    return [[r.start + 1, r.stop + 1] for r in ranges]


def reader_truth(study: StudyReview, class_name: str) -> bool | None:
    """The reader's call for ``class_name`` in ``study``: True/False, or None when not decided.

    - a reader-added finding, or a correction to this class, makes it positive;
    - a confirmed AI finding takes the AI's call, a rejected one the opposite;
    - 'uncertain' and no decision are undecided, also in a study marked done (marking a study done
      is not a call on the findings the reader left alone): the summary leaves them out;
    - 'any' is positive as soon as a subtype is.
    """

    def direct(name: str) -> bool | None:
        if any(f.source == "reader" and f.class_name == name for f in study.findings):
            return True
        if any(f.corrected_class == name and f.decision != "uncertain" for f in study.findings):
            return True
        ai = next((f for f in study.findings if f.source == "ai" and f.class_name == name), None)
        if ai is None:
            return False if study.done else None
        if ai.decision == "confirmed":
            return bool(ai.ai_positive)
        if ai.decision == "rejected":
            return not ai.ai_positive
        return None

    value = direct(class_name)
    if class_name == "any" and value is not True:
        subtypes = {f.class_name for f in study.findings} | set(RSNA_CLASSES)
        if any(direct(name) for name in subtypes if name != "any"):
            return True
    return value


@dataclass(frozen=True)
class ClassAgreement:
    """AI against the reader for one class, over the studies where both made a call."""

    class_name: str
    tp: int
    fp: int
    fn: int
    tn: int
    undecided: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def sensitivity(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def specificity(self) -> float | None:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else None

    @property
    def agreement(self) -> float | None:
        return (self.tp + self.tn) / self.n if self.n else None

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "n": self.n,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "agreement": self.agreement,
        }


@dataclass(frozen=True)
class SessionSummary:
    session_id: str
    n_studies: int
    n_done: int
    n_with_ai: int
    n_decisions: int
    n_reader_findings: int
    n_corrections: int
    per_class: tuple[ClassAgreement, ...]

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "per_class"}
        d["per_class"] = [c.as_dict() for c in self.per_class]
        d["intended_use"] = INTENDED_USE
        return d

    def text(self) -> str:
        """A short human summary, one line per class."""
        lines = [f"Studies reviewed: {self.n_done} of {self.n_studies} ({self.n_with_ai} analysed by the AI)"]
        for c in self.per_class:
            sens = "n/a" if c.sensitivity is None else f"{c.sensitivity:.2f}"
            spec = "n/a" if c.specificity is None else f"{c.specificity:.2f}"
            lines.append(
                f"{c.class_name}: sensitivity {sens}, specificity {spec} "
                f"(TP {c.tp}, FP {c.fp}, FN {c.fn}, TN {c.tn}, undecided {c.undecided})"
            )
        return "\n".join(lines)


def agreement_summary(session: ReviewSession) -> SessionSummary:
    """Per-class sensitivity/specificity of the AI, taking the reader's decisions as the reference."""
    studies = session.studies()
    names: list[str] = []
    for s in studies:
        for n in s.ai.class_names if s.ai else ():
            if n not in names:
                names.append(n)
    per_class = []
    for name in names or list(RSNA_CLASSES):
        tp = fp = fn = tn = undecided = 0
        for s in studies:
            ai = next((f for f in s.findings if f.source == "ai" and f.class_name == name), None)
            if ai is None:
                continue
            truth = reader_truth(s, name)
            if truth is None:
                undecided += 1
            elif ai.ai_positive:
                tp, fp = tp + truth, fp + (not truth)
            else:
                fn, tn = fn + truth, tn + (not truth)
        per_class.append(ClassAgreement(name, tp, fp, fn, tn, undecided))
    all_findings = [f for s in studies for f in s.findings]
    return SessionSummary(
        session_id=session.id,
        n_studies=len(studies),
        n_done=sum(s.done for s in studies),
        n_with_ai=sum(s.ai is not None for s in studies),
        n_decisions=sum(f.decision is not None for f in all_findings),
        n_reader_findings=sum(f.source == "reader" for f in all_findings),
        n_corrections=sum(
            f.corrected_class is not None or f.corrected_range is not None for f in all_findings
        ),
        per_class=tuple(per_class),
    )


def _finding_dict(study: StudyReview, f: Finding) -> dict[str, Any]:
    truth = reader_truth(study, f.class_name)
    return {
        "finding_id": f.id,
        "finding_source": f.source,
        "class_name": f.class_name,
        "ai_positive": f.ai_positive,
        "ai_study_prob": f.study_prob,
        "ai_threshold": f.threshold,
        "ai_ranges": _ranges_1based(f.ranges) if f.source == "ai" else [],
        "ai_peak_slice": None if f.peak_slice is None or f.source != "ai" else f.peak_slice + 1,
        "reader_range": _ranges_1based(f.ranges)[0] if f.source == "reader" and f.ranges else None,
        "decision": f.decision,
        "decision_at": f.decision_at,
        "corrected_class": f.corrected_class,
        "corrected_range": _ranges_1based([f.corrected_range])[0] if f.corrected_range else None,
        "reader_truth": truth,
    }


def decision_rows(
    session: ReviewSession, *, include_identifiers: bool = False, include_free_text: bool = False
) -> list[dict[str, str]]:
    """One row per finding (one per study without any), as CSV text cells."""
    info = session.info
    rows: list[dict[str, str]] = []
    for s in session.studies():
        base: dict[str, Any] = {
            "session_id": session.id,
            "study_uid": s.study_uid,
            "study_position": s.position + 1,
            "series_uid": s.ai.series_instance_uid if s.ai else "",
            "stack_uid": s.ai.stack_uid if s.ai else "",
            "model_name": s.ai.model_name if s.ai else "",
            "model_version": s.ai.model_version if s.ai else "",
            "model_sha256": s.ai.model_sha256 if s.ai else "",
            "ai_recorded_at": s.ai.recorded_at if s.ai else "",
            "study_done": s.done,
            "done_at": s.done_at,
            "intended_use": INTENDED_USE,
        }
        if include_identifiers:
            base.update(session_name=info.name, reader=info.reader, source_paths=";".join(s.paths))
        if include_free_text:
            base.update(note=s.note, impression=s.impression)
        findings: list[dict[str, Any]] = [_finding_dict(s, f) for f in s.findings] or [{}]
        for fd in findings:
            row = {**base, **fd}
            if fd:
                row["ai_ranges"] = ";".join(f"{a}-{b}" if a != b else f"{a}" for a, b in fd["ai_ranges"])
                for key in ("reader_range", "corrected_range"):
                    pair = fd[key]
                    row[key] = (
                        ""
                        if pair is None
                        else (f"{pair[0]}-{pair[1]}" if pair[0] != pair[1] else f"{pair[0]}")
                    )
            rows.append({k: _cell(v) for k, v in row.items()})
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def csv_columns(*, include_identifiers: bool = False, include_free_text: bool = False) -> list[str]:
    cols = list(CSV_COLUMNS)
    if include_identifiers:
        cols += IDENTIFIER_COLUMNS
    if include_free_text:
        cols += FREE_TEXT_COLUMNS
    return cols


def export_csv(
    session: ReviewSession,
    path: Path | str,
    *,
    include_identifiers: bool = False,
    include_free_text: bool = False,
) -> Path:
    """Write all decisions as CSV (atomically, 0600); returns the path."""
    path = Path(path)
    buf = io.StringIO()
    cols = csv_columns(include_identifiers=include_identifiers, include_free_text=include_free_text)
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="raise")
    writer.writeheader()
    for row in decision_rows(
        session, include_identifiers=include_identifiers, include_free_text=include_free_text
    ):
        writer.writerow({c: row.get(c, "") for c in cols})
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return path


def session_document(
    session: ReviewSession, *, include_identifiers: bool = False, include_free_text: bool = False
) -> dict[str, Any]:
    """The JSON export as a dict."""
    info = session.info
    studies = []
    for s in session.studies():
        d: dict[str, Any] = {
            "study_uid": s.study_uid,
            "position": s.position + 1,
            "source_kind": s.source.kind.value,  # local / dicomweb / dimse (no path, no node)
            "done": s.done,
            "done_at": s.done_at,
            "ai": None
            if s.ai is None
            else {
                "stack_uid": s.ai.stack_uid,
                "series_uid": s.ai.series_instance_uid,
                "model_name": s.ai.model_name,
                "model_version": s.ai.model_version,
                "model_sha256": s.ai.model_sha256,
                "class_names": list(s.ai.class_names),
                "study_probs": list(s.ai.study_probs),
                "thresholds": list(s.ai.thresholds),
                "result": s.ai.badge,
                "positive": s.ai.positive,
                "recorded_at": s.ai.recorded_at,
                "label": "investigational",
            },
            "findings": [_finding_dict(s, f) for f in s.findings],
        }
        if include_identifiers:
            d["source_paths"] = list(s.paths)
            d["source"] = s.source.to_dict()  # where to get it again: paths, or node and series
        if include_free_text:
            d.update(note=s.note, note_at=s.note_at, impression=s.impression, impression_at=s.impression_at)
        studies.append(d)
    session_d: dict[str, Any] = {
        "id": session.id,
        "created_at": info.created_at,
        "modified_at": info.modified_at,
        "progress": info.progress,
    }
    if include_identifiers:
        session_d.update(name=info.name, reader=info.reader)
    return {
        "format": "slicewise-review",
        "format_version": EXPORT_FORMAT_VERSION,
        "intended_use": INTENDED_USE,
        "exported_at": now_iso(),
        "deidentified": not include_identifiers,
        "free_text_included": include_free_text,
        "slice_numbering": "1-based, display order (ascending along the slice normal), ranges inclusive",
        "session": session_d,
        "summary": agreement_summary(session).as_dict(),
        "studies": studies,
    }


def export_json(
    session: ReviewSession,
    path: Path | str,
    *,
    include_identifiers: bool = False,
    include_free_text: bool = False,
) -> Path:
    """Write the whole session (decisions, AI results, summary) as JSON (atomically, 0600)."""
    path = Path(path)
    doc = session_document(
        session, include_identifiers=include_identifiers, include_free_text=include_free_text
    )
    atomic_write_bytes(path, json.dumps(doc, indent=2).encode("utf-8"))
    return path
