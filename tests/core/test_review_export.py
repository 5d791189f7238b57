"""Review exports: CSV/JSON columns and de-identification, agreement summary, DICOM SR read back."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import pydicom
import pytest

from tests.core.test_review_store import make_prediction
from tests.factories import CANARY_ID, CANARY_NAME
from viewer.core.errors import ReviewStoreError
from viewer.core.inference.results import SliceRange
from viewer.core.review import ReviewSession, ReviewStore
from viewer.core.review.export import (
    CSV_COLUMNS,
    agreement_summary,
    export_csv,
    export_json,
)
from viewer.core.review.sr import CLASS_CODES, ai_sr_reference, build_sr, write_sr

CANARY_PATH = f"/media/{CANARY_NAME}_{CANARY_ID}/IMG0001.dcm"


@pytest.fixture
def session(tmp_path: Path) -> ReviewSession:
    """SDH confirmed; EDH false positive; AI-negative with a reader-added SAH; one undecided."""
    store = ReviewStore.open(tmp_path / "r.sqlite3")
    s = store.create_session(f"{CANARY_NAME} batch", reader=f"{CANARY_NAME}")
    s.record_ai_result(make_prediction("1.1", {"subdural": [(5, 9)]}), paths=[CANARY_PATH])
    s.record_ai_result(make_prediction("1.2", {"epidural": [(2, 3)]}), paths=[CANARY_PATH])
    s.record_ai_result(make_prediction("1.3", {}), paths=[CANARY_PATH])
    s.record_ai_result(make_prediction("1.4", {"subdural": [(1, 2)]}), paths=[CANARY_PATH])
    by = {uid: {f.class_name: f for f in s.study(uid).findings} for uid in ("1.1", "1.2", "1.3", "1.4")}
    s.set_decision(by["1.1"]["subdural"].id, "confirmed")
    s.set_decision(by["1.1"]["any"].id, "confirmed")
    s.set_decision(by["1.2"]["epidural"].id, "rejected")
    s.set_decision(by["1.2"]["any"].id, "rejected")
    s.add_reader_finding("1.3", "subarachnoid", SliceRange(10, 12))
    s.set_correction(by["1.1"]["subdural"].id, corrected_range=SliceRange(4, 9))
    for uid in ("1.1", "1.2", "1.3"):
        s.set_note(uid, f"seen {CANARY_NAME} {CANARY_ID}")
        s.set_impression(uid, "impression text")
        s.set_done(uid)
    return s


def _no_canary(text: str) -> None:
    for canary in (CANARY_NAME, CANARY_ID, "CANARY", "/media/"):
        assert canary not in text


def test_agreement_summary(session: ReviewSession) -> None:
    summary = agreement_summary(session)
    assert (summary.n_studies, summary.n_done, summary.n_with_ai) == (4, 3, 4)
    per = {c.class_name: c for c in summary.per_class}
    sdh = per["subdural"]  # TP in 1.1; never decided in 1.2, 1.3 (done) and 1.4: left out
    assert (sdh.tp, sdh.fp, sdh.fn, sdh.tn, sdh.undecided) == (1, 0, 0, 0, 3)
    assert sdh.sensitivity == 1.0 and sdh.specificity is None
    edh = per["epidural"]  # FP in 1.2 (rejected); nowhere else decided
    assert (edh.tp, edh.fp, edh.tn, edh.undecided) == (0, 1, 0, 3) and edh.specificity == 0.0
    assert edh.sensitivity is None
    sah = per["subarachnoid"]  # FN in 1.3 (reader added it)
    assert (sah.fn, sah.tn, sah.undecided) == (1, 0, 3) and sah.sensitivity == 0.0
    anyc = per["any"]  # 1.1 TP, 1.2 FP, 1.3 FN via the reader-added subtype
    assert (anyc.tp, anyc.fp, anyc.fn, anyc.tn) == (1, 1, 1, 0)
    assert "subdural: sensitivity 1.00" in summary.text()


def test_done_study_with_undecided_findings_adds_no_true_negatives(tmp_path: Path) -> None:
    """Marking a study done is no call on the AI findings the reader never decided (README: left out)."""
    store = ReviewStore.open(tmp_path / "r.sqlite3")
    s = store.create_session("batch")
    s.record_ai_result(make_prediction("2.1", {}), paths=[])
    s.set_done("2.1")
    per = {c.class_name: c for c in agreement_summary(s).per_class}
    assert all(c.tn == 0 and c.undecided == 1 for c in per.values())
    negative = next(f for f in s.study("2.1").findings if f.class_name == "subdural")
    s.set_decision(negative.id, "confirmed")  # now the reader agrees: one true negative
    per = {c.class_name: c for c in agreement_summary(s).per_class}
    assert (per["subdural"].tn, per["subdural"].undecided) == (1, 0)
    assert per["epidural"].tn == 0


def test_csv_is_deidentified_by_default(session: ReviewSession, tmp_path: Path) -> None:
    path = export_csv(session, tmp_path / "out.csv")
    text = path.read_text()
    _no_canary(text)
    assert "seen" not in text and "impression text" not in text  # free text only on opt-in
    rows = list(csv.DictReader(text.splitlines()))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert len(rows) == 4 * 6 + 1  # six AI findings per study + one reader-added finding
    sdh = next(r for r in rows if r["study_uid"] == "1.1" and r["class_name"] == "subdural")
    assert sdh["decision"] == "confirmed" and sdh["ai_ranges"] == "6-10" and sdh["corrected_range"] == "5-10"
    assert sdh["ai_positive"] == "true" and sdh["reader_truth"] == "true" and sdh["study_done"] == "true"
    assert sdh["model_sha256"] == "ab" * 32 and sdh["series_uid"] == "1.1.1"
    sah = next(r for r in rows if r["finding_source"] == "reader")
    assert (sah["study_uid"], sah["class_name"], sah["reader_range"]) == ("1.3", "subarachnoid", "11-13")
    assert all(r["intended_use"].startswith("Research use only") for r in rows)
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_identifiers_and_free_text_only_on_opt_in(session: ReviewSession, tmp_path: Path) -> None:
    out = export_csv(session, tmp_path / "out.csv", include_identifiers=True, include_free_text=True)
    text = out.read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert rows[0]["reader"] == CANARY_NAME and rows[0]["source_paths"] == CANARY_PATH
    assert rows[0]["note"].startswith("seen") and rows[0]["impression"] == "impression text"
    doc = json.loads(export_json(session, tmp_path / "o.json", include_identifiers=True,
                                 include_free_text=True).read_text())
    assert doc["session"]["reader"] == CANARY_NAME and doc["deidentified"] is False
    assert doc["studies"][0]["note"].startswith("seen")


def test_json_is_deidentified_by_default(session: ReviewSession, tmp_path: Path) -> None:
    path = export_json(session, tmp_path / "out.json")
    text = path.read_text()
    _no_canary(text)
    doc = json.loads(text)
    assert doc["deidentified"] is True and doc["intended_use"].startswith("Research use only")
    assert "name" not in doc["session"] and "reader" not in doc["session"]
    assert [s["study_uid"] for s in doc["studies"]] == ["1.1", "1.2", "1.3", "1.4"]
    s1 = doc["studies"][0]
    assert "note" not in s1 and "source_paths" not in s1 and s1["ai"]["label"] == "investigational"
    sdh = next(f for f in s1["findings"] if f["class_name"] == "subdural")
    assert sdh["ai_ranges"] == [[6, 10]] and sdh["corrected_range"] == [5, 10]
    assert sdh["decision"] == "confirmed"
    assert {c["class_name"] for c in doc["summary"]["per_class"]} >= {"any", "subdural"}


def _items(seq: pydicom.Sequence) -> list[pydicom.Dataset]:
    out = []
    for item in seq:
        out.append(item)
        if "ContentSequence" in item:
            out.extend(_items(item.ContentSequence))
    return out


def test_sr_reads_back_with_findings_decisions_and_references(session: ReviewSession, tmp_path: Path) -> None:
    path = write_sr(session, "1.1", tmp_path / "sr.dcm")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert ds.StudyInstanceUID == "1.1" and ds.CompletionFlag == "COMPLETE"
    assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientName) == "" and ds.PatientID == ""
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    raw = path.read_bytes()
    for canary in (CANARY_NAME, CANARY_ID, "CANARY"):
        assert canary.encode() not in raw
    # evidence: the analysed series with every slice, and the AI Result SR the review judges
    (ev,) = ds.CurrentRequestedProcedureEvidenceSequence
    by_series = {s.SeriesInstanceUID: s for s in ev.ReferencedSeriesSequence}
    assert len(by_series["1.1.1"].ReferencedSOPSequence) == 20
    study = session.study("1.1")
    assert study.ai is not None
    ai_series, ai_instance = ai_sr_reference(study.ai, "1.1", include_identity=False)
    (ai_ref,) = by_series[ai_series].ReferencedSOPSequence
    assert ai_ref.ReferencedSOPInstanceUID == ai_instance
    items = _items(ds.ContentSequence)
    concept_values = [
        (i.ConceptNameCodeSequence[0].CodeMeaning, i.ConceptCodeSequence[0].CodeValue)
        for i in items if i.ValueType == "CODE"
    ]
    assert ("Finding", "35486000") in concept_values  # SCT subdural intracranial hemorrhage
    assert ("Finding", "1386000") in concept_values
    assert ("Reader verdict on AI finding", "MODIFIED") in concept_values  # subdural, range corrected
    assert ("Reader verdict on AI finding", "ACCEPTED") in concept_values  # any
    assert ("Presence", "52101004") in concept_values  # the reader's call: present
    assert ("Review status", "COMPLETE") in concept_values
    assert not [i for i in items if i.ValueType == "NUM"]  # the AI's numbers stay in the AI SR
    image_refs = {
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in items if i.ValueType == "IMAGE"
    }
    assert image_refs == {f"1.1.1.{k}" for k in range(5, 11)}  # the corrected range 5-10 (1-based)
    assert CLASS_CODES["any"].value == "1386000"


def _code_values(ds: pydicom.Dataset) -> list[str]:
    return [i.ConceptCodeSequence[0].CodeValue for i in _items(ds.ContentSequence) if i.ValueType == "CODE"]


def test_sr_for_rejected_and_reader_finding_and_identifiers(session: ReviewSession) -> None:
    sr2 = build_sr(session, "1.2")
    values = _code_values(sr2)
    assert "REJECTED" in values and "EDH" in values
    sr3 = build_sr(session, "1.3")
    values = _code_values(sr3)
    assert "ADDED" in values and "21454007" in values  # reader-added subarachnoid (SCT)
    source = pydicom.Dataset()
    source.PatientName, source.PatientID, source.PatientBirthDate = CANARY_NAME, CANARY_ID, "19700101"
    source.PatientSex, source.AccessionNumber, source.StudyID = "O", "ACC1", "S1"
    source.StudyDate, source.StudyTime, source.ReferringPhysicianName = "20260101", "120000", ""
    sr4 = build_sr(session, "1.4", include_identifiers=True, source=source)
    assert str(sr4.PatientName) == CANARY_NAME and sr4.PatientID == CANARY_ID
    assert "PatientIdentityRemoved" not in sr4 and sr4.CompletionFlag == "PARTIAL"


def test_sr_needs_an_analysed_series(tmp_path: Path) -> None:
    store = ReviewStore.open(tmp_path / "r.sqlite3")
    s = store.create_session("s")
    s.add_study("3.3")
    with pytest.raises(ReviewStoreError, match="no AI result"):
        build_sr(s, "3.3")
