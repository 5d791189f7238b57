"""The one action registry: every command's id, keys, menu text, F1 section and handler.

Menus, the toolbar and the F1 help are built from it, and a key can belong to one action only
(:class:`KeyConflictError` otherwise), so no key means two things. Actions with ``shortcut=True`` (the
default) become window-wide ``QAction`` shortcuts; image keys that widgets also use (arrows, Page
Up/Down, Home/End) are ``shortcut=False`` and are run by :meth:`ActionRegistry.dispatch` only when the
focused widget leaves the key unused (the key event reaches the main window).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence
from PySide6.QtWidgets import QWidget

from viewer.qt.style import icon

Binding = tuple[str, str, str]  # (section, keys, description), as listed by F1


class KeyConflictError(ValueError):
    """A key is already bound to another action."""


@dataclass(frozen=True)
class ActionSpec:
    """One row of the action table."""

    id: str
    text: str  # menu text (menus show the first key themselves)
    handler: Callable[[], object]
    keys: tuple[str, ...] = ()  # QKeySequence strings; the first is the one menus show
    section: str = "View"  # F1 section
    help: str = ""  # F1 description (default: ``text``)
    icon: str = ""
    tip: str = ""
    checkable: bool = False
    shortcut: bool = True  # False: run by dispatch() when the focused widget does not use the key
    keys_text: str = ""  # F1 keys column when the keys are better said in words


def key_name(key: str | QKeySequence) -> str:
    """Canonical (portable) text of a key sequence, for conflict checks."""
    seq = key if isinstance(key, QKeySequence) else QKeySequence(key)
    return seq.toString(QKeySequence.SequenceFormat.PortableText)


class ActionRegistry(QObject):
    """Creates one ``QAction`` per :class:`ActionSpec` on ``window`` and keeps the key table."""

    def __init__(self, window: QWidget) -> None:
        super().__init__(window)
        self._window = window
        self._specs: dict[str, ActionSpec] = {}
        self._actions: dict[str, QAction] = {}
        self._keys: dict[str, str] = {}  # canonical key -> action id

    def add(self, spec: ActionSpec) -> QAction:
        if spec.id in self._specs:  # a new owner (e.g. a re-attached controller) replaces the action
            self.remove(spec.id)
        names = [key_name(k) for k in spec.keys]
        for k, name in zip(spec.keys, names, strict=True):
            if not name:
                raise ValueError(f"Action {spec.id!r}: {k!r} is not a key sequence")
            owner = self._keys.get(name)
            if owner is not None:
                raise KeyConflictError(f"Key {name} of {spec.id!r} already belongs to {owner!r}")
        act = QAction(spec.text, self._window)
        act.setObjectName(f"action_{spec.id}")
        if spec.icon:
            act.setIcon(icon(spec.icon))
        act.setCheckable(spec.checkable)
        native = QKeySequence.SequenceFormat.NativeText
        shown = QKeySequence(spec.keys[0]).toString(native) if spec.keys else ""
        tip = spec.tip or spec.help or spec.text.rstrip("…")
        act.setToolTip(f"{tip} ({shown})" if shown and shown not in tip else tip)
        if spec.shortcut and spec.keys:
            act.setShortcuts([QKeySequence(k) for k in spec.keys])
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        act.triggered.connect(lambda _checked=False, s=spec: s.handler())
        self._window.addAction(act)
        self._specs[spec.id] = spec
        self._actions[spec.id] = act
        for name in names:
            self._keys[name] = spec.id
        return act

    def remove(self, action_id: str) -> None:
        """Drop an action and free its keys."""
        self._specs.pop(action_id)
        act = self._actions.pop(action_id)
        self._window.removeAction(act)
        act.deleteLater()
        self._keys = {k: v for k, v in self._keys.items() if v != action_id}

    def action(self, action_id: str) -> QAction:
        return self._actions[action_id]

    def spec(self, action_id: str) -> ActionSpec:
        return self._specs[action_id]

    def __contains__(self, action_id: object) -> bool:
        return action_id in self._specs

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(self._specs.values())

    def key_owner(self, key: str | QKeySequence) -> str | None:
        """The id of the action bound to ``key``, if any."""
        return self._keys.get(key_name(key))

    def dispatch(self, ev: QKeyEvent) -> bool:
        """Run the non-shortcut action bound to the key of ``ev``; True when one ran."""
        mods = ev.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        name = key_name(QKeySequence(ev.key() | mods.value))
        action_id = self._keys.get(name)
        if action_id is None or self._specs[action_id].shortcut:
            return False
        act = self._actions[action_id]
        if not act.isEnabled():
            return False
        act.trigger()
        return True

    def bindings(self) -> list[Binding]:
        """(section, keys, description) of every action with a key, for F1."""
        rows: list[Binding] = []
        for spec in self._specs.values():
            if not spec.keys:
                continue
            keys = spec.keys_text or " or ".join(
                QKeySequence(k).toString(QKeySequence.SequenceFormat.NativeText) for k in spec.keys
            )
            rows.append((spec.section, keys, spec.help or spec.text.rstrip("…")))
        return rows
