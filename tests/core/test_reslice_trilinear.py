"""The numpy trilinear sampler of double-oblique planes (and of slabs on them) against
``scipy.ndimage.map_coordinates`` on random (not linear) volumes, through voxel coordinates built from
highdicom's pixel-to-patient transform of the files and the files' own slice step (independent of
``StackGeometry``), on untilted, flipped, oblique, sagittal and gantry-tilted stacks.

A random volume makes every corner's weight count: a wrong corner, weight or axis order shows as a large
error, where a linear field would hide some of them.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from highdicom.spatial import PixelToReferenceTransformer
from scipy.ndimage import map_coordinates

from tests.core.geometry_cases import CASES, COLS, ROWS, file_geometry, load_stack, write_case
from viewer.core.geometry import reslice as reslice_module
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.plane import Plane, crosshair_plane, oblique_plane, rotate_vector, standard_plane
from viewer.core.geometry.reslice import Slab, SlabMode, _Sampler, reslice, slab_offsets
from viewer.core.geometry.stack import StackGeometry

AFFINE_CASES = sorted(name for name in CASES if name != "uneven")
EDGE = 1e-3  # voxel units: points this close outside the outer voxel centres count as on them (as in reslice)
FILL = -1024.0


def _oracle_voxels(paths: list[Path], points: np.ndarray) -> np.ndarray:
    """Voxel coordinates (k, j, i) of patient points, from highdicom's transform of slice 0 and the step
    between the first two files' positions (the files are evenly spaced)."""
    ipp0, iop, spacing = file_geometry(paths[0])
    ipp1, _, _ = file_geometry(paths[1])
    to_patient = PixelToReferenceTransformer(ipp0, iop, spacing)
    origin = to_patient(np.array([[0, 0]]))[0]
    step_i = to_patient(np.array([[1, 0]]))[0] - origin  # highdicom pixels are (column, row)
    step_j = to_patient(np.array([[0, 1]]))[0] - origin
    step_k = np.asarray(ipp1) - np.asarray(ipp0)
    basis = np.column_stack([step_k, step_j, step_i])
    return np.linalg.solve(basis, (points - origin).reshape(-1, 3).T).T.reshape(points.shape)


def _double_oblique_planes(geom: StackGeometry) -> list[Plane]:
    base = standard_plane(geom, Orientation.CORONAL)
    row = rotate_vector(base.row_dir, geom.normal, math.radians(30))
    col = rotate_vector(base.col_dir, geom.normal, math.radians(30))
    tilt = geom.row_dir  # then about an in-slice axis: the plane no longer contains the slice normal
    row, col = rotate_vector(row, tilt, math.radians(20)), rotate_vector(col, tilt, math.radians(20))
    centre = geom.corners().mean(axis=0)
    fitted = crosshair_plane(geom, row, col)
    # the same grid moved up by 60 % of its height: its top rows miss the volume altogether
    up = np.asarray(fitted.origin) - 0.6 * fitted.size[0] * fitted.spacing[0] * np.asarray(fitted.col_dir)
    return [
        fitted,
        oblique_plane(geom, centre, (1, 0.3, 0.2), (0.1, 0.2, -1), spacing=0.37),
        replace(fitted, origin=(float(up[0]), float(up[1]), float(up[2]))),
    ]


@pytest.fixture(scope="module", params=AFFINE_CASES)
def random_case(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[Path], StackGeometry, np.ndarray]:
    name = request.param
    case = CASES[name]
    hu = np.random.default_rng(7).integers(-1000, 2000, (case.n, ROWS, COLS)).astype(np.int16)
    folder = tmp_path_factory.mktemp(f"tri-{name}")
    paths = write_case(case, folder, hu=hu)
    return name, paths, StackGeometry.from_stack(load_stack(folder)), hu


