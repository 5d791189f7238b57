"""The slice view: a pyqtgraph ImageItem in a ViewBox with radiology mouse and keyboard bindings.

The view renders its viewport's :class:`~viewer.core.state.viewport.ViewportState` (window, inversion,
zoom/pan, rotation/flip; the main window gives it the stack, plane and slice) and turns the reader's
mouse and keys into intents on the :class:`~viewer.core.state.viewer_state.ViewerState` (``set_window``,
``set_zoom``, ``rotate`` ...), whose event then comes back to :meth:`SliceView.render_state`.

The ImageItem always holds the raw modality values (HU for CT); windowing is ``setLevels`` and
inversion a lookup table, so pixels are never rewritten for display.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPoint, QPointF, QRect, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QResizeEvent, QTransform
from PySide6.QtWidgets import QToolTip, QVBoxLayout, QWidget

from viewer.core.codes import code_in, describe
from viewer.core.constants import Window
from viewer.core.dicom.model import Patient, Stack, Study
from viewer.core.dicom.voi import VoiRamp
from viewer.core.errors import PixelDecodeError, ViewerStateError
from viewer.core.geometry.reslice import SlabMode
from viewer.core.geometry.stack import patient_position, slice_position_mm
from viewer.core.measure import NATIVE_PLANE, ImageRef, Measurement, Shape, Spacing, mpr_image_ref
from viewer.core.measure_store import MeasurementSet
from viewer.core.state.mpr import PlaneSlices
from viewer.core.state.viewer_state import ViewerState
from viewer.core.state.viewport import ViewportState
from viewer.core.undo import UndoStack
from viewer.core.windowing import drag_window
from viewer.qt.header_voi import header_ramp, ramp_lookup_table
from viewer.qt.measure_layer import MeasurementLayer
from viewer.qt.overlays import (
    OverlayWidget,
    demographics_line,
    format_date,
    format_window,
    lossy_marker,
    turned_orientation_labels,
)
from viewer.qt.reference_handles import ReferenceHandles, line_pen
from viewer.qt.texts import patient_name_text
from viewer.qt.tools import MeasurementGraphic
from viewer.qt.workers import log_failure

logger = logging.getLogger(__name__)

WHEEL_STEP = 120  # one notch of a standard mouse wheel
PAGE_STEP = 10
PREFETCH_CHECK = 10  # re-arm the volume's background prefetch when a neighbour this close is missing
FAST_DRAG_FACTOR = 4.0  # Ctrl+drag window/level speed-up
KEY_ZOOM_FACTOR = 1.25
EMPTY_HINT = (
    "Drop DICOM files, folders or a .zip here\nor use File › Open (Ctrl+O)"
    "\nor drag a series here from Studies"
)
_INVERTED_LUT = np.arange(255, -1, -1, dtype=np.uint8)
DRAW_TOOLS = {
    "ruler": Shape.RULER,
    "ellipse": Shape.ELLIPSE,
    "rectangle": Shape.RECTANGLE,
    "freehand": Shape.FREEHAND,
    "angle": Shape.ANGLE,
    "cobb": Shape.COBB,
    "arrow": Shape.ARROW,
}
CROSSHAIR_TOOL = "crosshair"  # left click / drag moves the crosshair point or turns a plane (MPR)
TOOLS = ("window", CROSSHAIR_TOOL, *DRAW_TOOLS)


def decode_failure_text(index: int, message: str) -> str:
    """The image-area text for a slice that cannot be shown: its code and what that means, with the
    decoder's own words on the following lines (wrapped by the overlay), e.g.
    ``Slice 4 cannot be shown: E-CORRUPT (damaged compressed data)``."""
    code = code_in(message)
    return f"Slice {index + 1} cannot be shown: {code} ({describe(code)})\n{message}"


def mpr_label(planes: PlaneSlices) -> str:
    """The overlay's plane line, e.g. ``Coronal`` or ``Sagittal  MIP 10 mm``."""
    text = planes.orientation.value.capitalize()
    slab = planes.slab
    if slab is not None and slab.thickness_mm > 0:
        text += f"  {SLAB_NAMES[slab.mode]} {slab.thickness_mm:g} mm"
    return text


SLAB_NAMES = {SlabMode.MIP: "MIP", SlabMode.MINIP: "MinIP", SlabMode.AVERAGE: "Average"}


@dataclass(frozen=True)
class ReferenceLine:
    """Another viewport's plane crossing this image: ends in pixel (row, col), and its colour."""

    key: str
    start: tuple[float, float]
    end: tuple[float, float]
    color: str
    turnable: bool = False  # a resliced (MPR) plane: the crosshair tool draws rotation handles on it


@dataclass(frozen=True)
class StackContext:
    """What the overlays need to know about the displayed stack besides its slices."""

    stack: Stack
    patient: Patient | None = None
    study: Study | None = None


