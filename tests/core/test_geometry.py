"""Stack geometry against highdicom.spatial as the oracle, on tilted, flipped, oblique and uneven stacks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from highdicom.spatial import (
    PixelToReferenceTransformer,
    ReferenceToPixelTransformer,
    create_affine_matrix_from_attributes,
    get_closest_patient_orientation,
    get_volume_positions,
)

from tests.core.geometry_cases import CASES, COLS, ROWS, file_geometry, load_stack, write_case
from viewer.core.errors import GeometryError
from viewer.core.geometry.orientation import Orientation, classify_normal, direction_letters, edge_labels
from viewer.core.geometry.stack import StackGeometry, patient_position, slice_position_mm

HD_LETTER = {"L": "L", "R": "R", "A": "A", "P": "P", "H": "S", "F": "I"}


@pytest.fixture(scope="module", params=sorted(CASES))
def written(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[Path]]:
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    return name, write_case(CASES[name], folder)


def _geometry(paths: list[Path]) -> StackGeometry:
    return StackGeometry.from_stack(load_stack(paths[0].parent))


def test_voxel_to_patient_matches_highdicom_per_slice(written: tuple[str, list[Path]]) -> None:
    _, paths = written
    geom = _geometry(paths)
    rng = np.random.default_rng(0)
    for k, path in enumerate(paths):
        ipp, iop, spacing = file_geometry(path)
        pixels = np.stack([rng.integers(0, COLS, 20), rng.integers(0, ROWS, 20)], axis=1)  # (col, row)
        expected = PixelToReferenceTransformer(ipp, iop, spacing)(pixels)
        kji = np.stack([np.full(20, k), pixels[:, 1], pixels[:, 0]], axis=1)
        np.testing.assert_allclose(geom.voxel_to_patient(kji), expected, atol=1e-6)
        row, col = int(pixels[0, 1]), int(pixels[0, 0])
        np.testing.assert_allclose(patient_position(ipp, iop, spacing, row, col), expected[0], atol=1e-6)
        np.testing.assert_allclose(geom.pixel_to_patient(k, row, col), expected[0], atol=1e-6)


def test_patient_to_voxel_matches_highdicom_and_inverts(written: tuple[str, list[Path]]) -> None:
    _, paths = written
    geom = _geometry(paths)
    rng = np.random.default_rng(1)
    for k, path in enumerate(paths):
        ipp, iop, spacing = file_geometry(path)
        pixels = rng.uniform(-2, [COLS + 2, ROWS + 2], size=(15, 2))
        affine = PixelToReferenceTransformer(ipp, iop, spacing).affine  # fractional pixels too
        points = (affine @ np.column_stack([pixels, np.zeros(15), np.ones(15)]).T).T[:, :3]
        expected = ReferenceToPixelTransformer(ipp, iop, spacing, round_output=False)(points)
        kji = geom.patient_to_voxel(points)
        np.testing.assert_allclose(kji[:, 0], k, atol=1e-9)
        np.testing.assert_allclose(kji[:, 2], expected[:, 0], atol=1e-6)  # column
        np.testing.assert_allclose(kji[:, 1], expected[:, 1], atol=1e-6)  # row
    # between and beyond slices too (fractional k, extrapolated outside the stack)
    kji = np.column_stack(
        [rng.uniform(-1, len(paths), 50), rng.uniform(0, ROWS, 50), rng.uniform(0, COLS, 50)]
    )
    np.testing.assert_allclose(geom.patient_to_voxel(geom.voxel_to_patient(kji)), kji, atol=1e-9)


def test_affine_matches_highdicom_for_even_stacks_and_is_sheared_when_tilted(
    written: tuple[str, list[Path]],
) -> None:
    name, paths = written
    geom = _geometry(paths)
    ipp0, iop, spacing = file_geometry(paths[0])
    positions = [file_geometry(p)[0] for p in paths]
    hd_spacing, _ = get_volume_positions(positions, iop)
    # highdicom calls it a volume only when evenly spaced and stacked along the normal
    assert (hd_spacing is not None) == (geom.is_evenly_spaced and not geom.is_sheared)
    if hd_spacing is not None:
        hd = create_affine_matrix_from_attributes(ipp0, iop, spacing, hd_spacing)  # (col, row, slice)
        np.testing.assert_allclose(geom.affine[:, [2, 1, 0, 3]], hd, atol=1e-6)
        assert geom.slice_spacing == pytest.approx(hd_spacing)
    if name == "tilted":
        assert geom.is_sheared and geom.tilt_deg == pytest.approx(20.0, abs=1e-6)
        # the k column is the step between slice origins, not the normal: a sheared affine
        np.testing.assert_allclose(geom.affine[:3, 0], np.subtract(positions[1], positions[0]), atol=1e-9)
        k = np.array([[3.0, 4.0, 5.0, 1.0]])
        np.testing.assert_allclose((geom.affine @ k.T).T[0, :3], geom.voxel_to_patient(k[0, :3]), atol=1e-9)
    assert geom.is_affine == (name != "uneven")  # one affine fits evenly spaced stacks, tilted or not
    if name == "uneven":
        assert not geom.is_evenly_spaced and geom.spacing_range == pytest.approx((2.0, 4.0))


def test_orientation_letters_agree_with_highdicom(written: tuple[str, list[Path]]) -> None:
    _, paths = written
    geom = _geometry(paths)
    directions = np.column_stack([geom.row_dir, geom.col_dir, geom.normal])
    closest = get_closest_patient_orientation(directions)
    ours = [direction_letters(geom.row_dir), direction_letters(geom.col_dir), direction_letters(geom.normal)]
    assert [letters[0] for letters in ours] == [HD_LETTER[v.value] for v in closest]


def test_edge_labels_and_plane_classes() -> None:
    assert edge_labels((1, 0, 0), (0, 0, -1)) == {"right": "L", "left": "R", "bottom": "I", "top": "S"}
    assert direction_letters((0.8, 0.6, 0.0)) == "LP"
    assert classify_normal((0, 0, -1)) is Orientation.AXIAL
    assert classify_normal((0.1, 0.99, 0)) is Orientation.CORONAL
    assert classify_normal((1, 1, 0)) is Orientation.OBLIQUE


def test_nearest_slice_for_points_and_locations(written: tuple[str, list[Path]]) -> None:
    _, paths = written
    geom = _geometry(paths)
    for k in range(len(paths)):
        p = geom.voxel_to_patient((k, 3, 4)) + 0.4 * geom.normal
        assert geom.nearest_slice(p) == k
        assert geom.nearest_slice(float(geom.locations[k]) - 0.3) == k


def test_slice_position_mm_is_the_location_along_the_normal(tmp_path: Path) -> None:
    paths = write_case(CASES["flipped"], tmp_path)
    stack = load_stack(tmp_path)
    geom = StackGeometry.from_stack(stack)
    assert [slice_position_mm(stack, k) for k in range(len(stack))] == pytest.approx(list(geom.locations))
    bare = replace(stack, slices=tuple(replace(s, location=None) for s in stack.slices))
    assert slice_position_mm(bare, 2) == pytest.approx(geom.locations[2])
    assert len(paths) == len(stack)


def test_bad_geometry_is_a_clear_error(tmp_path: Path) -> None:
    write_case(CASES["axial"], tmp_path)
    stack = load_stack(tmp_path)
    zero = replace(stack, slices=tuple(replace(s, pixel_spacing=(0.0, 0.0)) for s in stack.slices))
    with pytest.raises(GeometryError, match="PixelSpacing 0"):
        StackGeometry.from_stack(zero)
    no_iop = replace(stack, slices=tuple(replace(s, orientation=None) for s in stack.slices))
    with pytest.raises(GeometryError, match="no ImageOrientationPatient"):
        StackGeometry.from_stack(no_iop)
    with pytest.raises(GeometryError, match="not strictly increasing"):
        StackGeometry(
            positions=np.array([[0, 0, 0], [0, 0, 0.0]]),
            row_dir=np.array([1.0, 0, 0]),
            col_dir=np.array([0, 1.0, 0]),
            pixel_spacing=(1.0, 1.0),
            rows=2,
            columns=2,
        )
    with pytest.raises(GeometryError, match="not orthogonal"):
        StackGeometry(
            positions=np.zeros((1, 3)),
            row_dir=np.array([1.0, 0, 0]),
            col_dir=np.array([1.0, 1.0, 0]),
            pixel_spacing=(1.0, 1.0),
            rows=2,
            columns=2,
        )