def _expected(paths: list[Path], vol: np.ndarray, plane: Plane) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """map_coordinates on every pixel, and masks of pixels clearly inside / clearly outside the volume."""
    rr, cc = np.mgrid[0 : plane.size[0], 0 : plane.size[1]]
    kji = _oracle_voxels(paths, plane.pixel_to_patient(rr, cc))
    hi = np.array(vol.shape) - 1
    inside = np.all((kji >= EDGE) & (kji <= hi - EDGE), axis=-1)
    outside = np.any((kji < -EDGE) | (kji > hi + EDGE), axis=-1)
    expected = map_coordinates(
        vol.astype(np.float64), np.moveaxis(kji, -1, 0), order=1, mode="constant", cval=FILL, prefilter=False
    )
    return expected, inside, outside


def test_double_oblique_planes_match_map_coordinates(
    random_case: tuple[str, list[Path], StackGeometry, np.ndarray],
) -> None:
    name, paths, geom, vol = random_case
    for plane in _double_oblique_planes(geom):
        sampler = _Sampler(vol, geom, FILL)
        assert sampler._across_slices(plane) is None, name  # not the single-oblique path
        assert sampler._trilinear(plane) is not None, name  # the numpy trilinear path
        res = reslice(vol, geom, plane, fill=FILL)
        assert res.image.dtype == np.float32 and res.resampled
        expected, inside, outside = _expected(paths, vol, plane)
        assert inside.sum() > 50 and outside.sum() > 50, name
        # float32 weights on values up to 2000: within 0.01 of the float64 oracle
        np.testing.assert_allclose(res.image[inside], expected[inside], atol=0.01, err_msg=name)
        assert np.all(res.image[outside] == FILL), name


def test_block_boundaries_do_not_change_pixels(
    random_case: tuple[str, list[Path], StackGeometry, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of one row, of a few rows with a short last block, and one block for the image agree."""
    _, _, geom, vol = random_case
    plane = _double_oblique_planes(geom)[0]
    images = []
    for block in (1, 3 * plane.size[1] + 1, 10**9):
        monkeypatch.setattr(reslice_module, "TRILINEAR_BLOCK", block)
        images.append(reslice(vol, geom, plane, fill=FILL).image)
    np.testing.assert_array_equal(images[0], images[1])
    np.testing.assert_array_equal(images[0], images[2])


@pytest.mark.parametrize("mode", list(SlabMode))
def test_slab_on_a_double_oblique_plane_combines_trilinear_planes(
    random_case: tuple[str, list[Path], StackGeometry, np.ndarray], mode: SlabMode
) -> None:
    name, paths, geom, vol = random_case
    plane = _double_oblique_planes(geom)[1]
    slab = Slab(mode, 2.0)
    offsets = slab_offsets(geom, plane, slab)
    assert len(offsets) > 2
    got = reslice(vol, geom, plane, slab=slab, fill=FILL).image
    parts = [_expected(paths, vol, plane.shifted(float(o))) for o in offsets]
    inside = np.logical_and.reduce([p[1] for p in parts])
    stack = np.stack([p[0] for p in parts])
    expected = {SlabMode.MIP: stack.max(0), SlabMode.MINIP: stack.min(0), SlabMode.AVERAGE: stack.mean(0)}
    assert inside.sum() > 20, name
    np.testing.assert_allclose(got[inside], expected[mode][inside], atol=0.01, err_msg=name)


def test_a_single_slice_stack_is_left_to_the_general_path(tmp_path: Path) -> None:
    """Fewer than 2 voxels along an axis: no cell to blend, so map_coordinates samples it."""
    case = CASES["axial"]
    one = type(case)("one", case.iop, case.positions[:1])
    hu = np.random.default_rng(3).integers(-1000, 2000, (1, ROWS, COLS)).astype(np.int16)
    write_case(one, tmp_path, hu=hu)
    geom = StackGeometry.from_stack(load_stack(tmp_path))
    plane = oblique_plane(geom, geom.corners().mean(axis=0), (1, 0.3, 0.2), (0.1, 0.2, -1), spacing=0.4)
    assert _Sampler(hu, geom, FILL)._trilinear(plane) is None
    assert reslice(hu, geom, plane, fill=FILL).image.shape == plane.size
