"""Version-2 maps back onto the pixels: :func:`head_grid_to_pixels` undoes :func:`preprocess_head_mm`
(canonical orientation, head centre, millimetre grid), so a blob on the model's grid lands on the image
pixels it came from, whatever the orientation, head position, field of view and matrix; and
:func:`head_mm_to_grid` moves per-pixel values (training targets) exactly as the pixels are moved.
Through the engine: a version-2 model's maps (the tiny test model marks blood) sit on the blood of a
DICOM series written with a flipped row direction, an off-centre head, a 400 mm field and a 512 matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from tests.core.inference_models import build_model
from tests.factories import make_ct_slice
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.volume import StackVolume
from viewer.core.inference.engine import InferenceEngine
from viewer.core.inference.results import StackPrediction
from viewer.core.preprocess import (
    PreprocessSpec,
    SliceGeometry,
    head_grid,
    head_grid_to_pixels,
    head_mm_to_grid,
    preprocess,
)

SPEC = PreprocessSpec(version=2, size=128, field_mm=230.0, slab_mm=5.0)
MAP_SIZE = 64  # the bundled maps' grid: input / 2
BLOOD_HU = 75.0


@dataclass(frozen=True)
class Case:
    rows: int
    columns: int
    spacing: float  # mm, square pixels
    orientation: tuple[float, float, float, float, float, float]
    head_mm: tuple[float, float]  # head centre (patient x, y) in mm; the image is centred on (0, 0)
    blob_mm: tuple[float, float]  # blob centre (patient x, y) in mm


CASES = {
    "standard": Case(256, 256, 0.9, (1, 0, 0, 0, 1, 0), (0.0, 0.0), (35.0, -20.0)),
    "flipped_rows": Case(256, 256, 0.9, (-1, 0, 0, 0, 1, 0), (0.0, 0.0), (35.0, -20.0)),
    "flipped_columns": Case(256, 256, 0.9, (1, 0, 0, 0, -1, 0), (0.0, 0.0), (35.0, -20.0)),
    "transposed": Case(256, 256, 0.9, (0, 1, 0, 1, 0, 0), (0.0, 0.0), (35.0, -20.0)),
    "off_centre": Case(256, 256, 0.9, (1, 0, 0, 0, 1, 0), (30.0, -25.0), (65.0, -45.0)),
    "fov400_512_flipped_off_centre": Case(
        512, 512, 400.0 / 512, (-1, 0, 0, 0, 1, 0), (40.0, 30.0), (10.0, 60.0)
    ),
    "non_square_transposed": Case(320, 256, 0.8, (0, -1, 0, 1, 0, 0), (-10.0, 15.0), (-40.0, 30.0)),
}


def _patient_xy(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """Patient (x, y) mm of every pixel centre of a slice centred on (0, 0) with ``case``'s cosines."""
    r, c = np.asarray(case.orientation[:3], float), np.asarray(case.orientation[3:], float)
    ii, jj = np.mgrid[0 : case.rows, 0 : case.columns].astype(np.float64)
    di = (ii - (case.rows - 1) / 2.0) * case.spacing  # along the column direction (row index)
    dj = (jj - (case.columns - 1) / 2.0) * case.spacing  # along the row direction (column index)
    return dj * r[0] + di * c[0], dj * r[1] + di * c[1]


