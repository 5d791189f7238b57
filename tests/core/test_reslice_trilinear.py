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
from viewer.core.geometry import affine_sampler
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
    """Blocks of one row, of a few rows with a short last block, and one block for the image agree (the
    numpy sampler: the compiled one is switched off)."""
    _, _, geom, vol = random_case
    monkeypatch.setattr(affine_sampler, "kernel", lambda: None)
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


# --- the compiled sampler of oblique planes and slabs (viewer.core.geometry.affine_sampler) ------------
def _single_oblique(geom: StackGeometry) -> Plane:
    """Coronal turned 30° about the slice normal (the crosshair turned in the axial view): the plane
    contains the normal, so one image row is one slice."""
    base = standard_plane(geom, Orientation.CORONAL)
    row = rotate_vector(base.row_dir, geom.normal, math.radians(30))
    col = rotate_vector(base.col_dir, geom.normal, math.radians(30))
    return crosshair_plane(geom, row, col)


def _numpy_path(monkeypatch: pytest.MonkeyPatch, vol: np.ndarray, geom: StackGeometry, plane: Plane,
                slab: Slab | None) -> np.ndarray:
    """The image the numpy samplers give (the compiled sampler switched off)."""
    with monkeypatch.context() as m:
        m.setattr(affine_sampler, "kernel", lambda: None)
        return reslice(vol, geom, plane, slab=slab, fill=FILL).image


@pytest.mark.parametrize("mode", list(SlabMode))
def test_oblique_slabs_in_one_pass_match_the_numpy_path_and_map_coordinates(
    random_case: tuple[str, list[Path], StackGeometry, np.ndarray], mode: SlabMode,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Single- and double-oblique slabs (and the coronal slab of a tilted stack), sampled and folded in one
    pass, against the numpy path (every slab plane resliced, then combined) and against map_coordinates on
    every plane: pixels whose slab samples lie clearly inside or clearly outside the volume (outside ones
    count as ``fill``, so slabs reaching out of the volume are checked too)."""
    name, paths, geom, vol = random_case
    assert affine_sampler.kernel() is not None  # numba is a dependency: the compiled path is tested
    planes = [_single_oblique(geom), *_double_oblique_planes(geom)[:2],
              standard_plane(geom, Orientation.CORONAL, geom.corners().mean(axis=0))]
    for plane in planes:
        slab = Slab(mode, 2.5)
        offsets = slab_offsets(geom, plane, slab)
        assert len(offsets) >= 3
        compiled = _Sampler(vol, geom, FILL).compiled_slab(plane, offsets, mode)
        aligned_untilted = plane.orientation is Orientation.CORONAL and not geom.is_sheared
        assert (compiled is None) == aligned_untilted, name  # voxel lines stay on the numpy path
        res = reslice(vol, geom, plane, slab=slab, fill=FILL)
        assert res.image.dtype == np.float32 or aligned_untilted
        assert res.resampled or aligned_untilted
        if compiled is not None:
            np.testing.assert_array_equal(res.image, compiled)
        before = _numpy_path(monkeypatch, vol, geom, plane, slab)
        parts = [_expected(paths, vol, plane.shifted(float(o))) for o in offsets]
        decided = np.logical_and.reduce([inside | outside for _, inside, outside in parts])
        some_out = np.logical_or.reduce([outside for _, _, outside in parts]) & decided
        assert decided.sum() > 50, name
        stack = np.stack([p[0] for p in parts])
        expected = {SlabMode.MIP: stack.max(0), SlabMode.MINIP: stack.min(0), SlabMode.AVERAGE: stack.mean(0)}
        np.testing.assert_allclose(res.image[decided], before[decided], atol=0.01, err_msg=name)
        np.testing.assert_allclose(res.image[decided], expected[mode][decided], atol=0.01, err_msg=name)
        if plane is planes[0]:
            assert some_out.sum() > 10, name  # the slab's ends leave the volume: fill was folded in


def test_oblique_planes_match_the_numpy_samplers(
    random_case: tuple[str, list[Path], StackGeometry, np.ndarray], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thin single- and double-oblique planes through the compiled sampler: the numpy samplers' pixels
    (across-slices and trilinear) and map_coordinates'."""
    name, paths, geom, vol = random_case
    for plane in [_single_oblique(geom), *_double_oblique_planes(geom)]:
        assert _Sampler(vol, geom, FILL).compiled_slab(plane, np.zeros(1), SlabMode.MIP) is not None
        got = reslice(vol, geom, plane, fill=FILL)
        assert got.image.dtype == np.float32 and got.resampled
        np.testing.assert_allclose(got.image, _numpy_path(monkeypatch, vol, geom, plane, None), atol=0.01,
                                   err_msg=name)
        expected, inside, outside = _expected(paths, vol, plane)
        np.testing.assert_allclose(got.image[inside], expected[inside], atol=0.01, err_msg=name)
        assert np.all(got.image[outside] == FILL), name


def test_rows_split_over_threads_give_the_same_pixels(
    random_case: tuple[str, list[Path], StackGeometry, np.ndarray], monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, _, geom, vol = random_case
    plane = _double_oblique_planes(geom)[0]
    slab = Slab(SlabMode.MIP, 3.0)
    whole = reslice(vol, geom, plane, slab=slab, fill=FILL).image
    monkeypatch.setattr(affine_sampler, "SPLIT_SAMPLES", 1)  # every job as many row blocks as threads
    monkeypatch.setattr(affine_sampler, "_THREADS", 3)
    np.testing.assert_array_equal(reslice(vol, geom, plane, slab=slab, fill=FILL).image, whole)


def test_without_numba_the_numpy_path_reslices(
    random_case: tuple[str, list[Path], StackGeometry, np.ndarray], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """numba missing (or refusing the platform): no compiled sampler, the same image from numpy."""
    _, _, geom, vol = random_case
    plane = _double_oblique_planes(geom)[1]
    slab = Slab(SlabMode.AVERAGE, 2.0)
    with_kernel = reslice(vol, geom, plane, slab=slab, fill=FILL).image

    def no_numba() -> None:
        raise ImportError("No module named 'numba'")

    monkeypatch.setattr(affine_sampler, "_compile", no_numba)
    monkeypatch.setattr(affine_sampler, "_kernel", None)
    monkeypatch.setattr(affine_sampler, "_failed", False)
    assert affine_sampler.kernel() is None
    assert affine_sampler.sample_affine(vol, np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3), 1,
                                        affine_sampler.Reduce.MAX, FILL, (2, 2)) is None
    np.testing.assert_allclose(reslice(vol, geom, plane, slab=slab, fill=FILL).image, with_kernel, atol=0.01)


def test_other_dtypes_give_the_same_pixels(
    random_case: tuple[str, list[Path], StackGeometry, np.ndarray],
) -> None:
    """float32 volumes go through the compiled sampler too; a big-endian copy (which it does not read)
    through the numpy path: the same pixels as the int16 volume's."""
    name, _, geom, vol = random_case
    plane = _double_oblique_planes(geom)[0]
    slab = Slab(SlabMode.MINIP, 2.0)
    want = reslice(vol, geom, plane, slab=slab, fill=FILL).image
    for other in (vol.astype(np.float32), vol.astype(">i2")):
        got = reslice(other, geom, plane, slab=slab, fill=FILL).image
        np.testing.assert_allclose(got, want, atol=0.01, err_msg=f"{name} {other.dtype}")
    assert affine_sampler.sample_affine(vol.astype(">i2"), np.zeros(3), np.zeros(3), np.zeros(3),
                                        np.zeros(3), 1, affine_sampler.Reduce.MAX, FILL, (2, 2)) is None
