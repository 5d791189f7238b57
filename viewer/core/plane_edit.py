"""Crosshair moves and plane turns (oblique MPR) as steps of the window's one undo history: a drag of the
crosshair point or of a rotation handle, from press to release (a click too), and an Alt+O reset are each
one :class:`~viewer.core.undo.Command` that puts the frame of reference's planes and crosshair point back
(:meth:`ViewerState.restore_planes`) or moves / turns them again. Qt-free."""

from __future__ import annotations

from viewer.core.state.viewer_state import PlanePoses, ViewerState
from viewer.core.undo import Command, UndoStack

TURN_TEXT = "turn planes"
RESET_TEXT = "orthogonal planes"
MOVE_TEXT = "move crosshair"


class PlaneTurnEditor:
    """Records the user's crosshair moves and plane turns on ``history``: :meth:`begin` at a drag's press,
    the drag's intents (``ViewerState.set_crosshair`` or ``rotate_planes``) meanwhile, :meth:`finish` at its
    release (``text``: :data:`MOVE_TEXT` or :data:`TURN_TEXT`); :meth:`reset` for Alt+O."""

    def __init__(self, state: ViewerState, history: UndoStack) -> None:
        self.state = state
        self.history = history
        self._before: tuple[int, PlanePoses] | None = None

    def begin(self, index: int) -> None:
        """A move or turn starts in viewport ``index``: remember its frame of reference's planes and point."""
        poses = self.state.plane_poses(index)
        self._before = None if poses is None else (index, poses)

    def finish(self, text: str = TURN_TEXT) -> bool:
        """The move or turn begun is over: one undo step when it changed the planes or moved the crosshair
        point (False: none was recorded)."""
        if self._before is None:
            return False
        index, before = self._before
        self._before = None
        return self._record(index, before, text)

    def reset(self, index: int) -> bool:
        """Alt+O in viewport ``index`` (``ViewerState.reset_planes``), one undo step when planes changed."""
        before = self.state.plane_poses(index)
        self.state.reset_planes(index)
        return before is not None and self._record(index, before, RESET_TEXT)

    def _record(self, index: int, before: PlanePoses, text: str) -> bool:
        after = self.state.plane_poses(index)
        if after is None or after.frame_key != before.frame_key or after.same_as(before):
            return False
        self.history.push(
            Command(text, lambda: self.state.restore_planes(before), lambda: self.state.restore_planes(after))
        )
        return True
