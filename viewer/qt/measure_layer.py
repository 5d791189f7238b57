"""The measurements of one slice view on screen, and the mouse work on them: drawing each kind (two-point
shapes by a drag; a freehand ROI by dragging round it; an angle by dragging one arm, then clicking or
dragging to the end of the other; a Cobb angle by dragging two lines; an arrow by dragging from its tip,
then typing its text), selecting (click), moving (drag the body), reshaping (drag a handle of the
selected one; a freehand ROI's handles are its vertices: Ctrl+click on one removes it, on its outline
between two adds one, and the context menu of a vertex has "Delete point"), retexting an arrow
(double-click, F2 or the context menu), deleting (Del or the context menu). Every change goes through
a :class:`~viewer.core.measure_edit.MeasurementEditor`, so it is one step of the window's undo history;
while a drag lasts only a draft is drawn, its numbers (an ROI's statistics and area) worked out live
(nothing is saved per mouse move)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, QPoint, QPointF, Qt, Signal
from PySide6.QtGui import QAction, QFocusEvent, QKeyEvent
from PySide6.QtWidgets import QLineEdit, QMenu, QWidget

from viewer.core.errors import MeasurementError
from viewer.core.measure import (
    MAX_TEXT,
    MIN_POLYGON_POINTS,
    ImageRef,
    Measurement,
    Point,
    Shape,
    measurement_text,
    polygon_area,
    value_unit,
)
from viewer.core.measure_edit import MeasurementEditor
from viewer.core.measure_store import MeasurementSet
from viewer.core.undo import UndoStack
from viewer.qt.tools import (
    FREEHAND_GRAB,
    LINE_GRAB,
    Hit,
    LabelOption,
    MeasurementGraphic,
    hit_test,
    nearest_edge,
)

if TYPE_CHECKING:
    from viewer.qt.slice_view import SliceView

TWO_POINT = (Shape.RULER, Shape.ELLIPSE, Shape.RECTANGLE, Shape.ARROW)
FREEHAND_STEP = 2.0  # screen pixels between the points kept of a freehand outline
RESCALE = 1.3  # redraw arrow heads and angle arcs when the zoom changed this much since drawn


class ArrowTextEditor(QLineEdit):
    """The inline editor of an arrow's text (Return or leaving it: keep, Esc: cancel); never modal."""

    cancelled = Signal()

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("arrowTextEditor")
        self.setMaxLength(MAX_TEXT)
        self.setPlaceholderText("Arrow text (Return: done, Esc: cancel)")
        self.setMinimumWidth(220)
        self.measurement_id = ""
        self.hide()

    def keyPressEvent(self, ev: QKeyEvent) -> None:
        if ev.key() == Qt.Key.Key_Escape:
            ev.accept()
            self.cancelled.emit()
            return
        super().keyPressEvent(ev)

    def focusOutEvent(self, ev: QFocusEvent) -> None:
        super().focusOutEvent(ev)
        if self.isVisible():
            self.editingFinished.emit()


@dataclass
class _EditDrag:
    original: Measurement
    handle: int | None  # None: the whole measurement moves
    press: Point  # image coordinates


