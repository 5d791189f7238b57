"""The Qt-free viewer state: layouts, viewports, intents, events and sync rules, on real loaded stacks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from tests.core.geometry_cases import CASES, load_stack, write_case
from tests.factories import write_ct_series, write_geometry_series
from viewer.core.constants import Window
from viewer.core.dicom.model import Stack
from viewer.core.errors import ViewerStateError
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.reslice import Slab, SlabMode
from viewer.core.state.layout import Cell, Layout
from viewer.core.state.planes import plane_at, slice_index
from viewer.core.state.viewer_state import ViewerState
from viewer.core.state.viewport import FLIP_H, FLIP_V, Tool, ViewportState, turn_matrix


def _axial(folder: Path, n: int, spacing: float, z0: float, for_uid: str) -> Stack:
    hu = np.zeros((n, 8, 8), dtype=np.int16)
    write_geometry_series(
        folder, hu, positions=[(0.0, 0.0, z0 + k * spacing) for k in range(n)], frame_of_reference_uid=for_uid
    )
    return load_stack(folder)


@pytest.fixture
def two_series(tmp_path: Path) -> tuple[Stack, Stack, Stack]:
    """5 mm and 2 mm series of one frame of reference, and a prior (other frame) at other positions."""
    frame = generate_uid()
    thick = _axial(tmp_path / "thick", 10, 5.0, 0.0, frame)
    thin = _axial(tmp_path / "thin", 25, 2.0, 0.0, frame)
    prior = _axial(tmp_path / "prior", 10, 5.0, 100.0, generate_uid())
    return thick, thin, prior


class Recorder:
    def __init__(self, state: ViewerState) -> None:
        self.viewport: list[tuple[int, ViewportState]] = []
        self.names: list[str] = []
        state.events.viewport.connect(lambda i, vp: self.viewport.append((i, vp)))
        state.events.all.connect(lambda info: self.names.append(info.signal.name))


def test_layouts_keep_viewports_and_emit(two_series: tuple[Stack, Stack, Stack]) -> None:
    state = ViewerState()
    rec = Recorder(state)
    key = state.add_stack(two_series[0])
    state.show(0, key)
    state.set_layout(Layout.TWO_BY_TWO)
    assert len(state.viewports) == 4 and state.viewport(0).stack_key == key
    assert all(vp.is_empty for vp in state.viewports[1:])
    state.set_active(3)
    state.set_layout(Layout.ONE_BY_TWO)
    assert len(state.viewports) == 2 and state.active == 0  # the active viewport went away
    assert rec.names == ["catalogue", "viewport", "layout", "active", "layout", "active"]
    assert Layout.ONE_PLUS_THREE.cells[0] == Cell(0, 0, row_span=3, column_span=2)
    assert Layout.ONE_PLUS_THREE.grid == (3, 3) and Layout.TWO_BY_ONE.grid == (2, 1)
    with pytest.raises(ViewerStateError, match="No viewport 2 in the 1x2 layout"):
        state.scroll(2, 1)


def test_show_starts_in_the_middle_with_the_stacks_own_window(two_series: tuple[Stack, Stack, Stack]) -> None:
    state = ViewerState()
    key = state.add_stack(two_series[0])
    state.show(0, key)
    vp = state.viewport(0)
    entry = state.entry(0)
    assert entry is not None and entry.geometry is not None
    assert vp.position_mm == pytest.approx(25.0) and slice_index(entry, vp) == 5
    # the stack's own (header) window, fitted, unturned: what key 0, F and R come back to
    assert (vp.window, vp.invert, vp.scale, vp.pan, vp.rotation, vp.mirror) == (
        None, False, None, (0.0, 0.0), 0, False
    )


def test_scroll_steps_slices_and_clamps(two_series: tuple[Stack, Stack, Stack]) -> None:
    state = ViewerState()
    state.show(0, state.add_stack(two_series[0]))
    state.scroll(0, 2)
    assert state.viewport(0).position_mm == pytest.approx(35.0)
    state.scroll(0, 100)
    assert state.viewport(0).position_mm == pytest.approx(45.0)
    state.scroll(0, -100)
    assert state.viewport(0).position_mm == pytest.approx(0.0)
    state.set_position(0, 12.0)
    assert state.viewport(0).position_mm == pytest.approx(10.0)  # nearest slice


def test_scroll_sync_by_patient_position_in_one_frame_of_reference(
    two_series: tuple[Stack, Stack, Stack],
) -> None:
    thick, thin, _ = two_series
    state = ViewerState()
    rec = Recorder(state)
    state.set_layout(Layout.ONE_BY_TWO)
    state.show(0, state.add_stack(thick))
    state.show(1, state.add_stack(thin))
    rec.viewport.clear()
    state.scroll(0, 1)  # 25 -> 30 mm
    assert state.viewport(1).position_mm == pytest.approx(30.0)
    assert [i for i, _ in rec.viewport] == [0, 1]
    state.scroll(1, 1)  # thin: 32 mm -> the thick series' nearest slice is 30 mm (no move)
    assert state.viewport(0).position_mm == pytest.approx(30.0)
    state.scroll(1, 2)  # 36 mm -> 35
    assert state.viewport(0).position_mm == pytest.approx(35.0)
    state.set_sync(scroll=False)
    state.scroll(0, -3)
    assert state.viewport(1).position_mm == pytest.approx(36.0)


def test_other_frame_of_reference_scrolls_only_when_linked_with_its_offset(
    two_series: tuple[Stack, Stack, Stack],
) -> None:
    thick, _, prior = two_series
    state = ViewerState()
    state.set_layout(Layout.ONE_BY_TWO)
    state.show(0, state.add_stack(thick))
    state.show(1, state.add_stack(prior))
    state.scroll(0, 1)
    assert state.viewport(1).position_mm == pytest.approx(125.0)  # not linked: stays
    state.link(0, 1)  # current at 30 mm, prior at 125 mm
    assert state.link_offset(0, 1) == pytest.approx(95.0)
    state.scroll(0, 2)
    assert state.viewport(1).position_mm == pytest.approx(135.0)
    state.scroll(1, -1)
    assert state.viewport(0).position_mm == pytest.approx(35.0)
    state.unlink(0, 1)
    state.scroll(0, 1)
    assert state.viewport(1).position_mm == pytest.approx(130.0)
    with pytest.raises(ViewerStateError, match="itself"):
        state.show(1, state.viewport(0).stack_key or "")
        state.link(0, 1)


def test_crossing_planes_do_not_scroll_each_other(tmp_path: Path) -> None:
    write_case(CASES["tilted"], tmp_path)
    state = ViewerState()
    key = state.add_stack(load_stack(tmp_path))
    state.set_layout(Layout.ONE_BY_TWO)
    state.show(0, key)
    state.show(1, key, Orientation.CORONAL)
    before = state.viewport(1).position_mm
    state.scroll(0, 1)
    assert state.viewport(1).position_mm == before
    state.scroll(1, 3)  # the coronal plane steps by whole 0.8 mm rows
    assert state.viewport(1).position_mm == pytest.approx(before + 2.4)
    entry = state.entry(1)
    assert entry is not None
    plane = plane_at(entry, state.viewport(1))
    assert plane is not None and plane.iop == (1, 0, 0, 0, 0, -1)


def test_go_to_point_moves_every_plane_through_it(tmp_path: Path) -> None:
    write_case(CASES["axial"], tmp_path)
    state = ViewerState()
    key = state.add_stack(load_stack(tmp_path))
    state.set_layout(Layout.ONE_PLUS_THREE)
    for i, o in enumerate((Orientation.NATIVE, Orientation.AXIAL, Orientation.CORONAL, Orientation.SAGITTAL)):
        state.show(i, key, o)
    entry = state.entry(0)
    assert entry is not None and entry.geometry is not None
    point = entry.geometry.voxel_to_patient((6, 3, 4))
    for i in range(4):
        state.go_to_point(i, point)
    for i in range(4):
        plane = plane_at(entry, state.viewport(i))
        assert plane is not None
        assert abs(float(plane.patient_to_pixel(point)[2])) < 1e-9  # the point lies on every plane


def test_window_and_zoom_sync_toggles(two_series: tuple[Stack, Stack, Stack], tmp_path: Path) -> None:
    thick, thin, _ = two_series
    write_ct_series(tmp_path / "mr", 3)
    other = load_stack(tmp_path / "mr")
    other = replace(other, modality="MR", uid="mr")
    state = ViewerState()
    state.set_layout(Layout.TWO_BY_TWO)
    for i, s in enumerate((thick, thin, other)):
        state.show(i, state.add_stack(s))
    brain = Window(width=80.0, level=40.0)
    bone = Window(width=2800.0, level=600.0)
    state.set_window(0, bone)
    assert state.viewport(1).window is None  # sync off: its own window
    state.set_sync(window=True, zoom=True)
    state.set_window(0, bone)
    assert state.viewport(1).window == bone and state.viewport(2).window is None  # CT only
    state.set_window(0, brain, sync=False)  # a per-viewport window (a hanging protocol's) stays there
    assert state.viewport(0).window == brain and state.viewport(1).window == bone
    assert state.same_modality(0) == [1]
    state.set_zoom(1, 0.25, pan=(3.0, -4.0))
    assert [vp.scale for vp in state.viewports] == [0.25, 0.25, None, None]  # CT only; the empty one stays
    assert state.viewport(0).pan == (3.0, -4.0) and state.viewport(2).pan == (0.0, 0.0)
    state.set_zoom(1, 0.5)  # the pan stays
    assert state.viewport(0).pan == (3.0, -4.0) and state.viewport(0).scale == 0.5
    state.fit(0)
    assert [(vp.scale, vp.pan) for vp in state.viewports[:2]] == [(None, (0.0, 0.0))] * 2
    state.set_window(1, None)  # key 0: every synced viewport back to its own window
    assert [vp.window for vp in state.viewports[:3]] == [None, None, None]
    with pytest.raises(ViewerStateError, match="positive"):
        state.set_window(0, Window(width=0.0, level=0.0))
    with pytest.raises(ViewerStateError, match="finite"):
        state.set_window(0, Window(width=10.0, level=float("nan")))
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ViewerStateError, match="Zoom"):
            state.set_zoom(0, bad)
    with pytest.raises(ViewerStateError, match="Pan"):
        state.set_zoom(0, 1.0, pan=(float("nan"), 0.0))
    state.set_sync(window=False, zoom=False)
    state.set_window(0, bone)
    state.set_zoom(0, 0.3, (1.0, 1.0))
    state.set_sync(window=True, zoom=True)
    state.reset_view(0)  # R with both syncs on: window and fit go along
    assert [(vp.window, vp.scale) for vp in state.viewports[:3]] == [(None, None)] * 3


def test_rotate_flip_reset_tool_selection_slab(two_series: tuple[Stack, Stack, Stack]) -> None:
    state = ViewerState()
    rec = Recorder(state)
    state.show(0, state.add_stack(two_series[0]))
    state.rotate(0)
    state.rotate(0, -2)
    state.flip(0)
    state.flip(0, horizontal=False)
    vp = state.viewport(0)
    # R^-1, then a screen flip H and V: the screen turned by a half turn after R^-1, i.e. R^1
    assert (vp.rotation, vp.mirror) == (1, False)
    state.set_zoom(0, 3.0)
    state.set_window(0, Window(300, 30))
    state.toggle_invert(0)
    state.reset_view(0)
    vp = state.viewport(0)
    assert (vp.rotation, vp.mirror, vp.scale, vp.window, vp.invert) == (0, False, None, None, False)
    state.set_tool(Tool.RULER)
    state.set_tool(Tool.RULER)  # no change, no event
    state.select(["m1"])
    state.set_slab(0, Slab(SlabMode.MIP, 10.0))
    assert state.tool is Tool.RULER and state.selection == ("m1",)
    assert state.viewport(0).slab == Slab(SlabMode.MIP, 10.0)
    assert rec.names.count("tool") == 1 and rec.names.count("selection") == 1


def test_stack_without_geometry_scrolls_by_index_and_refuses_mpr(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "s", 6)
    stack = load_stack(tmp_path / "s")
    bare = replace(
        stack, slices=tuple(replace(s, position=None) for s in stack.slices), sort_method="instance_number"
    )
    state = ViewerState()
    key = state.add_stack(bare)
    state.show(0, key)
    assert state.viewport(0).position_mm == 3.0
    state.scroll(0, 10)
    assert state.viewport(0).position_mm == 5.0
    with pytest.raises(ViewerStateError, match="no patient geometry"):
        state.set_orientation(0, Orientation.CORONAL)
    state.remove_stack(key)
    assert state.viewport(0).is_empty and key not in state.catalogue


SCREEN_OPS = {
    "cw": turn_matrix(1, False),
    "ccw": turn_matrix(3, False),
    "h": FLIP_H,
    "v": FLIP_V,
}


@pytest.mark.parametrize(
    "ops",
    [("cw",), ("h",), ("v",), ("cw", "h"), ("h", "cw"), ("cw", "v", "ccw"), ("v", "h"),
     ("cw", "cw", "h", "v"), ("h", "cw", "v", "ccw", "ccw", "h", "cw")],
)
def test_turn_intents_compose_like_screen_operations(
    two_series: tuple[Stack, Stack, Stack], ops: tuple[str, ...]
) -> None:
    """Rotations and flips are of what is on screen, in the order pressed: the state's (rotation, mirror)
    pair gives the product of the screen operations (the matrices the view applies)."""
    state = ViewerState()
    state.show(0, state.add_stack(two_series[0]))
    expected = np.eye(2, dtype=int)
    for op in ops:
        state.set_zoom(0, 0.5, (2.0, 1.0))
        if op in ("cw", "ccw"):
            state.rotate(0, 1 if op == "cw" else -1)
        else:
            state.flip(0, horizontal=op == "h")
        expected = SCREEN_OPS[op] @ expected
        assert state.viewport(0).scale is None and state.viewport(0).pan == (0.0, 0.0)  # fitted again
    vp = state.viewport(0)
    assert np.array_equal(vp.turn(), expected)
    assert 0 <= vp.rotation < 4


def test_display_fields_round_trip_and_emit_once_per_change(two_series: tuple[Stack, Stack, Stack]) -> None:
    """Each display intent makes one new frozen value and one event; the same value again emits nothing;
    scrolling, a plane change and a slab keep or reset the display as documented."""
    state = ViewerState()
    rec = Recorder(state)
    key = state.add_stack(two_series[0])
    state.show(0, key)
    rec.viewport.clear()
    window = Window(350.0, 50.0)
    state.set_window(0, window)
    state.set_window(0, window)  # unchanged: no event
    state.toggle_invert(0)
    state.set_zoom(0, 0.4, (5.0, -2.5))
    state.rotate(0, 1)
    state.set_zoom(0, 0.4, (5.0, -2.5))
    assert len(rec.viewport) == 5
    values = [vp for _, vp in rec.viewport]
    assert values[0].window == window and values[0].invert is False
    assert values[1].invert is True and values[1].window == window
    assert (values[2].scale, values[2].pan) == (0.4, (5.0, -2.5))
    assert values[3].rotation == 1 and values[3].scale is None
    before = state.viewport(0)
    state.scroll(0, 2)
    after = state.viewport(0)
    assert after.position_mm != before.position_mm
    assert replace(after, position_mm=before.position_mm) == before  # scrolling keeps the display
    state.set_slab(0, Slab(SlabMode.MIP, 10.0))
    assert replace(state.viewport(0), slab=None) == after
    state.set_orientation(0, Orientation.CORONAL)  # another plane: fitted and unturned, the window stays
    vp = state.viewport(0)
    assert (vp.window, vp.invert, vp.scale, vp.rotation, vp.mirror) == (window, True, None, 0, False)
    state.show(0, key, Orientation.CORONAL)  # shown again (compare with prior, a protocol): the display stays
    assert replace(state.viewport(0), position_mm=vp.position_mm) == replace(vp, slab=None)
    state.show(0, key)  # another plane: a fresh display
    assert state.viewport(0).window is None and not state.viewport(0).invert
    with pytest.raises(ViewerStateError, match="empty"):
        ViewerState().set_window(0, window)


def test_leaving_mpr_gives_the_acquired_slices_at_the_mpr_point(
    two_series: tuple[Stack, Stack, Stack], tmp_path: Path
) -> None:
    thick, _, prior = two_series
    write_case(CASES["sagittal"], tmp_path / "sag")
    state = ViewerState()
    key, other = state.add_stack(thick), state.add_stack(prior)
    sag = state.add_stack(load_stack(tmp_path / "sag"))
    state.set_layout(Layout.ONE_BY_TWO)
    state.show(0, other)
    state.show(1, key)
    state.set_active(1)
    state.set_position(1, 15.0)  # slice 3 of the 5 mm series
    before = state.viewports
    state.enter_mpr(1)
    assert state.in_mpr and state.layout is Layout.ONE_BY_THREE and state.active == 0
    assert [vp.orientation for vp in state.viewports] == [Orientation.AXIAL, Orientation.CORONAL,
                                                          Orientation.SAGITTAL]
    entry = state.entry(0)
    assert entry is not None and entry.geometry is not None
    assert slice_index(entry, replace(state.viewport(0), orientation=Orientation.NATIVE)) == 3  # through it
    state.scroll(0, 2)  # the axial plane 2 voxel steps (5 mm) up: slice 5
    state.leave_mpr()  # Alt+M again: the layout before, the series as acquired at the MPR's point
    assert not state.in_mpr and state.layout is Layout.ONE_BY_TWO and state.active == 1
    assert state.viewport(0) == before[0]
    assert state.viewport(1) == replace(before[1], position_mm=25.0)
    state.enter_mpr(1)
    state.set_layout(Layout.ONE)  # a layout chosen in MPR leaves it too; the read series stays on screen
    assert not state.in_mpr and state.viewports == (replace(before[1], position_mm=25.0),)
    # an acquired sagittal series: the MPR's first (axial) viewport is not its plane; 1×1 gives it back
    state.show(0, sag)
    state.enter_mpr(0)
    state.set_layout(Layout.ONE)
    assert state.viewport(0).stack_key == sag and state.viewport(0).orientation is Orientation.NATIVE
    # a stack closed during MPR: the layout stays, there is nothing to go back to
    state.enter_mpr(0)
    state.remove_stack(sag)
    assert not state.in_mpr and state.layout is Layout.ONE_BY_THREE
    state.set_layout(Layout.ONE)
    assert state.viewports == (ViewportState(),)
