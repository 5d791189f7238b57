"""AI results as DICOM objects: the AI Result SR, the Key Object Selection, the review SR referencing
the AI SR, ``predict --dicom-out``; read back with pydicom and highdicom, checked by dcmtk's ``dsrdump``
and dicom3tools' ``dciodvfy`` where installed."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from tests.core.inference_models import build_model, write_bleed_series
from tests.factories import CANARY_ID, CANARY_NAME
from viewer.core.airesults import codes as c
from viewer.core.airesults.ai_sr import AIObjectError, build_ai_sr
from viewer.core.airesults.identity import (
    COMPREHENSIVE_3D_SR,
    SourceSeries,
    read_first_header,
    source_from_stack,
)
from viewer.core.airesults.kos import build_kos
from viewer.core.airesults.writer import write_ai_objects
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import Stack
from viewer.core.dicom.volume import StackVolume
from viewer.core.inference.engine import InferenceEngine
from viewer.core.inference.results import StackPrediction
from viewer.core.review.sr import build_sr, write_sr
from viewer.core.review.store import ReviewStore
from viewer.predict_cli import main as predict_main


@dataclass(frozen=True)
class Analysed:
    stack: Stack
    pred: StackPrediction
    source: SourceSeries
    file_uids: frozenset[str]  # SOP Instance UIDs read from the series' files


def _analyse(model: Path, folder: Path) -> Analysed:
    (stack,) = load_paths([str(folder)]).all_stacks()
    engine = InferenceEngine(model, provider="cpu", cache=None)
    volume = StackVolume(stack)
    try:
        pred = engine.predict_volume(volume, use_cache=False)
    finally:
        volume.close()
    uids = frozenset(
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in folder.glob("*.dcm")
    )
    return Analysed(stack, pred, source_from_stack(stack, read_first_header(stack)), uids)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("s")
    write_bleed_series(root / "bleed", 6, (2, 3))
    return root / "bleed"


@pytest.fixture(scope="module")
def bleed(model: Path, series_dir: Path) -> Analysed:
    a = _analyse(model, series_dir)
    assert a.pred.study_positive, "the fixture needs a positive study"
    return a


def _items(seq: pydicom.Sequence) -> list[pydicom.Dataset]:
    out = []
    for item in seq:
        out.append(item)
        if "ContentSequence" in item:
            out.extend(_items(item.ContentSequence))
    return out


def _groups(ds: pydicom.Dataset) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    report = hd.sr.Comprehensive3DSR.from_dataset(ds).content
    assert isinstance(report, hd.sr.MeasurementReport)
    return list(report.get_image_measurement_groups())


def _read(paths: list[Path], modality: str) -> pydicom.Dataset:
    (ds,) = [d for d in (pydicom.dcmread(p) for p in paths) if d.Modality == modality]
    return ds


def test_ai_sr_round_trip_codes_references_and_algorithm(bleed: Analysed, tmp_path: Path) -> None:
    pred = bleed.pred
    paths = write_ai_objects(pred, bleed.source, tmp_path)
    for p in paths:
        assert p.name == f"{pydicom.dcmread(p).SOPInstanceUID}.dcm" and CANARY_NAME not in p.name
        raw = p.read_bytes()
        assert CANARY_NAME.encode() not in raw and CANARY_ID.encode() not in raw and b"19700101" not in raw
    ds = _read(paths, "SR")
    assert (
        ds.SOPClassUID == COMPREHENSIVE_3D_SR and ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    )
    assert ds.StudyInstanceUID == pred.study_instance_uid and ds.SeriesInstanceUID != pred.series_instance_uid
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID == "" and ds.VerificationFlag == "UNVERIFIED"
    # evidence: the analysed series, every slice, the UIDs of the files on disk
    (ev,) = ds.CurrentRequestedProcedureEvidenceSequence
    (ref_series,) = ev.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == pred.series_instance_uid
    assert {r.ReferencedSOPInstanceUID for r in ref_series.ReferencedSOPSequence} == bleed.file_uids
    # one group per class, standard finding types, the study decision, per-image flags
    groups = _groups(ds)
    by_type = {(g.finding_type.value, g.finding_type.scheme_designator): g for g in groups if g.finding_type}
    assert set(by_type) == {(code.value, code.scheme_designator) for code in c.CLASS_CODES.values()}
    assert ("1386000", "SCT") in by_type and ("21454007", "SCT") in by_type and ("35486000", "SCT") in by_type
    for f in pred.findings:
        g = by_type[(c.CLASS_CODES[f.class_name].value, c.CLASS_CODES[f.class_name].scheme_designator)]
        (presence,) = [q for q in g.get_qualitative_evaluations() if q.name == c.PRESENCE]
        assert presence.value == (c.PRESENT if f.positive else c.ABSENT)
        (prob,) = [m for m in g.get_measurements() if m.name == c.PROBABILITY]
        assert prob.value == pytest.approx(f.study_prob)
        flagged = {pred.slice_uids[i] for r in f.flagged_ranges for i in range(r.start, r.stop + 1)}
        refs = {s.referenced_sop_instance_uid for s in g.source_images}
        assert refs == flagged and refs <= bleed.file_uids
    assert any(g.source_images for g in groups)
    # the algorithm: model SHA-256 in the content and in the Contributing Equipment (IHE AIR)
    params = {
        i.TextValue
        for i in _items(ds.ContentSequence)
        if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == "111002"
    }  # DCM Algorithm Parameters
    assert params == {f"model_sha256={pred.model_sha256}"}
    (equipment,) = ds.ContributingEquipmentSequence
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "1630"
    assert equipment.PurposeOfReferenceCodeSequence[0].CodingSchemeDesignator == "99IHE"
    assert (
        pred.model_sha256 in equipment.SoftwareVersions and equipment.ManufacturerModelName == pred.model_name
    )
    # the applicability decision
    scope = [q.value for g in groups for q in g.get_qualitative_evaluations() if q.name == c.APPLICABILITY]
    assert pred.applicability is not None and scope == [c.SCOPE_CODES[pred.applicability.scope]]
    reasons = {q.value.value for g in groups for q in g.get_qualitative_evaluations()
               if q.name == c.APPLICABILITY_REASON}
    assert reasons == set(pred.applicability.codes) and "S-NO-TRAINED-RANGE" in reasons  # not truncated


def test_identity_copied_only_when_asked(bleed: Analysed) -> None:
    sr = build_ai_sr(bleed.pred, bleed.source, include_identity=True)
    assert str(sr.PatientName) == CANARY_NAME and sr.PatientID == CANARY_ID and sr.StudyDate == "20260101"
    assert "PatientIdentityRemoved" not in sr
    plain = build_ai_sr(bleed.pred, bleed.source)
    assert plain.SOPInstanceUID != sr.SOPInstanceUID  # the two modes never share an instance UID
    assert build_ai_sr(bleed.pred, bleed.source).SOPInstanceUID == plain.SOPInstanceUID  # re-run: same
    # another result for the same slices (another execution provider, say) is another instance
    other = dataclasses.replace(bleed.pred, study_probs=bleed.pred.study_probs + np.float32(1e-3))
    assert build_ai_sr(other, bleed.source).SOPInstanceUID != plain.SOPInstanceUID


def test_identified_objects_keep_the_study_description(bleed: Analysed, tmp_path: Path) -> None:
    """Seen sending the AI result of the demo CT head to Orthanc: the study's description ("CT HEAD
    (synthetic)") was gone from the PACS afterwards (the query list and the worklist showed none, and
    "Head studies only" reads it): the objects sent with the identity lacked the Study Description."""
    header = read_first_header(bleed.stack)
    assert header is not None and header.StudyDescription == "CT Head"
    paths = write_ai_objects(bleed.pred, bleed.source, tmp_path / "identified", include_identity=True)
    assert {_read(paths, kind).StudyDescription for kind in ("SR", "KO")} == {"CT Head"}
    plain = write_ai_objects(bleed.pred, bleed.source, tmp_path / "plain")
    assert all("StudyDescription" not in _read(plain, kind) for kind in ("SR", "KO"))


def test_kos_references_each_positive_class_peak_slice(bleed: Analysed, tmp_path: Path) -> None:
    pred = bleed.pred
    ds = _read(write_ai_objects(pred, bleed.source, tmp_path), "KO")
    expected = {pred.slice_uids[f.peak_slice] for f in pred.findings if f.positive}
    refs = {
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for i in _items(ds.ContentSequence)
        if i.ValueType == "COMPOSITE"
    }
    assert refs == expected and refs <= bleed.file_uids
    assert ds.ConceptNameCodeSequence[0].CodeValue == "113000" and ds.PatientIdentityRemoved == "YES"


def test_no_kos_without_a_positive_class(model: Path, tmp_path: Path) -> None:
    write_bleed_series(tmp_path / "clean", 5, ())
    clean = _analyse(model, tmp_path / "clean")
    assert not clean.pred.study_positive
    assert build_kos(clean.pred, clean.source) is None
    assert [
        pydicom.dcmread(p).Modality for p in write_ai_objects(clean.pred, clean.source, tmp_path / "o")
    ] == ["SR"]


def test_mismatched_source_is_refused(bleed: Analysed) -> None:
    other = SourceSeries(
        bleed.source.study_instance_uid,
        bleed.source.series_instance_uid,
        bleed.source.sop_class_uid,
        bleed.source.slice_uids[:-1],
    )
    with pytest.raises(AIObjectError, match="slices"):
        build_ai_sr(bleed.pred, other)


def test_review_sr_references_the_ai_sr(bleed: Analysed, tmp_path: Path) -> None:
    pred = bleed.pred
    ai_paths = write_ai_objects(pred, bleed.source, tmp_path / "ai")
    ai_ds = _read(ai_paths, "SR")
    store = ReviewStore.open(tmp_path / "r.sqlite3")
    session = store.create_session("s", reader="Dr Canary")
    session.record_ai_result(pred, paths=[])
    study = session.study(pred.study_instance_uid)
    positive = next(f for f in study.findings if f.ai_positive)
    negative = next(f for f in study.findings if not f.ai_positive)
    session.set_decision(positive.id, "confirmed")
    session.set_decision(negative.id, "rejected")
    review = build_sr(session, pred.study_instance_uid)
    session.close()
    store.close()
    # the AI SR is evidence of the review, in the same study
    (ev,) = review.CurrentRequestedProcedureEvidenceSequence
    refs = {
        (s.SeriesInstanceUID, r.ReferencedSOPInstanceUID, r.ReferencedSOPClassUID)
        for s in ev.ReferencedSeriesSequence
        for r in s.ReferencedSOPSequence
    }
    assert (ai_ds.SeriesInstanceUID, ai_ds.SOPInstanceUID, COMPREHENSIVE_3D_SR) in refs
    assert review.SOPInstanceUID != ai_ds.SOPInstanceUID and "Dr Canary" not in str(review.PatientName)
    # each reader group tracks the AI finding it judges
    ai_tracking = {g.finding_type.value: g.tracking_uid for g in _groups(ai_ds) if g.finding_type}
    verdicts = {}
    for g in _groups(review):
        if g.finding_type is None:
            continue
        assert g.tracking_uid == ai_tracking[g.finding_type.value]
        (v,) = [q.value for q in g.get_qualitative_evaluations() if q.name == c.READER_VERDICT]
        verdicts[g.finding_type.value] = v
    assert verdicts[c.class_code(positive.class_name).value] == c.VERDICT_CODES["accepted"]
    assert verdicts[c.class_code(negative.class_name).value] == c.VERDICT_CODES["rejected"]


def _all_objects(bleed: Analysed, folder: Path) -> list[Path]:
    """The AI SR, the KOS and a review SR of the same stack."""
    paths = write_ai_objects(bleed.pred, bleed.source, folder)
    store = ReviewStore.open(folder / "r.sqlite3")
    session = store.create_session("s")
    session.record_ai_result(bleed.pred, paths=[])
    first = session.study(bleed.pred.study_instance_uid).findings[0]
    session.set_decision(first.id, "confirmed")
    paths.append(write_sr(session, bleed.pred.study_instance_uid, folder / "review.dcm"))
    session.close()
    store.close()
    return paths


def test_dsrdump_reads_every_object(bleed: Analysed, tmp_path: Path) -> None:
    tool = shutil.which("dsrdump")
    if tool is None:
        pytest.skip("dcmtk's dsrdump is not installed (.ci/run installs dcmtk with apt)")
    for p in _all_objects(bleed, tmp_path):
        run = subprocess.run([tool, "-Ee", str(p)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert "E:" not in run.stderr and "Error" not in run.stdout
        assert "Intracranial hemorrhage" in run.stdout or "Of Interest" in run.stdout


def test_dciodvfy_finds_no_errors(bleed: Analysed, tmp_path: Path) -> None:
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dicom3tools' dciodvfy is not installed (Debian package dicom3tools)")
    for p in _all_objects(bleed, tmp_path):
        run = subprocess.run([tool, str(p)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], errors


def test_predict_dicom_out(model: Path, series_dir: Path, tmp_path: Path) -> None:
    out, folder = tmp_path / "r.json", tmp_path / "dicom"
    argv = [
        str(series_dir),
        "--model",
        str(model),
        "--provider",
        "cpu",
        "--out",
        str(out),
        "--quiet",
        "--no-cache",
        "--dicom-out",
        str(folder),
    ]
    assert predict_main(argv) == 0
    (rec,) = json.loads(out.read_text())["stacks"]
    names = sorted(rec["dicom_objects"])
    assert names == sorted(p.name for p in folder.iterdir()) and len(names) == 2
    for p in folder.iterdir():
        ds = pydicom.dcmread(p)
        assert (
            p.name == f"{ds.SOPInstanceUID}.dcm"
            and ds.PatientID == ""
            and CANARY_NAME.encode() not in p.read_bytes()
        )
    # PACS-bound: identity copied on request
    assert predict_main([*argv[:-1], str(tmp_path / "pacs"), "--include-identifiers"]) == 0
    assert {pydicom.dcmread(p).PatientID for p in (tmp_path / "pacs").iterdir()} == {CANARY_ID}
