"""The PACS worklist against a real Orthanc (this module's own: it gets AI SRs the shared one must not).

Three synthetic head CT studies of one day; the AI SRs of two of them (one positive, one negative) are
built by :mod:`viewer.core.airesults` from real predictions of the tiny model, with identity so Orthanc
files them under their studies; a CT abdomen and a head CT of another day are there too, and another
vendor's AI SR in the not-analysed study. The worklist lists positive, negative, then not analysed, over
DICOMweb and DIMSE; the GUI tab shows the same order and opens a study on double-click. Every wait has a
timeout.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from PySide6.QtCore import QDate
from pytestqt.qtbot import QtBot

from tests.core.inference_models import build_model, write_bleed_series
from tests.factories import CANARY_ID, CANARY_NAME, make_ct_slice
from tests.pacs.conftest import controller, dimse_node, kept_sources, read_kept, web_node
from tests.pacs.orthanc import Orthanc, running_orthanc, unavailable_reason
from viewer.core.airesults.ai_sr import build_ai_sr
from viewer.core.airesults.identity import read_first_header, source_from_stack
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.volume import StackVolume
from viewer.core.inference.engine import InferenceEngine
from viewer.core.inference.results import StackPrediction
from viewer.core.pacs import DicomWebClient, DimseClient, InstanceCache
from viewer.core.pacs.ai_sr_reader import read_ai_result
from viewer.core.pacs.worklist import (
    AiStatus,
    WorklistRow,
    build_worklist,
    is_head_study,
)
from viewer.qt.main_window import MainWindow
from viewer.qt.pacs.nodes import NodeEntry, NodeProtocol
from viewer.qt.pacs.worklist_panel import STATUS_COLOURS, STATUS_ROLE

DAY = date(2025, 11, 3)
WAIT_MS = 15_000


@dataclass(frozen=True)
class Study:
    uid: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class Worklist:
    server: Orthanc
    positive: Study
    negative: Study
    unanalysed: Study
    other_day: str
    abdomen: str
    positive_sr: Dataset
    negative_sr: Dataset
    positive_pred: StackPrediction
    negative_sr_path: Path


def _write_study(folder: Path, bleed: tuple[int, ...], time: str, day: date = DAY) -> Study:
    """A 6-slice head CT (canary patient) of ``day`` at ``time``."""
    paths = write_bleed_series(folder, 6, bleed)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.StudyDate, ds.StudyTime = day.strftime("%Y%m%d"), time
        ds.save_as(p, enforce_file_format=True)
    return Study(str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID), tuple(paths))


def _ai_sr(engine: InferenceEngine, study: Study, out: Path) -> tuple[Dataset, StackPrediction, Path]:
    (stack,) = load_paths([str(study.files[0].parent)]).all_stacks()
    volume = StackVolume(stack)
    try:
        pred = engine.predict_volume(volume, use_cache=False)
    finally:
        volume.close()
    sr = build_ai_sr(pred, source_from_stack(stack, read_first_header(stack)), include_identity=True)
    path = out / f"{study.uid[-12:]}-sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path), pred, path


def _abdomen(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ds = make_ct_slice(
        np.zeros((16, 16), np.int16),
        position=(0, 0, 0),
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        frame_of_reference_uid=generate_uid(),
    )
    ds.StudyDate, ds.StudyTime, ds.StudyDescription = DAY.strftime("%Y%m%d"), "070000", "CT Abdomen"
    path = folder / "abdomen.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def worklist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worklist]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("worklist")
    model = build_model(root / "tiny.onnx")
    engine = InferenceEngine(model, provider="cpu", threads=1, cache=None)
    # times chosen so that "oldest first" alone would give the wrong order
    positive = _write_study(root / "pos", (2, 3), "110000")
    negative = _write_study(root / "neg", (), "100000")
    unanalysed = _write_study(root / "none", (), "080000")
    other_day = _write_study(root / "other", (), "090000", date(2025, 11, 5))
    abdomen = _abdomen(root / "abd")
    pos_sr, pos_pred, pos_path = _ai_sr(engine, positive, root)
    neg_sr, neg_pred, neg_path = _ai_sr(engine, negative, root)
    assert pos_pred.study_positive and not neg_pred.study_positive, "the fixture needs both decisions"
    # another vendor's AI SR in the not-analysed study (same content, other Contributing Equipment):
    # not Slicewise's result, so the study stays "not analysed"
    other, _pred, other_path = _ai_sr(engine, unanalysed, root)
    other.ContributingEquipmentSequence[0].Manufacturer = "Other AI"
    other.SeriesInstanceUID, other.SOPInstanceUID = generate_uid(), generate_uid()
    other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
    other.save_as(other_path, enforce_file_format=True)
    with running_orthanc(root / "orthanc") as server:
        server.upload(
            [*positive.files, *negative.files, *unanalysed.files, *other_day.files, abdomen]
        )
        server.upload([pos_path, neg_path, other_path])
        yield Worklist(
            server,
            positive,
            negative,
            unanalysed,
            other_day.uid,
            str(pydicom.dcmread(abdomen).StudyInstanceUID),
            pos_sr,
            neg_sr,
            pos_pred,
            neg_path,
        )


def test_read_ai_result_decision_probability_and_foreign_srs(worklist: Worklist) -> None:
    pos = read_ai_result(worklist.positive_sr)
    neg = read_ai_result(worklist.negative_sr)
    assert pos is not None and neg is not None
    assert pos.status is AiStatus.POSITIVE and neg.status is AiStatus.NEGATIVE
    (any_class,) = [f for f in worklist.positive_pred.findings if f.class_name == "any"]
    assert pos.probability == pytest.approx(any_class.study_prob)
    assert pos.model == worklist.positive_pred.model_name
    # the same SR from another manufacturer's algorithm is not Slicewise's result
    foreign = copy.deepcopy(worklist.positive_sr)
    foreign.ContributingEquipmentSequence[0].Manufacturer = "Other AI"
    assert read_ai_result(foreign) is None
    # an SR that claims to be Slicewise's but carries no decision is flagged, not guessed
    empty = copy.deepcopy(worklist.positive_sr)
    empty.ContentSequence = []
    broken = read_ai_result(empty)
    assert broken is not None and broken.status is AiStatus.UNREADABLE
    # an applicability decision "Out of scope" recorded in the SR makes the study "out of scope"
    scoped = pydicom.dcmread(worklist.negative_sr_path)
    (scope,) = [
        i for i in _content_items(scoped) if i.ConceptNameCodeSequence[0].get("CodeValue") == "APPLICABILITY"
    ]
    scope.ConceptCodeSequence[0].CodeValue = "OUT-OF-SCOPE"
    scope.ConceptCodeSequence[0].CodeMeaning = "Out of scope"
    before = copy.deepcopy(scoped)
    out = read_ai_result(scoped)
    assert out is not None and out.status is AiStatus.OUT_OF_SCOPE
    assert scoped == before  # reading leaves the dataset as it was


def _content_items(ds: Dataset) -> list[Dataset]:
    out = []
    for item in ds.get("ContentSequence", []):
        out.append(item)
        out.extend(_content_items(item))
    return out


def test_head_study_by_description() -> None:
    from viewer.core.pacs.models import StudyMatch

    assert is_head_study(StudyMatch("1", study_description="CT Head"))
    assert is_head_study(StudyMatch("1", study_description="CT SCHÄDEL nativ"))
    assert is_head_study(StudyMatch("1"))  # no description: every CT
    assert not is_head_study(StudyMatch("1", study_description="CT Abdomen"))


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_the_series_body_part_decides_over_the_study_description(
    worklist: Worklist, tmp_path: Path, protocol: str
) -> None:
    """A study described "CT routine" whose series are BodyPartExamined HEAD is listed; one described
    "CT Head" whose series are CHEST is not (the PACS answers BodyPartExamined at series level)."""
    day = date(2025, 11, 7)
    server = worklist.server
    uids = []
    for name, description, part in (("routine", "CT routine", "HEAD"), ("chest", "CT Head", "CHEST")):
        study = _write_study(tmp_path / name, (), "090000", day)
        for path in study.files:
            ds = pydicom.dcmread(path)
            ds.StudyDescription, ds.BodyPartExamined = description, part
            ds.save_as(path, enforce_file_format=True)
        server.upload(study.files)
        uids.append(study.uid)
    client = DicomWebClient(web_node(server)) if protocol == "dicomweb" else DimseClient(dimse_node(server))
    try:
        assert [s.body_part for s in client.find_series(uids[0])] == ["HEAD"]
        rows = build_worklist(client, InstanceCache(tmp_path / "cache"), date_from=day, date_to=day)
        assert [r.study.study_uid for r in rows] == [uids[0]]
        wide = build_worklist(client, InstanceCache(tmp_path / "cache"), date_from=day, head_only=False)
        assert sorted(r.study.study_uid for r in wide) == sorted(uids)
    finally:
        client.close()
        for uid in uids:
            server.delete_study(uid)


def _expect(rows: list[WorklistRow], w: Worklist) -> None:
    assert [r.study.study_uid for r in rows] == [w.positive.uid, w.negative.uid, w.unanalysed.uid]
    assert [r.status for r in rows] == [AiStatus.POSITIVE, AiStatus.NEGATIVE, AiStatus.NOT_ANALYSED]
    assert [r.ai_results for r in rows] == [1, 1, 0]
    assert rows[0].probability is not None and rows[1].probability is not None
    assert rows[0].probability > rows[1].probability and rows[2].probability is None


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_worklist_lists_positive_negative_then_not_analysed(
    worklist: Worklist, tmp_path: Path, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = worklist.server
    client = DicomWebClient(web_node(server)) if protocol == "dicomweb" else DimseClient(dimse_node(server))
    cache = InstanceCache(tmp_path / "cache")
    progress: list[tuple[int, int]] = []
    try:
        rows = build_worklist(
            client, cache, date_from=DAY, date_to=DAY, on_progress=lambda d, t: progress.append((d, t))
        )
        _expect(rows, worklist)
        assert progress[-1] == (4, 4)  # every CT study of the day is looked at (the abdomen too)
        # the head filter: without it the CT abdomen of the day is listed (not analysed), not the other day
        wide = build_worklist(client, cache, date_from=DAY, date_to=DAY, head_only=False)
        uids = [r.study.study_uid for r in wide]
        assert worklist.abdomen in uids and worklist.other_day not in uids and len(uids) == 4
        two_days = build_worklist(client, cache, date_from=DAY, date_to=date(2025, 11, 5))
        assert worklist.other_day in [r.study.study_uid for r in two_days]
        # cancel before the first study: nothing listed, no hang
        assert build_worklist(client, cache, date_from=DAY, date_to=DAY, cancel=lambda: True) == []
    finally:
        client.close()
    # only the SRs were retrieved, never the CT images
    kept = kept_sources(cache.root)
    assert kept and all(read_kept(s, stop_before_pixels=True).Modality == "SR" for s in kept)
    assert CANARY_NAME.split("^")[0] not in caplog.text and CANARY_ID not in caplog.text


def test_worklist_tab_orders_colours_and_opens_a_study(
    qtbot: QtBot, window: MainWindow, worklist: Worklist, tmp_path: Path
) -> None:
    pacs = controller(window)
    pacs._cache = InstanceCache(tmp_path / "cache")
    pacs.save_node(NodeEntry(web_node(worklist.server), NodeProtocol.DICOMWEB), "")
    pacs.show_worklist()
    panel = pacs.worklist
    assert pacs.dock.isVisible() and pacs.tabs.currentWidget() is panel
    assert panel.date_range() == (date.today(), date.today())  # today by default
    panel.date_from.setDate(QDate(DAY.year, DAY.month, DAY.day))
    panel.date_to.setDate(QDate(DAY.year, DAY.month, DAY.day))
    with qtbot.waitSignal(pacs.worklist_finished, timeout=WAIT_MS) as finished:
        panel.btn_refresh.click()
        assert panel.btn_cancel.isEnabled() and not panel.btn_refresh.isEnabled()
    _expect(finished.args[0], worklist)
    assert panel.row_uids() == [worklist.positive.uid, worklist.negative.uid, worklist.unanalysed.uid]
    items = [panel.rows.topLevelItem(k) for k in range(3)]
    assert [i.text(0) for i in items if i is not None] == ["AI positive", "AI negative", "not analysed"]
    expected = (AiStatus.POSITIVE, AiStatus.NEGATIVE, AiStatus.NOT_ANALYSED)
    for item, status in zip(items, expected, strict=True):
        assert item is not None and item.data(0, STATUS_ROLE) == status.name
        colour = STATUS_COLOURS[status]
        if colour is not None:
            assert item.background(3).color().name() == colour
    assert panel.status.text() == "3 studies: 1 AI positive, 1 not analysed (analysed when opened)"
    assert not panel.btn_cancel.isEnabled() and panel.btn_refresh.isEnabled()
    # double-click the not-analysed study: retrieved by the query tab's path and opened
    with qtbot.waitSignal(controller(window).retrieve_finished, timeout=WAIT_MS):
        panel.rows.itemDoubleClicked.emit(items[2], 0)
    # the SR series is listed as it arrives (its own load), the CT loads at the end
    qtbot.waitUntil(lambda: not window.is_loading() and window.current_stack() is not None, timeout=WAIT_MS)
    stacks = window.loaded_stacks()
    assert [len(s.slices) for s in stacks] == [6]
    assert stacks[0].study_instance_uid == worklist.unanalysed.uid
    qtbot.waitUntil(lambda: not panel.btn_cancel.isEnabled(), timeout=WAIT_MS)
    assert panel.status.text() == "7 instances in 2 series"  # the CT and the other vendor's SR


def test_worklist_refresh_cancel_and_unknown_node(
    qtbot: QtBot, window: MainWindow, worklist: Worklist
) -> None:
    pacs = controller(window)
    panel = pacs.worklist
    assert pacs.refresh_worklist("nowhere", DAY, DAY) is None
    assert panel.status.text() == "No PACS node named 'nowhere'"
    pacs.save_node(NodeEntry(web_node(worklist.server), NodeProtocol.DICOMWEB), "")
    panel.date_from.setDate(QDate(DAY.year, DAY.month, DAY.day))
    panel.date_to.setDate(QDate(DAY.year, DAY.month, DAY.day))
    with qtbot.waitSignal(pacs.worklist_finished, timeout=WAIT_MS) as finished:
        panel.btn_refresh.click()
        panel.btn_cancel.click()  # before the job can have answered: its result is marked cancelled
    assert len(finished.args[0]) <= 3
    assert panel.status.text().startswith("Refresh cancelled: ")
    assert not panel.btn_cancel.isEnabled() and panel.btn_refresh.isEnabled()
