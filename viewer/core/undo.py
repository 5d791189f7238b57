"""One undo history for the user's changes (measurements, a review's "study done"), Qt-free.

Each change is applied first and then pushed as a :class:`Command` that knows how to undo and redo
itself; ``Ctrl+Z`` undoes the newest one, whatever it was, and a new change forgets what was undone. A
command whose target is gone (a closed review session) answers False and is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from psygnal import Signal

DEFAULT_LIMIT = 200  # commands kept; the oldest are forgotten


@dataclass(frozen=True)
class Command:
    """A change already made: ``text`` says what (``"add ellipse ROI"``); ``undo``/``redo`` return
    whether they could be applied."""

    text: str
    undo: Callable[[], bool]
    redo: Callable[[], bool]


class UndoStack:
    """Done and undone commands; ``changed`` is emitted after every push, undo, redo and clear."""

    changed = Signal()

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = max(1, limit)
        self._done: list[Command] = []
        self._undone: list[Command] = []

    def push(self, command: Command) -> None:
        """Record a change just made (what was undone can no longer be redone)."""
        self._done.append(command)
        del self._done[: -self._limit]
        self._undone.clear()
        self.changed.emit()

    def undo(self) -> Command | None:
        """Undo the newest change; the command, or None when there is nothing (left) to undo."""
        while self._done:
            command = self._done.pop()
            if command.undo():
                self._undone.append(command)
                self.changed.emit()
                return command
        self.changed.emit()
        return None

    def redo(self) -> Command | None:
        """Redo the newest undone change; the command, or None."""
        while self._undone:
            command = self._undone.pop()
            if command.redo():
                self._done.append(command)
                self.changed.emit()
                return command
        self.changed.emit()
        return None

    def can_undo(self) -> bool:
        return bool(self._done)

    def can_redo(self) -> bool:
        return bool(self._undone)

    def undo_text(self) -> str:
        return self._done[-1].text if self._done else ""

    def redo_text(self) -> str:
        return self._undone[-1].text if self._undone else ""

    def clear(self) -> None:
        self._done.clear()
        self._undone.clear()
        self.changed.emit()
