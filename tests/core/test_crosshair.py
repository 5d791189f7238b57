"""The crosshair (a patient point shared by the viewports of one frame of reference) and oblique MPR planes
made by turning it: plane maths, the fast reslice path of a plane turned about the slice normal, and the
state's intents.

Oracle for the pixels: a field linear in patient coordinates, sampled at each voxel centre through
highdicom's pixel-to-patient transform (as in test_planes_and_reslice): linear interpolation reproduces
it exactly, so a wrong position, spacing or direction of an oblique plane shows as a wrong value.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.core.geometry_cases import (
    CASES,
    FIELD,
    linear_volume,
    load_stack,
    mpr_state,
    write_case,
)
from viewer.core.errors import ViewerStateError
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.plane import (
    axis_step,
    common_point,
    crosshair_plane,
    reference_line,
    rotate_vector,
    signed_angle,
    standard_plane,
)
from viewer.core.geometry.reslice import _Sampler, reslice
from viewer.core.geometry.stack import StackGeometry
from viewer.core.state.layout import Layout
from viewer.core.state.planes import plane_at
from viewer.core.state.viewer_state import ViewerState


@pytest.fixture(scope="module")
def axial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StackGeometry, np.ndarray]:
    folder = tmp_path_factory.mktemp("axial")
    paths = write_case(CASES["axial"], folder)
    return folder, StackGeometry.from_stack(load_stack(folder)), linear_volume(paths)


def test_rotate_vector_and_signed_angle() -> None:
    v = rotate_vector((1, 0, 0), (0, 0, 1), math.pi / 2)
    np.testing.assert_allclose(v, (0, 1, 0), atol=1e-12)
    assert signed_angle((1, 0, 0), (0, 1, 0), (0, 0, 1)) == pytest.approx(math.pi / 2)
    assert signed_angle((1, 0, 0), (0, 1, 0), (0, 0, -1)) == pytest.approx(-math.pi / 2)
    # components along the axis do not count
    assert signed_angle((1, 0, 5), (1, 1, -3), (0, 0, 1)) == pytest.approx(math.pi / 4)


def test_common_point_of_three_crossing_planes(axial: tuple[Path, StackGeometry, np.ndarray]) -> None:
    _, geom, _ = axial
    p = np.array([-1.0, -2.5, 16.0])
    orientations = (Orientation.AXIAL, Orientation.CORONAL, Orientation.SAGITTAL)
    planes = [standard_plane(geom, o, p) for o in orientations]
    np.testing.assert_allclose(common_point(planes, (0, 0, 0)), p, atol=1e-9)
    # two planes: the point of their line nearest the hint
    q = common_point(planes[1:], (3.0, 0.0, 0.0))
    assert abs(float(np.dot(planes[1].normal, q)) - planes[1].position_mm) < 1e-9
    assert q[2] == pytest.approx(0.0)


@pytest.mark.parametrize("degrees", [0.0, 17.0, 45.0, 90.0, 133.0])
def test_coronal_turned_about_the_slice_normal_keeps_its_grid_and_reproduces_the_field(
    axial: tuple[Path, StackGeometry, np.ndarray], degrees: float
) -> None:
    _, geom, vol = axial
    base = standard_plane(geom, Orientation.CORONAL)
    turn = math.radians(degrees)
    row = rotate_vector(base.row_dir, geom.normal, turn)
    col = rotate_vector(base.col_dir, geom.normal, turn)
    plane = crosshair_plane(geom, row, col)
    # the direction along the slices samples one slice per line; the size does not change with the angle
    assert plane.spacing[0] == pytest.approx(geom.slice_spacing)
    assert plane.spacing[1] == pytest.approx(min(geom.pixel_spacing))
    assert plane.size == crosshair_plane(geom, base.row_dir, base.col_dir).size
    assert axis_step(geom, plane.col_dir) == pytest.approx(geom.slice_spacing)
    # the fast path (4 voxel-column gathers) is taken, and its pixels are the field's
    sampler = _Sampler(vol, geom, fill=-1.0)
    assert sampler._across_slices(plane) is not None
    res = reslice(vol, geom, plane, fill=-1.0)
    rr, cc = np.mgrid[0 : plane.size[0], 0 : plane.size[1]]
    pts = plane.pixel_to_patient(rr, cc)
    kji = geom.patient_to_voxel(pts)
    inside = np.all((kji >= -1e-6) & (kji <= np.array(geom.shape) - 1 + 1e-6), axis=-1)
    assert inside.sum() > 20
    np.testing.assert_allclose(res.image[inside], (pts @ FIELD + 5.0)[inside], atol=1e-3)
    assert np.all(res.image[~inside] == -1.0)
    assert res.pixel_spacing == plane.spacing


def test_double_oblique_uses_the_trilinear_path_and_is_right(
    axial: tuple[Path, StackGeometry, np.ndarray],
) -> None:
    _, geom, vol = axial
    row = rotate_vector((1, 0, 0), (0, 1, 0), 0.4)
    col = rotate_vector((0, 0, -1), (0, 1, 0), 0.4)
    row, col = rotate_vector(row, (0, 0, 1), 0.3), rotate_vector(col, (0, 0, 1), 0.3)
    plane = crosshair_plane(geom, row, col)
    assert _Sampler(vol, geom, 0.0)._across_slices(plane) is None
    assert _Sampler(vol, geom, 0.0)._trilinear(plane) is not None
    res = reslice(vol, geom, plane, fill=-1.0)
    rr, cc = np.mgrid[0 : plane.size[0], 0 : plane.size[1]]
    pts = plane.pixel_to_patient(rr, cc)
    kji = geom.patient_to_voxel(pts)
    inside = np.all((kji >= -1e-6) & (kji <= np.array(geom.shape) - 1 + 1e-6), axis=-1)
    np.testing.assert_allclose(res.image[inside], (pts @ FIELD + 5.0)[inside], atol=1e-3)


def test_set_crosshair_moves_the_other_planes_to_the_point(
    axial: tuple[Path, StackGeometry, np.ndarray],
) -> None:
    folder, geom, _ = axial
    state = mpr_state(folder)
    seen: list[tuple[str, object]] = []
    state.events.crosshair.connect(lambda key, point: seen.append((key, point)))
    # a voxel centre picked in the axial viewport
    point = tuple(float(v) for v in geom.voxel_to_patient((4, 3, 9)))
    axial_before = state.viewport(0).position_mm
    state.set_crosshair(0, point)
    assert state.crosshair(1) == pytest.approx(point)
    assert state.viewport(0).position_mm == axial_before  # the viewport clicked in stays
    for i in (1, 2):
        plane = state.plane(i)
        assert plane is not None
        assert abs(float(np.dot(plane.normal, point)) - plane.position_mm) < 1e-6  # through the point
    assert len(seen) == 1 and seen[0][1] == pytest.approx(point)
    with pytest.raises(ViewerStateError, match="three finite"):
        state.set_crosshair(0, (1.0, float("nan"), 2.0))


def test_rotate_plane_turns_the_other_plane_about_the_point_and_reset_restores_it(
    axial: tuple[Path, StackGeometry, np.ndarray],
) -> None:
    folder, geom, _ = axial
    state = mpr_state(folder)
    point = tuple(float(v) for v in geom.voxel_to_patient((4, 5, 6)))
    state.set_crosshair(0, point)
    coronal_before = state.viewport(1)
    state.rotate_plane(0, 1, math.radians(30))
    vp = state.viewport(1)
    assert vp.orientation is Orientation.OBLIQUE and vp.oblique is not None
    plane = state.plane(1)
    axial_plane = state.plane(0)
    assert plane is not None and axial_plane is not None
    # still perpendicular to the axial plane, turned 30° from coronal, through the crosshair (to half a step)
    assert float(np.dot(plane.normal, axial_plane.normal)) == pytest.approx(0.0, abs=1e-9)
    assert abs(float(np.dot(plane.normal, (0, 1, 0)))) == pytest.approx(math.cos(math.radians(30)))
    assert abs(float(np.dot(plane.normal, point)) - plane.position_mm) <= plane.spacing[1] / 2 + 1e-9
    # the axial viewport draws the turned plane's line through the crosshair, at 30° to the horizontal
    seg = reference_line(axial_plane, plane)
    assert seg is not None
    (r0, c0), (r1, c1) = seg
    dy, dx = (r1 - r0) * axial_plane.spacing[0], (c1 - c0) * axial_plane.spacing[1]
    assert abs(math.degrees(math.atan2(abs(dy), abs(dx)))) == pytest.approx(30.0, abs=1e-6)
    # orientation letters follow the turned directions (right edge mostly L, a little A or P)
    assert plane.edge_labels()["right"] in ("LP", "LA")
    # the sagittal viewport is untouched; a reset restores the coronal plane through the point
    assert state.viewport(2).orientation is Orientation.SAGITTAL
    state.reset_planes(0)
    after = state.viewport(1)
    assert after.orientation is Orientation.CORONAL and after.oblique is None
    assert after.position_mm == coronal_before.position_mm
    restored = plane_at(state.catalogue[after.stack_key], after) if after.stack_key else None
    assert restored is not None


def test_rotation_needs_two_viewports_of_one_frame(axial: tuple[Path, StackGeometry, np.ndarray]) -> None:
    folder, _, _ = axial
    state = mpr_state(folder)
    with pytest.raises(ViewerStateError, match="another viewport"):
        state.rotate_plane(1, 1, 0.3)
    # the stack's own slices do not turn (only resliced planes do)
    native = ViewerState()
    key = native.add_stack(load_stack(folder))
    native.set_layout(Layout.ONE_BY_TWO)
    native.show(0, key, Orientation.CORONAL)
    native.show(1, key, Orientation.NATIVE)
    with pytest.raises(ViewerStateError, match="own slices"):
        native.rotate_plane(0, 1, 0.3)
    assert native.viewport(1).orientation is Orientation.NATIVE
    # without a crosshair set, the point the three planes share is used (and kept)
    state.rotate_plane(0, 2, 0.2)
    p = state.crosshair(0)
    assert p is not None
    for i in (0, 1, 2):
        plane = state.plane(i)
        assert plane is not None
        assert abs(float(np.dot(plane.normal, p)) - plane.position_mm) <= max(plane.spacing) / 2 + 1e-6


def test_scrolling_a_viewport_carries_the_crosshair_point_with_its_plane(
    axial: tuple[Path, StackGeometry, np.ndarray],
) -> None:
    folder, geom, _ = axial
    state = mpr_state(folder)
    point = tuple(float(v) for v in geom.voxel_to_patient((4, 5, 6)))
    state.set_crosshair(0, point)
    state.scroll(1, 2)  # the coronal viewport two rows on
    moved = state.crosshair(0)
    assert moved is not None
    coronal = state.plane(1)
    assert coronal is not None
    assert float(np.dot(coronal.normal, moved)) == pytest.approx(coronal.position_mm)
    # only the coordinate along the coronal normal changed
    np.testing.assert_allclose(np.asarray(moved)[[0, 2]], np.asarray(point)[[0, 2]], atol=1e-9)
    assert abs(moved[1] - point[1]) == pytest.approx(2 * geom.pixel_spacing[0])


def test_rotate_planes_turns_both_other_planes_together_about_the_point(
    axial: tuple[Path, StackGeometry, np.ndarray],
) -> None:
    """One intent (a rotation handle's drag) turns the coronal and sagittal planes together about the
    axial normal: each by the angle, still perpendicular to each other and to the axial plane, both
    through the crosshair; one crosshair event; a bad target changes nothing; Alt+O's reset restores both."""
    folder, geom, _ = axial
    state = mpr_state(folder)
    point = tuple(float(v) for v in geom.voxel_to_patient((4, 5, 6)))
    state.set_crosshair(0, point)
    before = {i: state.viewport(i) for i in (1, 2)}
    normals = {i: p.normal for i in (1, 2) if (p := state.plane(i)) is not None}
    assert state.turnable_planes(0) == [1, 2]
    seen: list[object] = []
    state.events.crosshair.connect(lambda key, p: seen.append(p))
    start = {i: (p.row_dir, p.col_dir) for i in (1, 2) if (p := state.plane(i)) is not None}
    state.rotate_planes(0, [1, 2], math.radians(10), start=start)
    state.rotate_planes(0, [1, 2], math.radians(25), start=start)  # a drag's later step: from the press
    assert len(seen) == 2
    ax, cor, sag = (state.plane(i) for i in (0, 1, 2))
    assert ax is not None and cor is not None and sag is not None
    for plane, was in ((cor, (0.0, 1.0, 0.0)), (sag, (1.0, 0.0, 0.0))):
        assert state.viewport(1).orientation is Orientation.OBLIQUE
        assert math.degrees(math.acos(abs(float(np.dot(plane.normal, was))))) == pytest.approx(25.0)
        assert float(np.dot(plane.normal, ax.normal)) == pytest.approx(0.0, abs=1e-9)
        assert abs(float(np.dot(plane.normal, point)) - plane.position_mm) <= plane.spacing[1] / 2 + 1e-9
    assert float(np.dot(cor.normal, sag.normal)) == pytest.approx(0.0, abs=1e-9)
    # both turned the same way, by the angle about the axial normal
    for i, plane in ((1, cor), (2, sag)):
        assert signed_angle(normals[i], plane.normal, ax.normal) == pytest.approx(math.radians(25))
    turned = {i: state.viewport(i) for i in (1, 2)}
    with pytest.raises(ViewerStateError, match="another viewport"):
        state.rotate_planes(0, [1, 0], 0.3)  # checked before anything turns
    with pytest.raises(ViewerStateError, match="finite"):
        state.rotate_planes(0, [1, 2], float("nan"))
    assert {i: state.viewport(i) for i in (1, 2)} == turned
    state.reset_planes(0)
    for i in (1, 2):
        assert state.viewport(i).orientation is before[i].orientation and state.viewport(i).oblique is None
        assert state.viewport(i).position_mm == before[i].position_mm
