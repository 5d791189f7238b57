"""Changes to the measurements as the user makes them (add, delete, move, reshape, retext), each one
recorded on an :class:`~viewer.core.undo.UndoStack` so that it can be undone and redone. Qt-free."""

from __future__ import annotations

from collections.abc import Sequence

from viewer.core.measure import Measurement, Shape
from viewer.core.measure_store import MeasurementSet
from viewer.core.undo import Command, UndoStack

SHAPE_NAMES: dict[Shape, str] = {
    Shape.RULER: "ruler",
    Shape.ELLIPSE: "ellipse ROI",
    Shape.RECTANGLE: "rectangle ROI",
    Shape.FREEHAND: "freehand ROI",
    Shape.ANGLE: "angle",
    Shape.COBB: "Cobb angle",
    Shape.ARROW: "arrow",
}


def _name(ms: Sequence[Measurement]) -> str:
    return SHAPE_NAMES[ms[0].shape] if len(ms) == 1 else f"{len(ms)} measurements"


class MeasurementEditor:
    """Applies the user's changes to ``measurements`` and records them on ``history``."""

    def __init__(self, measurements: MeasurementSet, history: UndoStack) -> None:
        self.measurements = measurements
        self.history = history

    def add(self, m: Measurement) -> None:
        self.measurements.add(m)
        self.history.push(
            Command(f"add {_name([m])}", lambda: self._drop([m]), lambda: self._put([(m, None)]))
        )

    def delete(self, ids: Sequence[str]) -> list[Measurement]:
        """Delete these measurements (one undo step for all); those already gone are skipped."""
        placed = [(m, self.measurements.position(m.id)) for i in ids if (m := self.measurements.get(i))]
        if not placed:
            return []
        gone = [m for m, _ in placed]
        self._drop(gone)
        self.history.push(
            Command(f"delete {_name(gone)}", lambda: self._put(placed), lambda: self._drop(gone))
        )
        return gone

    def change(self, new: Measurement, verb: str = "") -> bool:
        """Replace the measurement with ``new``'s id by ``new`` (moved, a handle dragged, text edited, a
        freehand point removed or added); ``verb`` names the change in the Edit menu (default: "edit
        text of" or "change"). False when it is gone or unchanged."""
        old = self.measurements.get(new.id)
        if old is None or old == new:
            return False
        self.measurements.replace(new)
        verb = verb or ("edit text of" if old.text != new.text else "change")
        self.history.push(Command(f"{verb} {_name([new])}", lambda: self._swap(new, old),
                                  lambda: self._swap(old, new)))
        return True

    # --- the undo/redo halves: False when the measurement set no longer matches ---------------------
    def _drop(self, ms: Sequence[Measurement]) -> bool:
        present = [m for m in ms if m.id in self.measurements]
        for m in present:
            self.measurements.remove(m.id)
        return bool(present)

    def _put(self, placed: Sequence[tuple[Measurement, int | None]]) -> bool:
        missing = [(m, at) for m, at in placed if m.id not in self.measurements]
        for m, at in sorted(missing, key=lambda p: 1 << 30 if p[1] is None else p[1]):
            self.measurements.add(m, at)
        return bool(missing)

    def _swap(self, current: Measurement, target: Measurement) -> bool:
        if self.measurements.get(current.id) != current:
            return False
        self.measurements.replace(target)
        return True
