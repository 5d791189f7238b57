"""ROI statistics, masks, lengths and the measurement store, against numpy on known arrays."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from viewer.core.errors import MeasurementError
from viewer.core.measure import (
    NATIVE_PLANE,
    ImageRef,
    Measurement,
    Shape,
    measurement_text,
    roi_mask,
    roi_stats,
    ruler_length,
)
from viewer.core.measure_store import STORE_FILE, MeasurementSet, MeasurementStore

REF = ImageRef("1.2.3", "1.2.3.4", NATIVE_PLANE, "1.2.3.4.5", 0)


@pytest.mark.parametrize(("a", "b"), [(10.0, 10.0), (20.0, 7.5), (31.0, 13.0), (3.0, 2.0)])
def test_ellipse_mask_area_is_pi_a_b_within_discretisation(a: float, b: float) -> None:
    cx, cy = 40.3, 37.7
    mask = roi_mask(Shape.ELLIPSE, ((cx - a, cy - b), (cx + a, cy + b)), (80, 80))
    # pixel-centre sampling: the error is bounded by the pixels the boundary crosses (~ perimeter)
    perimeter = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))
    assert abs(int(mask.sum()) - math.pi * a * b) <= 0.5 * perimeter
    assert abs(int(mask.sum()) - math.pi * a * b) / (math.pi * a * b) < (0.05 if min(a, b) >= 7 else 0.35)


def test_rectangle_mask_counts_whole_pixels_and_corners_in_any_order() -> None:
    mask = roi_mask(Shape.RECTANGLE, ((12.0, 9.0), (2.0, 4.0)), (20, 20))  # dragged up-left
    assert mask.sum() == 10 * 5
    assert mask[4:9, 2:12].all()
    assert not mask[3, 2] and not mask[4, 12]


def test_stats_match_numpy_on_the_masked_values_in_hu() -> None:
    rng = np.random.default_rng(7)
    values = rng.integers(-1024, 3000, size=(64, 48)).astype(np.int16)
    start, end = (5.2, 8.9), (40.1, 30.4)
    stats = roi_stats(values, Shape.ELLIPSE, (start, end), spacing=(0.7, 0.5))
    mask = roi_mask(Shape.ELLIPSE, (start, end), values.shape)
    inside = values[mask].astype(np.float64)
    assert stats.pixels == inside.size > 100
    assert stats.mean == pytest.approx(inside.mean())
    assert stats.sd == pytest.approx(inside.std())
    assert (stats.minimum, stats.maximum) == (inside.min(), inside.max())
    assert stats.area == pytest.approx(inside.size * 0.35)
    assert stats.area_unit == "mm²"


def test_int16_values_do_not_overflow() -> None:
    values = np.full((30, 30), 32000, dtype=np.int16)
    stats = roi_stats(values, Shape.RECTANGLE, ((0, 0), (30, 30)), None)
    assert stats.mean == 32000.0 and stats.sd == 0.0
    assert (stats.area, stats.area_unit) == (900.0, "px²")


def test_float32_modality_values_keep_their_fractions() -> None:
    values = np.array([[0.25, 0.75], [1.5, -2.0]], dtype=np.float32)
    stats = roi_stats(values, Shape.RECTANGLE, ((0, 0), (2, 2)), (1.0, 1.0))
    assert stats.mean == pytest.approx(0.125)
    assert stats.minimum == -2.0


def test_an_roi_between_pixel_centres_says_so() -> None:
    stats = roi_stats(np.zeros((10, 10), np.int16), Shape.ELLIPSE, ((2.6, 2.6), (2.9, 2.9)), None)
    assert stats.pixels == 0 and math.isnan(stats.mean)
    m = Measurement(Shape.ELLIPSE, REF, ((2.6, 2.6), (2.9, 2.9)))
    assert measurement_text(m, np.zeros((10, 10), np.int16), None, "HU") == "No pixel inside"


def test_colour_or_3d_data_is_a_typed_error() -> None:
    with pytest.raises(MeasurementError, match="2D array"):
        roi_stats(np.zeros((4, 4, 3), np.uint8), Shape.RECTANGLE, ((0, 0), (2, 2)), None)
    with pytest.raises(MeasurementError, match="not an area ROI"):
        roi_mask(Shape.RULER, ((0, 0), (2, 2)), (4, 4))


def test_ruler_length_uses_row_and_column_spacing() -> None:
    assert ruler_length((0, 0), (3, 4), (2.0, 1.0)) == (pytest.approx(math.hypot(3, 8)), "mm")
    assert ruler_length((0, 0), (3, 4), None) == (pytest.approx(5.0), "px")


def test_label_shows_hu_statistics_and_area() -> None:
    values = np.full((20, 20), 30, dtype=np.int16)
    m = Measurement(Shape.RECTANGLE, REF, ((0, 0), (10, 10)))
    text = measurement_text(m, values, (0.5, 0.5), "HU")
    assert text.splitlines() == ["Mean 30.0 HU  SD 0.0", "Min 30.0  Max 30.0", "Area 25.0 mm²"]


def test_set_keeps_measurements_per_image_in_order() -> None:
    other = ImageRef("1.2.3", "1.2.3.4", NATIVE_PLANE, "1.2.3.4.6", 0)
    ms = MeasurementSet()
    seen: list[ImageRef] = []
    ms.changed.connect(seen.append)
    first = Measurement(Shape.RULER, REF, ((0, 0), (1, 1)))
    second = Measurement(Shape.ELLIPSE, REF, ((0, 0), (5, 5)))
    ms.add(first)
    ms.add(second)
    ms.add(Measurement(Shape.RULER, other, ((0, 0), (2, 2))))
    assert ms.on(REF) == [first, second]
    assert ms.remove(second.id) == second
    assert ms.on(REF) == [first]
    assert seen == [REF, REF, other, REF]
    ms.add(second, position=0)  # put back where it was asked to be
    assert ms.on(REF) == [second, first]
    with pytest.raises(MeasurementError):
        ms.remove("no-such-id")


def test_store_round_trips_privately_and_holds_no_path_or_name(tmp_path: Path) -> None:
    store = MeasurementStore(tmp_path)
    ms = [
        Measurement(Shape.ELLIPSE, REF, ((1.5, 2.5), (10.0, 12.25))),
        Measurement(Shape.RULER, ImageRef("9.9", "9.9.1", "coronal", "", 17), ((0, 0), (3, 4))),
    ]
    store.save(ms)
    assert MeasurementStore(tmp_path).load() == ms
    if os.name == "posix":
        assert stat.S_IMODE((tmp_path / STORE_FILE).stat().st_mode) == 0o600
    doc = json.loads((tmp_path / STORE_FILE).read_text())
    assert set(doc["studies"]) == {"1.2.3", "9.9"}
    assert str(tmp_path) not in (tmp_path / STORE_FILE).read_text()
    assert [p.name for p in tmp_path.iterdir()] == [STORE_FILE]  # no temp file left


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 99, "studies": {}}',
                                     b'{"version": 1, "studies": {"1": [{"id": "x"}]}}'])
def test_a_damaged_store_is_a_typed_error_and_can_be_set_aside(tmp_path: Path, content: bytes) -> None:
    (tmp_path / STORE_FILE).write_bytes(content)
    store = MeasurementStore(tmp_path)
    with pytest.raises(MeasurementError, match="damaged"):
        store.load()
    store.set_aside()
    assert store.load() == []
