"""Measurements on oblique MPR planes are tied to the plane's geometry (its pixel grid in patient space),
not to a plane number: they come back on that plane only. Older stores keyed them by number: those are
kept but placed on no plane."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.plane import Plane, crosshair_plane, rotate_vector, standard_plane
from viewer.core.geometry.stack import StackGeometry
from viewer.core.measure import (
    OBLIQUE_PLANE,
    UNPLACED_GEOMETRY,
    ImageRef,
    Measurement,
    Shape,
    mpr_image_ref,
    plane_geometry_key,
)
from viewer.core.measure_store import STORE_FILE, MeasurementSet, MeasurementStore

STUDY, SERIES = "1.2.3", "1.2.3.4"


def _geometry() -> StackGeometry:
    return StackGeometry(
        positions=np.array([(-60.0, -60.0, 2.5 * k) for k in range(40)]),
        row_dir=np.array([1.0, 0, 0]),
        col_dir=np.array([0, 1.0, 0]),
        pixel_spacing=(0.75, 0.75),
        rows=160,
        columns=160,
    )


def _turned(geom: StackGeometry, degrees: float, tilt_deg: float = 0.0) -> Plane:
    """The coronal plane turned about the slice normal, then about the slices' row axis."""
    std = standard_plane(geom, Orientation.CORONAL)
    a, t = math.radians(degrees), math.radians(tilt_deg)
    row = rotate_vector(rotate_vector(std.row_dir, geom.normal, a), geom.row_dir, t)
    col = rotate_vector(rotate_vector(std.col_dir, geom.normal, a), geom.row_dir, t)
    return crosshair_plane(geom, row, col)


def test_oblique_planes_are_keyed_by_geometry_and_standard_planes_by_number() -> None:
    geom = _geometry()
    centre = geom.corners().mean(axis=0)
    a = _turned(geom, 30.0).through(centre)
    ref = mpr_image_ref(STUDY, SERIES, Orientation.OBLIQUE, a, 7)
    assert ref.plane == OBLIQUE_PLANE and ref.geometry == plane_geometry_key(a) and ref.frame == 0
    # the same plane made again (another drag ending at the same angle, another scroll grid index): same key
    again = _turned(geom, 30.0 + 1e-9).through(centre)
    assert mpr_image_ref(STUDY, SERIES, Orientation.OBLIQUE, again, 3) == ref
    # a plane with the same number but another angle, tilt or position is another image
    others = [
        _turned(geom, 40.0).through(centre),
        _turned(geom, 30.0, 10.0).through(centre),
        a.shifted(1.0),
        a.shifted(-0.5),
    ]
    keys = {mpr_image_ref(STUDY, SERIES, Orientation.OBLIQUE, p, 7) for p in others}
    assert ref not in keys and len(keys) == len(others)
    # axial / coronal / sagittal planes keep their number (their grid is fixed per series)
    cor = standard_plane(geom, Orientation.CORONAL, centre)
    coronal = ImageRef(STUDY, SERIES, "coronal", "", 12)
    assert mpr_image_ref(STUDY, SERIES, Orientation.CORONAL, cor, 12) == coronal


def test_key_is_rounded_so_that_negative_zero_and_float_noise_do_not_split_a_plane() -> None:
    def plane(row: tuple[float, float, float], origin_x: float) -> Plane:
        return Plane(origin=(origin_x, 2.0, 3.0), row_dir=row, col_dir=(0.0, 0.0, -1.0), spacing=(0.5, 0.5),
                     size=(10, 10), orientation=Orientation.OBLIQUE)

    key = plane_geometry_key(plane((1.0, 0.0, 0.0), 1.0))
    assert plane_geometry_key(plane((1.0, -0.0, 0.0), 1.0 + 1e-9)) == key
    assert plane_geometry_key(plane((1.0, -1e-12, 0.0), 1.0 - 1e-9)) == key
    assert "-0.0" not in plane_geometry_key(plane((1.0, -1e-12, 0.0), -1e-9))
    assert plane_geometry_key(plane((1.0, 0.0, 0.0), 1.02)) != key  # 0.02 mm apart: another plane


def test_a_measurement_on_an_oblique_plane_is_only_on_that_plane_and_round_trips(tmp_path: Path) -> None:
    geom = _geometry()
    centre = geom.corners().mean(axis=0)
    at30, at40 = _turned(geom, 30.0).through(centre), _turned(geom, 40.0).through(centre)
    ref30 = mpr_image_ref(STUDY, SERIES, Orientation.OBLIQUE, at30, 5)
    ruler = Measurement(Shape.RULER, ref30, ((10.0, 10.0), (40.0, 50.0)))
    ms = MeasurementSet([ruler])
    assert ms.on(ref30) == [ruler]
    assert ms.on(mpr_image_ref(STUDY, SERIES, Orientation.OBLIQUE, at40, 5)) == []
    store = MeasurementStore(tmp_path)
    store.save(ms)
    doc = json.loads((tmp_path / STORE_FILE).read_text())
    assert doc["version"] == 3 and doc["studies"][STUDY][0]["geometry"] == ref30.geometry
    loaded = MeasurementStore(tmp_path).load()
    assert loaded == [ruler]
    assert MeasurementSet(loaded).on(mpr_image_ref(STUDY, SERIES, Orientation.OBLIQUE, at30, 9)) == [ruler]


def test_oblique_measurements_of_a_version_2_store_are_kept_unplaced(tmp_path: Path) -> None:
    """A version 2 store keyed oblique measurements by plane number, so one showed on every turned plane of
    that number: migrated, it is kept (saved again) but drawn on no plane; others are unchanged."""
    old = {
        "version": 2,
        "studies": {
            STUDY: [
                {"id": "o1", "shape": "ruler", "points": [[0, 0], [3, 4]], "series_uid": SERIES,
                 "plane": "oblique", "sop_uid": "", "frame": 5},
                {"id": "c1", "shape": "ruler", "points": [[1, 1], [2, 2]], "series_uid": SERIES,
                 "plane": "coronal", "sop_uid": "", "frame": 5},
            ]
        },
    }
    (tmp_path / STORE_FILE).write_text(json.dumps(old))
    loaded = MeasurementStore(tmp_path).load()
    by_id = {m.id: m for m in loaded}
    assert by_id["o1"].ref == ImageRef(STUDY, SERIES, OBLIQUE_PLANE, "", 0, UNPLACED_GEOMETRY)
    assert by_id["c1"].ref == ImageRef(STUDY, SERIES, "coronal", "", 5)
    geom = _geometry()
    any_oblique = _turned(geom, 30.0).through(geom.corners().mean(axis=0))
    assert MeasurementSet(loaded).on(mpr_image_ref(STUDY, SERIES, Orientation.OBLIQUE, any_oblique, 5)) == []
    MeasurementStore(tmp_path).save(loaded)
    doc = json.loads((tmp_path / STORE_FILE).read_text())
    assert doc["version"] == 3
    assert MeasurementStore(tmp_path).load() == loaded
