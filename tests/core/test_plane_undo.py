"""Crosshair moves and plane turns on the window's one undo history (Qt-free): a rotation-handle drag (many
``rotate_planes`` intents from press to release) is one step, a drag of the crosshair point (many
``set_crosshair`` intents) one, an Alt+O reset another; undo puts the planes (orientation, directions,
position) and the crosshair point back, redo turns or moves them again; a step of no change is not
recorded; a measurement step and a turn step share the history in order."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.core.geometry_cases import CASES, load_stack, mpr_state, write_case
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.stack import StackGeometry
from viewer.core.plane_edit import MOVE_TEXT, RESET_TEXT, TURN_TEXT, PlaneTurnEditor
from viewer.core.state.viewer_state import ViewerState
from viewer.core.undo import Command, UndoStack


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("axial")
    write_case(CASES["axial"], folder)
    return folder


def _normals(state: ViewerState) -> list[np.ndarray]:
    planes = [state.plane(i) for i in (0, 1, 2)]
    assert all(p is not None for p in planes)
    return [p.normal for p in planes if p is not None]


def _drag(state: ViewerState, turns: PlaneTurnEditor, targets: list[int], degrees: float) -> None:
    """What the crosshair tool does for one handle drag: begin at the press, a turn per mouse step
    (from the planes at the press), finish at the release."""
    turns.begin(0)
    start = {i: (p.row_dir, p.col_dir) for i in targets if (p := state.plane(i)) is not None}
    for step in np.linspace(0.0, degrees, 6)[1:]:
        state.rotate_planes(0, targets, math.radians(float(step)), start=start)
    assert turns.finish()


def test_a_drag_is_one_undo_step_and_redo_turns_again(folder: Path) -> None:
    state = mpr_state(folder)
    geom = StackGeometry.from_stack(load_stack(folder))
    state.set_crosshair(0, tuple(float(v) for v in geom.voxel_to_patient((4, 5, 6))))
    history = UndoStack()
    turns = PlaneTurnEditor(state, history)
    before, point = _normals(state), state.crosshair(0)
    positions = [state.viewport(i).position_mm for i in (0, 1, 2)]
    _drag(state, turns, [1, 2], 25.0)
    turned = _normals(state)
    assert history.undo_text() == TURN_TEXT
    assert not np.allclose(turned[1], before[1])
    history.undo()
    assert not history.can_undo()  # five mouse steps, one undo step
    for now, was in zip(_normals(state), before, strict=True):
        np.testing.assert_allclose(now, was, atol=1e-9)
    assert state.viewport(1).orientation is Orientation.CORONAL
    assert state.viewport(2).orientation is Orientation.SAGITTAL
    assert state.viewport(1).oblique is None
    assert [state.viewport(i).position_mm for i in (0, 1, 2)] == positions
    assert state.crosshair(0) == point
    assert history.redo() is not None
    for now, was in zip(_normals(state), turned, strict=True):
        np.testing.assert_allclose(now, was, atol=1e-9)
    assert state.viewport(1).orientation is Orientation.OBLIQUE


def test_one_plane_turn_then_reset_are_two_steps(folder: Path) -> None:
    state = mpr_state(folder)
    history = UndoStack()
    history.push(Command("add ruler", lambda: True, lambda: True))  # a measurement step before
    turns = PlaneTurnEditor(state, history)
    before = _normals(state)
    _drag(state, turns, [1], 15.0)  # Ctrl+drag: the coronal plane alone
    one = _normals(state)
    assert state.viewport(2).orientation is Orientation.SAGITTAL
    assert turns.reset(0)
    assert history.undo_text() == RESET_TEXT
    assert state.viewport(1).orientation is Orientation.CORONAL
    assert not turns.reset(0)  # already orthogonal: nothing recorded
    history.undo()  # the reset undone: turned again
    np.testing.assert_allclose(_normals(state)[1], one[1], atol=1e-9)
    assert state.viewport(1).orientation is Orientation.OBLIQUE
    history.undo()  # the turn undone
    for now, was in zip(_normals(state), before, strict=True):
        np.testing.assert_allclose(now, was, atol=1e-9)
    assert history.undo_text() == "add ruler"  # the measurement's step is next
    # a turn whose stack is gone can no longer be undone: the step is dropped
    _drag(state, turns, [1, 2], 10.0)
    key = state.viewport(0).stack_key
    assert key is not None
    state.remove_stack(key)
    assert history.undo() is not None and history.undo_text() == ""  # the turn dropped, the ruler undone


def test_a_press_without_turning_records_nothing(folder: Path) -> None:
    state = mpr_state(folder)
    history = UndoStack()
    turns = PlaneTurnEditor(state, history)
    turns.begin(0)
    assert not turns.finish()
    assert not turns.finish()  # nothing begun
    assert not history.can_undo()


def _move(
    state: ViewerState, turns: PlaneTurnEditor, geom: StackGeometry, voxels: list[tuple[int, int, int]]
) -> None:
    """What the crosshair tool does for one drag of the point in viewport 0: begin at the press, a
    ``set_crosshair`` per mouse step, finish at the release."""
    turns.begin(0)
    for kji in voxels:
        state.set_crosshair(0, tuple(float(v) for v in geom.voxel_to_patient(kji)))
    turns.finish(MOVE_TEXT)


def test_a_drag_of_the_crosshair_point_is_one_undo_step_in_every_viewport_of_its_frame(folder: Path) -> None:
    state = mpr_state(folder)
    history = UndoStack()
    turns = PlaneTurnEditor(state, history)
    geom = StackGeometry.from_stack(load_stack(folder))
    first = tuple(float(v) for v in geom.voxel_to_patient((4, 5, 6)))
    state.set_crosshair(0, first)
    positions = [state.viewport(i).position_mm for i in (0, 1, 2)]
    _move(state, turns, geom, [(4, 7, 8), (4, 9, 10), (4, 12, 3)])  # three mouse steps
    moved = [state.viewport(i).position_mm for i in (0, 1, 2)]
    point = state.crosshair(0)
    assert moved[0] == positions[0] and moved[1:] != positions[1:]  # the others scrolled to the point
    assert history.undo_text() == MOVE_TEXT
    assert history.undo() is not None
    assert not history.can_undo()  # three mouse steps, one undo step
    assert [state.viewport(i).position_mm for i in (0, 1, 2)] == positions
    assert state.crosshair(0) == first
    assert history.redo() is not None
    assert [state.viewport(i).position_mm for i in (0, 1, 2)] == moved
    assert state.crosshair(0) == point


def test_moves_and_turns_undo_in_order_and_a_click_on_the_point_records_nothing(folder: Path) -> None:
    state = mpr_state(folder)
    history = UndoStack()
    turns = PlaneTurnEditor(state, history)
    geom = StackGeometry.from_stack(load_stack(folder))
    before = _normals(state)
    positions = [state.viewport(i).position_mm for i in (0, 1, 2)]
    _move(state, turns, geom, [(4, 10, 10)])  # a click: the first point placed, planes moved -> a step
    assert history.undo_text() == MOVE_TEXT
    moved = [state.viewport(i).position_mm for i in (0, 1, 2)]
    _move(state, turns, geom, [(4, 10, 10)])  # a click on the point itself: nothing changed, nothing recorded
    _drag(state, turns, [1, 2], 20.0)
    assert history.undo_text() == TURN_TEXT
    history.undo()  # the turn
    for now, was in zip(_normals(state), before, strict=True):
        np.testing.assert_allclose(now, was, atol=1e-9)
    assert [state.viewport(i).position_mm for i in (0, 1, 2)] == moved
    assert history.undo_text() == MOVE_TEXT
    history.undo()  # the move: the point unset again, the planes where they were
    assert state.crosshair(0) is None
    assert [state.viewport(i).position_mm for i in (0, 1, 2)] == positions
    assert not history.can_undo()
