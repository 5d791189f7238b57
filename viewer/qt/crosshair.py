"""The crosshair tool: a left click or drag in a viewport moves the crosshair point (the other viewports of
its frame of reference scroll to it); a drag that starts on the outer part of another viewport's line turns
that viewport's plane about the point (an oblique MPR plane), as in RadiAnt, Horos and OHIF.

The point, the planes and the turning are the Qt-free :class:`~viewer.core.state.viewer_state.ViewerState`'s
(``set_crosshair``, ``rotate_plane``); this module only turns mouse positions into those intents. The lines
drawn are the reference lines (one colour per viewport); the planes are resliced off the GUI thread by each
viewport's :class:`~viewer.core.state.mpr.PlaneSlices`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
from PySide6.QtCore import QObject, QPointF

from viewer.core.errors import ViewerStateError
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.plane import Plane, Vec3, signed_angle
from viewer.core.state.viewer_state import ViewerState
from viewer.qt.slice_view import SliceView
from viewer.qt.viewport_grid import ViewportGrid

log = logging.getLogger(__name__)

GRAB_PX = 8.0  # a press this close (screen pixels) to another viewport's line grabs it ...
CENTRE_PX = 30.0  # ... unless it is this close to the crosshair point (then it moves the point)
LINE_KEY_PREFIX = "viewport"  # reference line keys: "viewport<index>"


class DragMode(str, Enum):
    MOVE = "move"  # the crosshair point follows the mouse
    TURN = "turn"  # another viewport's plane turns about the point


@dataclass(frozen=True)
class CrosshairDrag:
    """One drag, fixed at the press: what it does and what it turns from."""

    mode: DragMode
    viewport: int
    target: int = -1  # TURN: the viewport whose plane turns
    centre: Vec3 = (0.0, 0.0, 0.0)  # TURN: the crosshair point
    start_dirs: tuple[Vec3, Vec3] | None = None  # TURN: the target plane's (row, col) at the press
    start_vec: Vec3 = (0.0, 0.0, 0.0)  # TURN: press point minus centre (mm)


def _distance_to_segment(p: QPointF, a: QPointF, b: QPointF) -> float:
    ax, ay, bx, by, px, py = a.x(), a.y(), b.x(), b.y(), p.x(), p.y()
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


class CrosshairTool(QObject):
    """Turns crosshair-tool mouse drags in the grid's views into crosshair intents on the state."""

    def __init__(self, state: ViewerState, grid: ViewportGrid, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.grid = grid
        self._drag: CrosshairDrag | None = None

    def attach(self, view: SliceView) -> None:
        view.crosshair_drag.connect(lambda a, b, done, v=view: self.on_drag(v, a, b, done))

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
            self._drag = self._begin(view, index, plane, press)
        drag = self._drag
        point = plane.pixel_to_patient(np.array(current[0]), np.array(current[1]))
        try:
            if drag.mode is DragMode.MOVE:
                self.state.set_crosshair(index, [float(v) for v in point])
            else:
                assert drag.start_dirs is not None
                now = np.asarray(point) - np.asarray(drag.centre)
                angle = signed_angle(drag.start_vec, now, plane.normal)
                if abs(angle) > 1e-4 or self.state.viewport(drag.target).oblique is not None:
                    self.state.rotate_plane(index, drag.target, angle, start=drag.start_dirs)
        except ViewerStateError as exc:  # e.g. the target viewport was emptied meanwhile
            log.info("Crosshair not moved (%s)", type(exc).__name__)
        if finished:
            self._drag = None

    def _begin(self, view: SliceView, index: int, plane: Plane, press: tuple[float, float]) -> CrosshairDrag:
        """MOVE, or TURN when the press is on another viewport's line away from the crosshair point."""
        try:
            centre = self.state.crosshair_or_default(index)
        except ViewerStateError:
            return CrosshairDrag(DragMode.MOVE, index)
        c_row, c_col, _ = plane.patient_to_pixel(np.asarray(centre))
        at = view.scene_at(*press)
        if _distance_to_point(at, view.scene_at(float(c_row), float(c_col))) <= CENTRE_PX:
            return CrosshairDrag(DragMode.MOVE, index)
        best: tuple[float, int] | None = None
        for key, (a, b) in view.reference_lines().items():
            if not key.startswith(LINE_KEY_PREFIX):
                continue
            d = _distance_to_segment(at, view.scene_at(*a), view.scene_at(*b))
            if d <= GRAB_PX and (best is None or d < best[0]):
                best = (d, int(key[len(LINE_KEY_PREFIX) :]))
        if best is None:
            return CrosshairDrag(DragMode.MOVE, index)
        target = best[1]
        target_plane = self.state.plane(target)
        if target_plane is None or self.state.viewport(target).orientation is Orientation.NATIVE:
            return CrosshairDrag(DragMode.MOVE, index)
        pressed = plane.pixel_to_patient(np.array(press[0]), np.array(press[1]))
        vec = np.asarray(pressed) - np.asarray(centre)
        return CrosshairDrag(
            DragMode.TURN,
            index,
            target=target,
            centre=centre,
            start_dirs=(target_plane.row_dir, target_plane.col_dir),
            start_vec=(float(vec[0]), float(vec[1]), float(vec[2])),
        )


def _distance_to_point(a: QPointF, b: QPointF) -> float:
    return math.hypot(a.x() - b.x(), a.y() - b.y())
