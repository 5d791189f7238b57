"""Hanging protocols and prior matching on real loaded studies (files written by tests/factories.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.factories import write_ct_series
from viewer.core.constants import WINDOW_PRESETS
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import Stack, Study
from viewer.core.state.hanging import (
    DEFAULT_PROTOCOLS,
    HangingProtocolError,
    SeriesChoice,
    StudySeries,
    choose_protocol,
    load_protocols,
    plan,
    protocols_from_json,
    protocols_to_json,
)
from viewer.core.state.layout import Layout
from viewer.core.state.priors import StudyRef, comparison_pair, find_prior, matching_series


def _study(folders: list[Path]) -> tuple[Study, list[Stack]]:
    report = load_paths(folders)
    (patient,) = report.patients
    (study,) = patient.studies
    return study, [st for se in study.series for st in se.stacks]


def _write(folder: Path, study_uid: str, description: str, series: str, n: int = 4, **kw: object) -> Path:
    write_ct_series(
        folder, n, rows=16, columns=16, study_uid=study_uid, study_description=description,
        series_description=series, **kw,  # type: ignore[arg-type]
    )
    return folder


def test_head_ct_hangs_brain_and_bone_windows_with_the_thin_bone_series(tmp_path: Path) -> None:
    uid = generate_uid()
    study, stacks = _study([
        _write(tmp_path / "soft", uid, "CT Head without contrast", "Head 5mm", 6),
        _write(tmp_path / "bone5", uid, "CT Head without contrast", "Bone 5mm", 4, spacing_z=5.0),
        _write(tmp_path / "bone1", uid, "CT Head without contrast", "Bone 1mm H70", 5, spacing_z=1.0),
    ])
    series = StudySeries.of(study.description, stacks)
    protocol = choose_protocol(DEFAULT_PROTOCOLS, series)
    assert protocol is not None and protocol.name.startswith("Head CT")
    hung = plan(protocol, series, WINDOW_PRESETS)
    assert hung.layout is Layout.ONE_BY_TWO
    by_uid = {s.uid: s for s in stacks}
    left, right = hung.viewports
    assert by_uid[left.stack_key].series_description == "Head 5mm"  # the main (longest) series
    assert by_uid[right.stack_key].series_description == "Bone 1mm H70"  # the thinnest bone series
    assert (left.window, right.window) == (WINDOW_PRESETS["brain"], WINDOW_PRESETS["bone"])


def test_head_ct_without_a_bone_series_shows_the_same_series_twice(tmp_path: Path) -> None:
    study, stacks = _study([_write(tmp_path / "a", generate_uid(), "CT HEAD", "Axial 5mm")])
    series = StudySeries.of(study.description, stacks)
    protocol = choose_protocol(DEFAULT_PROTOCOLS, series)
    assert protocol is not None
    left, right = plan(protocol, series, WINDOW_PRESETS).viewports
    assert left.stack_key == right.stack_key == stacks[0].uid
    assert right.window == WINDOW_PRESETS["bone"]


def test_chest_ct_gets_one_viewport_with_the_header_window(tmp_path: Path) -> None:
    study, stacks = _study([_write(tmp_path / "a", generate_uid(), "CT Chest", "Lung 1mm")])
    series = StudySeries.of(study.description, stacks)
    protocol = choose_protocol(DEFAULT_PROTOCOLS, series)
    assert protocol is not None and protocol.name == "CT"
    hung = plan(protocol, series, WINDOW_PRESETS)
    assert hung.layout is Layout.ONE and [v.window for v in hung.viewports] == [None]


def test_mr_one_series_is_1x1_and_four_series_are_2x2_each_different(tmp_path: Path) -> None:
    uid = generate_uid()
    one, one_stacks = _study([_write(tmp_path / "m0", generate_uid(), "MR Knee", "T1", modality="MR")])
    protocol = choose_protocol(DEFAULT_PROTOCOLS, StudySeries.of(one.description, one_stacks))
    assert protocol is not None and protocol.layout is Layout.ONE
    folders = [
        _write(tmp_path / f"m{k}", uid, "MR Brain", name, 4 + k, modality="MR")
        for k, name in enumerate(("T1", "T2", "FLAIR", "DWI"), start=1)
    ]
    study, stacks = _study(folders)
    series = StudySeries.of(study.description, stacks)
    protocol = choose_protocol(DEFAULT_PROTOCOLS, series)
    assert protocol is not None and protocol.layout is Layout.TWO_BY_TWO
    hung = plan(protocol, series, WINDOW_PRESETS)
    keys = [v.stack_key for v in hung.viewports]
    assert len(set(keys)) == 4
    assert keys[0] == max(stacks, key=len).uid  # the main series first


def test_protocols_round_trip_through_json_and_the_file_is_created(tmp_path: Path) -> None:
    assert protocols_from_json(protocols_to_json(DEFAULT_PROTOCOLS)) == DEFAULT_PROTOCOLS
    path = tmp_path / "cfg" / "hanging_protocols.json"
    table = load_protocols(path)
    assert table.error is None and table.protocols == DEFAULT_PROTOCOLS
    assert path.is_file() and (path.stat().st_mode & 0o077) == 0  # written for the user to edit, 0600
    doc = json.loads(path.read_text())
    doc["protocols"][0]["viewports"][1]["window"] = "subdural"
    path.write_text(json.dumps(doc))
    edited = load_protocols(path)
    assert edited.error is None
    assert edited.protocols[0].viewports[1].window == "subdural"
    assert edited.protocols[0].viewports[1].series is SeriesChoice.BONE


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"protocols": [', "not valid JSON (line 1"),
        ('{"protocols": {}}', "'protocols' list"),
        ('{"protocols": [{"name": "x", "modality": "CT", "layout": "3x3", "viewports": [{}]}]}',
         "protocol 1: '3x3' is not a valid Layout"),
        ('{"protocols": [{"name": "x", "modality": "CT", "layout": "1x1", "viewports": [{}, {}]}]}',
         "do not fit"),
        ('{"protocols": [{"modality": "CT", "layout": "1x1", "viewports": [{}]}]}', "missing key 'name'"),
        ('{"protocols": [{"name": "x", "modality": "CT", "layout": "1x1", '
         '"viewports": [{"series": "best"}]}]}', "'best' is not a valid SeriesChoice"),
    ],
)
def test_a_bad_protocol_file_is_reported_and_the_defaults_are_used(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "hanging_protocols.json"
    path.write_text(text)
    with pytest.raises(HangingProtocolError, match=r"hanging_protocols\.json"):
        protocols_from_json(text)
    table = load_protocols(path)
    assert table.protocols == DEFAULT_PROTOCOLS
    assert table.error is not None and reason in table.error and "built-in" in table.error
    assert path.read_text() == text  # the user's file is left for them to fix


def test_prior_is_the_latest_earlier_study_and_its_best_matching_series(tmp_path: Path) -> None:
    cur_uid, old_uid, older_uid = generate_uid(), generate_uid(), generate_uid()
    _, cur = _study([_write(tmp_path / "cur", cur_uid, "CT Head", "Head 5mm", study_date="20260301")])
    _, old = _study([
        _write(tmp_path / "o1", old_uid, "CT Head", "Bone 1mm", 6, study_date="20250101"),
        _write(tmp_path / "o2", old_uid, "CT Head", "Head 5mm std", 5, study_date="20250101"),
        _write(tmp_path / "o3", old_uid, "CT Head", "Head 5mm", 4, study_date="20250101", modality="MR"),
    ])
    _, older = _study([_write(tmp_path / "x", older_uid, "CT Head", "Head 5mm", study_date="20200101")])
    current = StudyRef("P1", cur_uid, "20260301", tuple(cur))
    studies = [
        current,
        StudyRef("P1", old_uid, "20250101", tuple(old)),
        StudyRef("P1", older_uid, "20200101", tuple(older)),
        StudyRef("P2", generate_uid(), "20251231", tuple(older)),  # another patient
    ]
    prior = find_prior(current, studies)
    assert prior is not None and prior.study_uid == old_uid
    best = matching_series(cur[0], prior.stacks)
    assert best is not None and best.series_description == "Head 5mm std"  # CT, closest description
    assert find_prior(studies[2], studies) is None  # nothing earlier
    assert comparison_pair(current, studies) == (current, prior)
    pair = comparison_pair(studies[2], studies)  # shown the earliest: compared with the latest
    assert pair is not None and (pair[0].study_uid, pair[1].study_uid) == (cur_uid, older_uid)
    assert comparison_pair(studies[3], studies) is None  # the other patient has one study
    assert find_prior(StudyRef("P1", cur_uid, "", tuple(cur)), studies) is None  # no date


def _set_body_part(folder: Path, value: str) -> None:
    from pydicom import dcmread

    for path in folder.glob("*.dcm"):
        ds = dcmread(path)
        ds.BodyPartExamined = value
        ds.save_as(path)


def test_body_part_examined_decides_over_the_descriptions(tmp_path: Path) -> None:
    """A head CT whose descriptions say nothing of the head hangs as a head CT by its BodyPartExamined;
    a series described "Head" but examined as CHEST does not."""
    head = _write(tmp_path / "head", generate_uid(), "CT routine", "Axial 5mm")
    _set_body_part(head, "Head")
    study, stacks = _study([head])
    assert stacks[0].body_part == "HEAD"  # upper case
    protocol = choose_protocol(DEFAULT_PROTOCOLS, StudySeries.of(study.description, stacks))
    assert protocol is not None and protocol.name.startswith("Head CT")

    chest = _write(tmp_path / "chest", generate_uid(), "CT Head and chest", "Head 5mm")
    _set_body_part(chest, "CHEST")
    study, stacks = _study([chest])
    protocol = choose_protocol(DEFAULT_PROTOCOLS, StudySeries.of(study.description, stacks))
    assert protocol is not None and protocol.name == "CT"


def test_a_body_part_only_protocol_matches_nothing_without_body_part(tmp_path: Path) -> None:
    rows = json.loads(protocols_to_json(DEFAULT_PROTOCOLS))
    rows["protocols"][0]["keywords"] = []
    (head_only, *_) = protocols_from_json(json.dumps(rows))
    assert head_only.body_parts == ("HEAD", "BRAIN", "SKULL") and head_only.keywords == ()
    study, stacks = _study([_write(tmp_path / "a", generate_uid(), "CT HEAD", "Head 5mm")])
    assert not head_only.matches(StudySeries.of(study.description, stacks))
