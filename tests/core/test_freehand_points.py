"""A freehand ROI's vertices edited one by one (viewer.core.measure, viewer.core.measure_edit): removed and
added through the one undo history, refused with a typed error below three points or on other shapes."""

from __future__ import annotations

import pytest

from viewer.core.errors import MeasurementError
from viewer.core.measure import ImageRef, Measurement, Shape, polygon_area
from viewer.core.measure_edit import MeasurementEditor
from viewer.core.measure_store import MeasurementSet
from viewer.core.undo import UndoStack

REF = ImageRef("1.2", "1.2.3", "native", "1.2.3.4", 0)
SQUARE = ((10.0, 10.0), (30.0, 10.0), (30.0, 30.0), (10.0, 30.0))


def test_remove_and_insert_a_vertex_keep_the_id_and_the_rest_of_the_outline() -> None:
    m = Measurement(Shape.FREEHAND, REF, (*SQUARE[:3], (20.0, 40.0), SQUARE[3]))  # a house: roof vertex 3
    house = polygon_area(m.points, (1.0, 1.0))[0]
    square = m.without_point(3)
    assert square.id == m.id and square.points == SQUARE
    assert polygon_area(square.points, (1.0, 1.0))[0] == pytest.approx(400.0)
    assert house == pytest.approx(500.0)
    back = square.with_point_inserted(3, (20.0, 40.0))
    assert back == m
    notch = square.with_point_inserted(1, (20.0, 20.0))  # on the top edge, pulled inwards
    assert notch.points[1] == (20.0, 20.0) and len(notch.points) == 5
    assert polygon_area(notch.points, (1.0, 1.0))[0] == pytest.approx(300.0)


def test_vertex_edits_are_refused_with_typed_errors() -> None:
    triangle = Measurement(Shape.FREEHAND, REF, SQUARE[:3])
    with pytest.raises(MeasurementError, match="at least 3 points"):
        triangle.without_point(0)
    with pytest.raises(MeasurementError, match="no point 7"):
        Measurement(Shape.FREEHAND, REF, SQUARE).without_point(7)
    ruler = Measurement(Shape.RULER, REF, ((0.0, 0.0), (5.0, 5.0)))
    with pytest.raises(MeasurementError, match="only a freehand ROI"):
        ruler.without_point(0)
    with pytest.raises(MeasurementError, match="only a freehand ROI"):
        ruler.with_point_inserted(1, (2.0, 2.0))
    with pytest.raises(MeasurementError, match="not a finite number"):
        Measurement(Shape.FREEHAND, REF, SQUARE).with_point_inserted(1, (float("nan"), 2.0))


def test_vertex_edits_are_steps_of_the_one_undo_history() -> None:
    measurements, history = MeasurementSet(), UndoStack()
    editor = MeasurementEditor(measurements, history)
    m = Measurement(Shape.FREEHAND, REF, SQUARE)
    editor.add(m)
    assert editor.change(m.with_point_inserted(2, (40.0, 20.0)), "add a point to")
    assert history.undo_text() == "add a point to freehand ROI"
    five = measurements.get(m.id)
    assert five is not None
    assert editor.change(five.without_point(0), "remove a point from")
    assert history.undo_text() == "remove a point from freehand ROI"
    assert editor.change(five.without_point(0).with_point(0, (31.0, 9.0)))  # a vertex dragged
    assert history.undo_text() == "change freehand ROI"
    history.undo()
    history.undo()
    assert measurements.get(m.id) == five
    history.undo()
    assert measurements.get(m.id) == m
    history.redo()
    assert measurements.get(m.id) == five
