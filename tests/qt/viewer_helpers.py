"""Shared helpers for the viewer's Qt tests (real windows, real files, real events; no mocks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QEvent, QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication, QWidget
from pytestqt.qtbot import QtBot

from viewer.qt.app import build_main_window
from viewer.qt.main_window import MainWindow

LOAD_TIMEOUT_MS = 60_000


def make_window(qtbot: QtBot, size: tuple[int, int] = (1200, 800), *, hang: bool = False) -> MainWindow:
    """A shown main window. ``hang``: a study opened into it is hung by its protocol (the app's default;
    off here because most tests are about one viewport, and the default head CT protocol shows two)."""
    window = build_main_window()
    window.settings.hang_on_open = hang
    window.hanging.act_hang_on_open.setChecked(hang)
    qtbot.addWidget(window)
    window.resize(*size)
    window.show()
    qtbot.waitExposed(window)
    return window


def open_and_wait(qtbot: QtBot, window: MainWindow, paths: Sequence[str | Path]) -> object:
    with qtbot.waitSignal(window.load_finished, timeout=LOAD_TIMEOUT_MS) as blocker:
        window.open_paths(paths)
    return blocker.args[0]


def drop_paths(qtbot: QtBot, target: QWidget, paths: Sequence[str | Path]) -> None:
    """A real drag-enter + drop of file URLs onto ``target``, as the platform would deliver it."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPointF(target.width() / 2, target.height() / 2)
    enter = QDragEnterEvent(
        pos.toPoint(),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted(), "the window refused the drag"
    drop = QDropEvent(
        pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(target, drop)
    assert drop.isAccepted()


def wheel(
    widget: QWidget,
    notches: int,
    modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier,
    pos: QPointF | None = None,
) -> None:
    """``notches`` wheel clicks (positive = away from the user), at the centre of ``widget``."""
    pos = pos or QPointF(widget.width() / 2, widget.height() / 2)
    ev = QWheelEvent(
        pos,
        QPointF(widget.mapToGlobal(pos.toPoint())),
        QPoint(0, 0),
        QPoint(0, 120 * notches),
        Qt.MouseButton.NoButton,
        modifiers,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(widget, ev)


def mouse_drag(
    qtbot: QtBot,
    widget: QWidget,
    start: QPoint,
    end: QPoint,
    button: Qt.MouseButton = Qt.MouseButton.LeftButton,
    modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier,
    steps: int = 6,
) -> None:
    """Press at ``start``, move in ``steps`` (pausing past pyqtgraph's move-rate limit), release at ``end``.
    """

    def send(kind: QEvent.Type, p: QPoint, buttons: Qt.MouseButton) -> None:
        ev = QMouseEvent(
            kind,
            QPointF(p),
            QPointF(widget.mapToGlobal(p)),
            button if kind != QEvent.Type.MouseMove else Qt.MouseButton.NoButton,
            buttons,
            modifiers,
        )
        QApplication.sendEvent(widget, ev)

    send(QEvent.Type.MouseButtonPress, start, button)
    for k in range(1, steps + 1):
        qtbot.wait(25)
        p = start + (end - start) * (k / steps)
        send(QEvent.Type.MouseMove, p, button)
    qtbot.wait(25)
    send(QEvent.Type.MouseButtonRelease, end, Qt.MouseButton.NoButton)


def mouse_path(qtbot: QtBot, widget: QWidget, points: Sequence[QPoint]) -> None:
    """A left-button drag through ``points`` (press at the first, release at the last), as a hand would
    draw a freehand outline."""

    def send(kind: QEvent.Type, p: QPoint, button: Qt.MouseButton, buttons: Qt.MouseButton) -> None:
        ev = QMouseEvent(
            kind, QPointF(p), QPointF(widget.mapToGlobal(p)), button, buttons, Qt.KeyboardModifier.NoModifier
        )
        QApplication.sendEvent(widget, ev)

    left = Qt.MouseButton.LeftButton
    send(QEvent.Type.MouseButtonPress, points[0], left, left)
    for p in points[1:]:
        qtbot.wait(20)
        send(QEvent.Type.MouseMove, p, Qt.MouseButton.NoButton, left)
    qtbot.wait(20)
    send(QEvent.Type.MouseButtonRelease, points[-1], left, Qt.MouseButton.NoButton)
