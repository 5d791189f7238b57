"""Grouping and slice order on generated series: shuffled, tilted, gaps, duplicates, localizers."""

from __future__ import annotations

import random
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.factories import make_ct_slice, write_ct_series, write_localizer, write_slice, write_tilted_series
from viewer.core.dicom.grouping import sort_slices
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import SliceInfo, SliceSource, Stack
from viewer.core.dicom.volume import StackVolume


def _top_left(stack: Stack) -> list[int]:
    with StackVolume(stack) as vol:
        return [int(vol.get_slice(i)[0, 0]) for i in range(len(vol))]


def _only_stack(folder: Path) -> Stack:
    stacks = load_paths([folder]).all_stacks()
    assert len(stacks) == 1
    return stacks[0]


def test_shuffled_random_names_sorted_by_position(tmp_path: Path) -> None:
    write_ct_series(tmp_path, 25, seed=3)
    stack = _only_stack(tmp_path)
    assert stack.sort_method == "position"
    assert _top_left(stack) == list(range(25))
    assert stack.slice_spacing == pytest.approx(5.0)
    assert stack.warnings == ()
    assert [s.location for s in stack.slices] == pytest.approx([k * 5.0 for k in range(25)])


def test_descending_positions_still_ascend(tmp_path: Path) -> None:
    write_ct_series(tmp_path, 10, positions=[100 - 2.5 * k for k in range(10)])
    stack = _only_stack(tmp_path)
    assert _top_left(stack) == list(range(10))[::-1]  # slice k sits at z = 100 - 2.5 k
    assert stack.slice_spacing == pytest.approx(2.5)


def test_gap_reported_as_missing_slices(tmp_path: Path) -> None:
    zs = [k * 5.0 for k in range(12) if k not in (5, 6)]
    write_ct_series(tmp_path, positions=zs)
    stack = _only_stack(tmp_path)
    assert _top_left(stack) == list(range(10))
    assert any(w.startswith("2 missing slice(s)") for w in stack.warnings), stack.warnings
    assert not any("Irregular" in w for w in stack.warnings)


def test_irregular_spacing_warned(tmp_path: Path) -> None:
    zs = [0.0, 5.0, 10.0, 15.0, 20.5, 25.0, 30.0]
    write_ct_series(tmp_path, positions=zs)
    stack = _only_stack(tmp_path)
    assert any(w.startswith("Irregular slice spacing (4.50–5.50 mm)") for w in stack.warnings), stack.warnings


def test_small_jitter_below_one_percent_is_quiet(tmp_path: Path) -> None:
    zs = [k * 5.0 + (0.02 if k % 2 else 0.0) for k in range(8)]
    write_ct_series(tmp_path, positions=zs)
    assert _only_stack(tmp_path).warnings == ()


def test_gantry_tilt_detected_and_geometry_beats_instance_number(tmp_path: Path) -> None:
    write_tilted_series(tmp_path, 12, tilt_deg=15.0)
    stack = _only_stack(tmp_path)
    assert stack.sort_method == "position"
    assert _top_left(stack) == list(range(12))
    assert any(w.startswith("Gantry tilt 15.0°") for w in stack.warnings), stack.warnings


def test_duplicate_sop_instance_kept_once(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "s", 8)
    shutil.copy(paths[3], tmp_path / "s" / "copy_of_3.dcm")
    report = load_paths([tmp_path / "s"])
    stack = report.all_stacks()[0]
    assert len(stack) == 8
    assert _top_left(stack) == list(range(8))
    assert stack.warnings[0].startswith("1 duplicate file(s) ignored")
    assert report.files_seen == 9
    assert [s.code for s in report.skipped] == ["E-DUPLICATE"]  # reported once, by file
    assert Path(report.skipped[0].path).name in {paths[3].name, "copy_of_3.dcm"}


def test_same_position_twice_warned(tmp_path: Path) -> None:
    write_ct_series(tmp_path, positions=[0.0, 5.0, 10.0, 10.0, 15.0])
    stack = _only_stack(tmp_path)
    assert len(stack) == 5
    assert any(w.startswith("1 slice(s) share a position") for w in stack.warnings), stack.warnings


