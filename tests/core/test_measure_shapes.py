"""Freehand ROIs, angles, Cobb angles and arrows: masks and statistics against numpy oracles on known
images, angles on non-square pixels, the store's version 2 (and version 1 files), and the undo history
of measurement changes."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from viewer.core.errors import MeasurementError
from viewer.core.measure import (
    NATIVE_PLANE,
    ImageRef,
    Measurement,
    Shape,
    angle_degrees,
    measurement_text,
    polygon_area,
    polygon_mask,
    roi_mask,
    roi_stats,
)
from viewer.core.measure_edit import MeasurementEditor
from viewer.core.measure_store import STORE_FILE, MeasurementSet, MeasurementStore
from viewer.core.undo import Command, UndoStack

REF = ImageRef("1.2.3", "1.2.3.4", NATIVE_PLANE, "1.2.3.4.5", 0)


def _centres(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    return xx + 0.5, yy + 0.5


def _convex_oracle(points: list[tuple[float, float]], shape: tuple[int, int]) -> np.ndarray:
    """Pixel centres strictly left of every edge of a counter-clockwise (on screen: y down) convex
    polygon: half-plane tests, independent of the scanline fill."""
    xx, yy = _centres(shape)
    inside = np.ones(shape, dtype=bool)
    n = len(points)
    for k in range(n):
        (x0, y0), (x1, y1) = points[k], points[(k + 1) % n]
        cross = (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0)
        inside &= cross > 0
    return inside


def pnpoly_oracle(points: Sequence[tuple[float, float]], shape: tuple[int, int]) -> np.ndarray:
    """W. R. Franklin's PNPOLY ray test at every pixel centre, one pixel at a time (slow, obvious, and
    independent of the scanline fill)."""
    rows, cols = shape
    mask = np.zeros(shape, dtype=bool)
    n = len(points)
    for r in range(rows):
        y = r + 0.5
        for c in range(cols):
            x = c + 0.5
            inside = False
            j = n - 1
            for i in range(n):
                xi, yi = points[i]
                xj, yj = points[j]
                if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
                    inside = not inside
                j = i
            mask[r, c] = inside
    return mask


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_random_self_intersecting_polygon_matches_the_ray_test(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pts = [(float(x), float(y)) for x, y in rng.uniform(-3, 27, size=(9, 2))]  # crossing edges, off-image
    assert np.array_equal(polygon_mask(pts, (24, 24)), pnpoly_oracle(pts, (24, 24)))


@pytest.mark.parametrize(
    "points",
    [
        [(3.2, 4.1), (30.7, 9.3), (12.4, 27.9)],  # triangle
        [(5.3, 2.2), (25.1, 6.6), (28.4, 22.8), (14.9, 29.3), (2.7, 17.5)],  # pentagon
    ],
)
def test_a_convex_polygon_mask_is_the_centres_inside_every_edge(points: list[tuple[float, float]]) -> None:
    shape = (32, 36)
    oracle = _convex_oracle(points, shape)
    assert oracle.sum() > 50
    assert np.array_equal(polygon_mask(points, shape), oracle)
    assert np.array_equal(polygon_mask(points[::-1], shape), oracle)  # drawn either way round


def test_a_concave_polygon_is_the_union_of_its_rectangles() -> None:
    # an L: columns 2-12 of rows 2-20, plus columns 12-25 of rows 14-20
    L = [(2.0, 2.0), (12.0, 2.0), (12.0, 14.0), (25.0, 14.0), (25.0, 20.0), (2.0, 20.0)]
    oracle = roi_mask(Shape.RECTANGLE, ((2, 2), (12, 20)), (24, 30)) | roi_mask(
        Shape.RECTANGLE, ((12, 14), (25, 20)), (24, 30)
    )
    assert np.array_equal(polygon_mask(L, (24, 30)), oracle)


def test_a_polygon_outside_or_across_the_image_is_clipped() -> None:
    assert not polygon_mask([(-9, -9), (-2, -9), (-5, -2)], (10, 10)).any()
    mask = polygon_mask([(-5, -5), (15, -5), (15, 15), (-5, 15)], (10, 10))
    assert mask.all()


def test_freehand_statistics_match_numpy_on_the_masked_hu_values() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(-1024, 2000, size=(40, 48)).astype(np.int16)
    pts = [(6.5, 3.0), (40.2, 8.8), (30.0, 35.1), (18.0, 20.0), (4.0, 30.5)]  # concave
    stats = roi_stats(values, Shape.FREEHAND, pts, (0.8, 0.6))
    inside = values[polygon_mask(pts, values.shape)].astype(np.float64)
    assert stats.pixels == inside.size > 200
    assert stats.mean == pytest.approx(inside.mean())
    assert stats.sd == pytest.approx(inside.std())
    assert (stats.minimum, stats.maximum) == (inside.min(), inside.max())
    # the area is the polygon's own (shoelace in mm), close to the pixel count times the pixel area
    assert stats.area_unit == "mm²"
    assert stats.area == pytest.approx(polygon_area(pts, (0.8, 0.6))[0])
    assert stats.area == pytest.approx(inside.size * 0.48, rel=0.08)


def test_shoelace_area_in_mm_and_in_px_without_spacing() -> None:
    square = [(0, 0), (10, 0), (10, 10), (0, 10)]
    assert polygon_area(square, (0.5, 2.0)) == (pytest.approx(100.0), "mm²")  # rows 0.5, columns 2 mm
    assert polygon_area(square, None) == (pytest.approx(100.0), "px²")
    m = Measurement(Shape.FREEHAND, REF, tuple(square))
    text = measurement_text(m, np.zeros((12, 12), np.int16), None, "HU")
    assert text.splitlines()[-1] == "Area 100.0 px²"


def test_angle_keeps_the_true_aspect_on_non_square_pixels() -> None:
    # arms along the image's x and its diagonal: 45° in pixels, atan(2) with rows twice as long
    m = Measurement(Shape.ANGLE, REF, ((10, 0), (0, 0), (10, 10)))
    assert angle_degrees(m, None) == pytest.approx(45.0)
    assert angle_degrees(m, (1.0, 1.0)) == pytest.approx(45.0)
    assert angle_degrees(m, (2.0, 1.0)) == pytest.approx(math.degrees(math.atan(2.0)))
    straight = Measurement(Shape.ANGLE, REF, ((0, 5), (5, 5), (10, 5)))
    assert angle_degrees(straight, (0.7, 0.3)) == pytest.approx(180.0)
    assert measurement_text(m, None, (2.0, 1.0), "HU") == f"{math.degrees(math.atan(2.0)):.1f}°"
    assert measurement_text(m, None, None, "HU") == "45.0° (pixels)"
    degenerate = Measurement(Shape.ANGLE, REF, ((0, 0), (0, 0), (3, 3)))
    assert math.isnan(angle_degrees(degenerate, None))


def test_cobb_angle_is_the_angle_between_the_lines_whichever_way_they_were_drawn() -> None:
    # line 1 horizontal, line 2 rising 30° (in mm, columns 0.5 mm, rows 0.5 mm)
    dx, dy = 10 * math.cos(math.radians(30)), 10 * math.sin(math.radians(30))
    a = Measurement(Shape.COBB, REF, ((0, 0), (10, 0), (0, 20), (dx, 20 - dy)))
    b = Measurement(Shape.COBB, REF, ((10, 0), (0, 0), (0, 20), (dx, 20 - dy)))  # line 1 reversed
    assert angle_degrees(a, (0.5, 0.5)) == pytest.approx(30.0)
    assert angle_degrees(b, (0.5, 0.5)) == pytest.approx(30.0)
    # rows 3x as long as columns: the second line is steeper in mm
    assert angle_degrees(a, (1.5, 0.5)) == pytest.approx(math.degrees(math.atan(3 * dy / dx)))
    assert measurement_text(a, None, (0.5, 0.5), "") == "Cobb 30.0°"


def test_points_per_shape_and_text_length_are_checked() -> None:
    with pytest.raises(MeasurementError, match="angle has 3 points"):
        Measurement(Shape.ANGLE, REF, ((0, 0), (1, 1)))
    with pytest.raises(MeasurementError, match="freehand ROI has 3"):
        Measurement(Shape.FREEHAND, REF, ((0, 0), (1, 1)))
    with pytest.raises(MeasurementError, match="finite"):
        Measurement(Shape.RULER, REF, ((0, 0), (math.nan, 1)))
    with pytest.raises(MeasurementError, match="at most"):
        Measurement(Shape.ARROW, REF, ((0, 0), (1, 1)), "x" * 500)
    arrow = Measurement(Shape.ARROW, REF, ((0, 0), (5, 5)), "bleed")
    assert measurement_text(arrow, None, None, "HU") == "bleed"
    assert arrow.moved(2, 3).points == ((2.0, 3.0), (7.0, 8.0)) and arrow.moved(2, 3).id == arrow.id
    assert arrow.with_point(1, (9, 9)).end == (9.0, 9.0)
    assert arrow.with_text("  new  ").text == "new"


def test_every_shape_round_trips_through_the_store(tmp_path: Path) -> None:
    ms = [
        Measurement(Shape.FREEHAND, REF, ((1, 1), (9.5, 2), (4, 8.25))),
        Measurement(Shape.ANGLE, REF, ((1, 1), (5, 5), (9, 1))),
        Measurement(Shape.COBB, REF, ((0, 0), (9, 1), (0, 5), (9, 8))),
        Measurement(Shape.ARROW, REF, ((3, 3), (20, 9)), "lesion ä"),
        Measurement(Shape.RULER, REF, ((0, 0), (3, 4))),
    ]
    store = MeasurementStore(tmp_path)
    store.save(ms)
    assert json.loads((tmp_path / STORE_FILE).read_text())["version"] == 3
    assert MeasurementStore(tmp_path).load() == ms


def test_a_version_1_file_is_still_read(tmp_path: Path) -> None:
    # as the viewer wrote it before freehand ROIs, angles and arrows (start/end per measurement)
    old = {
        "version": 1,
        "studies": {
            "1.2.3": [
                {"id": "a1", "shape": "ellipse", "start": [1.5, 2.5], "end": [10.0, 12.25],
                 "series_uid": "1.2.3.4", "plane": "native", "sop_uid": "1.2.3.4.5", "frame": 0},
                {"id": "b2", "shape": "ruler", "start": [0, 0], "end": [3, 4],
                 "series_uid": "1.2.3.4", "plane": "coronal", "sop_uid": "", "frame": 17},
            ]
        },
    }
    (tmp_path / STORE_FILE).write_text(json.dumps(old))
    loaded = MeasurementStore(tmp_path).load()
    assert loaded == [
        Measurement(Shape.ELLIPSE, REF, ((1.5, 2.5), (10.0, 12.25)), id="a1"),
        Measurement(Shape.RULER, ImageRef("1.2.3", "1.2.3.4", "coronal", "", 17), ((0, 0), (3, 4)), id="b2"),
    ]
    MeasurementStore(tmp_path).save(loaded)  # the next save writes version 3, the same measurements
    assert json.loads((tmp_path / STORE_FILE).read_text())["version"] == 3
    assert MeasurementStore(tmp_path).load() == loaded


@pytest.mark.parametrize(
    "item",
    [
        {"id": "x", "shape": "angle", "points": [[0, 0], [1, 1]], "series_uid": "s", "plane": "native",
         "sop_uid": "i", "frame": 0},
        {"id": "x", "shape": "arrow", "points": [[0, 0], [1, "a"]], "series_uid": "s", "plane": "native",
         "sop_uid": "i", "frame": 0},
        {"id": "x", "shape": "arrow", "points": [[0, 0], [1, 1]], "text": 5, "series_uid": "s",
         "plane": "native", "sop_uid": "i", "frame": 0},
    ],
)
def test_a_bad_version_2_item_is_a_typed_error(tmp_path: Path, item: dict[str, object]) -> None:
    (tmp_path / STORE_FILE).write_text(json.dumps({"version": 2, "studies": {"1": [item]}}))
    with pytest.raises(MeasurementError, match="damaged"):
        MeasurementStore(tmp_path).load()


def test_undo_and_redo_of_add_move_edit_and_delete() -> None:
    ms, history = MeasurementSet(), UndoStack()
    edit = MeasurementEditor(ms, history)
    ruler = Measurement(Shape.RULER, REF, ((0, 0), (3, 4)))
    arrow = Measurement(Shape.ARROW, REF, ((1, 1), (8, 8)), "a")
    edit.add(ruler)
    edit.add(arrow)
    assert edit.change(ruler.moved(1, 1))
    assert not edit.change(ruler.moved(1, 1))  # unchanged: nothing recorded
    assert edit.change(arrow.with_text("b"))
    assert edit.delete([ruler.id]) == [ruler.moved(1, 1)]
    assert history.undo_text() == "delete ruler"
    assert list(ms) == [arrow.with_text("b")]
    history.undo()  # the ruler is back, first again (where it was)
    assert list(ms) == [ruler.moved(1, 1), arrow.with_text("b")]
    assert history.undo_text() == "edit text of arrow"
    history.undo()
    history.undo()
    assert list(ms) == [ruler, arrow]
    history.undo()
    history.undo()
    assert list(ms) == [] and not history.can_undo()
    assert history.undo() is None
    for _ in range(3):
        history.redo()
    assert list(ms) == [ruler.moved(1, 1), arrow]
    edit.add(Measurement(Shape.RULER, REF, ((5, 5), (6, 6))))  # a new change forgets the redo steps
    assert not history.can_redo()


def test_a_command_that_cannot_be_undone_is_dropped() -> None:
    history = UndoStack()
    log: list[str] = []
    history.push(Command("first", lambda: bool(log.append("undo first")) or True, lambda: True))
    history.push(Command("gone", lambda: False, lambda: True))  # e.g. its review session was closed
    assert history.undo() is not None and log == ["undo first"]
    assert not history.can_undo() and history.redo_text() == "first"


def test_history_keeps_its_limit() -> None:
    history = UndoStack(limit=3)
    for k in range(5):
        history.push(Command(str(k), lambda: True, lambda: True))
    assert [c.text for c in iter(history.undo, None)] == ["4", "3", "2"]