def phantom(case: Case, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(S, rows, columns) HU of a head (skull ring, brain) with a blood blob on every slice, and the blob."""
    x, y = _patient_xy(case)
    r2 = ((x - case.head_mm[0]) / 72.0) ** 2 + ((y - case.head_mm[1]) / 88.0) ** 2
    blob = (x - case.blob_mm[0]) ** 2 + (y - case.blob_mm[1]) ** 2 < 14.0**2
    hu = np.full((case.rows, case.columns), -1000.0, dtype=np.float32)
    hu[r2 < 1.0] = 1100.0
    hu[r2 < 0.85] = 30.0
    hu[blob] = BLOOD_HU
    return np.repeat(hu[None], n, axis=0), np.repeat(blob[None], n, axis=0)


def geometry(case: Case, n: int = 4) -> SliceGeometry:
    return SliceGeometry(
        pixel_spacing=(case.spacing, case.spacing),
        row_direction=case.orientation[:3],
        column_direction=case.orientation[3:],
        positions=tuple(5.0 * k for k in range(n)),
        thickness=5.0,
    )


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


@pytest.mark.parametrize("name", list(CASES))
def test_a_blob_on_the_model_grid_lands_on_its_pixels(name: str) -> None:
    case = CASES[name]
    hu, blob = phantom(case)
    geom = geometry(case)
    grid = head_grid(hu, geom, SPEC)
    # the blob alone, moved onto the model grid with the head's own grid (0 HU outside: channel 0 = blob)
    on_grid = preprocess(np.where(blob, 80.0, 0.0).astype(np.float32), SPEC, geom, grid=grid)[:, 0]
    f = SPEC.size // MAP_SIZE
    maps = on_grid.reshape(len(on_grid), MAP_SIZE, f, MAP_SIZE, f).mean(axis=(2, 4))  # a 64 px map of it
    assert maps.max() > 0.9  # the blob is inside the 230 mm field
    pixels = head_grid_to_pixels(maps, grid, case.rows, case.columns)
    assert pixels.shape == (len(hu), case.rows, case.columns)
    got = pixels >= 0.5
    iou = (got & blob).sum() / (got | blob).sum()
    assert iou > 0.8, f"{name}: IoU {iou:.2f}"
    shift_mm = np.abs(_centroid(got[0]) - _centroid(blob[0])) * case.spacing
    assert shift_mm.max() < 1.0, f"{name}: centroid {shift_mm} mm off"


def test_the_blob_would_be_misplaced_without_undoing_the_orientation() -> None:
    """The check above can fail: the flipped case read back as if it were unflipped lands mirrored."""
    case = CASES["flipped_rows"]
    hu, blob = phantom(case)
    geom = geometry(case)
    grid = head_grid(hu, geom, SPEC)
    on_grid = preprocess(np.where(blob, 80.0, 0.0).astype(np.float32), SPEC, geom, grid=grid)[:, 0]
    unflipped = replace(grid, flip_columns=not grid.flip_columns)
    wrong = head_grid_to_pixels(on_grid, unflipped, case.rows, case.columns)
    got = wrong >= 0.5
    assert (got & blob).sum() / max((got | blob).sum(), 1) < 0.1


def test_pixels_outside_the_models_field_get_nothing() -> None:
    case = CASES["fov400_512_flipped_off_centre"]
    hu, _ = phantom(case, n=1)
    grid = head_grid(hu, geometry(case, n=1), SPEC)
    pixels = head_grid_to_pixels(np.ones((MAP_SIZE, MAP_SIZE), np.float32), grid, case.rows, case.columns)
    x, y = _patient_xy(case)
    # the 230 mm field is centred on the head centre found from the pixels (near the drawn head centre)
    dx, dy = np.abs(x - case.head_mm[0]), np.abs(y - case.head_mm[1])
    assert pixels[(dx < 105) & (dy < 105)].min() == pytest.approx(1.0)
    assert pixels[(dx > 125) | (dy > 125)].max() == 0.0


def test_values_move_onto_the_grid_exactly_as_the_pixels_do() -> None:
    """Training targets (blood fractions) go through the pixels' own transform, slab weights included."""
    case = CASES["fov400_512_flipped_off_centre"]
    hu, blob = phantom(case, n=6)
    geom = SliceGeometry(
        pixel_spacing=(case.spacing, case.spacing),
        row_direction=case.orientation[:3],
        column_direction=case.orientation[3:],
        positions=tuple(1.25 * k for k in range(6)),  # thin slices: averaged into 5 mm slabs
        thickness=1.25,
    )
    fraction = blob.astype(np.float32) * np.linspace(0.2, 1.0, 6, dtype=np.float32)[:, None, None]
    grid = head_grid(hu, geom, SPEC)
    moved = head_mm_to_grid(np.stack([fraction, 1.0 - fraction], axis=1), geom, grid)
    assert moved.shape == (6, 2, SPEC.size, SPEC.size)
    as_pixels = preprocess(80.0 * fraction, SPEC, geom, grid=grid)[:, 0]  # brain window: HU / 80
    np.testing.assert_allclose(moved[:, 0], as_pixels, atol=1e-5)
    coarse = head_mm_to_grid(fraction[:, None], geom, grid, MAP_SIZE)
    assert coarse.shape == (6, 1, MAP_SIZE, MAP_SIZE)
    np.testing.assert_allclose(coarse.sum(axis=(2, 3)) * 4, moved[:, :1].sum(axis=(2, 3)), rtol=1e-4)


# ------------------------------------------------------------------------------ through the engine
def _write_series(folder: Path, case: Case, n: int) -> np.ndarray:
    hu, blob = phantom(case, n)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    r, c = np.asarray(case.orientation[:3], float), np.asarray(case.orientation[3:], float)
    origin = -((case.columns - 1) / 2.0 * case.spacing * r + (case.rows - 1) / 2.0 * case.spacing * c)
    normal = np.cross(r, c)
    folder.mkdir(parents=True)
    for k in range(n):
        position = origin + normal * 5.0 * k
        ds = make_ct_slice(
            np.rint(hu[k]).astype(np.int16),
            position=tuple(float(v) for v in position),
            orientation=case.orientation,
            instance_number=k + 1,
            study_uid=study,
            series_uid=series,
            frame_of_reference_uid=frame,
            spacing=(case.spacing, case.spacing),
            thickness=5.0,
        )
        ds.save_as(folder / f"{k:03d}.dcm", enforce_file_format=True)
    return blob


def test_a_version_2_models_maps_sit_on_the_blood_through_the_engine(tmp_path: Path) -> None:
    case = CASES["fov400_512_flipped_off_centre"]
    n = 4
    blob = _write_series(tmp_path / "series", case, n)
    model = build_model(
        tmp_path / "v2maps.onnx",
        input_size=SPEC.size,
        maps_factor=SPEC.size // MAP_SIZE,
        metadata={"preprocessing": SPEC.to_metadata()},
    )
    engine = InferenceEngine(model, provider="cpu", cache=None)
    assert engine.info.preprocessing.version == 2 and engine.info.maps is not None
    (stack,) = load_paths([tmp_path / "series"]).all_stacks()
    volume = StackVolume(stack)
    try:
        pred = engine.analyse_volume(volume, use_cache=False)
    finally:
        volume.close()
    assert isinstance(pred, StackPrediction) and pred.maps is not None
    # the blob was drawn the same on every slice, so the stack's order does not matter here
    truth = blob
    maps = replace(pred.maps, hidden=frozenset())  # every class (the viewer shows the flagged ones)
    for k in (0, 4):  # epidural and subdural carry the blood map in the tiny model (SEG_CLASS_GAIN)
        got = maps.mask(k)
        iou = (got & truth).sum() / (got | truth).sum()
        assert iou > 0.75, f"class {k}: IoU {iou:.2f}"
        shift_mm = np.abs(_centroid(got[0]) - _centroid(truth[0])) * case.spacing
        assert shift_mm.max() < 1.5
    blob_ml = truth.sum() * case.spacing**2 * 5.0 / 1000.0
    assert replace(pred, maps=maps).volumes_ml()["subdural"] == pytest.approx(blob_ml, rel=0.1)
