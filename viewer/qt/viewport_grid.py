"""The viewport grid: one slice view per viewport of the viewer state's layout, the active one framed.

The grid renders :class:`~viewer.core.state.viewer_state.ViewerState`'s layout and active viewport and
sends intents back (a click makes a viewport active, a stack dropped from the browser goes into the
viewport under the cursor); each view is bound to its viewport of the state (its window, zoom and turn),
what stack and slice it shows is the main window's business.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QByteArray, QEvent, QMimeData, QObject, Signal
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QFrame, QGridLayout, QVBoxLayout, QWidget

from viewer.core.state.layout import Layout
from viewer.core.state.viewer_state import ViewerState
from viewer.qt.slice_view import SliceView

logger = logging.getLogger(__name__)

STACK_MIME = "application/x-slicewise-stack"  # a stack key dragged from the study browser
ACTIVE_COLOUR = "#f0a030"
IDLE_COLOUR = "#303338"
FRAME_PX = 2


def stack_mime(key: str) -> QMimeData:
    mime = QMimeData()
    mime.setData(STACK_MIME, QByteArray(key.encode("utf-8")))
    return mime


def stack_key_of(mime: QMimeData) -> str | None:
    if not mime.hasFormat(STACK_MIME):
        return None
    return bytes(mime.data(STACK_MIME).data()).decode("utf-8", "replace") or None


class ViewportFrame(QFrame):
    """One grid cell: a slice view in a frame that lights up when active; stack drops land here."""

    clicked = Signal()
    stack_dropped = Signal(str)

    def __init__(self, view: SliceView, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("viewportFrame")
        self.view = view
        self.setAcceptDrops(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(FRAME_PX, FRAME_PX, FRAME_PX, FRAME_PX)
        layout.addWidget(view)
        view.graphics.viewport().installEventFilter(self)
        self._active = False
        self.set_active(False)

    @property
    def active(self) -> bool:
        return self._active

    def set_active(self, active: bool) -> None:
        self._active = active
        colour = ACTIVE_COLOUR if active else IDLE_COLOUR
        self.setStyleSheet(f"#viewportFrame {{ border: {FRAME_PX}px solid {colour}; background: black; }}")

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in (QEvent.Type.MouseButtonPress, QEvent.Type.Wheel):
            self.clicked.emit()  # activate, and let the view handle the press as usual
        return False

    def dragEnterEvent(self, ev: QDragEnterEvent) -> None:
        if stack_key_of(ev.mimeData()) is not None:
            ev.acceptProposedAction()
        else:
            ev.ignore()  # files go on to the main window

    def dragMoveEvent(self, ev: QDragMoveEvent) -> None:
        if stack_key_of(ev.mimeData()) is not None:
            ev.acceptProposedAction()
        else:
            ev.ignore()

    def dropEvent(self, ev: QDropEvent) -> None:
        key = stack_key_of(ev.mimeData())
        if key is None:
            ev.ignore()
            return
        ev.acceptProposedAction()
        self.stack_dropped.emit(key)


class ViewportGrid(QWidget):
    """Slice views laid out as a :class:`Layout`; the views of the first viewports survive a switch."""

    activated = Signal(int)  # a viewport was clicked (or scrolled)
    stack_dropped = Signal(int, str)  # viewport, stack key
    view_created = Signal(object)  # SliceView: the window connects and configures it

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(0)
        self._frames: list[ViewportFrame] = []
        self._layout = Layout.ONE
        self._active = 0

    @property
    def layout_kind(self) -> Layout:
        return self._layout

    def views(self) -> list[SliceView]:
        return [f.view for f in self._frames]

    def frames(self) -> list[ViewportFrame]:
        return list(self._frames)

    def view(self, index: int) -> SliceView:
        return self._frames[index].view

    def index_of(self, view: object) -> int | None:
        for i, frame in enumerate(self._frames):
            if frame.view is view:
                return i
        return None

    def set_layout(self, layout: Layout) -> list[SliceView]:
        """Show ``layout``: views are added or removed at the end; returns the removed views (the caller
        clears them before they are deleted)."""
        n = layout.viewport_count
        while len(self._frames) < n:
            self._add_frame()
        removed = self._frames[n:]
        self._frames = self._frames[:n]
        for frame in removed:
            self._grid.removeWidget(frame)
            frame.hide()
            frame.deleteLater()
        for r in range(self._grid.rowCount()):
            self._grid.setRowStretch(r, 0)
        for c in range(self._grid.columnCount()):
            self._grid.setColumnStretch(c, 0)
        for frame, cell in zip(self._frames, layout.cells, strict=True):
            self._grid.removeWidget(frame)
            self._grid.addWidget(frame, cell.row, cell.column, cell.row_span, cell.column_span)
            frame.show()
        rows, cols = layout.grid
        for r in range(rows):
            self._grid.setRowStretch(r, 1)
        for c in range(cols):
            self._grid.setColumnStretch(c, 1)
        self._layout = layout
        self.set_active(min(self._active, n - 1))
        return [f.view for f in removed]

    def set_active(self, index: int) -> None:
        self._active = index
        many = len(self._frames) > 1
        for i, frame in enumerate(self._frames):
            frame.set_active(many and i == index)
            if frame.view.overlay.shares_screen != many:
                frame.view.overlay.shares_screen = many
                frame.view.overlay.update()

    def _add_frame(self) -> None:
        view = SliceView(self._state, len(self._frames))
        frame = ViewportFrame(view, self)
        frame.clicked.connect(lambda f=frame: self._on_clicked(f))
        frame.stack_dropped.connect(lambda key, f=frame: self._on_dropped(f, key))
        self._frames.append(frame)
        self.view_created.emit(view)

    def _on_clicked(self, frame: ViewportFrame) -> None:
        if frame in self._frames:
            self.activated.emit(self._frames.index(frame))

    def _on_dropped(self, frame: ViewportFrame, key: str) -> None:
        if frame in self._frames:
            self.stack_dropped.emit(self._frames.index(frame), key)