class MeasurementLayer(QObject):
    """Draws the shown image's measurements (and only those) and turns mouse input into edits."""

    def __init__(self, view: SliceView) -> None:
        super().__init__(view)
        self.view = view
        self.measurements = MeasurementSet()
        self.history = UndoStack()
        self.edits = MeasurementEditor(self.measurements, self.history)
        self.measurements.changed.connect(self._on_changed)
        self.graphics: list[MeasurementGraphic] = []
        self.selected_id: str | None = None
        self._drawn_ref: ImageRef | None = None
        self._drawn_scale = 1.0
        self._draft: MeasurementGraphic | None = None
        self._pending: list[Point] = []  # an angle's first arm, a Cobb angle's first line
        self._path: list[Point] = []  # a freehand outline being drawn
        self._edit: _EditDrag | None = None
        self.text_editor = ArrowTextEditor(view.graphics.viewport())
        self.text_editor.editingFinished.connect(self._commit_text)
        self.text_editor.cancelled.connect(self._close_text_editor)
        self.context_menu: QMenu | None = None

    # --- the set and the history -------------------------------------------------------------------
    def set_measurement_set(self, measurements: MeasurementSet, history: UndoStack | None = None) -> None:
        self.measurements.changed.disconnect(self._on_changed)
        self.measurements = measurements
        self.history = history if history is not None else self.history
        self.edits = MeasurementEditor(measurements, self.history)
        measurements.changed.connect(self._on_changed)
        self.sync(force=True)

    def _on_changed(self, ref: ImageRef) -> None:
        if ref == self._drawn_ref:
            self.sync(force=True)

    # --- drawing the shown image's measurements ----------------------------------------------------
    def scale(self) -> float:
        """Image pixels per screen pixel (arrow heads and angle arcs are sized on screen)."""
        zoom = self.view.zoom_factor()
        return 1.0 / zoom if zoom > 0 else 1.0

    def label(self, m: Measurement) -> str:
        view = self.view
        unit = value_unit(view.context.stack.modality) if view.context is not None else ""
        return measurement_text(m, view.current_data(), view.spacing(), unit)

    def _graphic(self, m: Measurement) -> MeasurementGraphic:
        g = MeasurementGraphic(self.view.image, m, self.label(m), self.view.spacing(), self.scale())
        self.view.vb.updateMatrix()
        options = g.label_options(self.view.vb.sceneBoundingRect())
        g.put_label(options[0])
        return g

    def place_labels(self) -> None:
        """Each label where it is not clipped and clear of the others (after drawing, a pan or a zoom):
        oldest first, each at its first free place; when a label has none, an earlier label in its way
        moves to another free place of its own if it has one. The places of a label reaching past the view's
        edge are moved inside it, for a measurement drawn at least partly in the view; a place under the
        corner texts is taken only when there is no other."""
        shown = [g for g in self.graphics if g.label.isVisible()]
        if not shown:
            return
        self.view.vb.updateMatrix()
        visible = self.view.vb.sceneBoundingRect()
        # a label with no place wholly on screen is moved inside the view (when some of its measurement is
        # there), and placed clear of the others as it would be there
        options = [
            [o if visible.contains(o.rect) else g.moved_inside(o, visible) for o in g.label_options(visible)]
            if g.shows_in(visible)
            else g.label_options(visible)
            for g in shown
        ]
        # and clear of the corner texts where it can be (they are painted over the scene: a label under
        # them could be read by neither)
        corners = self.view.corner_text_scene_rects()
        chosen: list[LabelOption] = []
        for opts in options:
            free = [o for o in opts if not any(o.rect.intersects(c.rect) for c in chosen)]
            clear = [o for o in free if not any(o.rect.intersects(r) for r in corners)]
            free = clear or free
            if free:
                chosen.append(free[0])
                continue
            want = opts[0]
            for j, c in enumerate(chosen):
                if not want.rect.intersects(c.rect):
                    continue
                others = [x.rect for i, x in enumerate(chosen) if i != j] + [want.rect]
                moved = [o for o in options[j] if not any(o.rect.intersects(r) for r in others)]
                if moved:
                    chosen[j] = moved[0]
            chosen.append(want)
        for g, option in zip(shown, chosen, strict=True):
            g.put_label(option)

    def sync(self, force: bool = False) -> None:
        """Draw the shown image's measurements; a change of image ends any drawing or selection."""
        ref = self.view.image_ref()
        if ref == self._drawn_ref and not force:
            return
        if ref != self._drawn_ref:
            self.cancel_drawing()
            self.selected_id = None
            self._close_text_editor()
        for g in self.graphics:
            g.remove()
        self.graphics.clear()
        self._drawn_ref = ref
        self._drawn_scale = self.scale()
        if ref is None:
            return
        ids = set()
        for m in self.measurements.on(ref):
            g = self._graphic(m)
            g.set_selected(m.id == self.selected_id)
            self.graphics.append(g)
            ids.add(m.id)
        self.place_labels()
        if self.selected_id not in ids:
            self.selected_id = None

    def on_zoom(self) -> None:
        """The view moved: labels stay unclipped, and arrow heads and arcs are redrawn when the zoom
        changed enough for them to look wrong."""
        ratio = self.scale() / self._drawn_scale
        sized = any(g.measurement.shape in (Shape.ARROW, Shape.ANGLE) for g in self.graphics)
        if sized and (ratio > RESCALE or ratio < 1 / RESCALE):
            self.sync(force=True)
        else:
            self.place_labels()

    def drop(self) -> None:
        """Forget what is drawn (a new stack, or none)."""
        self.cancel_drawing()
        self._close_text_editor()
        for g in self.graphics:
            g.remove()
        self.graphics.clear()
        self._drawn_ref = None
        self.selected_id = None

    def _set_draft(self, m: Measurement | None, selected: bool = False) -> None:
        if self._draft is not None:
            self._draft.remove()
            self._draft = None
        if m is not None:
            self._draft = self._graphic(m)
            self._draft.set_selected(selected)

    def cancel_drawing(self) -> bool:
        """Drop a measurement being drawn or dragged (Esc, another tool, another slice); True if there
        was one."""
        busy = bool(self._draft is not None or self._pending or self._path or self._edit)
        if self._pending:
            self.view.show_hint("")
        self._set_draft(None)
        self._pending.clear()
        self._path.clear()
        if self._edit is not None:
            self._edit = None
            self.sync(force=True)
        return busy

    def drawing(self) -> bool:
        """A multi-step measurement (angle, Cobb angle) is half drawn."""
        return bool(self._pending)

    # --- selection -----------------------------------------------------------------------------------
    def selected(self) -> Measurement | None:
        return self.measurements.get(self.selected_id) if self.selected_id else None

    def select(self, measurement_id: str | None) -> None:
        self.selected_id = measurement_id
        for g in self.graphics:
            g.set_selected(g.measurement.id == measurement_id)

    @contextmanager
    def unselected(self) -> Iterator[None]:
        """Drawn without the selection's highlight and handles for a while (a PNG export)."""
        kept = self.selected_id
        self.select(None)
        try:
            yield
        finally:
            if kept is not None and kept in self.measurements:
                self.select(kept)

    def escape(self) -> bool:
        """Esc: end a drawing or text edit, else drop the selection; False when there was neither."""
        if self.text_editor.isVisible():
            self._close_text_editor()
            return True
        if self.cancel_drawing():
            return True
        if self.selected_id is not None:
            self.select(None)
            return True
        return False

    def delete(self) -> Measurement | None:
        """Del: delete the selected measurement, else the newest of the shown image."""
        ref = self.view.image_ref()
        if ref is None:
            return None
        target = self.selected()
        if target is None or target.ref != ref:
            mine = self.measurements.on(ref)
            target = mine[-1] if mine else None
        if target is None:
            return None
        self.selected_id = None
        gone = self.edits.delete([target.id])
        return gone[0] if gone else None

    def delete_all(self) -> list[Measurement]:
        """Shift+Del: every measurement of the shown image (one undo step)."""
        ref = self.view.image_ref()
        if ref is None:
            return []
        return self.edits.delete([m.id for m in self.measurements.on(ref)])

    # --- mouse ---------------------------------------------------------------------------------------
    def _image_point(self, scene_pos: QPointF) -> Point:
        self.view.vb.updateMatrix()  # pyqtgraph applies a new view range lazily (at the next paint)
        p = self.view.image.mapFromScene(scene_pos)
        return float(p.x()), float(p.y())

    def _to_scene(self, pts: np.ndarray) -> np.ndarray:
        self.view.vb.updateMatrix()
        t = self.view.image.sceneTransform()
        x, y = pts[:, 0], pts[:, 1]
        return np.column_stack([t.m11() * x + t.m21() * y + t.dx(), t.m12() * x + t.m22() * y + t.dy()])

    def hit(self, scene_pos: QPointF) -> Hit | None:
        """The measurement under the cursor; an ROI's inside counts with the window/level tool or when it
        is selected (with a drawing tool a press inside an ROI draws a new measurement)."""
        window_tool = self.view.tool == "window"
        return hit_test(self.graphics, self._to_scene, scene_pos,
                        lambda m: window_tool or m.id == self.selected_id)

    def grab(self, scene_pos: QPointF) -> bool:
        """A left press on a measurement (with a drawing tool: on the selected one, so that a new one can
        be drawn anywhere; not while one is half drawn): it is selected and the drag moves it or its
        handle; True when so."""
        if self._pending or self._path:
            return False
        if self.view.tool == "window":
            found = self.hit(scene_pos)
        else:
            mine = [g for g in self.graphics if g.measurement.id == self.selected_id]
            found = hit_test(mine, self._to_scene, scene_pos)
        if found is None:
            return False
        self.select(found.measurement.id)
        self._edit = _EditDrag(found.measurement, found.handle, self._image_point(scene_pos))
        return True

    def edit_drag(self, scene_pos: QPointF, finished: bool) -> None:
        edit = self._edit
        if edit is None:
            return
        x, y = self._image_point(scene_pos)
        if edit.handle is None:
            new = edit.original.moved(x - edit.press[0], y - edit.press[1])
        else:
            new = edit.original.with_point(edit.handle, (x, y))
        for g in self.graphics:
            if g.measurement.id == new.id:
                for item in (*g.items, g.label):
                    item.setVisible(False)
        if not finished:
            self._set_draft(new, selected=True)
            return
        self._set_draft(None)
        self._edit = None
        if not self.edits.change(new):
            self.sync(force=True)

    def click(self, scene_pos: QPointF, screen_pos: QPoint, button: Qt.MouseButton, double: bool) -> None:
        if button == Qt.MouseButton.LeftButton and len(self._pending) == 2 and self.view.tool == "angle":
            self._finish_angle(self._image_point(scene_pos))
            return
        if self._pending or self._path:
            return
        found = self.hit(scene_pos)
        if button == Qt.MouseButton.RightButton:
            if found is not None:
                self.select(found.measurement.id)
                self.show_context_menu(screen_pos, self._vertex_at(found.measurement, scene_pos))
            return
        if button != Qt.MouseButton.LeftButton:
            return
        ctrl = bool(self.view.vb.click_modifiers & Qt.KeyboardModifier.ControlModifier)
        if ctrl and found is not None and self._edit_outline(found, scene_pos):
            return
        self.select(found.measurement.id if found else None)
        if found is not None and double and found.measurement.shape is Shape.ARROW:
            self.edit_text(found.measurement.id)

    def _edit_outline(self, found: Hit, scene_pos: QPointF) -> bool:
        """Ctrl+click on the selected freehand ROI: on a vertex, remove it; on its outline between
        vertices, add one there. False when the click was not on such an outline."""
        m = found.measurement
        if m.shape is not Shape.FREEHAND or m.id != self.selected_id:
            return False
        if found.handle is not None:
            return self.delete_vertex(found.handle)
        index, distance = nearest_edge(m, self._to_scene, scene_pos)
        if distance > LINE_GRAB:
            return False
        new = m.with_point_inserted(index, self._image_point(scene_pos))
        return self.edits.change(new, "add a point to")

    def delete_vertex(self, index: int, measurement_id: str | None = None) -> bool:
        """Remove vertex ``index`` of a freehand ROI (default: the selected one), one undo step; False
        (with a status hint) when it has only MIN_POLYGON_POINTS left or is no freehand ROI."""
        m = self.measurements.get(measurement_id or self.selected_id or "")
        if m is None or m.shape is not Shape.FREEHAND:
            return False
        try:
            new = m.without_point(index)
        except MeasurementError as exc:
            self.view.status_hint.emit(str(exc))
            return False
        return self.edits.change(new, "remove a point from")

    def hover(self, scene_pos: QPointF) -> None:
        """The cursor moved: a half-drawn angle follows it with its second arm."""
        if len(self._pending) == 2 and self.view.tool == "angle":
            ref = self.view.image_ref()
            if ref is not None:
                a, v = self._pending
                self._set_draft(Measurement(Shape.ANGLE, ref, (a, v, self._image_point(scene_pos))))

    def tool_drag(self, start: QPointF, current: QPointF, finished: bool) -> None:
        """A drag with a drawing tool (``start``/``current`` in view coordinates)."""
        view = self.view
        ref = view.image_ref()
        shape = view.draw_shape()
        if ref is None or shape is None:
            return
        s = view.image.mapFromView(start)
        q = view.image.mapFromView(current)
        p0, p1 = (float(s.x()), float(s.y())), (float(q.x()), float(q.y()))
        if shape is Shape.FREEHAND:
            self._freehand(ref, p0, p1, finished)
        elif shape is Shape.ANGLE:
            self._angle_drag(ref, p0, p1, finished)
        elif shape is Shape.COBB:
            self._cobb_drag(ref, p0, p1, finished)
        else:
            self._two_point(shape, ref, p0, p1, finished)

    def _two_point(self, shape: Shape, ref: ImageRef, p0: Point, p1: Point, finished: bool) -> None:
        m = Measurement(shape, ref, (p0, p1))
        if not finished:
            self._set_draft(m)
            return
        self._set_draft(None)
        if m.start != m.end:
            self.edits.add(m)
            if shape is Shape.ARROW:
                self.select(m.id)
                self.edit_text(m.id)

    def _freehand(self, ref: ImageRef, p0: Point, p1: Point, finished: bool) -> None:
        if not self._path:
            self._path.append(p0)
        if math.dist(self._path[-1], p1) >= FREEHAND_STEP * self.scale():
            self._path.append(p1)
        if not finished:
            if len(self._path) >= 3:
                self._set_draft(Measurement(Shape.FREEHAND, ref, tuple(self._path)))
            return
        pts = tuple(self._path)
        self._path.clear()
        self._set_draft(None)
        if len(pts) >= 3 and polygon_area(pts, None)[0] > 0:
            self.edits.add(Measurement(Shape.FREEHAND, ref, pts))

    def _angle_drag(self, ref: ImageRef, p0: Point, p1: Point, finished: bool) -> None:
        if len(self._pending) == 2:  # the second arm, dragged (a click works too)
            a, v = self._pending
            if finished:
                self._finish_angle(p1)
            else:
                self._set_draft(Measurement(Shape.ANGLE, ref, (a, v, p1)))
            return
        arm = Measurement(Shape.RULER, ref, (p0, p1))
        self._set_draft(arm)
        if finished:
            if arm.start != arm.end:
                self._pending[:] = [arm.start, arm.end]
                self.view.show_hint("Angle: click (or drag to) the end of the second arm; Esc cancels")
            else:
                self._set_draft(None)

    def _finish_angle(self, c: Point) -> None:
        ref = self.view.image_ref()
        a, v = self._pending
        self._pending.clear()
        self._set_draft(None)
        self.view.show_hint("")
        if ref is not None and c != v:
            self.edits.add(Measurement(Shape.ANGLE, ref, (a, v, c)))

    def _cobb_drag(self, ref: ImageRef, p0: Point, p1: Point, finished: bool) -> None:
        if len(self._pending) == 2:  # the second line
            m = Measurement(Shape.COBB, ref, (*self._pending, p0, p1))
            if not finished:
                self._set_draft(m)
                return
            self._pending.clear()
            self._set_draft(None)
            self.view.show_hint("")
            if p0 != p1:
                self.edits.add(m)
            return
        line = Measurement(Shape.RULER, ref, (p0, p1))
        self._set_draft(line)
        if finished:
            if p0 != p1:
                self._pending[:] = [p0, p1]
                self.view.show_hint("Cobb angle: drag the second line; Esc cancels")
            else:
                self._set_draft(None)

    # --- arrow text ------------------------------------------------------------------------------------
    def edit_text(self, measurement_id: str | None = None) -> bool:
        """Open the inline editor on an arrow (default: the selected one); False when it is no arrow."""
        m = self.measurements.get(measurement_id or self.selected_id or "")
        if m is None or m.shape is not Shape.ARROW or m.ref != self.view.image_ref():
            return False
        editor = self.text_editor
        editor.measurement_id = m.id
        editor.setText(m.text)
        editor.adjustSize()
        g = next((g for g in self.graphics if g.measurement.id == m.id), None)
        vp = self.view.graphics.viewport()
        self.view.vb.updateMatrix()
        if g is not None:  # where its label goes
            rect = g.editor_rect(editor.width(), editor.height(), self.view.vb.sceneBoundingRect())
            at = self.view.graphics.mapFromScene(rect.topLeft())
        else:
            at = self.view.graphics.mapFromScene(self.view.image.mapToScene(QPointF(*m.end)))
        x = int(min(max(at.x(), 0), max(vp.width() - editor.width(), 0)))
        y = int(min(max(at.y(), 0), max(vp.height() - editor.height(), 0)))
        editor.move(x, y)
        editor.show()
        editor.raise_()
        editor.setFocus(Qt.FocusReason.OtherFocusReason)
        editor.selectAll()
        return True

    def _commit_text(self) -> None:
        editor = self.text_editor
        if not editor.isVisible():
            return
        m = self.measurements.get(editor.measurement_id)
        text = editor.text()
        self._close_text_editor()
        if m is not None:
            self.edits.change(m.with_text(text))

    def _close_text_editor(self) -> None:
        editor = self.text_editor
        if editor.isVisible():
            editor.hide()
            editor.measurement_id = ""
            self.view.setFocus(Qt.FocusReason.OtherFocusReason)

    def _vertex_at(self, m: Measurement, scene_pos: QPointF) -> int | None:
        """The freehand vertex of ``m`` under ``scene_pos`` (within FREEHAND_GRAB screen pixels), if any."""
        if m.shape is not Shape.FREEHAND:
            return None
        d = np.hypot(*(self._to_scene(np.array(m.points, dtype=float)) - [scene_pos.x(), scene_pos.y()]).T)
        k = int(np.argmin(d))
        return k if d[k] <= FREEHAND_GRAB else None

    # --- context menu ----------------------------------------------------------------------------------
    def show_context_menu(self, screen_pos: QPoint, vertex: int | None = None) -> QMenu:
        """The selected measurement's menu (non-modal popup): delete it, remove the freehand vertex
        ``vertex`` (the one right-clicked), edit an arrow's text, delete every measurement of the slice."""
        if self.context_menu is not None:
            self.context_menu.deleteLater()
        menu = QMenu(self.view)
        menu.setObjectName("measurementMenu")
        m = self.selected()
        delete = QAction("Delete", menu)
        delete.setShortcut("Del")
        delete.triggered.connect(self.delete)
        menu.addAction(delete)
        if m is not None and m.shape is Shape.FREEHAND and vertex is not None:
            point = QAction("Delete point", menu)
            point.setShortcut("Ctrl+Click")
            point.setEnabled(len(m.points) > MIN_POLYGON_POINTS)
            point.triggered.connect(lambda: self.delete_vertex(vertex, m.id))
            menu.addAction(point)
        if m is not None and m.shape is Shape.ARROW:
            edit = QAction("Edit text…", menu)
            edit.setShortcut("F2")
            edit.triggered.connect(lambda: self.edit_text(m.id))
            menu.addAction(edit)
        menu.addSeparator()
        clear = QAction("Delete all on this slice", menu)
        clear.setShortcut("Shift+Del")
        clear.triggered.connect(self.delete_all)
        menu.addAction(clear)
        self.context_menu = menu
        menu.popup(screen_pos)
        return menu