def test_localizer_split_into_its_own_stack(tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    write_ct_series(tmp_path, 10, study_uid=study, series_uid=series)
    write_localizer(tmp_path / "scout.dcm", study_uid=study, series_uid=series)
    report = load_paths([tmp_path])
    (series_obj,) = report.patients[0].studies[0].series
    main, scout = series_obj.stacks
    assert main.uid == series and scout.uid == f"{series}#1"
    assert scout.label == "localizer" and len(scout) == 1
    assert _top_left(main) == list(range(10))
    assert main.warnings == ("Series split: 1 image(s) in 1 other stack(s)",)
    assert report.stacks_by_uid[f"{series}#1"] is scout


def test_odd_orientation_without_localizer_flag_is_a_localizer(tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    write_ct_series(tmp_path, 10, study_uid=study, series_uid=series)
    write_localizer(
        tmp_path / "odd.dcm", study_uid=study, series_uid=series, image_type=("ORIGINAL", "PRIMARY")
    )
    stacks = load_paths([tmp_path]).all_stacks()
    assert [len(s) for s in stacks] == [10, 1]
    assert stacks[1].label == "localizer"


def test_different_sizes_split_never_resized(tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    write_ct_series(tmp_path / "a", 6, study_uid=study, series_uid=series)
    write_ct_series(tmp_path / "b", 3, rows=32, columns=32, study_uid=study, series_uid=series)
    stacks = load_paths([tmp_path]).all_stacks()
    assert [(len(s), s.rows, s.columns, s.label) for s in stacks] == [(6, 64, 64, ""), (3, 32, 32, "32x32")]


def test_all_together_shuffled_with_everything(tmp_path: Path) -> None:
    """Shuffled names, a gap, a duplicate file, a localizer and junk in one drop."""
    study, series = generate_uid(), generate_uid()
    zs = [k * 3.0 for k in range(20) if k != 9]
    paths = write_ct_series(tmp_path, positions=zs, study_uid=study, series_uid=series, seed=11)
    shutil.copy(paths[0], tmp_path / "dup.dcm")
    write_localizer(tmp_path / "scout.dcm", study_uid=study, series_uid=series)
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    report = load_paths([tmp_path])
    main, scout = report.all_stacks()
    assert _top_left(main) == list(range(19))
    assert scout.label == "localizer"
    assert any(w.startswith("1 duplicate") for w in main.warnings)
    assert any(w.startswith("1 missing slice(s)") for w in main.warnings)
    assert sorted(s.code for s in report.skipped) == ["E-DUPLICATE", "E-NOT-DICOM"]


def test_missing_geometry_falls_back_to_instance_number_then_file_order(tmp_path: Path) -> None:
    study, series, fref = generate_uid(), generate_uid(), generate_uid()
    for k in (3, 0, 2, 1):
        hu = np.full((8, 8), k, dtype=np.int16)
        ds = make_ct_slice(
            hu,
            position=(0, 0, 0),
            instance_number=k + 1,
            study_uid=study,
            series_uid=series,
            frame_of_reference_uid=fref,
        )
        del ds.ImagePositionPatient
        write_slice(tmp_path / f"z{9 - k}.dcm", ds)
    stack = _only_stack(tmp_path)
    assert stack.sort_method == "instance_number"
    assert _top_left(stack) == [0, 1, 2, 3]
    infos = [replace(s, instance_number=None) for s in stack.slices]
    ordered, method, _, _ = sort_slices(infos)
    assert method == "file_order"
    assert [s.source.path.name for s in ordered] == ["z6.dcm", "z7.dcm", "z8.dcm", "z9.dcm"]


def test_inconsistent_orientation_falls_back(tmp_path: Path) -> None:
    base = SliceInfo(
        source=SliceSource(Path("a")),
        sop_instance_uid="1",
        instance_number=2,
        rows=8,
        columns=8,
        samples_per_pixel=1,
        photometric="MONOCHROME2",
        bits_allocated=16,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        position=(0.0, 0.0, 5.0),
        orientation=(1, 0, 0, 0, 1, 0),
    )
    other = replace(
        base,
        source=SliceSource(Path("b")),
        sop_instance_uid="2",
        instance_number=1,
        position=(0.0, 0.0, 0.0),
        orientation=(1, 0, 0, 0, 0, -1),
    )
    ordered, method, warnings, spacing = sort_slices([base, other])
    assert method == "instance_number" and spacing is None
    assert [s.sop_instance_uid for s in ordered] == ["2", "1"]
    assert "not reconstructable" in warnings[0]


def _info(k: int, z: float | None, inst: int | None) -> SliceInfo:
    return SliceInfo(
        source=SliceSource(Path(f"/d/{k:04d}")),
        sop_instance_uid=f"1.{k}",
        instance_number=inst,
        rows=4,
        columns=4,
        samples_per_pixel=1,
        photometric="MONOCHROME2",
        bits_allocated=16,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        position=None if z is None else (0.0, 0.0, z),
        orientation=(1, 0, 0, 0, 1, 0),
    )


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zs=st.lists(
        st.one_of(st.none(), st.floats(-500, 500, allow_nan=False).map(lambda v: round(v, 1))),
        min_size=1,
        max_size=30,
    ),
    insts=st.lists(st.one_of(st.none(), st.integers(0, 40)), min_size=30, max_size=30),
    seed=st.integers(0, 2**16),
)
def test_sort_is_deterministic_under_shuffling(
    zs: list[float | None], insts: list[int | None], seed: int
) -> None:
    infos = [_info(k, z, insts[k]) for k, z in enumerate(zs)]
    first, method, warnings, spacing = sort_slices(infos)
    shuffled = infos[:]
    random.Random(seed).shuffle(shuffled)
    again, method2, warnings2, spacing2 = sort_slices(shuffled)
    assert [s.source for s in first] == [s.source for s in again]
    assert (method, warnings, spacing) == (method2, warnings2, spacing2)
    assert sorted(s.source.path.name for s in first) == sorted(s.source.path.name for s in infos)
    if method == "position":
        locs = [s.location for s in first]
        assert locs == sorted(locs)  # type: ignore[type-var]
        assert all(z is not None for z in zs)


def test_two_patients_sharing_a_series_uid_give_two_stacks(tmp_path: Path) -> None:
    """Anonymised exports of one phantom often keep its UIDs: the patient must still tell them apart."""
    study, series = generate_uid(), generate_uid()
    same = {"study_uid": study, "series_uid": series}
    a = write_ct_series(tmp_path / "a", 4, patient_id="P1", patient_name="A", **same)  # type: ignore[arg-type]
    b = write_ct_series(tmp_path / "b", 6, patient_id="P2", patient_name="B", **same)  # type: ignore[arg-type]
    report = load_paths([tmp_path])
    assert [p.patient_id for p in report.patients] == ["P1", "P2"]
    by_patient = {p.patient_id: p.studies[0].series[0].stacks for p in report.patients}
    (stack_a,), (stack_b,) = by_patient["P1"], by_patient["P2"]
    assert {s.source.path for s in stack_a.slices} == set(a)
    assert {s.source.path for s in stack_b.slices} == set(b)
    assert stack_a.series_instance_uid == stack_b.series_instance_uid == series
    assert stack_a.uid != stack_b.uid  # both reachable by uid (catalogue, review store, cache)
    assert report.stacks_by_uid == {stack_a.uid: stack_a, stack_b.uid: stack_b}


def _unpositioned(folder: Path, numbers: list[int], *, modality: str = "CR") -> None:
    study, series, fref = generate_uid(), generate_uid(), generate_uid()
    for k, number in enumerate(numbers):
        hu = np.full((8, 8), 100, dtype=np.int16)
        ds = make_ct_slice(
            hu,
            position=(0, 0, 0),
            instance_number=number,
            study_uid=study,
            series_uid=series,
            frame_of_reference_uid=fref,
        )
        del ds.ImagePositionPatient, ds.ImageOrientationPatient
        ds.Modality = modality
        write_slice(folder / f"img{k}.dcm", ds)


def test_unpositioned_re_encodings_warned_like_positioned_duplicates(tmp_path: Path) -> None:
    _unpositioned(tmp_path / "same", [1, 1, 2])  # the first image twice, under two SOP Instance UIDs
    stack = _only_stack(tmp_path / "same")
    assert len(stack) == 3
    expected = "1 image(s) without position data share an instance number"
    assert any(w.startswith(expected) for w in stack.warnings), stack.warnings
    _unpositioned(tmp_path / "views", [1, 2], modality="US")  # two different views: nothing to say
    assert _only_stack(tmp_path / "views").warnings == ()
    # the frames of one multi-frame file share its instance number: not duplicates
    (cine,) = load_paths([str(get_testdata_file("examples_ybr_color.dcm"))]).all_stacks()
    assert len(cine) == 30 and cine.warnings == ()