class SliceViewBox(pg.ViewBox):
    """A ViewBox whose wheel scrolls slices and whose left-drag does window/level (or a tool)."""

    sigWheelSteps = Signal(int)
    sigWindowDrag = Signal(float, float, bool, bool)  # dx, dy (screen px since press), fast, finished
    sigToolDrag = Signal(QPointF, QPointF, bool)  # start, current (view coords), finished
    sigEditDrag = Signal(QPointF, bool)  # current (scene coords), finished: a measurement being moved
    sigClick = Signal(QPointF, QPoint, object, bool)  # scene pos, screen pos, Qt.MouseButton, double
    sigCrosshairDrag = Signal(QPointF, QPointF, bool)  # press, current (scene coords), finished

    def __init__(self) -> None:
        super().__init__(invertY=True, lockAspect=True, enableMenu=False)
        self.tool = "window"  # or one of DRAW_TOOLS
        self._wheel_accum = 0
        # a left press at this scene position grabs a measurement (then the drag edits it, whatever the tool)
        self.grab: Callable[[QPointF], bool] | None = None
        self._editing = False
        self.click_modifiers = Qt.KeyboardModifier.NoModifier  # of the last click, for sigClick's handlers
        self.drag_modifiers = Qt.KeyboardModifier.NoModifier  # at the last crosshair press (Ctrl: one plane)

    def wheelEvent(self, ev: Any, axis: Any = None) -> None:
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        self._wheel_accum += int(ev.delta())
        steps = int(self._wheel_accum / WHEEL_STEP)
        if steps:
            self._wheel_accum -= steps * WHEEL_STEP
            self.sigWheelSteps.emit(-steps)  # wheel towards the user = next slice
        ev.accept()

    def mouseDragEvent(self, ev: Any, axis: Any = None) -> None:
        shift = bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if ev.button() == Qt.MouseButton.LeftButton and not shift and self.tool == CROSSHAIR_TOOL:
            ev.accept()
            if ev.isStart():
                self.drag_modifiers = ev.modifiers()
            self.sigCrosshairDrag.emit(ev.buttonDownScenePos(), ev.scenePos(), bool(ev.isFinish()))
            return
        if ev.button() == Qt.MouseButton.LeftButton and not shift:
            ev.accept()
            if ev.isStart():
                self._editing = self.grab is not None and self.grab(ev.buttonDownScenePos())
            if self._editing:
                self._editing = not ev.isFinish()
                self.sigEditDrag.emit(ev.scenePos(), bool(ev.isFinish()))
                return
            if self.tool in DRAW_TOOLS:
                start = self.mapToView(ev.buttonDownPos())
                self.sigToolDrag.emit(start, self.mapToView(ev.pos()), bool(ev.isFinish()))
                return
            delta = ev.pos() - ev.buttonDownPos()
            fast = bool(ev.modifiers() & Qt.KeyboardModifier.ControlModifier)
            self.sigWindowDrag.emit(float(delta.x()), float(delta.y()), fast, bool(ev.isFinish()))
            return
        super().mouseDragEvent(ev, axis)  # shift+left / middle = pan, right = zoom

    def mouseClickEvent(self, ev: Any) -> None:
        ev.accept()  # no pyqtgraph context menu on the image: the measurements' own, on a measurement
        self.click_modifiers = ev.modifiers()
        if self.tool == CROSSHAIR_TOOL and ev.button() == Qt.MouseButton.LeftButton and not ev.double():
            self.drag_modifiers = ev.modifiers()
            self.sigCrosshairDrag.emit(ev.scenePos(), ev.scenePos(), True)
            return
        self.sigClick.emit(ev.scenePos(), ev.screenPos().toPoint(), ev.button(), bool(ev.double()))


def _display(vp: ViewportState) -> tuple[object, ...]:
    """The fields of a viewport state that the view renders itself (the rest is the main window's)."""
    return (vp.window, vp.invert, vp.scale, vp.pan, vp.rotation, vp.mirror)


