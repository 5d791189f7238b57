"""Shared helpers for the viewer's Qt tests (real windows, real files, real events; no mocks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication, QGraphicsItem, QWidget
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


def analysed_bleed_window(
    qtbot: QtBot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bleed: tuple[int, ...],
    n_slices: int = 6,
    size: tuple[int, int] = (1200, 800),
) -> MainWindow:
    """A window with a CT series whose ``bleed`` slices a tiny model with localisation maps flags, analysed:
    the AI marks, findings and corner text, and the maps' SEG on the Results overlay."""
    import viewer.qt.ai.controller as ai_controller
    from tests.core.inference_models import build_model, write_bleed_series
    from viewer.core.foreign.match import PlacedSeg
    from viewer.qt.results import ResultsController

    monkeypatch.setattr(ai_controller, "ai_results_dir", lambda: tmp_path / "ai-results")
    write_bleed_series(tmp_path / "ct", n_slices, bleed)
    window = make_window(qtbot, size)
    ai, results = window.ai_controller, window.results_controller
    assert ai is not None and isinstance(results, ResultsController)
    ai.set_model_path(build_model(tmp_path / "maps.onnx", maps_factor=2))
    ai.set_provider("cpu")
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    with qtbot.waitSignal(ai.task_objects_ready, timeout=60_000):
        ai.analyze()
    qtbot.waitUntil(lambda: any(isinstance(p, PlacedSeg) for p in results.placed), timeout=60_000)
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


def mouse_path(
    qtbot: QtBot,
    widget: QWidget,
    points: Sequence[QPoint],
    modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier,
) -> None:
    """A left-button drag through ``points`` (press at the first, release at the last), as a hand would
    draw a freehand outline; ``modifiers`` held throughout."""

    def send(kind: QEvent.Type, p: QPoint, button: Qt.MouseButton, buttons: Qt.MouseButton) -> None:
        ev = QMouseEvent(kind, QPointF(p), QPointF(widget.mapToGlobal(p)), button, buttons, modifiers)
        QApplication.sendEvent(widget, ev)

    left = Qt.MouseButton.LeftButton
    send(QEvent.Type.MouseButtonPress, points[0], left, left)
    for p in points[1:]:
        qtbot.wait(20)
        send(QEvent.Type.MouseMove, p, Qt.MouseButton.NoButton, left)
    qtbot.wait(20)
    send(QEvent.Type.MouseButtonRelease, points[-1], left, Qt.MouseButton.NoButton)


def screen_color(window: MainWindow, scene_pos: QPointF) -> QColor:
    """The colour on screen of the main view at a scene point (what the user sees there)."""
    view = window.view
    image = view.graphics.grab().toImage()
    p = view.graphics.mapFromScene(scene_pos)
    ratio = image.devicePixelRatio()
    return image.pixelColor(int(p.x() * ratio), int(p.y() * ratio))


OVERLAY_TURNS = ("none", "rotate", "flip", "zoom")  # the view changes an overlay must follow


def turn_view(window: MainWindow, turn: str) -> None:
    """Apply one of :data:`OVERLAY_TURNS` to the main view (each on top of the previous ones)."""
    view = window.view
    if turn == "rotate":
        view.rotate(1)
    elif turn == "flip":
        view.flip_horizontal()
    elif turn == "zoom":
        view.zoom_by(2.0)
        view.vb.translateBy(x=3.0, y=-2.0)


def overlay_offset(window: MainWindow, item: QGraphicsItem, row: int, col: int) -> float:
    """How far (scene units) an overlay item's pixel (row, col) lies from the image's same pixel."""
    view = window.view
    tile = QPointF(col - item.pos().x() + 0.5, row - item.pos().y() + 0.5)
    on_overlay = item.mapToScene(tile)
    on_image = view.image.mapToScene(QPointF(col + 0.5, row + 0.5))
    return max(abs(on_overlay.x() - on_image.x()), abs(on_overlay.y() - on_image.y()))
