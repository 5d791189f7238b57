"""Editable hanging protocols (viewer.core.state.protocol_store): saved atomically as versioned JSON
(version 3: each viewport's zoom, rotation / flip and slab too), version 1 and 2 files still read, a
refused file kept aside, the built-ins restorable, and "save the current layout as a protocol for this
kind of study" hanging such studies the same way (real factory studies)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.core.test_hanging import _set_body_part, _study, _write
from viewer.core.constants import WINDOW_PRESETS, Window
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.reslice import Slab, SlabMode
from viewer.core.state.hanging import (
    DEFAULT_PROTOCOLS,
    FORMAT_VERSION,
    HangingProtocol,
    HangingProtocolError,
    PriorPlacement,
    SeriesChoice,
    StudySeries,
    ViewportRule,
    choose_protocol,
    load_protocols,
    plan,
    protocols_from_json,
    protocols_to_json,
)
from viewer.core.state.layout import Layout
from viewer.core.state.protocol_store import (
    ShownViewport,
    is_builtin,
    moved,
    protocol_from_view,
    restore_builtins,
    save_protocols,
    study_keywords,
    with_protocol,
)

SPINE = HangingProtocol(
    "Spine CT: bone | soft", "CT", Layout.ONE_BY_TWO,
    (ViewportRule(window="bone"), ViewportRule(SeriesChoice.NEXT, Orientation.SAGITTAL, "abdomen")),
    keywords=("spine", "lws"), body_parts=("SPINE", "LSPINE"), prior=PriorPlacement.SIDE_BY_SIDE,
)


VIEWED = HangingProtocol(
    "Chest CT: MIP", "CT", Layout.ONE_BY_TWO,
    (ViewportRule(window="lung", zoom=0.45, rotation=1, mirror=True),
     ViewportRule(SeriesChoice.MAIN, Orientation.CORONAL, "lung", slab=Slab(SlabMode.MIP, 10.0))),
    keywords=("chest",),
)


def test_saved_table_reads_back_atomically_as_version_3_with_prior_placement(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "hanging_protocols.json"
    table = save_protocols(path, with_protocol(DEFAULT_PROTOCOLS, SPINE))
    assert table.protocols[0] == SPINE and table.protocols[1:] == DEFAULT_PROTOCOLS
    doc = json.loads(path.read_text())
    assert doc["version"] == FORMAT_VERSION == 3 and doc["protocols"][0]["prior"] == "side_by_side"
    assert (path.stat().st_mode & 0o077) == 0 and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert load_protocols(path).protocols == table.protocols
    # saving again replaces the whole table; the same name replaces, not duplicates
    changed = HangingProtocol(SPINE.name, "CT", Layout.ONE, (ViewportRule(),))
    assert [p.name for p in with_protocol(table.protocols, changed)].count(SPINE.name) == 1


def test_version_1_files_are_read_with_no_prior_placement(tmp_path: Path) -> None:
    doc = json.loads(protocols_to_json(DEFAULT_PROTOCOLS))
    doc["version"] = 1
    for row in doc["protocols"]:
        del row["prior"]
    path = tmp_path / "hanging_protocols.json"
    path.write_text(json.dumps(doc))
    table = load_protocols(path)
    assert table.error is None and table.protocols == DEFAULT_PROTOCOLS
    assert all(p.prior is PriorPlacement.NONE for p in table.protocols)


def test_each_viewports_zoom_turn_and_slab_are_saved_and_version_2_files_read_without_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hanging_protocols.json"
    save_protocols(path, (VIEWED, *DEFAULT_PROTOCOLS))
    doc = json.loads(path.read_text())
    first, second = doc["protocols"][0]["viewports"]
    assert (first["zoom"], first["rotation"], first["mirror"], first["slab"]) == (0.45, 1, True, None)
    assert second["slab"] == {"mode": "mip", "thickness_mm": 10.0} and second["zoom"] is None
    assert load_protocols(path).protocols[0] == VIEWED
    # a version 2 file (written before viewports had a view): fitted, unturned, thin
    for row in doc["protocols"]:
        for v in row["viewports"]:
            for key in ("zoom", "rotation", "mirror", "slab"):
                del v[key]
    doc["version"] = 2
    path.write_text(json.dumps(doc))
    table = load_protocols(path)
    assert table.error is None and table.protocols[1:] == DEFAULT_PROTOCOLS
    assert all(v.default_view for v in table.protocols[0].viewports)
    assert table.protocols[0].viewports[1].orientation is Orientation.CORONAL


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"zoom": 0}, "zoom must be a positive number"),
        ({"zoom": "2x"}, "'zoom' must be mm per screen pixel"),
        ({"rotation": 4}, "rotation is 0-3 quarter turns"),
        ({"rotation": 1.5}, "'rotation' must be a whole number"),
        ({"mirror": "yes"}, "'mirror' must be true or false"),
        ({"slab": {"mode": "mip", "thickness_mm": -2}}, "'thickness_mm' must be a positive number"),
        ({"slab": {"mode": "max", "thickness_mm": 5}}, "'max' is not a valid SlabMode"),
        ({"slab": "mip"}, "'slab' must be an object"),
        ({"orientation": "native", "slab": {"mode": "mip", "thickness_mm": 5}}, "a slab needs a resliced"),
    ],
)
def test_bad_viewport_views_are_refused_with_where_and_why(change: dict[str, object], reason: str) -> None:
    doc = json.loads(protocols_to_json([VIEWED]))
    doc["protocols"][0]["viewports"][1].update(change)
    with pytest.raises(HangingProtocolError, match=r"hanging_protocols\.json: protocol 1") as info:
        protocols_from_json(json.dumps(doc))
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"version": 4}, "version 4 is not one of 1, 2, 3"),
        ({"prior": "above"}, "protocol 1: 'above' is not a valid PriorPlacement"),
        ({"name": " "}, "protocol 1: a protocol needs a name"),
        ({"modality": ""}, "has no modality"),
    ],
)
def test_bad_values_are_refused_with_where_and_why(change: dict[str, object], reason: str) -> None:
    doc = json.loads(protocols_to_json([SPINE]))
    if "version" in change:
        doc.update(change)
    else:
        doc["protocols"][0].update(change)
    with pytest.raises(HangingProtocolError, match=r"hanging_protocols\.json") as info:
        protocols_from_json(json.dumps(doc))
    assert reason in str(info.value)


def test_a_refused_file_is_kept_aside_before_the_first_save_and_builtins_restore(tmp_path: Path) -> None:
    path = tmp_path / "hanging_protocols.json"
    path.write_text('{"protocols": [{"name": "mine", "layout": "9x9"}]}')
    refused = load_protocols(path)
    assert refused.error is not None and refused.protocols == DEFAULT_PROTOCOLS
    save_protocols(path, (SPINE, *refused.protocols), refused=True)
    kept = (tmp_path / "hanging_protocols.json.damaged").read_text()
    assert kept.startswith('{"protocols": [{"name": "mine"')
    assert load_protocols(path).protocols[0] == SPINE
    assert save_protocols(path, restore_builtins()).protocols == DEFAULT_PROTOCOLS
    assert all(is_builtin(p) for p in load_protocols(path).protocols) and not is_builtin(SPINE)
    with pytest.raises(HangingProtocolError, match="At least one"):
        save_protocols(path, ())
    assert load_protocols(path).protocols == DEFAULT_PROTOCOLS  # a refused save leaves the file alone


def test_moving_changes_the_order_of_matching() -> None:
    table = with_protocol(DEFAULT_PROTOCOLS, SPINE)
    assert moved(table, 0, 1)[:2] == (table[1], SPINE)
    assert moved(table, 0, -1) == table  # clamped
    assert moved(table, 1, 99)[-1] == table[1]


@pytest.mark.parametrize(
    ("description", "words"),
    [("CT Head without contrast", ("head",)), ("CT THORAX mit KM 1.5 mm", ("thorax",)),
     ("MRI Knee left, routine", ("knee", "left")), ("", ())],
)
def test_study_keywords_name_the_kind_of_study(description: str, words: tuple[str, ...]) -> None:
    assert study_keywords(description) == words


def test_current_layout_saved_as_a_protocol_hangs_such_studies_the_same_way(tmp_path: Path) -> None:
    uid = generate_uid()
    study, stacks = _study([
        _write(tmp_path / "soft", uid, "CT Sinus without contrast", "Sinus 3mm", 6),
        _write(tmp_path / "bone", uid, "CT Sinus without contrast", "Sinus bone 1mm", 5, spacing_z=1.0),
    ])
    series = StudySeries.of(study.description, stacks)
    soft, bone = sorted(stacks, key=len, reverse=True)
    shown = [
        ShownViewport(bone, Orientation.CORONAL, WINDOW_PRESETS["bone"]),
        ShownViewport(soft, Orientation.NATIVE, Window(123, 45)),  # no preset: the header's window
        ShownViewport(None), ShownViewport(None),
    ]
    made = protocol_from_view("Sinus CT", series, Layout.TWO_BY_TWO, shown, WINDOW_PRESETS)
    assert made.modality == "CT" and made.keywords == ("sinus",) and made.body_parts == ()
    assert made.viewports == (
        ViewportRule(SeriesChoice.BONE, Orientation.CORONAL, "bone"), ViewportRule(SeriesChoice.MAIN),
    )
    assert made.prior is PriorPlacement.NONE
    # the viewports' zoom, turn and slab are kept (a slab only on a resliced plane)
    mip = Slab(SlabMode.MIP, 8.0)
    viewed = [
        ShownViewport(bone, Orientation.CORONAL, WINDOW_PRESETS["bone"], zoom=0.3, rotation=3, slab=mip),
        ShownViewport(soft, Orientation.NATIVE, None, mirror=True, slab=mip),
    ]
    kept = protocol_from_view("Sinus CT", series, Layout.ONE_BY_TWO, viewed, WINDOW_PRESETS).viewports
    assert kept == (
        ViewportRule(SeriesChoice.BONE, Orientation.CORONAL, "bone", zoom=0.3, rotation=3, slab=mip),
        ViewportRule(SeriesChoice.MAIN, mirror=True),
    )
    hung_viewed = plan(protocol_from_view("Sinus CT", series, Layout.ONE_BY_TWO, viewed, WINDOW_PRESETS),
                       series, WINDOW_PRESETS)
    assert [(v.zoom, v.rotation, v.mirror, v.slab) for v in hung_viewed.viewports] == [
        (0.3, 3, False, mip), (None, 0, True, None)]
    # another sinus CT (other UIDs, the same kind) now hangs by it, not by the built-in "CT"
    other = generate_uid()
    study2, stacks2 = _study([
        _write(tmp_path / "s2", other, "CT sinus", "Sinus 3mm", 7),
        _write(tmp_path / "b2", other, "CT sinus", "Sinus bone 1mm", 4, spacing_z=1.0),
    ])
    series2 = StudySeries.of(study2.description, stacks2)
    table = with_protocol(DEFAULT_PROTOCOLS, made)
    assert choose_protocol(table, series2) is made
    hung = plan(made, series2, WINDOW_PRESETS)
    by_uid = {s.uid: s for s in stacks2}
    assert hung.layout is Layout.TWO_BY_TWO
    assert [by_uid[v.stack_key].series_description for v in hung.viewports] == ["Sinus bone 1mm", "Sinus 3mm"]
    assert [v.window for v in hung.viewports] == [WINDOW_PRESETS["bone"], None]
    assert hung.viewports[0].orientation is Orientation.CORONAL
    # a head CT is not "this kind of study"
    head, head_stacks = _study([_write(tmp_path / "h", generate_uid(), "CT Head", "Head 5mm")])
    assert choose_protocol(table, StudySeries.of(head.description, head_stacks)).name.startswith("Head CT")


def test_body_part_and_a_shown_prior_make_a_last_viewport_prior_protocol(tmp_path: Path) -> None:
    now = _write(tmp_path / "now", generate_uid(), "CT Abdomen", "Abdomen 5mm", 6, study_date="20260301")
    then = _write(tmp_path / "then", generate_uid(), "CT Abdomen", "Abdomen 5mm", 5, study_date="20250301")
    _set_body_part(now, "ABDOMEN")
    _, current = _study([now])
    _, prior = _study([then])
    series = StudySeries.of("CT Abdomen", current)
    shown = [ShownViewport(prior[0], window=WINDOW_PRESETS["abdomen"], prior=True),
             ShownViewport(current[0], window=WINDOW_PRESETS["abdomen"])]
    made = protocol_from_view("Abdomen: current | prior", series, Layout.ONE_BY_TWO, shown, WINDOW_PRESETS)
    assert made.body_parts == ("ABDOMEN",) and made.keywords == ()
    assert made.prior is PriorPlacement.LAST_VIEWPORT
    hung = plan(made, series, WINDOW_PRESETS, StudySeries.of("CT Abdomen", prior))
    assert [v.stack_key for v in hung.viewports] == [current[0].uid, prior[0].uid]
    assert hung.prior_viewport == 1 and all(v.window == WINDOW_PRESETS["abdomen"] for v in hung.viewports)
    alone = plan(made, series, WINDOW_PRESETS)  # no prior open: the current series in both
    assert [v.stack_key for v in alone.viewports] == [current[0].uid, current[0].uid]
    assert alone.prior_viewport is None
    with pytest.raises(HangingProtocolError, match="empty"):
        protocol_from_view("x", series, Layout.ONE, [ShownViewport(None)], WINDOW_PRESETS)
