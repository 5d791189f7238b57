"""The crosshair tool: a left click or drag in a viewport moves the crosshair point (the other viewports of
its frame of reference scroll to it); a drag that starts on the outer part of another viewport's line (where
the round rotation handles are drawn) turns the other MPR planes together about the point, round this
viewport's normal, keeping the angles between them (perpendicular planes stay perpendicular), as in
RadiAnt, Horos and 3D Slicer; with Ctrl held only that line's plane turns. Hovering shows what a press
does: the line under the mouse is drawn solid and thicker with a rotation cursor, a four-way arrow near
the crossing point (move it), a cross elsewhere (the point jumps there).

The point, the planes and the turning are the Qt-free :class:`~viewer.core.state.viewer_state.ViewerState`'s
(``set_crosshair``, ``rotate_planes``); this module only turns mouse positions into those intents. The lines
drawn are the reference lines (one colour per viewport); the planes are resliced off the GUI thread by each
viewport's :class:`~viewer.core.state.mpr.PlaneSlices`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
from PySide6.QtCore import QObject, QPointF, Qt

from viewer.core.errors import ViewerStateError
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.plane import Plane, Vec3, signed_angle
from viewer.core.plane_edit import MOVE_TEXT, TURN_TEXT, PlaneTurnEditor
from viewer.core.state.viewer_state import ViewerState
from viewer.core.undo import UndoStack
from viewer.qt.reference_handles import rotate_cursor
from viewer.qt.slice_view import CROSSHAIR_TOOL, SliceView
from viewer.qt.viewport_grid import ViewportGrid

log = logging.getLogger(__name__)

GRAB_PX = 8.0  # a press this close (screen pixels) to another viewport's line grabs it ...
CENTRE_PX = 30.0  # ... unless it is this close to the crosshair point (then it moves the point)
ONE_PLANE = Qt.KeyboardModifier.ControlModifier  # held at the press: turn only the grabbed line's plane
LINE_KEY_PREFIX = "viewport"  # reference line keys: "viewport<index>"


class DragMode(str, Enum):
    MOVE = "move"  # the crosshair point follows the mouse
    TURN = "turn"  # another viewport's plane turns about the point


@dataclass(frozen=True)
class CrosshairDrag:
    """One drag, fixed at the press: what it does and what it turns from."""

    mode: DragMode
    viewport: int
    target: int = -1  # TURN: the viewport whose line was grabbed
    centre: Vec3 = (0.0, 0.0, 0.0)  # TURN: the crosshair point
    start_dirs: tuple[tuple[int, tuple[Vec3, Vec3]], ...] = ()  # TURN: each turned plane's (row, col)
    start_vec: Vec3 = (0.0, 0.0, 0.0)  # TURN: press point minus centre (mm)


@dataclass(frozen=True)
class CrosshairHit:
    """What a press at a place would do: MOVE (``near_centre``: on the crossing point), or TURN with the
    line of viewport ``target``."""

    mode: DragMode
    target: int = -1
    near_centre: bool = False


def _distance_to_segment(p: QPointF, a: QPointF, b: QPointF) -> float:
    ax, ay, bx, by, px, py = a.x(), a.y(), b.x(), b.y(), p.x(), p.y()
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


class CrosshairTool(QObject):
    """Turns crosshair-tool mouse drags in the grid's views into crosshair intents on the state."""

    def __init__(
        self, state: ViewerState, grid: ViewportGrid, parent: QObject | None = None,
        history: UndoStack | None = None,
    ) -> None:
        super().__init__(parent)
        self.state = state
        self.grid = grid
        # a move of the point or a turn, press to release, is one step of the window's undo history
        # (Ctrl+Z), as is Alt+O
        self.turns = PlaneTurnEditor(state, history if history is not None else UndoStack())
        self._drag: CrosshairDrag | None = None

    def attach(self, view: SliceView) -> None:
        view.crosshair_drag.connect(lambda a, b, done, v=view: self.on_drag(v, a, b, done))
        view.graphics.scene().sigMouseMoved.connect(lambda pos, v=view: self.on_hover(v, pos))

    def on_hover(self, view: SliceView, scene_pos: QPointF) -> None:
        """Cursor and line highlight for what a press here would do (not while a drag is on)."""
        if view.tool != CROSSHAIR_TOOL or self._drag is not None:
            return
        hit = self.hit(view, QPointF(scene_pos))
        key = f"{LINE_KEY_PREFIX}{hit.target}" if hit.mode is DragMode.TURN else None
        view.set_hovered_line(key)
        port = view.graphics.viewport()
        if hit.mode is DragMode.TURN:
            port.setCursor(rotate_cursor())
        else:
            port.setCursor(Qt.CursorShape.SizeAllCursor if hit.near_centre else Qt.CursorShape.CrossCursor)

    def hit(self, view: SliceView, at: QPointF) -> CrosshairHit:
        """What a press at scene position ``at`` in ``view`` does."""
        index = self.grid.index_of(view)
        if index is None or self.state.frame_key(index) is None:
            return CrosshairHit(DragMode.MOVE)
        plane = self._plane(view, index)
        if plane is None:
            return CrosshairHit(DragMode.MOVE)
        try:
            centre = self.state.crosshair_or_default(index)
        except ViewerStateError:
            return CrosshairHit(DragMode.MOVE)
        c_row, c_col, _ = plane.patient_to_pixel(np.asarray(centre))
        if _distance_to_point(at, view.scene_at(float(c_row), float(c_col))) <= CENTRE_PX:
            return CrosshairHit(DragMode.MOVE, near_centre=True)
        best: tuple[float, int] | None = None
        for key, (a, b) in view.reference_lines().items():
            if not key.startswith(LINE_KEY_PREFIX):
                continue
            d = _distance_to_segment(at, view.scene_at(*a), view.scene_at(*b))
            if d <= GRAB_PX and (best is None or d < best[0]):
                best = (d, int(key[len(LINE_KEY_PREFIX) :]))
        if best is None:
            return CrosshairHit(DragMode.MOVE)
        target = best[1]
        if self.state.plane(target) is None or self.state.viewport(target).orientation is Orientation.NATIVE:
            return CrosshairHit(DragMode.MOVE)
        return CrosshairHit(DragMode.TURN, target)

    def _plane(self, view: SliceView, index: int) -> Plane | None:
        planes = view.planes()
        if planes is not None and view.count():
            return planes.plane(view.index)
        return self.state.plane(index)

    def on_drag(
        self, view: SliceView, press: tuple[float, float], current: tuple[float, float], finished: bool
    ) -> None:
        index = self.grid.index_of(view)
        if index is None or self.state.frame_key(index) is None:
            return
        plane = self._plane(view, index)
        if plane is None:
            return
        if self._drag is None or self._drag.viewport != index:
            self._finish_step()  # a drag left unfinished in another viewport: recorded as it stands
            self._drag = self._begin(view, index, plane, press)
            self.turns.begin(index)
        drag = self._drag
        point = plane.pixel_to_patient(np.array(current[0]), np.array(current[1]))
        try:
            if drag.mode is DragMode.MOVE:
                self.state.set_crosshair(index, [float(v) for v in point])
            else:
                now = np.asarray(point) - np.asarray(drag.centre)
                angle = signed_angle(drag.start_vec, now, plane.normal)
                starts = dict(drag.start_dirs)
                if abs(angle) > 1e-4 or any(self.state.viewport(t).oblique is not None for t in starts):
                    self.state.rotate_planes(index, list(starts), angle, start=starts)
        except ViewerStateError as exc:  # e.g. the target viewport was emptied meanwhile
            log.info("Crosshair not moved (%s)", type(exc).__name__)
        if finished:
            self._finish_step()  # one undo step for the whole drag (or click)
            self._drag = None

    def _finish_step(self) -> None:
        if self._drag is not None:
            self.turns.finish(MOVE_TEXT if self._drag.mode is DragMode.MOVE else TURN_TEXT)

    def _begin(self, view: SliceView, index: int, plane: Plane, press: tuple[float, float]) -> CrosshairDrag:
        """MOVE, or TURN when the press is on another viewport's line away from the crosshair point: all
        the other MPR planes turn together, or (Ctrl held) the grabbed line's plane alone."""
        hit = self.hit(view, view.scene_at(*press))
        if hit.mode is DragMode.MOVE:
            return CrosshairDrag(DragMode.MOVE, index)
        centre = self.state.crosshair_or_default(index)
        one = bool(view.vb.drag_modifiers & ONE_PLANE)
        targets = [hit.target] if one else self.state.turnable_planes(index)
        starts: list[tuple[int, tuple[Vec3, Vec3]]] = []
        for t in targets:
            p = self.state.plane(t)
            if p is not None:
                starts.append((t, (p.row_dir, p.col_dir)))
        pressed = plane.pixel_to_patient(np.array(press[0]), np.array(press[1]))
        vec = np.asarray(pressed) - np.asarray(centre)
        return CrosshairDrag(
            DragMode.TURN,
            index,
            target=hit.target,
            centre=centre,
            start_dirs=tuple(starts),
            start_vec=(float(vec[0]), float(vec[1]), float(vec[2])),
        )


def _distance_to_point(a: QPointF, b: QPointF) -> float:
    return math.hypot(a.x() - b.x(), a.y() - b.y())