class SliceView(QWidget):
    """Displays one stack slice at a time, with overlays, window/level, zoom, pan, cine and rulers: the
    view of viewport ``index`` of ``state``."""

    index_changed = Signal(int)
    window_changed = Signal(object)  # Window
    hover_text = Signal(str)
    playing_changed = Signal(bool)
    tool_changed = Signal(str)
    status_hint = Signal(str)  # what to do next (a half-drawn angle), for the status bar
    zoom_changed = Signal(float)
    shown_changed = Signal(int)  # the slice whose pixels are on screen (differs from index while decoding)
    crosshair_drag = Signal(object, object, bool)  # press, current: (row, col) image pixels; finished
    _slice_ready = Signal(object, int)  # (volume, index), emitted by the volume's request thread

    def __init__(self, state: ViewerState, index: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.viewport_index = index
        self._vp = ViewportState()  # the viewport state as last rendered
        self.setObjectName("imagePanel")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.graphics = pg.GraphicsView(self, background="k")
        self.graphics.setAcceptDrops(False)  # drops go to the main window
        self.graphics.viewport().setAcceptDrops(False)
        self.graphics.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.vb = SliceViewBox()
        self.graphics.setCentralItem(self.vb)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setAutoDownsample(False)
        self.vb.addItem(self.image)
        self.overlay = OverlayWidget(self.graphics)
        self.overlay.set_hint(EMPTY_HINT)
        self._extra_tip_shown = False  # the full AI text shown as a tooltip over its compact line
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics)

        self.volume: Any = None
        self.context: StackContext | None = None
        self._index = 0
        self._shown = -1  # the slice whose pixels are on screen, -1 for none
        self._data: np.ndarray | None = None
        self._window_from_data = False  # no header window: set one when the middle slice arrives
        self._default_window = Window(400, 40)
        self._header_ramp: VoiRamp | None = None  # the header's non-linear VOI (key 0), if any
        self._ramp: VoiRamp | None = None  # ... while it is shown (presets and dragging are linear)
        self._lut_key: tuple[VoiRamp | None, bool] = (None, False)  # what the lookup table was made for
        self._drag_start: Window | None = None
        self._spacing: tuple[float, float] | None = None
        self._turn = np.eye(2, dtype=int)  # rotation/flip on screen (the state's turn_matrix)
        self._labels_key: tuple[tuple[float, ...] | None, bytes] | None = None  # (IOP, turn) of the letters
        self._ctx_lines: tuple[StackContext, list[str], list[str]] | None = None  # _context_lines' answer
        self._last_scene_pos: QPointF | None = None  # the cursor, for the readout while scrolling
        self.layer = MeasurementLayer(self)  # the shown image's measurements, drawing and editing them
        self._ref_items: dict[str, pg.PlotCurveItem] = {}  # other viewports' planes, by viewport key
        self._ref_lines: dict[str, ReferenceLine] = {}
        self.handles = ReferenceHandles(self.image)  # rotation handles on the lines (crosshair tool)
        self.hovered_line: str | None = None  # the line under the mouse, drawn solid and thicker
        self.presets: dict[str, Any] = {}
        self.wl_sensitivity = 1.0
        self.cine_timer = QTimer(self)
        self.cine_timer.timeout.connect(self._cine_tick)
        self.cine_fps = 15
        self.show_phi = True

        self.vb.sigWheelSteps.connect(lambda n: self.set_index(self._index + n))
        self._slice_ready.connect(self._on_slice_ready, Qt.ConnectionType.QueuedConnection)
        self.vb.sigWindowDrag.connect(self._on_window_drag)
        self.vb.sigToolDrag.connect(self.layer.tool_drag)
        self.vb.sigEditDrag.connect(self.layer.edit_drag)
        self.vb.sigClick.connect(self.layer.click)
        self.vb.sigCrosshairDrag.connect(
            lambda a, b, done: self.crosshair_drag.emit(self.pixel_at(a), self.pixel_at(b), done)
        )
        self._keep_image = False  # swap_planes: keep the old plane on screen until the new one arrives
        self.vb.grab = self.layer.grab
        self.vb.sigRangeChanged.connect(self._on_range_changed)
        self.vb.sigRangeChangedManually.connect(self._on_user_range)
        self.vb.sigResized.connect(self._on_resized)
        self.graphics.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.graphics.viewport().installEventFilter(self)

    # --- stack -----------------------------------------------------------------------------------
    def set_volume(self, volume: Any, context: StackContext, index: int = 0) -> None:
        """Show ``volume`` (a StackVolume, or MPR planes) at ``index``, as the viewport's state says
        (window, zoom, turn); the measurements shown are the new image's."""
        self.stop_cine()
        self.layer.drop()
        self._keep_image = False
        self.volume = volume
        self.context = context
        stack = context.stack
        first = stack.slices[0]
        planes = self.planes()
        self._spacing = planes.plane(0).spacing if planes is not None else first.pixel_spacing
        self._vp = vp = self.state.viewport(self.viewport_index)
        self._turn = vp.turn()
        self._apply_transform()
        self._window_from_data = False
        try:
            self._default_window = self._initial_window(volume)
        except Exception as exc:
            log_failure(logger, logging.WARNING, "No default window for this stack; using 400/40", exc)
            self._default_window = Window(400, 40)
        self._header_ramp = header_ramp(stack)
        self._ramp = self._header_ramp if vp.window is None else None
        self.wl_sensitivity = 1.0 if stack.modality == "CT" else max(self._default_window.width / 256.0, 0.01)
        self.overlay.set_hint("")
        self._update_lut()
        self._index = -1
        self._shown = -1
        self.set_index(index, force=True)
        self._apply_zoom()
        self.window_changed.emit(self.current_window())

    def replace_volume(self, volume: Any, context: StackContext, index: int) -> None:
        """Show ``volume``, the shown stack grown by more slices (a retrieve's preview as the series
        arrives), at ``index``: window, zoom, pan and turn stay as on screen, and the image on screen
        stays until slice ``index`` of the new volume is read (no placeholder flashing in between)."""
        self.stop_cine()
        self.layer.drop()
        self.volume = volume
        self.context = context
        if self._window_from_data:  # the old volume's middle slice never came: ask the new one's
            self._default_window = self._initial_window(volume)
        self._keep_image = True
        self._index = -1
        self._shown = -1
        self.set_index(index, force=True)

    def _initial_window(self, volume: Any) -> Window:
        """The header (or CT) window; else from the middle slice's data when that needs no decoder, else
        400/40 until the middle slice arrives from the volume's request thread (never decoded here)."""
        known = volume.known_window()
        if known is not None or not len(volume):
            return known or Window(400, 40)
        mid = len(volume) // 2
        if volume.cached(mid) is not None or not volume.needs_decoder(mid):
            return volume.default_window()
        self._window_from_data = True
        volume.request_slice(mid, lambda i, v=volume: self._slice_ready.emit(v, i), requester=id(self))
        return Window(400, 40)

    def swap_planes(self, planes: PlaneSlices, index: int) -> None:
        """Show other MPR planes of the shown stack (the crosshair turned): window, zoom and pan stay, and
        the plane on screen stays until the new one is resliced (no placeholder flashing while dragging).
        A plane of another size (standard -> oblique) keeps the scale and the image centre on screen (both
        planes are centred on the volume), so the anatomy does not jump."""
        old_rect = self.image_rect()
        self.layer.drop()
        self.volume = planes
        self._spacing = planes.plane(0).spacing
        self._apply_transform()
        self._keep_image = True
        # the kept pixels are the old plane's: the new plane is shown when it arrives even at the same index
        self._shown = -1
        self._index = max(0, min(len(planes) - 1, int(index)))  # valid for the overlay while the range moves
        new_rect = self.image_rect()
        if new_rect != old_rect:  # the same scale and pan from the (new) image centre, fitted or not
            d = new_rect.center() - old_rect.center()
            (x0, x1), (y0, y1) = self.vb.viewRange()
            self.vb.setRange(xRange=(x0 + d.x(), x1 + d.x()), yRange=(y0 + d.y(), y1 + d.y()), padding=0)
        self.set_index(index, force=True)

    def pixel_at(self, scene_pos: QPointF) -> tuple[float, float]:
        """(row, col) image pixel (fractional, pixel centres at integers) under a scene position."""
        p = self.image.mapFromScene(scene_pos)
        return (float(p.y()) - 0.5, float(p.x()) - 0.5)

    def scene_at(self, row: float, col: float) -> QPointF:
        """The scene (view widget) position of image pixel (row, col): for distances in screen pixels."""
        return self.image.mapToScene(QPointF(col + 0.5, row + 0.5))

    def clear(self) -> None:
        self.stop_cine()
        self.layer.drop()
        self.set_reference_lines([])
        self.volume = None
        self.context = None
        self._data = None
        self._shown = -1
        self._vp = ViewportState()
        self.image.clear()
        for corner in ("top_left", "top_right", "bottom_left", "bottom_right"):
            self.overlay.set_corner(corner, [])
        self.overlay.set_phi_lines([])
        self.overlay.set_orientation({})
        self._labels_key = None
        self.overlay.set_hint(EMPTY_HINT)

    def planes(self) -> PlaneSlices | None:
        """The MPR planes shown (None for the stack's own slices)."""
        return self.volume if isinstance(self.volume, PlaneSlices) else None

    def native_index(self) -> int:
        """The stack slice nearest what is shown: :attr:`index` for the stack's own slices, else the slice
        nearest the centre of the shown plane."""
        planes = self.planes()
        if planes is None:
            return self._index
        return planes.geometry.nearest_slice(planes.plane(self._index).center)

    def image_size(self) -> tuple[int, int]:
        """(rows, columns) of the shown images."""
        planes = self.planes()
        if planes is not None:
            return planes.plane(0).size
        if self.context is None:
            return (1, 1)
        return (self.context.stack.rows, self.context.stack.columns)

    def is_color(self) -> bool:
        return self._data is not None and self._data.ndim == 3

    # --- slice navigation ------------------------------------------------------------------------
    @property
    def index(self) -> int:
        return self._index

    def count(self) -> int:
        return len(self.volume) if self.volume is not None else 0

    def current_data(self) -> np.ndarray | None:
        return self._data

    @property
    def shown_index(self) -> int:
        """The slice whose pixels are on screen: :attr:`index` once decoded, meanwhile the nearest
        decoded slice (or -1 with a "decoding…" placeholder)."""
        return self._shown

    def set_index(self, index: int, force: bool = False) -> None:
        """Go to slice ``index``. Never waits for a decoder: a slice that needs one and is not decoded
        yet is requested from the volume's request thread, the nearest decoded slice (or a placeholder)
        is shown meanwhile, and the slice fills in when it arrives (:meth:`_on_slice_ready`)."""
        if self.volume is None:
            return
        n = len(self.volume)
        index = max(0, min(n - 1, int(index)))
        if index == self._index and not force:
            return
        self._index = index
        volume = self.volume
        if volume.cached(index) is not None or index in volume.bad_slices or not volume.needs_decoder(index):
            self._show(index)
        else:
            data = volume.request_slice(
                index, lambda i, v=volume: self._slice_ready.emit(v, i), requester=id(self)
            )
            if data is not None:
                self._show(index)
            else:
                self._show_stand_in(index)
        if self._needs_prefetch(index):
            volume.prefetch(index)
        self._update_overlay()
        self._refresh_hover()
        self.index_changed.emit(index)

    def _show(self, index: int) -> None:
        """Put slice ``index`` on screen (decoded already, or plain bytes on disk), or say it is bad."""
        try:
            data = self.volume.get_slice(index)
        except PixelDecodeError as exc:
            logger.warning("Slice %d could not be decoded (%s)", index, code_in(str(exc)))
            self._data = None
            self.image.clear()
            self.overlay.set_hint(decode_failure_text(index, str(exc)))
        else:
            if self.overlay._hint:
                self.overlay.set_hint("")
            self._set_image(data)
        self._set_shown(index)

    def _show_stand_in(self, index: int) -> None:
        """While slice ``index`` decodes: the nearest decoded slice, else a placeholder."""
        near = self.volume.nearest_cached(index)
        data = self.volume.cached(near) if near is not None else None
        if (near is None or data is None) and self._keep_image and self._data is not None:
            return  # turned planes (swap_planes): the previous plane stays until this one is resliced
        if near is None or data is None:
            self._data = None
            self.image.clear()
            self.overlay.set_hint(
                "Loading the volume for MPR…" if self.planes() is not None else f"Decoding slice {index + 1}…"
            )
            self._set_shown(-1)
            return
        if self.overlay._hint:
            self.overlay.set_hint("")
        self._set_image(data)
        self._set_shown(near)

    def _set_image(self, data: np.ndarray) -> None:
        """Show ``data``: uint8 RGB, or modality values (windowing is ``setLevels``, the pixels stay
        as they are). ``_data`` keeps the volume's array (int16 or float32) for the HU readout; an int16
        slice is handed to pyqtgraph as float32, its fast path (int16 takes its generic ``makeARGB``
        path: about 3x slower per slice change)."""
        self._data = data
        if data.ndim == 3:
            self.image.setImage(data, autoLevels=False, levels=(0, 255))
            return
        shown = data.astype(np.float32) if data.dtype.kind in "iu" else data
        self.image.setImage(shown, autoLevels=False, levels=self._levels())

    def _set_shown(self, index: int) -> None:
        if index != self._shown:
            self._shown = index
            self.shown_changed.emit(index)
        self.layer.sync()

    def _on_slice_ready(self, volume: Any, index: int) -> None:
        """A requested slice is decoded (or known bad): show it if it is still the one wanted."""
        if volume is not self.volume:
            return
        if self._window_from_data and index == len(volume) // 2:
            self._window_from_data = False
            self._default_window = volume.default_window()  # the middle slice is cached now
            if self._vp.window is None:  # the stack's own window is shown (the reader has not changed it)
                self._apply_window()
                self._update_overlay()
        if index == self._index and self._shown != index:
            self._show(index)
            self._update_overlay()
            self._refresh_hover()

    def _needs_prefetch(self, index: int) -> bool:
        """True unless the neighbours within PREFETCH_CHECK slices are already decoded."""
        cached = getattr(self.volume, "cached", None)
        if cached is None:
            return True
        n = len(self.volume)
        for i in (index + 1, index - 1, index + PREFETCH_CHECK, index - PREFETCH_CHECK):
            if 0 <= i < n and cached(i) is None and i not in self.volume.bad_slices:
                return True
        return False

    def step(self, delta: int) -> None:
        self.set_index(self._index + delta)

    # --- rendering the viewport state ----------------------------------------------------------
    def render_state(self) -> None:
        """Show the viewport state's window, inversion, zoom/pan and turn as the state has them now: only
        what changed since the last render (a scroll changes none of them: one tuple comparison here)."""
        if self.context is None or self.viewport_index >= self.state.layout.viewport_count:
            return
        old, vp = self._vp, self.state.viewport(self.viewport_index)
        self._vp = vp
        if _display(vp) == _display(old):
            return
        turned = (vp.rotation, vp.mirror) != (old.rotation, old.mirror)
        if turned:
            self._turn = vp.turn()
            self._apply_transform()
        if (vp.window, vp.invert) != (old.window, old.invert):
            self._apply_window()
        if turned or (vp.scale, vp.pan) != (old.scale, old.pan):
            self._apply_zoom()
        self._update_overlay()

    def _intent(self, change: Callable[[ViewerState, int], None]) -> None:
        """Send an intent about this view's viewport (nothing while the view shows nothing); one the state
        refuses (an empty viewport, a zoom out of range) changes nothing and says why in the status bar."""
        if self.context is None:
            return
        try:
            change(self.state, self.viewport_index)
        except ViewerStateError as exc:
            logger.info("View change refused: %s", type(exc).__name__)
            self.status_hint.emit(str(exc))

    def _synced(self) -> bool:
        """Window and zoom sync copy the reader's changes in the active viewport only."""
        return self.viewport_index == self.state.active

    # --- window / level --------------------------------------------------------------------------
    def current_window(self) -> Window:
        """The window shown (the stack's own while the state says None)."""
        return self._vp.window if self._vp.window is not None else self._default_window

    def default_window(self) -> Window:
        return self._default_window

    def set_window(self, window: Window, *, header: bool = False) -> None:
        """Intent: show a linear window (``header``: the stack's own window instead, with the header's VOI
        when it is not linear)."""
        chosen = None if header else Window(max(1.0, float(window.width)), float(window.level))
        self._intent(lambda state, i: state.set_window(i, chosen, sync=self._synced()))

    def _apply_window(self) -> None:
        ramp = self._header_ramp if self._vp.window is None else None
        lut = (ramp, self.inverted)
        if ramp is not self._ramp or lut != self._lut_key:
            self._ramp = ramp
            self._update_lut()
        if self._data is not None and self._data.ndim == 2:
            self.image.setLevels(self._levels())
        self.window_changed.emit(self.current_window())

    def _levels(self) -> tuple[float, float]:
        return self._ramp.levels if self._ramp is not None else self.current_window().levels

    def apply_preset(self, name: str) -> None:
        window = self.presets.get(name)
        if window is None:
            raise ValueError(f"Unknown window preset {name!r}; known: {', '.join(self.presets)}")
        self.set_window(window)

    def reset_window(self) -> None:
        self.set_window(self._default_window, header=True)

    def _on_window_drag(self, dx: float, dy: float, fast: bool, finished: bool) -> None:
        if self.volume is None or self.is_color():
            return
        if self._drag_start is None:
            self._drag_start = self.current_window()
        factor = FAST_DRAG_FACTOR if fast else 1.0
        self.set_window(drag_window(self._drag_start, dx, dy, sensitivity=self.wl_sensitivity * factor))
        if finished:
            self._drag_start = None

    @property
    def inverted(self) -> bool:
        """True when the display is inverted (MONOCHROME1 XOR the reader's invert toggle)."""
        base = bool(getattr(self.volume, "invert_display", False)) if self.volume is not None else False
        return base != self._vp.invert

    def toggle_invert(self) -> None:
        self._intent(lambda state, i: state.toggle_invert(i))

    def _update_lut(self) -> None:
        self._lut_key = (self._ramp, self.inverted)
        if self._ramp is not None:
            self.image.setLookupTable(ramp_lookup_table(self._ramp, inverted=self.inverted))
        else:
            self.image.setLookupTable(_INVERTED_LUT if self.inverted else None)

    # --- zoom / pan ------------------------------------------------------------------------------
    def image_rect(self) -> QRectF:
        """The image's extent in view coordinates (mm, or pixels without PixelSpacing), turned."""
        if self.context is None:
            return QRectF(0, 0, 1, 1)
        rows, cols = self.image_size()
        return self._image_transform().mapRect(QRectF(0, 0, cols, rows))

    def _image_transform(self) -> QTransform:
        """Pixel -> view: scale by the pixel spacing, then the display turn."""
        row_sp, col_sp = self._spacing if self._spacing else (1.0, 1.0)
        m = self._turn
        turn = QTransform(float(m[0, 0]), float(m[1, 0]), float(m[0, 1]), float(m[1, 1]), 0.0, 0.0)
        return QTransform.fromScale(col_sp, row_sp) * turn

    def _apply_transform(self) -> None:
        self.image.setTransform(self._image_transform())

    def _apply_zoom(self) -> None:
        """Fit, or show the state's scale and pan."""
        if self._vp.scale is None:
            self.vb.setRange(rect=self.image_rect(), padding=0.02)
        else:
            self._frame(self._vp.scale, *self._vp.pan)

    def _frame(self, per_px: float, dx: float, dy: float) -> None:
        """Show ``per_px`` view units (mm, or pixels without spacing) per screen pixel, centred ``dx, dy``
        from the image centre (see :meth:`view_frame`)."""
        centre = self.image_rect().center()
        cx, cy = centre.x() + dx, centre.y() + dy
        w = max(float(self.vb.width()), 1.0) * per_px
        h = max(float(self.vb.height()), 1.0) * per_px
        self.vb.setRange(xRange=(cx - w / 2, cx + w / 2), yRange=(cy - h / 2, cy + h / 2), padding=0)

    def _zoom_to(self, per_px: float, pan: tuple[float, float] | None = None) -> None:
        """Intent: ``per_px`` view units per screen pixel (pan: the state's, unless given)."""
        self._intent(lambda state, i: state.set_zoom(i, per_px, pan, sync=self._synced()))

    # --- rotate / flip ---------------------------------------------------------------------------
    def display_turn(self) -> np.ndarray:
        """The 2×2 integer matrix taking image (column, row) directions to screen (x, y)."""
        return self._turn.copy()

    def rotate(self, quarter_turns: int = 1) -> None:
        """Intent: rotate the display by 90° clockwise per quarter turn (negative: anticlockwise)."""
        self._intent(lambda state, i: state.rotate(i, quarter_turns))

    def flip_horizontal(self) -> None:
        self._intent(lambda state, i: state.flip(i, horizontal=True))

    def flip_vertical(self) -> None:
        self._intent(lambda state, i: state.flip(i, horizontal=False))

    def fit(self) -> None:
        """Intent: fit the image to the viewport (F)."""
        self._intent(lambda state, i: state.fit(i, sync=self._synced()))

    @property
    def fitted(self) -> bool:
        return self._vp.scale is None

    def _on_user_range(self, *args: Any) -> None:
        """Zoomed or panned with the mouse (right or middle drag, Ctrl+wheel): the state learns the new
        scale and pan (recorded as rendered first: the range is already on screen)."""
        if self.context is None:
            return
        per_px, dx, dy = self.view_frame()
        self._vp = replace(self._vp, scale=per_px, pan=(dx, dy))
        self._zoom_to(per_px, (dx, dy))

    def _on_resized(self, *args: Any) -> None:
        """A viewport resized (layout switch, window resize): a fitted image is fitted again, a zoomed one
        keeps its scale and centre."""
        if self.context is not None:
            self._apply_zoom()

    def one_to_one(self) -> None:
        """Intent: one image pixel per screen pixel, centred on the current view centre."""
        if self.context is not None:
            self._zoom_to(self._screen_spacing()[0], self.view_frame()[1:])

    def zoom_by(self, factor: float) -> None:
        """Intent: magnify by ``factor`` about the view centre."""
        if self.context is not None:
            per_px, dx, dy = self.view_frame()
            self._zoom_to(per_px / factor, (dx, dy))

    def zoom_factor(self) -> float:
        """Screen pixels per image pixel (1.0 = 1:1)."""
        (x0, x1), _ = self.vb.viewRange()
        x_sp = self._screen_spacing()[0]
        span = x1 - x0
        return float(self.vb.width() / span * x_sp) if span > 0 else 1.0

    def view_frame(self) -> tuple[float, float, float]:
        """(view units per screen pixel, view centre's x and y offset from the image centre): the state's
        scale and pan of what is on screen."""
        (x0, x1), (y0, y1) = self.vb.viewRange()
        centre = self.image_rect().center()
        per_px = (x1 - x0) / max(float(self.vb.width()), 1.0)
        return per_px, (x0 + x1) / 2 - centre.x(), (y0 + y1) / 2 - centre.y()

    def _screen_spacing(self) -> tuple[float, float]:
        """View units per image pixel along the screen's x and y (the turn may swap rows and columns)."""
        row_sp, col_sp = self._spacing if self._spacing else (1.0, 1.0)
        return (col_sp, row_sp) if self._turn[0, 0] != 0 else (row_sp, col_sp)

    def reset_view(self) -> None:
        """Intent (R): fit, the stack's own window, no inversion, no turn (measurements stay: Del removes
        them)."""
        self._intent(lambda state, i: state.reset_view(i, sync=self._synced()))

    def _on_range_changed(self, *args: Any) -> None:
        self._update_overlay()
        self.layer.on_zoom()
        self.zoom_changed.emit(self.zoom_factor())

    # --- cine ------------------------------------------------------------------------------------
    def toggle_cine(self) -> None:
        if self.cine_timer.isActive():
            self.stop_cine()
        elif self.volume is not None and len(self.volume) > 1:
            self.cine_timer.start(max(1, round(1000 / self.cine_fps)))
            self.playing_changed.emit(True)

    def stop_cine(self) -> None:
        if self.cine_timer.isActive():
            self.cine_timer.stop()
            self.playing_changed.emit(False)

    def set_cine_fps(self, fps: int) -> None:
        self.cine_fps = max(1, int(fps))
        if self.cine_timer.isActive():
            self.cine_timer.setInterval(max(1, round(1000 / self.cine_fps)))

    def _cine_tick(self) -> None:
        n = self.count()
        if n:
            self.set_index((self._index + 1) % n)

    # --- tools and measurements ---------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"Unknown tool {tool!r}; known: {', '.join(TOOLS)}")
        if tool != self.vb.tool:
            self.layer.cancel_drawing()
        self.vb.tool = tool
        self.graphics.viewport().setCursor(
            Qt.CursorShape.CrossCursor if tool in DRAW_TOOLS or tool == CROSSHAIR_TOOL
            else Qt.CursorShape.ArrowCursor
        )
        self.set_hovered_line(None)
        self._update_handles()
        self.tool_changed.emit(tool)

    @property
    def tool(self) -> str:
        return self.vb.tool

    def draw_shape(self) -> Shape | None:
        """The shape the current tool draws (None: window/level)."""
        return DRAW_TOOLS.get(self.vb.tool)

    def spacing(self) -> Spacing:
        """The shown image's pixel spacing (row, column) in mm; None when it has none."""
        return self._spacing

    def show_hint(self, text: str) -> None:
        self.status_hint.emit(text)

    @property
    def measurement_set(self) -> MeasurementSet:
        return self.layer.measurements

    def set_measurement_set(self, measurements: MeasurementSet, history: UndoStack | None = None) -> None:
        """Share ``measurements`` (the window's, with every viewport) and the window's undo ``history``
        instead of this view's own."""
        self.layer.set_measurement_set(measurements, history)

    def image_ref(self, index: int | None = None) -> ImageRef | None:
        """The image a measurement on slice ``index`` (default: the shown one) belongs to."""
        ctx = self.context
        i = self._shown if index is None else index
        if ctx is None or self.volume is None or i < 0:
            return None
        st = ctx.stack
        planes = self.planes()
        if planes is not None:
            return mpr_image_ref(
                st.study_instance_uid, st.series_instance_uid, planes.orientation, planes.plane(i), i
            )
        info = st.slices[i]
        return ImageRef(st.study_instance_uid, st.series_instance_uid, NATIVE_PLANE, info.sop_instance_uid,
                        info.source.frame)

    def measurements(self) -> list[MeasurementGraphic]:
        """The measurements drawn: those of the shown image only."""
        return list(self.layer.graphics)

    def delete_measurement(self) -> Measurement | None:
        """Del: delete the selected measurement, else the newest of the shown image (None when none)."""
        return self.layer.delete()

    def clear_measurements(self) -> None:
        """Delete every measurement of the shown image (one undo step)."""
        self.layer.delete_all()

    def measurement_label(self, m: Measurement) -> str:
        return self.layer.label(m)

    # --- reference lines -------------------------------------------------------------------------
    def set_reference_lines(self, lines: Sequence[ReferenceLine]) -> None:
        """Draw other viewports' planes as lines: segments in this image's pixel coordinates (row, col of
        pixel centres), children of the image item so they follow zoom, pan, rotation and flips."""
        wanted = {line.key: line for line in lines}
        for key in [k for k in self._ref_items if k not in wanted]:
            self._ref_lines.pop(key, None)
            item = self._ref_items.pop(key)
            item.setParentItem(None)
            if item.scene() is not None:
                item.scene().removeItem(item)
        for key, line in wanted.items():
            if self._ref_lines.get(key) == line:
                continue  # unchanged (the viewport that moved was parallel, or another one)
            self._ref_lines[key] = line
            (r0, c0), (r1, c1) = line.start, line.end
            xs, ys = [c0 + 0.5, c1 + 0.5], [r0 + 0.5, r1 + 0.5]  # pixel centres of the image item
            item = self._ref_items.get(key)
            if item is None:
                item = pg.PlotCurveItem(xs, ys, pen=line_pen(line.color, key == self.hovered_line))
                item.setParentItem(self.image)
                self._ref_items[key] = item
            else:
                item.setData(xs, ys)
        if self.hovered_line is not None and self.hovered_line not in self._ref_lines:
            self.hovered_line = None
        self._update_handles()

    def _update_handles(self) -> None:
        turnable = {
            k: ((line.start, line.end), line.color) for k, line in self._ref_lines.items() if line.turnable
        }
        self.handles.update(turnable, self.vb.tool == CROSSHAIR_TOOL)

    def set_hovered_line(self, key: str | None) -> None:
        """Draw reference line ``key`` solid and thicker (the crosshair tool's line under the mouse), the
        others dashed."""
        if key == self.hovered_line:
            return
        for k in (self.hovered_line, key):
            line, item = self._ref_lines.get(k or ""), self._ref_items.get(k or "")
            if line is not None and item is not None:
                item.setPen(line_pen(line.color, k == key))
        self.hovered_line = key

    def reference_lines(self) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
        """The drawn reference lines: key -> ((row, col), (row, col)) of their ends."""
        out = {}
        for key, item in self._ref_items.items():
            xs, ys = item.getData()
            out[key] = ((float(ys[0]) - 0.5, float(xs[0]) - 0.5), (float(ys[1]) - 0.5, float(xs[1]) - 0.5))
        return out

    # --- overlays and hover ----------------------------------------------------------------------
    def set_show_phi(self, show: bool) -> None:
        self.show_phi = show
        self.overlay.show_phi = show
        self.overlay.update()

    def _update_overlay(self) -> None:
        ctx = self.context
        if ctx is None or self.volume is None:
            return
        st = ctx.stack
        planes = self.planes()
        info = st.slices[self.native_index()]
        phi, study_lines = self._context_lines(ctx)
        se = f"Se {st.series_number}" if st.series_number is not None else ""
        top_right = ["  ".join(v for v in (st.modality, se, st.label) if v)]
        count = len(planes) if planes is not None else len(st)
        bottom_left = [f"Im {self._index + 1} / {count}"]
        if self._shown != self._index:
            shown = f"showing {self._shown + 1}, " if self._shown >= 0 else ""
            what = "decoding"
            if planes is not None:
                what = "reslicing" if planes.loader.ready() else "loading the volume for"
            bottom_left.append(f"({shown}{what} {self._index + 1}…)")
        parts = []
        if planes is not None:
            top_right.append(mpr_label(planes))
            parts.append(f"Pos {planes.position(self._index):.1f} mm")
            slab = planes.slab
            if slab is not None and slab.thickness_mm > 0:
                parts.append(f"Thk {slab.thickness_mm:g} mm")
            else:
                parts.append(f"Step {planes.grid.step:.2g} mm")
            bottom_left.extend(planes.warnings())
        else:
            pos = slice_position_mm(st, self._index)
            if pos is not None:
                parts.append(f"Pos {pos:.1f} mm")
            if info.slice_thickness is not None:
                parts.append(f"Thk {info.slice_thickness:g} mm")
        if parts:
            bottom_left.append("   ".join(parts))
        if self._spacing is None:
            bottom_left.append("No valid PixelSpacing: sizes in pixels")
        lossy = lossy_marker(info)
        if lossy:
            top_right.append(lossy)
        bottom_right = []
        if not self.is_color():
            label = self._ramp.label if self._ramp is not None else format_window(self.current_window())
            bottom_right.append(label + ("  INV" if self.inverted else ""))
        bottom_right.append(f"Zoom {self.zoom_factor():.2f}×")
        (x0, x1), _ = self.vb.viewRange()  # view units are mm when the slice has a valid PixelSpacing
        self.overlay.set_scale((x1 - x0) / self.vb.width() if self._spacing and self.vb.width() > 0 else None)
        self.overlay.set_phi_lines(phi)
        dated = ctx.study is not None and bool(ctx.study.date)  # the date is the last study line
        keep = study_lines[-1:] if dated else []
        self.overlay.set_corner("top_left", [], identifying=study_lines, compact=keep)
        series_line = st.series_description or "(no description)"
        self.overlay.set_corner("top_right", top_right, identifying=[series_line])
        self.overlay.set_corner("bottom_left", bottom_left)
        self.overlay.set_corner("bottom_right", bottom_right)
        iop = planes.plane(self._index).iop if planes is not None else info.orientation
        key = (tuple(iop) if iop is not None else None, self._turn.tobytes())
        if key != self._labels_key:  # the same on most slice changes: the letters are not worked out again
            self._labels_key = key
            self.overlay.set_orientation(turned_orientation_labels(iop, self._turn))

    def _context_lines(self, ctx: StackContext) -> tuple[list[str], list[str]]:
        """The patient lines (PHI) and the identifying study lines of the overlay: worked out once per
        stack context, not on every slice change."""
        if self._ctx_lines is not None and self._ctx_lines[0] is ctx:
            return self._ctx_lines[1], self._ctx_lines[2]
        phi: list[str] = []
        study_lines: list[str] = []  # identifying: left out of de-identified exports
        if ctx.patient is not None:
            phi = [patient_name_text(ctx.patient.name), f"ID {ctx.patient.patient_id}"]
            demo = demographics_line(
                ctx.patient, ctx.study.patient_age if ctx.study is not None else "", ctx.study
            )
            if demo:
                phi.append(demo)
        if ctx.study is not None:
            if ctx.study.description:
                study_lines.append(ctx.study.description)
            if ctx.study.date:
                study_lines.append(format_date(ctx.study.date))
        self._ctx_lines = (ctx, phi, study_lines)
        return phi, study_lines

    def hover_info(self, scene_pos: QPointF) -> str:
        """Status text for a scene position: pixel, value (HU for CT) and patient position in mm."""
        if self._data is None or self.context is None:
            return ""
        p = self.image.mapFromScene(scene_pos)
        col, row = int(np.floor(p.x())), int(np.floor(p.y()))
        h, w = self._data.shape[:2]
        if not (0 <= row < h and 0 <= col < w):
            return ""
        value = self._data[row, col]
        if np.ndim(value) == 0:
            unit = "HU" if self.context.stack.modality == "CT" else "Value"
            val_text = f"{unit} {float(value):.0f}"
        else:
            val_text = "RGB " + ",".join(str(int(v)) for v in value)
        text = f"x {col}  y {row}   {val_text}"
        planes = self.planes()
        if planes is not None:
            p3 = planes.plane(self._shown if self._shown >= 0 else self._index).pixel_to_patient(
                np.array(row), np.array(col))
            mm: tuple[float, float, float] | None = (float(p3[0]), float(p3[1]), float(p3[2]))
        else:
            info = self.context.stack.slices[self._shown if self._shown >= 0 else self._index]
            mm = patient_position(info.position, info.orientation, info.pixel_spacing, row, col)
        if mm is not None:
            text += f"   ({mm[0]:.1f}, {mm[1]:.1f}, {mm[2]:.1f}) mm"
        return text

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        self._last_scene_pos = QPointF(scene_pos)
        self.layer.hover(scene_pos)
        self.hover_text.emit(self.hover_info(scene_pos))
        self._extra_tooltip(scene_pos)

    def _extra_tooltip(self, scene_pos: QPointF) -> None:
        """Over the compact AI line of a small viewport: the full AI text as a tooltip."""
        overlay = self.overlay
        rect = overlay.extra_rect() if overlay.extra_is_compact() else None
        point = self.graphics.mapFromScene(scene_pos)
        if rect is not None and rect.adjusted(-4, -4, 4, 4).contains(QPointF(point)):
            QToolTip.showText(self.graphics.mapToGlobal(point), overlay.extra_full_text(), self.graphics)
            self._extra_tip_shown = True
        elif self._extra_tip_shown:
            QToolTip.hideText()
            self._extra_tip_shown = False

    def _refresh_hover(self) -> None:
        """After a slice change (wheel, keys, cine): the readout at the cursor's last place, which
        now points into the new slice (the mouse has not moved, so no move event comes)."""
        if self._last_scene_pos is not None:
            self.hover_text.emit(self.hover_info(self._last_scene_pos))

    def eventFilter(self, watched: Any, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Leave and watched is self.graphics.viewport():
            self._last_scene_pos = None  # the cursor left the image: nothing to read out while scrolling
        return super().eventFilter(watched, event)

    # --- Qt events -------------------------------------------------------------------------------
    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.overlay.setGeometry(self.graphics.rect())

    def corner_text_scene_rects(self) -> list[QRectF]:
        """Where the corner texts, orientation letters and scale bar are painted (over the scene), in scene
        coordinates: measurement labels keep clear of them."""
        viewport = self.graphics.viewport()
        rects = []
        for r in self.overlay.text_rects():  # the overlay covers the graphics view (see resizeEvent)
            top_left = viewport.mapFrom(self.graphics, r.topLeft().toPoint())
            rects.append(self.graphics.mapToScene(QRect(top_left, r.size().toSize())).boundingRect())
        return rects

    # Keys: the main window's action registry (viewer.qt.actions); the view leaves key events to it.
