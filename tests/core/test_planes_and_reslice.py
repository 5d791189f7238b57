"""MPR planes, reference lines and reslicing (aligned fast path, tilted/uneven resampling, oblique, slabs).

The resampling oracle is a field linear in patient coordinates, sampled at each voxel centre through
highdicom's per-slice pixel-to-patient transform: linear interpolation reproduces such a field exactly,
so any geometric error (a wrong shear, spacing, flip or aspect) shows up as a wrong value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from highdicom.spatial import PixelToReferenceTransformer
from scipy.ndimage import map_coordinates

from tests.core.geometry_cases import (
    CASES,
    COLS,
    FIELD,
    ROWS,
    linear_volume,
    load_stack,
    write_case,
)
from viewer.core.dicom.volume import StackVolume
from viewer.core.errors import GeometryError
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.plane import (
    Plane,
    intersection_line,
    native_plane,
    oblique_plane,
    reference_line,
    standard_plane,
)
from viewer.core.geometry.reslice import Slab, SlabMode, normal_step, reslice
from viewer.core.geometry.stack import StackGeometry


@pytest.fixture(scope="module", params=sorted(CASES))
def case(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, StackGeometry, np.ndarray]:
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    paths = write_case(CASES[name], folder)
    geom = StackGeometry.from_stack(load_stack(folder))
    return name, geom, linear_volume(paths)


def _inside(geom: StackGeometry, plane: Plane) -> tuple[np.ndarray, np.ndarray]:
    rr, cc = np.mgrid[0 : plane.size[0], 0 : plane.size[1]]
    pts = plane.pixel_to_patient(rr, cc)
    kji = geom.patient_to_voxel(pts)
    hi = np.array(geom.shape) - 1
    eps = 1e-6
    return pts, np.all((kji >= -eps) & (kji <= hi + eps), axis=-1)


def _planes(geom: StackGeometry) -> list[Plane]:
    centre = geom.corners().mean(axis=0)
    planes = [
        standard_plane(geom, o, centre)
        for o in (Orientation.AXIAL, Orientation.CORONAL, Orientation.SAGITTAL)
    ]
    planes.append(oblique_plane(geom, centre, (1, 0.3, 0.2), (0.1, 0.2, -1), spacing=0.4))
    return planes


def test_every_plane_reproduces_the_linear_field(case: tuple[str, StackGeometry, np.ndarray]) -> None:
    name, geom, vol = case
    for plane in _planes(geom):
        res = reslice(vol, geom, plane)
        pts, inside = _inside(geom, plane)
        assert inside.sum() > 20, (name, plane.orientation)
        np.testing.assert_allclose(res.image[inside], (pts @ FIELD + 5.0)[inside], atol=1e-3)
        assert res.pixel_spacing == plane.spacing


def test_fast_path_equals_map_coordinates_everywhere(case: tuple[str, StackGeometry, np.ndarray]) -> None:
    """Same pixels (also outside the volume, filled) as trilinear map_coordinates on every pixel."""
    _, geom, vol = case
    for plane in _planes(geom):
        rr, cc = np.mgrid[0 : plane.size[0], 0 : plane.size[1]]
        coords = np.moveaxis(geom.patient_to_voxel(plane.pixel_to_patient(rr, cc)), -1, 0)
        # snap coordinates within 1e-6 of a voxel centre, as the fast path does
        coords = np.where(np.abs(coords - np.rint(coords)) < 1e-6, np.rint(coords), coords)
        expected = map_coordinates(vol, coords, order=1, mode="constant", cval=-7.0, prefilter=False)
        got = reslice(vol, geom, plane, fill=-7.0).image
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_untilted_axial_stack_reslices_by_indexing_with_the_right_aspect(tmp_path: Path) -> None:
    write_case(CASES["axial"], tmp_path)
    stack = load_stack(tmp_path)
    geom = StackGeometry.from_stack(stack)
    vol = np.arange(np.prod(geom.shape), dtype=np.int16).reshape(geom.shape)
    j, i = 5, 9
    centre = geom.voxel_to_patient((4, j, i))
    cor = reslice(vol, geom, standard_plane(geom, Orientation.CORONAL, centre))
    sag = reslice(vol, geom, standard_plane(geom, Orientation.SAGITTAL, centre))
    ax = reslice(vol, geom, standard_plane(geom, Orientation.AXIAL, centre))
    np.testing.assert_array_equal(cor.image, vol[::-1, j, :])  # head at the top, patient's left on the right
    np.testing.assert_array_equal(sag.image, vol[::-1, :, i])  # anterior on the left
    np.testing.assert_array_equal(ax.image, vol[4])
    for res in (cor, sag, ax):
        assert res.image.dtype == np.int16 and not res.resampled and res.warnings == ()
    assert cor.plane.iop == (1, 0, 0, 0, 0, -1) and cor.pixel_spacing == (2.0, 0.6)
    assert sag.plane.iop == (0, 1, 0, 0, 0, -1) and sag.pixel_spacing == (2.0, 0.8)
    assert cor.plane.edge_labels() == {"right": "L", "left": "R", "bottom": "I", "top": "S"}
    cor.image[:] = 0  # the caller's copy, never a view of the volume
    assert vol[::-1, j, :].any()


def test_sagittal_stack_gives_axial_and_coronal(tmp_path: Path) -> None:
    write_case(CASES["sagittal"], tmp_path)
    geom = StackGeometry.from_stack(load_stack(tmp_path))
    vol = np.arange(np.prod(geom.shape), dtype=np.int16).reshape(geom.shape)
    centre = geom.voxel_to_patient((4, 6, 7))
    ax = reslice(vol, geom, standard_plane(geom, Orientation.AXIAL, centre))
    # the stack normal is -x (R), so k runs right-to-left on an axial image (+x to the right); its
    # columns are +y, the stack rows (i); the axial plane through the centre is the stack row j=6
    assert ax.plane.iop == (1, 0, 0, 0, 1, 0)
    np.testing.assert_array_equal(ax.image, vol[::-1, 6, :].T)
    cor = reslice(vol, geom, standard_plane(geom, Orientation.CORONAL, centre))
    np.testing.assert_array_equal(cor.image, vol[::-1, :, 7].T)
    assert not ax.resampled and not cor.resampled


def test_tilt_and_uneven_spacing_are_resampled_with_a_warning(tmp_path: Path) -> None:
    for name, words in (("tilted", "Gantry tilt 20.0°"), ("uneven", "Uneven slice spacing")):
        write_case(CASES[name], tmp_path / name)
        geom = StackGeometry.from_stack(load_stack(tmp_path / name))
        vol = np.zeros(geom.shape, dtype=np.int16)
        res = reslice(vol, geom, standard_plane(geom, Orientation.CORONAL))
        assert res.resampled and any(words in w for w in res.warnings)
        assert res.image.dtype == np.float32
        # a native slice of the same stack is still read as is
        native = reslice(vol, geom, native_plane(geom, 3))
        assert not native.resampled and native.image.dtype == np.int16


def test_loaded_tilted_series_reslices_correctly_end_to_end(tmp_path: Path) -> None:
    """DICOM files -> load_paths -> StackVolume.load_all -> coronal plane: HU follow the patient field."""
    case = CASES["tilted"]
    field = np.array([3.0, -2.0, 1.5])
    jj, ii = np.mgrid[0:ROWS, 0:COLS]
    pixels = np.column_stack([ii.ravel(), jj.ravel()])
    hu = np.array(
        [
            np.rint(PixelToReferenceTransformer(p, case.iop, (0.8, 0.6))(pixels) @ field).reshape(ROWS, COLS)
            for p in case.positions
        ]
    )
    write_case(case, tmp_path, hu=hu)
    stack = load_stack(tmp_path)
    geom = StackGeometry.from_stack(stack)
    with StackVolume(stack) as sv:
        vol = sv.load_all()
    plane = standard_plane(geom, Orientation.CORONAL, geom.voxel_to_patient((4, 6, 7)))
    res = reslice(vol, geom, plane, fill=-1024)
    pts, inside = _inside(geom, plane)
    np.testing.assert_allclose(
        res.image[inside], (pts @ field)[inside], atol=0.51
    )  # stored values are rounded
    assert np.all(res.image[~inside] == -1024)


@pytest.mark.parametrize("mode", list(SlabMode))
def test_slabs_match_numpy_on_an_untilted_stack(tmp_path: Path, mode: SlabMode) -> None:
    write_case(CASES["axial"], tmp_path)
    geom = StackGeometry.from_stack(load_stack(tmp_path))
    rng = np.random.default_rng(3)
    vol = rng.integers(-1000, 1000, geom.shape).astype(np.int16)
    reduce = {SlabMode.MIP: np.max, SlabMode.MINIP: np.min, SlabMode.AVERAGE: np.mean}[mode]
    centre = geom.voxel_to_patient((4, 6, 7))
    cor = reslice(vol, geom, standard_plane(geom, Orientation.CORONAL, centre), slab=Slab(mode, 2.0))
    np.testing.assert_allclose(
        cor.image, reduce(vol[::-1, 5:8, :], axis=1), rtol=1e-6
    )  # rows within +-1 mm at 0.8 mm: 3
    sag = reslice(vol, geom, standard_plane(geom, Orientation.SAGITTAL, centre), slab=Slab(mode, 1.3))
    np.testing.assert_allclose(
        sag.image, reduce(vol[::-1, :, 6:9], axis=2), rtol=1e-6
    )  # within +-0.65 mm at 0.6 mm: 3 columns
    ax = reslice(vol, geom, standard_plane(geom, Orientation.AXIAL, centre), slab=Slab(mode, 4.0))
    np.testing.assert_allclose(
        ax.image, reduce(vol[3:6], axis=0), rtol=1e-6
    )  # within +-2 mm at 2 mm: 3 slices
    assert cor.slab_samples == 3 and sag.slab_samples == 3 and ax.slab_samples == 3
    assert cor.image.dtype == (np.float32 if mode is SlabMode.AVERAGE else np.int16)
    # a slab reaching past the last slice: the slices that exist, outside filled
    edge = reslice(
        vol,
        geom,
        standard_plane(geom, Orientation.AXIAL, geom.voxel_to_patient((8, 0, 0))),
        slab=Slab(mode, 4.0),
        fill=-3000,
    )
    expected = reduce(np.stack([vol[7], vol[8], np.full_like(vol[8], -3000)]), axis=0)
    np.testing.assert_allclose(edge.image, expected, rtol=1e-6)


def test_slabs_on_every_stack_combine_resampled_planes(case: tuple[str, StackGeometry, np.ndarray]) -> None:
    _, geom, vol = case
    plane = standard_plane(geom, Orientation.CORONAL, geom.corners().mean(axis=0))
    pts, inside = _inside(geom, plane)
    step = normal_step(geom, plane)  # 0.8 mm rows, or 0.6 mm columns for the sagittal stack
    assert step in (0.6, 0.8)
    slab_mm = 2 * step + 0.1  # three planes: -step, 0, +step
    for off in (-step, step):
        inside &= _inside(geom, plane.shifted(off))[1]
    assert inside.sum() > 10
    centre = pts @ FIELD + 5.0
    rise = step * abs(float(FIELD @ plane.normal))  # how much the field changes over one step
    average = reslice(vol, geom, plane, slab=Slab(SlabMode.AVERAGE, slab_mm))
    mip = reslice(vol, geom, plane, slab=Slab(SlabMode.MIP, slab_mm))
    minip = reslice(vol, geom, plane, slab=Slab(SlabMode.MINIP, slab_mm))
    assert average.slab_samples == mip.slab_samples == 3
    np.testing.assert_allclose(average.image[inside], centre[inside], atol=1e-3)
    np.testing.assert_allclose(mip.image[inside], centre[inside] + rise, atol=1e-3)
    np.testing.assert_allclose(minip.image[inside], centre[inside] - rise, atol=1e-3)


def test_reference_lines_and_intersections() -> None:
    geom = StackGeometry(
        positions=np.array([[0.0, 0.0, 2.0 * k] for k in range(10)]),
        row_dir=np.array([1.0, 0, 0]),
        col_dir=np.array([0, 1.0, 0]),
        pixel_spacing=(0.5, 0.5),
        rows=40,
        columns=40,
    )
    axial = native_plane(geom, 3)
    coronal = standard_plane(geom, Orientation.CORONAL, (0.0, 7.0, 0.0))
    line = intersection_line(axial, coronal)
    assert line is not None
    assert abs(line.direction[0]) == pytest.approx(1.0)
    assert line.point[1:] == pytest.approx((7.0, 6.0))
    seg = reference_line(axial, coronal)
    assert seg is not None
    (r0, c0), (r1, c1) = seg
    assert r0 == pytest.approx(14.0) and r1 == pytest.approx(14.0)  # y = 7 mm at 0.5 mm rows
    assert sorted([c0, c1]) == pytest.approx([-0.5, 39.5])  # across the whole image
    # on the coronal image the axial slice is a row too: z = 6 mm, counted down from the top (z = 18)
    seg2 = reference_line(coronal, axial)
    assert seg2 is not None and seg2[0][0] == pytest.approx((18.0 - 6.0) / 2.0)
    # an oblique plane: both ends lie on both planes
    obl = oblique_plane(geom, (5.0, 5.0, 9.0), (1, 0.2, 0.3), (0.0, 0.3, -1), spacing=0.5)
    seg3 = reference_line(axial, obl)
    assert seg3 is not None
    for r, c in seg3:
        p = axial.pixel_to_patient(np.array(r), np.array(c))
        assert abs(float(obl.patient_to_pixel(p)[2])) < 1e-9
        assert abs(float(axial.patient_to_pixel(p)[2])) < 1e-9
    assert intersection_line(axial, native_plane(geom, 5)) is None  # parallel
    assert reference_line(axial, native_plane(geom, 5)) is None
    far = standard_plane(geom, Orientation.CORONAL, (0.0, 500.0, 0.0))
    assert reference_line(axial, far) is None  # misses the image


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    write_case(CASES["axial"], tmp_path)
    geom = StackGeometry.from_stack(load_stack(tmp_path))
    plane = standard_plane(geom, Orientation.CORONAL)
    with pytest.raises(GeometryError, match="3D greyscale"):
        reslice(np.zeros((4, 4)), geom, plane)
    with pytest.raises(GeometryError, match="does not match"):
        reslice(np.zeros((3, 4, 5)), geom, plane)
    with pytest.raises(GeometryError, match="thickness"):
        Slab(SlabMode.MIP, -1.0)
    with pytest.raises(GeometryError, match="not a standard plane"):
        standard_plane(geom, Orientation.OBLIQUE)
    with pytest.raises(GeometryError, match="non-parallel"):
        oblique_plane(geom, (0, 0, 0), (1, 0, 0), (2, 0, 0))


@pytest.mark.parametrize("mode", list(SlabMode))
def test_sagittal_slab_over_many_slices_is_reduced_in_chunks_correctly(mode: SlabMode) -> None:
    geom = StackGeometry(
        positions=np.array([[0.0, 0.0, 1.0 * k] for k in range(75)]),  # more slices than one chunk
        row_dir=np.array([1.0, 0, 0]),
        col_dir=np.array([0, 1.0, 0]),
        pixel_spacing=(0.5, 0.5),
        rows=20,
        columns=30,
    )
    vol = np.random.default_rng(5).integers(-1000, 1000, geom.shape).astype(np.int16)
    reduce = {SlabMode.MIP: np.max, SlabMode.MINIP: np.min, SlabMode.AVERAGE: np.mean}[mode]
    plane = standard_plane(geom, Orientation.SAGITTAL, geom.voxel_to_patient((30, 10, 12)))
    res = reslice(vol, geom, plane, slab=Slab(mode, 3.0))  # +-1.5 mm at 0.5 mm: 7 columns
    np.testing.assert_allclose(res.image, reduce(vol[::-1, :, 9:16], axis=2), rtol=1e-6)
