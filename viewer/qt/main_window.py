"""The main window: docks, menus, toolbar and status bar around the slice view.

Other Qt modules (AI timeline, findings, review) attach through the public API documented in
``notes/MAINWINDOW_API.md``: signals, state getters, navigation and extension points.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QByteArray, QSize, QStandardPaths, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QKeyEvent,
    QKeySequence,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QSpinBox,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced

from viewer.core.constants import APP_NAME, INTENDED_USE, PRESET_KEYS, TAG_REFRESH_DELAY_MS
from viewer.core.dicom.catalogue import Owner, rekey_report, stack_owner
from viewer.core.dicom.model import LoadReport, Stack
from viewer.core.dicom.volume import StackVolume
from viewer.core.errors import MeasurementError, SlicewiseError, ViewerStateError
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.plane import Plane, native_plane, reference_line
from viewer.core.geometry.reslice import Slab, SlabMode
from viewer.core.geometry.stack import matching_slice, slice_position_mm
from viewer.core.location import SourceRef
from viewer.core.measure import NATIVE_PLANE, Measurement
from viewer.core.measure_store import MeasurementSet, MeasurementStore
from viewer.core.paths import user_data_path
from viewer.core.state.catalogue import CatalogueEntry, patient_key
from viewer.core.state.layout import Layout
from viewer.core.state.mpr import PlaneSlices, VolumeLoader
from viewer.core.state.viewer_state import ViewerState
from viewer.core.state.viewport import Tool, ViewportState
from viewer.core.undo import UndoStack
from viewer.qt.actions import ActionRegistry, ActionSpec, Binding
from viewer.qt.browser import StudyBrowser
from viewer.qt.crosshair import CrosshairTool
from viewer.qt.export import export_png
from viewer.qt.hanging import HangingController
from viewer.qt.help_dialog import KeyboardHelp, mouse_bindings
from viewer.qt.load_report import LoadReportPanel
from viewer.qt.settings import MAX_CINE_FPS, MIN_CINE_FPS, Settings
from viewer.qt.slice_slider import MarkedSlider
from viewer.qt.slice_view import (
    CROSSHAIR_TOOL,
    KEY_ZOOM_FACTOR,
    PAGE_STEP,
    ReferenceLine,
    SliceView,
    StackContext,
)
from viewer.qt.style import LEFT_DOCK_PX, RIGHT_DOCK_PX, icon
from viewer.qt.tag_browser import TagBrowser
from viewer.qt.viewport_grid import ViewportGrid
from viewer.qt.workers import LoadJob, ThumbnailJob, log_failure

if TYPE_CHECKING:
    from viewer.qt.ai.controller import AIController
    from viewer.qt.results.controller import ResultsController
    from viewer.qt.review.controller import ReviewController

logger = logging.getLogger(__name__)

MENU_ORDER = ("File", "Edit", "View", "Layout", "Tools", "AI", "Session", "Help")
# the drawing tools: (action id = tool name, menu text, key, F1 help)
MEASURE_TOOLS = (
    ("ruler", "Distance ruler", "M", "Distance ruler on / off (mm; pixels without PixelSpacing)"),
    ("ellipse", "Ellipse ROI", "E",
     "Ellipse ROI on / off: mean, SD, min, max (HU for CT), area (mm² or px²)"),
    ("rectangle", "Rectangle ROI", "B", "Rectangle (box) ROI on / off: mean, SD, min, max, area"),
    ("freehand", "Freehand ROI", "L", "Freehand (lasso) ROI on / off: drag round the region; mean, SD, min, "
     "max, area"),
    ("angle", "Angle", "G", "Angle on / off: drag one arm to the vertex, then click the other arm's end"),
    ("cobb", "Cobb angle", "Shift+G", "Cobb angle on / off: drag two lines; the angle between them (0-90°)"),
    ("arrow", "Arrow with text", "T", "Arrow on / off: drag from the tip, then type its text (Return)"),
)
LAYOUT_KEYS = {
    Layout.ONE: "Alt+1",
    Layout.ONE_BY_TWO: "Alt+2",
    Layout.TWO_BY_ONE: "Alt+3",
    Layout.TWO_BY_TWO: "Alt+4",
    Layout.ONE_PLUS_THREE: "Alt+5",
    Layout.ONE_BY_THREE: "Alt+6",
}
PLANE_KEYS = {
    Orientation.NATIVE: ("Alt+Q", "As acquired"),
    Orientation.AXIAL: ("Alt+A", "Axial"),
    Orientation.CORONAL: ("Alt+C", "Coronal"),
    Orientation.SAGITTAL: ("Alt+S", "Sagittal"),
}
SLAB_CHOICES: tuple[tuple[SlabMode | None, str], ...] = (
    (None, "Thin"),
    (SlabMode.MIP, "MIP"),
    (SlabMode.MINIP, "MinIP"),
    (SlabMode.AVERAGE, "Average"),
)
DEFAULT_SLAB_MM = 10.0
REFERENCE_COLORS = ("#f0c040", "#40c8f0", "#70e070", "#f07098", "#c090ff", "#ff9a40")  # by viewport
Rendered = tuple[str, Orientation, object, object]  # what a view shows: stack, plane, oblique, slab
Segment = tuple[tuple[float, float], tuple[float, float]]  # a reference line's ends, pixel (row, col)
TAG_DOCK_MIN_PX = 440  # the tag dock's width when it opens narrower: Tag, Name, VR and a readable Value


# A preview is replaced soon (the loaded study, or a grown preview while a retrieve streams in): a small
# slice cache, so its background prefetch reads about a dozen 512x512 slices around the shown one, not 96
# (measured: a 300-slice retrieve streaming into its preview took 1.6x the CPU of the first image only
# with the whole prefetch; see benchmarks/bench_pacs_stream.py).
PREVIEW_CACHE_BYTES = 8 * 1024**2


class MainWindow(QMainWindow):
    stack_shown = Signal(object)
    slice_changed = Signal(int)
    load_finished = Signal(object)
    about_to_close = Signal()
    privacy_changed = Signal(bool)
    stacks_closed = Signal(list)  # uids of stacks closed by File › Close study / Clear all

    # Set by viewer.qt.ai.attach / viewer.qt.review.attach (viewer.qt.app.build_main_window).
    ai_controller: AIController | None = None
    review_controller: ReviewController | None = None
    results_controller: ResultsController | None = None  # viewer.qt.results.attach: others' SEG/SR/...

    def __init__(self, settings: Settings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or Settings()
        self.setWindowTitle(APP_NAME)
        self.setWindowIcon(icon("slicewise"))
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)
        self.resize(_start_size(self))

        self.state = ViewerState()
        self.measurements = MeasurementSet(self._load_measurements())  # every study's, shared by viewports
        self.measurements.changed.connect(self._save_measurements)
        # Ctrl+Z: the user's last change (a measurement, a plane turn or Alt+O, a review's study done)
        self.undo_stack = UndoStack()
        self.undo_stack.changed.connect(self._update_undo_actions)
        self._volumes: dict[str, StackVolume] = {}  # stack uid -> its slices, shared by its viewports
        self._loaders: dict[str, VolumeLoader] = {}  # stack uid -> its whole volume, for MPR viewports
        self._rendered: list[Rendered | None] = []  # per viewport: what its view shows
        self._rendering = False  # a view's index changes because the state moved it
        # extension texts of the active viewport's corner: (HTML, the compact line of small viewports)
        self._corner_html: dict[str, tuple[str, str]] = {}
        self._slab_thickness = DEFAULT_SLAB_MM
        self._active_uid_seen: str | None = None  # the active viewport's stack, as last announced
        self._active_planes_seen = False  # ... and whether it showed resliced (MPR) planes of it
        self._moving = False  # a view's move is being synced: reference lines are drawn once, after
        # (target viewport, other viewport) -> (their planes, the segment): recomputed when a plane moves
        self._ref_cache: dict[tuple[int, int], tuple[Plane, Plane, Segment | None]] = {}
        self._stacks: dict[str, Stack] = {}
        self._contexts: dict[str, StackContext] = {}
        self._sources: dict[str, SourceRef] = {}  # stack uid -> where its study came from
        self._owners: dict[str, Owner] = {}  # stack uid -> patient, study, series it stands for
        self._bad_seen = 0  # unreadable slices of the shown volume already in the load report
        self._jobs: list[Any] = []
        self._menus: dict[str, QMenu] = {}
        self._title_badge = ""
        self._help: KeyboardHelp | None = None
        self._closed = False  # set by closeEvent: queued worker results are then dropped
        self._preview: StackVolume | None = None  # the first files of a folder still being scanned
        self._preview_keeps_place = False  # the loaded series opens at the preview's slice
        self._panels_state: QByteArray | None = None  # the docks as they were before "Image only"

        # the tag browser follows scrolling once it pauses
        self._update_tags_later = qdebounced(self._update_tags, TAG_REFRESH_DELAY_MS, parent=self)

        self._decode_timer = QTimer(self)
        self._decode_timer.setInterval(250)
        self._decode_timer.timeout.connect(self._poll_decoded)
        self._build_central()
        self._build_docks()
        self._build_status_bar()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._docks_sized = False  # the side docks get their first widths when first shown
        self._apply_settings()
        self.hanging = HangingController(self)  # Layout menu: hanging protocols, priors, links, sync

    # ============================================================== construction
    def _build_central(self) -> None:
        self.grid = ViewportGrid(self.state)
        self.crosshair_tool = CrosshairTool(self.state, self.grid, self, history=self.undo_stack)
        self.grid.view_created.connect(self._setup_view)
        self.grid.activated.connect(self.state.set_active)
        self.grid.stack_dropped.connect(self._on_stack_dropped)
        self.grid.set_layout(self.state.layout)
        self._rendered = [None] * self.state.layout.viewport_count
        self.state.events.layout.connect(self._on_layout)
        self.state.events.active.connect(self._on_active)
        self.state.events.viewport.connect(self._on_viewport)
        # viewports of different patients say so (after they have rendered their new stacks)
        self.state.events.viewport.connect(lambda *_: self._mark_other_patients())
        self.state.events.layout.connect(lambda *_: self._mark_other_patients())
        self.state.events.catalogue.connect(self._mark_other_patients)
        self.slider = MarkedSlider()
        self.slider.setEnabled(False)
        self.slice_label = QLabel("– / –")
        self.slice_label.setObjectName("sliceLabel")
        self.slice_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        # a fixed size (both ways): a new text on every slice change then repaints the label only, without
        # invalidating the slider bar's layout (measured: ~0.4 ms of GUI-thread time per change)
        self.slice_label.ensurePolished()
        self.slice_label.setFixedSize(96, max(22, self.slice_label.sizeHint().height()))
        bar = QWidget()
        bar.setObjectName("sliderBar")
        row = QHBoxLayout(bar)
        row.setContentsMargins(10, 2, 4, 2)
        row.addWidget(self.slider, 1)
        row.addWidget(self.slice_label)
        central = QWidget()
        self._central_layout = QVBoxLayout(central)
        self._central_layout.setContentsMargins(0, 0, 0, 0)
        self._central_layout.setSpacing(0)
        self._central_layout.addWidget(self.grid, 1)
        self._central_layout.addWidget(bar)
        self.setCentralWidget(central)

        self.slider.valueChanged.connect(lambda i: self.view.set_index(i))

    @property
    def view(self) -> SliceView:
        """The active viewport's slice view: keys, menus, the slider and the AI act on it."""
        return self.grid.view(self.state.active)

    def views(self) -> list[SliceView]:
        """Every viewport's slice view, in layout order."""
        return self.grid.views()

    def _setup_view(self, view: SliceView) -> None:
        """A new viewport's view: presets, cine speed, privacy and its signals."""
        view.presets = self.settings.presets()
        view.set_cine_fps(self.settings.cine_fps)
        view.set_show_phi(not self.settings.privacy)
        view.index_changed.connect(lambda i, v=view: self._on_view_index(v, i))
        view.hover_text.connect(self._on_hover)
        view.playing_changed.connect(lambda on, v=view: self._on_playing(on) if v is self.view else None)
        view.tool_changed.connect(lambda t, v=view: self._show_tool(t) if v is self.view else None)
        view.status_hint.connect(lambda text, v=view: self._show_hint(v, text))
        view.set_measurement_set(self.measurements, self.undo_stack)
        self.crosshair_tool.attach(view)
        if self.state.tool is Tool.CROSSHAIR:
            view.set_tool(CROSSHAIR_TOOL)

    def _show_hint(self, view: SliceView, text: str) -> None:
        """A drawing tool's next step in the status bar (an empty text clears it)."""
        if view is not self.view:
            return
        if text:
            self.show_status(text, 0)
        else:
            self.statusBar().clearMessage()

    def _show_tool(self, tool: str) -> None:
        for name, act in self._tool_actions().items():
            act.setChecked(tool == name)
        if "crosshair" in self.actions_registry:
            self.actions_registry.action("crosshair").setChecked(tool == CROSSHAIR_TOOL)

    def _tool_actions(self) -> dict[str, QAction]:
        return {name: self.actions_registry.action(name) for name, *_ in MEASURE_TOOLS}

    # ============================================================== undo / redo (one history)
    def undo(self) -> None:
        """Ctrl+Z: undo the last change the user made (a measurement, a crosshair move or plane turn, a
        review's study done)."""
        command = self.undo_stack.undo()
        self.show_status(f"Undone: {command.text} (Ctrl+Shift+Z redoes)" if command else "Nothing to undo")

    def redo(self) -> None:
        command = self.undo_stack.redo()
        self.show_status(f"Redone: {command.text}" if command else "Nothing to redo")

    def _update_undo_actions(self) -> None:
        stack = self.undo_stack
        undo, redo = self.actions_registry.action("undo"), self.actions_registry.action("redo")
        undo.setText(f"Undo {stack.undo_text()}" if stack.can_undo() else "Undo")
        redo.setText(f"Redo {stack.redo_text()}" if stack.can_redo() else "Redo")
        undo.setEnabled(stack.can_undo())
        redo.setEnabled(stack.can_redo())

    def set_crosshair_tool(self, on: bool) -> None:
        """The crosshair tool in every viewport (on), or back to window/level (off)."""
        self.state.set_tool(Tool.CROSSHAIR if on else Tool.WINDOW)
        for view in self.views():
            if on or view.tool == CROSSHAIR_TOOL:
                view.set_tool(CROSSHAIR_TOOL if on else "window")
        self.actions_registry.action("crosshair").setChecked(on)
        self._refresh_reference_lines()
        if on:
            self.show_status("Crosshair: click or drag to move the point; drag a round handle to turn both "
                             "other planes, Ctrl+drag to turn one (Alt+O: orthogonal planes again)")

    def reset_planes(self) -> None:
        """Alt+O: the active viewport's frame of reference back to axial, coronal and sagittal planes (one
        undo step)."""
        self.crosshair_tool.turns.reset(self.state.active)

    def _on_tool_action(self, tool: str) -> None:
        if self.state.tool is Tool.CROSSHAIR:
            self.set_crosshair_tool(False)
        self.view.set_tool(tool if self._tool_actions()[tool].isChecked() else "window")

    # ============================================================== measurements (per study, persistent)
    def _measurement_store(self) -> MeasurementStore:
        return MeasurementStore(user_data_path())

    def _load_measurements(self) -> list[Measurement]:
        store = self._measurement_store()
        try:
            return store.load()
        except MeasurementError as exc:
            log_failure(logger, logging.WARNING, "Measurement store unreadable; set aside", exc)
            try:
                store.set_aside()
            except OSError as move_exc:
                log_failure(logger, logging.WARNING, "Could not set the damaged measurement store aside",
                            move_exc)
            return []

    def _save_measurements(self, *_: object) -> None:
        try:
            self._measurement_store().save(self.measurements)
        except OSError as exc:
            log_failure(logger, logging.WARNING, "Measurements could not be saved", exc)
            self.show_status("Measurements could not be saved (see the log)")

    def _build_docks(self) -> None:
        self.browser = StudyBrowser()
        self.browser.stack_selected.connect(self.show_stack)
        self.browser_dock = self.add_dock(self.browser, "Studies", Qt.DockWidgetArea.LeftDockWidgetArea)
        self.report_panel = LoadReportPanel()
        self.report_dock = self.add_dock(
            self.report_panel, "Load report", Qt.DockWidgetArea.BottomDockWidgetArea
        )
        self.report_dock.hide()
        self.report_panel.show_requested.connect(self.show_item)
        self.report_panel.patient_number = self.browser.patient_number
        self.tag_browser = TagBrowser()
        self.tag_dock = self.add_dock(self.tag_browser, "DICOM tags", Qt.DockWidgetArea.RightDockWidgetArea)
        self.tag_dock.hide()
        self.tag_dock.visibilityChanged.connect(self._on_tag_visibility)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.hover_label = QLabel("")
        sb.addWidget(self.hover_label, 1)
        self.progress = QProgressBar()
        self.progress.setFixedWidth(220)
        self.progress.setTextVisible(True)
        self.cancel_button = QToolButton()
        self.cancel_button.setIcon(icon("cancel"))
        self.cancel_button.setToolTip("Cancel loading")
        self.cancel_button.setAutoRaise(True)
        self.cancel_button.clicked.connect(self.cancel_loading)
        self.progress_label = QLabel("")
        for w in (self.progress_label, self.progress, self.cancel_button):
            sb.addPermanentWidget(w)
            w.hide()

    def add_action(self, spec: ActionSpec) -> QAction:
        """Register a command (id, keys, menu text, handler) in the window's one action registry."""
        return self.actions_registry.add(spec)

    def _build_actions(self) -> None:
        self.actions_registry = ActionRegistry(self)
        specs = [
            ActionSpec("open", "Open files…", self.open_files_dialog, ("Ctrl+O",), "File",
                       icon="open-file", tip="Open DICOM files or a .zip"),
            ActionSpec("open_folder", "Open folder…", self.open_folder_dialog, ("Ctrl+Shift+O",), "File",
                       icon="open-folder", tip="Open a folder, searched recursively"),
            ActionSpec("export", "Export view as PNG…", self.export_dialog, ("Ctrl+E",), "File",
                       icon="export", help="Export the current view as PNG (de-identified by default)"),
            ActionSpec("export_phi", "Include patient name/ID in exports",
                       lambda: self._on_export_phi(self.act_export_phi.isChecked()), (), "File",
                       checkable=True),
            ActionSpec("close_study", "Close study", self.close_study, ("Ctrl+W",), "File",
                       tip="Close the shown study: its stacks leave the browser",
                       help="Close the shown study"),
            ActionSpec("clear_all", "Clear all", self.clear_all, ("Ctrl+Shift+W",), "File",
                       help="Close every study"),
            ActionSpec("quit", "Quit", self.close, ("Ctrl+Q",), "File"),
            ActionSpec("next_slice", "Next slice", lambda: self.view.step(1), ("Down",), "Navigation",
                       shortcut=False),
            ActionSpec("previous_slice", "Previous slice", lambda: self.view.step(-1), ("Up",), "Navigation",
                       shortcut=False),
            ActionSpec("page_forward", "10 slices forward", lambda: self.view.step(PAGE_STEP), ("PgDown",),
                       "Navigation", shortcut=False),
            ActionSpec("page_back", "10 slices back", lambda: self.view.step(-PAGE_STEP),
                       ("PgUp",), "Navigation",
                       shortcut=False),
            ActionSpec("first_slice", "First slice", lambda: self.view.set_index(0), ("Home",), "Navigation",
                       shortcut=False),
            ActionSpec("last_slice", "Last slice", lambda: self.view.set_index(self.view.count() - 1),
                       ("End",),
                       "Navigation", shortcut=False),
            ActionSpec("next_stack", "Next stack (series)", lambda: self.step_stack(1), ("Right",),
                       "Navigation", shortcut=False),
            ActionSpec("previous_stack", "Previous stack (series)", lambda: self.step_stack(-1), ("Left",),
                       "Navigation", shortcut=False),
            ActionSpec("cine", "Cine play/pause", lambda: self.view.toggle_cine(), ("C",), "Navigation",
                       icon="play", checkable=True, help="Cine play / pause (fps in the toolbar)"),
            # Space only when the focused widget leaves it unused (a focused button keeps its Space)
            ActionSpec("cine_space", "Cine play/pause", lambda: self.view.toggle_cine(),
                       ("Space",), "Navigation",
                       shortcut=False, help="Cine play / pause"),
            ActionSpec("header_window", "Header window", self._header_window, ("0",), "Window",
                       help="The DICOM header's window"),
            ActionSpec("invert", "Invert", self._invert, ("I",), "Window", icon="invert",
                       help="Invert grey scale"),
            ActionSpec("zoom_in", "Zoom in", lambda: self.view.zoom_by(KEY_ZOOM_FACTOR),
                       ("+", "Shift++", "=", "Ctrl++", "Ctrl+Shift++", "Ctrl+="), "View",
                       keys_text="+ or = (also Ctrl +)"),
            ActionSpec("zoom_out", "Zoom out", lambda: self.view.zoom_by(1 / KEY_ZOOM_FACTOR),
                       ("-", "Ctrl+-"),
                       "View", keys_text="- (also Ctrl -)"),
            ActionSpec("fit", "Fit to window", lambda: self.view.fit(), ("F",), "View", icon="fit",
                       help="Fit image to window"),
            ActionSpec("actual_size", "Actual size 1:1", lambda: self.view.one_to_one(), ("Ctrl+0",), "View",
                       icon="one-to-one", help="Actual size (1 image pixel = 1 screen pixel)"),
            ActionSpec("reset", "Reset view", lambda: self.view.reset_view(), ("R",), "View", icon="reset",
                       help="Reset view: fit, header window, no inversion"),
            ActionSpec("rotate_cw", "Rotate 90° clockwise", lambda: self.view.rotate(1), ("Ctrl+R",), "View"),
            ActionSpec("rotate_ccw", "Rotate 90° anticlockwise", lambda: self.view.rotate(-1),
                       ("Ctrl+Shift+R",),
                       "View"),
            ActionSpec("flip_h", "Flip horizontally", lambda: self.view.flip_horizontal(), ("H",), "View"),
            ActionSpec("flip_v", "Flip vertically", lambda: self.view.flip_vertical(), ("V",), "View"),
            ActionSpec("fullscreen", "Full screen", self._toggle_fullscreen, ("F11",), "View"),
            ActionSpec("image_only", "Image only (hide the side panels)", self._toggle_image_only,
                       ("Ctrl+Shift+F",), "View", checkable=True,
                       help="Image only: hide the side panels, or bring them back as they were"),
            ActionSpec("privacy", "Privacy: hide patient identifiers",
                       lambda: self._on_privacy(self.act_privacy.isChecked()), ("Ctrl+Shift+P",), "View",
                       icon="privacy-off", checkable=True,
                       help="Privacy: hide patient name and ID on screen"),
            *(ActionSpec(name, text, partial(self._on_tool_action, name), (key,), "Tools",
                         icon="ruler" if name == "ruler" else "", checkable=True, help=help_text)
              for name, text, key, help_text in MEASURE_TOOLS),
            ActionSpec("clear_measurements", "Delete measurement",
                       lambda: self.view.delete_measurement(), ("Del",), "Tools", shortcut=False,
                       help="Delete the selected measurement (click one to select it), else the newest on "
                            "the shown slice (measurements are saved per study and shown again when it is "
                            "reopened)"),
            ActionSpec("edit_arrow_text", "Edit arrow text", lambda: self.view.layer.edit_text(), ("F2",),
                       "Tools", help="Edit the selected arrow's text (or double-click the arrow)"),
            ActionSpec("undo", "Undo", self.undo, ("Ctrl+Z",), "Edit",
                       help="Undo the last change: a measurement drawn, moved, edited or deleted, a "
                            "crosshair move or plane turn (crosshair drag or Alt+O), or a review's study "
                            "done"),
            ActionSpec("redo", "Redo", self.redo, ("Ctrl+Shift+Z", "Ctrl+Y"), "Edit",
                       help="Redo what was undone"),
            ActionSpec("measurement_sr", "Export measurements as DICOM SR…",
                       self.export_measurement_sr_dialog, (), "Tools",
                       help="The shown series' measurements as a TID 1500 measurement report (DICOM SR)"),
            ActionSpec("clear_slice_measurements", "Delete all measurements on this slice",
                       lambda: self.view.clear_measurements(), ("Shift+Del",), "Tools", shortcut=False),
            ActionSpec("escape", "Stop cine, back to the window/level tool", self._escape, ("Esc",),
                       "Tools", shortcut=False,
                       help="Cancel a half-drawn measurement or the selection, else stop cine and go back "
                            "to the window/level tool"),
            ActionSpec("tags", "DICOM tags…", self._toggle_tags, ("Ctrl+T",), "Tools", icon="tags",
                       help="DICOM tag browser for the current slice"),
            ActionSpec("report", "Load report", self._show_report, (), "Tools", icon="report",
                       tip="Show the last load report"),
            ActionSpec("help", "Keyboard and mouse…", self.show_help, ("F1",), "Help", icon="help",
                       help="This help"),
            ActionSpec("about", "About Slicewise", self._about, (), "Help"),
        ]
        for k, name in enumerate(PRESET_KEYS, start=1):
            w = self.view.presets[name]
            specs.append(ActionSpec(f"preset_{name}", f"{name.capitalize()}  ({w.width:g}/{w.level:g})",
                                    partial(self._apply_preset, name), (str(k),), "Window",
                                    help=f"Preset {name} (W {w.width:g} / L {w.level:g})"))
        for layout, key in LAYOUT_KEYS.items():
            specs.append(ActionSpec(f"layout_{layout.value}", f"Layout {layout.value.replace('x', '×')}",
                                    partial(self.set_layout, layout), (key,), "Layout",
                                    help=f"Layout {layout.value.replace('x', '×')} (viewports)"))
        specs += [
            ActionSpec("layout_mpr", "MPR: axial | coronal | sagittal", self._toggle_mpr, ("Alt+M",),
                       "Layout", checkable=True,
                       help="MPR on / off: the active stack axial, coronal and sagittal; off (or another "
                            "layout): back to the layout before, the stack as acquired at the MPR's point"),
            ActionSpec("next_viewport", "Next viewport", self._step_viewport, ("F6",), "Layout",
                       help="Make the next viewport active (or click one)"),
            ActionSpec("reference_lines", "Reference lines", self._refresh_reference_lines, ("Alt+L",),
                       "Layout",
                       checkable=True, help="Reference lines: the other viewports' planes on / off"),
            ActionSpec("crosshair", "Crosshair",
                       lambda: self.set_crosshair_tool(self.state.tool is not Tool.CROSSHAIR),
                       ("Shift+X",), "Tools", checkable=True,
                       help="Crosshair on / off (MPR): click or drag to move the point the other planes go "
                            "through; drag a line's round handle (its outer part) to turn both other planes "
                            "together, Ctrl+drag to turn that plane alone (oblique)"),
            ActionSpec("reset_planes", "Orthogonal planes", self.reset_planes, ("Alt+O",), "Layout",
                       help="Turned (oblique) MPR planes back to axial, coronal and sagittal"),
            ActionSpec("slab_cycle", "Slab: thin / MIP / MinIP / average", self._cycle_slab, ("Alt+T",),
                       "Layout", help="Thick slab of the active MPR viewport: thin, MIP, MinIP, average"),
        ]
        for orientation, (key, text) in PLANE_KEYS.items():
            specs.append(ActionSpec(f"plane_{orientation.value}", f"Plane: {text}",
                                    partial(self.set_plane, orientation), (key,), "Layout",
                                    help=f"Active viewport: {text.lower()} plane"))
        for spec in specs:
            self.add_action(spec)
        act = self.actions_registry.action
        self.act_open, self.act_open_dir, self.act_export = act("open"), act("open_folder"), act("export")
        self.act_export_phi, self.act_quit = act("export_phi"), act("quit")
        self.act_close_study, self.act_clear_all = act("close_study"), act("clear_all")
        self.act_rotate_cw, self.act_rotate_ccw = act("rotate_cw"), act("rotate_ccw")
        self.act_flip_h, self.act_flip_v = act("flip_h"), act("flip_v")
        self.act_invert, self.act_reset, self.act_fit = act("invert"), act("reset"), act("fit")
        self.act_1to1, self.act_ruler = act("actual_size"), act("ruler")
        self.act_clear = act("clear_measurements")
        self.act_clear_slice = act("clear_slice_measurements")
        self.act_measurement_sr = act("measurement_sr")
        self.act_ellipse, self.act_rectangle = act("ellipse"), act("rectangle")
        self.act_undo, self.act_redo = act("undo"), act("redo")
        self._update_undo_actions()
        self.act_cine, self.act_tags, self.act_privacy = act("cine"), act("tags"), act("privacy")
        self.act_report, self.act_help = act("report"), act("help")
        self.act_fullscreen, self.act_about = act("fullscreen"), act("about")
        self.act_image_only = act("image_only")
        self.act_header_window = act("header_window")
        self.act_reference_lines = act("reference_lines")
        self.act_reference_lines.setChecked(True)
        self.preset_actions = QActionGroup(self)
        self.preset_actions.setExclusive(False)
        for name in PRESET_KEYS:
            self.preset_actions.addAction(act(f"preset_{name}"))

    def _build_menus(self) -> None:
        fm = self.menu("File")
        fm.addActions([self.act_open, self.act_open_dir])
        self.recent_menu = fm.addMenu("Recent studies")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self.act_remember_recent = QAction("Remember recent studies", self)
        self.act_remember_recent.setCheckable(True)
        self.act_remember_recent.setStatusTip(
            "Keep opened folders in Recent studies between runs (folder names may identify patients)"
        )
        self.act_remember_recent.setChecked(self.settings.remember_recent)
        self.act_remember_recent.toggled.connect(self._on_remember_recent)
        fm.addAction(self.act_remember_recent)
        fm.addSeparator()
        fm.addActions([self.act_export, self.act_export_phi])
        fm.addSeparator()
        fm.addActions([self.act_close_study, self.act_clear_all])
        fm.addSeparator()
        fm.addAction(self.act_quit)
        em = self.menu("Edit")
        em.addActions([self.act_undo, self.act_redo])
        vm = self.menu("View")
        wm = vm.addMenu(icon("window-level"), "Window preset")
        wm.addActions(self.preset_actions.actions())
        wm.addSeparator()
        wm.addAction(self.act_header_window)
        vm.addActions([self.act_invert, self.act_reset, self.act_fit, self.act_1to1])
        vm.addActions([self.actions_registry.action("zoom_in"), self.actions_registry.action("zoom_out")])
        turn = vm.addMenu("Rotate / flip")
        turn.addActions([self.act_rotate_cw, self.act_rotate_ccw, self.act_flip_h, self.act_flip_v])
        vm.addSeparator()
        vm.addAction(self.act_cine)
        vm.addSeparator()
        vm.addActions(
            [
                self.browser_dock.toggleViewAction(),
                self.report_dock.toggleViewAction(),
                self.tag_dock.toggleViewAction(),
            ]
        )
        vm.addSeparator()
        vm.addActions([self.act_privacy, self.act_fullscreen])
        lm = self.menu("Layout")
        lm.addActions([self.actions_registry.action(f"layout_{layout.value}") for layout in LAYOUT_KEYS])
        lm.addAction(self.actions_registry.action("layout_mpr"))
        lm.addSeparator()
        lm.addActions([self.actions_registry.action(f"plane_{o.value}") for o in PLANE_KEYS])
        lm.addSeparator()
        lm.addActions(
            [self.actions_registry.action(a)
             for a in ("reference_lines", "reset_planes", "slab_cycle", "next_viewport")]
        )
        tm = self.menu("Tools")
        tm.addActions(list(self._tool_actions().values()))
        tm.addAction(self.actions_registry.action("crosshair"))
        tm.addSeparator()
        tm.addActions([self.act_clear, self.act_clear_slice, self.actions_registry.action("edit_arrow_text"),
                       self.act_measurement_sr])
        tm.addSeparator()
        tm.addActions([self.act_tags, self.act_report])
        save = tm.addMenu("Save current window as preset")
        for k, name in enumerate(PRESET_KEYS, start=1):
            act = save.addAction(f"{k}  {name.capitalize()}")
            act.triggered.connect(lambda _=False, n=name: self._save_preset(n))
        reset = tm.addAction("Restore default presets")
        reset.triggered.connect(self._reset_presets)
        hm = self.menu("Help")
        hm.addActions([self.act_help, self.act_about])

    def _build_toolbar(self) -> None:
        self._toolbar = QToolBar("Main")
        self._toolbar.setObjectName("mainToolbar")
        self._toolbar.setMovable(False)
        self._toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, self._toolbar)
        tb = self._toolbar
        tb.addActions([self.act_open, self.act_open_dir])
        tb.addSeparator()
        wl = QToolButton()
        wl.setIcon(icon("window-level"))
        wl.setToolTip("Window presets (keys 1-7, 0 = header)")
        wl.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        wl_menu = QMenu(wl)
        wl_menu.addActions(self.preset_actions.actions())
        wl_menu.addSeparator()
        wl_menu.addAction(self.act_header_window)
        wl.setMenu(wl_menu)
        tb.addWidget(wl)
        tb.addActions([self.act_invert, self.act_reset, self.act_fit, self.act_1to1])
        measure = QToolButton()  # the ruler, with every measurement tool in its menu
        measure.setObjectName("measureToolButton")
        measure.setDefaultAction(self.act_ruler)
        measure.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        measure_menu = QMenu(measure)
        measure_menu.addActions(list(self._tool_actions().values()))
        measure.setMenu(measure_menu)
        tb.addWidget(measure)
        tb.addSeparator()
        tb.addAction(self.act_cine)
        self.fps_spin = QSpinBox()
        self.fps_spin.setRange(MIN_CINE_FPS, MAX_CINE_FPS)
        self.fps_spin.setSuffix(" fps")
        self.fps_spin.setToolTip("Cine speed")
        self.fps_spin.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.fps_spin.setMinimumWidth(74)
        self.fps_spin.valueChanged.connect(self._on_fps)
        tb.addWidget(self.fps_spin)
        tb.addSeparator()
        layouts = QToolButton()
        layouts.setIcon(icon("layout"))
        layouts.setText("Layout")
        layouts.setToolTip("Viewport layout and MPR (Alt+1…Alt+6, Alt+M)")
        layouts.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        layouts.setMenu(self.menu("Layout"))
        layouts.setObjectName("layoutButton")
        tb.addWidget(layouts)
        self.slab_combo = QComboBox()
        self.slab_combo.addItems([text for _, text in SLAB_CHOICES])
        self.slab_combo.setToolTip("Thick slab of the active MPR viewport (Alt+T)")
        self.slab_combo.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.slab_combo.currentIndexChanged.connect(self._on_slab_combo)
        tb.addWidget(self.slab_combo)
        self.slab_spin = QDoubleSpinBox()
        self.slab_spin.setRange(1.0, 100.0)
        self.slab_spin.setDecimals(0)
        self.slab_spin.setSingleStep(1.0)
        self.slab_spin.setSuffix(" mm")
        self.slab_spin.setValue(self._slab_thickness)
        self.slab_spin.setToolTip("Slab thickness")
        self.slab_spin.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.slab_spin.valueChanged.connect(self._on_slab_spin)
        tb.addWidget(self.slab_spin)
        self._sync_slab_controls()
        tb.addSeparator()
        tb.addActions([self.act_tags, self.act_report, self.act_export])
        tb.addSeparator()
        tb.addActions([self.act_privacy, self.act_help])

    def _apply_settings(self) -> None:
        s = self.settings
        self.fps_spin.setValue(s.cine_fps)
        self.view.set_cine_fps(s.cine_fps)
        self.act_export_phi.setChecked(s.export_demographics)
        self.act_privacy.setChecked(s.privacy)
        self._set_privacy(s.privacy)
        geometry, state = s.geometry(), s.window_state()
        if geometry:
            self.restoreGeometry(geometry)
        if state:
            self.restoreState(state)
            self._docks_sized = True  # the user's own widths, as saved at the last close

    # ============================================================== public API: state
    def current_stack(self) -> Stack | None:
        return self._stacks.get(self._current_uid) if self._current_uid else None

    def current_volume(self) -> Any:
        return self._volume

    def current_slice(self) -> int:
        """The active viewport's slice of its stack (for an MPR plane: the slice nearest its centre)."""
        return self.view.native_index()

    @property
    def _current_uid(self) -> str | None:
        """The stack of the active viewport."""
        return self.state.viewport(self.state.active).stack_key

    @property
    def _volume(self) -> StackVolume | None:
        """The slices of the active viewport's stack (also while it shows MPR planes)."""
        uid = self._current_uid
        return None if uid is None else self._volumes.get(uid)

    def loaded_stacks(self) -> list[Stack]:
        return [self._stacks[uid] for uid in self.browser.stack_uids() if uid in self._stacks]

    def stack_context(self, stack_uid: str) -> StackContext | None:
        """The patient and study a loaded stack belongs to (PHI: for the screen only)."""
        return self._contexts.get(stack_uid)

    def source_paths(self, stack_uid: str) -> list[str]:
        """The local paths a stack was opened from ([] for one retrieved from a PACS)."""
        source = self._sources.get(stack_uid)
        return list(source.paths) if source is not None else []

    def stack_source(self, stack_uid: str) -> SourceRef | None:
        """Where a stack's study came from: local paths or a PACS node (None for an unknown stack)."""
        return self._sources.get(stack_uid)

    def privacy_mode(self) -> bool:
        return self.act_privacy.isChecked()

    # ============================================================== public API: navigation
    def set_slice(self, index: int) -> None:
        """Go to slice ``index`` of the active viewport's stack (an MPR viewport moves to the plane through
        that slice's centre)."""
        planes = self.view.planes()
        if planes is None:
            self.view.set_index(index)
            return
        geom = planes.geometry
        k = max(0, min(geom.shape[0] - 1, int(index)))
        centre = geom.voxel_to_patient((k, (geom.rows - 1) / 2, (geom.columns - 1) / 2))
        self.state.go_to_point(self.state.active, [float(v) for v in centre])

    def show_stack(self, stack_uid: str) -> None:
        """Show a stack in the active viewport (in the viewport's plane when the stack allows it)."""
        stack = self._stacks.get(stack_uid)
        if stack is None:
            raise ValueError(f"Unknown stack {stack_uid!r}")
        self.browser.select(stack_uid)
        if stack_uid == self._current_uid:
            return
        self.show_in_viewport(self.state.active, stack_uid)

    def show_in_viewport(self, index: int, stack_uid: str, orientation: Orientation | None = None) -> None:
        """Put a stack into viewport ``index`` (a drop from the browser), in ``orientation`` or the plane
        the viewport shows now (as acquired when the stack has no geometry for it)."""
        if stack_uid not in self._stacks:
            raise ValueError(f"Unknown stack {stack_uid!r}")
        entry = self.state.catalogue[stack_uid]
        want = orientation or self.state.viewport(index).orientation
        if entry.geometry is None or entry.stack.is_color or len(entry.stack) < 2:
            want = Orientation.NATIVE
        # a stack opens at its first slice (as before viewports); MPR planes open through the middle
        self.state.show(index, stack_uid, want, first=want is Orientation.NATIVE)

    def set_layout(self, layout: Layout) -> None:
        """Switch the viewport layout; new viewports show the next stacks of the browser."""
        self.state.set_layout(layout)

    def show_mpr(self) -> None:
        """MPR layout: the active viewport's stack axial | coronal | sagittal, through the point it shows;
        again (Alt+M) or a layout from the Layout menu leaves it: the layout before, with the stack's own
        slices at the MPR's point (:meth:`ViewerState.leave_mpr`)."""
        if self.state.in_mpr:
            self.state.leave_mpr()
            return
        uid = self._current_uid
        if uid is None:
            self.show_status("Nothing to reslice: open a study first")
            return
        entry = self.state.catalogue[uid]
        if entry.geometry is None or entry.stack.is_color or len(entry.stack) < 2:
            self.show_status("This stack cannot be resliced (no patient geometry, colour, or one slice)")
            return
        self.state.enter_mpr(self.state.active)

    def _toggle_mpr(self) -> None:
        self.show_mpr()
        self._sync_mpr_action()

    def _sync_mpr_action(self) -> None:
        self.actions_registry.action("layout_mpr").setChecked(self.state.in_mpr)

    def set_plane(self, orientation: Orientation) -> None:
        """Show the active viewport's stack in another plane (resliced from the whole volume)."""
        index = self.state.active
        vp = self.state.viewport(index)
        if vp.stack_key is None:
            self.show_status("Nothing to reslice: open a study first")
            return
        entry = self.state.catalogue[vp.stack_key]
        if orientation is not Orientation.NATIVE and (entry.stack.is_color or len(entry.stack) < 2):
            self.show_status("This stack cannot be resliced (colour, or one slice)")
            return
        try:
            self.state.set_orientation(index, orientation)
        except ViewerStateError as exc:
            self.show_status(str(exc))

    def set_slab(self, mode: SlabMode | None, thickness_mm: float | None = None) -> None:
        """Thick slab (MIP / MinIP / average) of ``thickness_mm`` in the active MPR viewport; None: thin."""
        if thickness_mm is not None:
            self._slab_thickness = float(thickness_mm)
        vp = self.state.viewport(self.state.active)
        if vp.stack_key is None:
            return
        if vp.orientation is Orientation.NATIVE and mode is not None:
            self.show_status("Slabs are made of resliced planes: choose a plane first (Alt+A, Alt+C, Alt+S)")
            self._sync_slab_controls()
            return
        slab = None if mode is None else Slab(mode, self._slab_thickness)
        self.state.set_slab(self.state.active, slab)

    def _cycle_slab(self) -> None:
        vp = self.state.viewport(self.state.active)
        modes = [m for m, _ in SLAB_CHOICES]
        current = vp.slab.mode if vp.slab is not None else None
        self.set_slab(modes[(modes.index(current) + 1) % len(modes)])

    def _step_viewport(self) -> None:
        self.state.set_active((self.state.active + 1) % len(self.state.viewports))

    # --- rendering the state ----------------------------------------------------------------------
    def _on_layout(self, layout: Layout) -> None:
        removed = self.grid.set_layout(layout)
        for view in removed:
            view.stop_cine()
            _close_planes(view)
            view.clear()
        n = layout.viewport_count
        self._rendered = (self._rendered + [None] * n)[:n]
        self._release_unused()
        self._fill_empty_viewports()
        self.grid.set_active(self.state.active)
        self._refresh_reference_lines()
        self._sync_mpr_action()

    def _fill_empty_viewports(self) -> None:
        """New, empty viewports show the stacks after the active one in the browser (then from the top)."""
        uids = [u for u in self.browser.stack_uids() if u in self._stacks]
        if not uids:
            return
        shown = [vp.stack_key for vp in self.state.viewports]
        start = uids.index(self._current_uid) + 1 if self._current_uid in uids else 0
        order = uids[start:] + uids[:start]
        fresh = [u for u in order if u not in shown]
        for i, vp in enumerate(self.state.viewports):
            if vp.stack_key is None and fresh:
                self.show_in_viewport(i, fresh.pop(0), Orientation.NATIVE)

    def _on_active(self, index: int) -> None:
        old = self._active_uid_seen
        self.grid.set_active(index)
        for key in list(self._corner_html):
            for v in self.views():
                v.overlay.set_extra_html(key, "")
            self.view.overlay.set_extra_html(key, *self._corner_html[key])
        view = self.view
        self._show_tool(view.tool)
        self._on_playing(view.cine_timer.isActive())
        if not view.hasFocus():
            view.setFocus()
        self._active_changed(old)

    def _active_changed(self, old_uid: str | None) -> None:
        """The active viewport, or what it shows, changed: slider, title, tags and the stack_shown signal."""
        uid = self._current_uid
        self._active_uid_seen = uid
        if uid is not None:  # the browser highlights what the active viewport shows (no selection signal)
            self.browser.select(uid)
        view = self.view
        resliced = view.planes() is not None
        back_to_slices = self._active_planes_seen and not resliced
        self._active_planes_seen = resliced
        n = view.count()
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, n - 1))
        self.slider.setValue(view.index if n else 0)
        self.slider.setEnabled(n > 1)
        self.slider.blockSignals(False)
        if uid != old_uid or resliced:
            for key in list(self.slider.marks()):  # marks are slice indices of the stack's own slices
                self.slider.set_marks(key, [], "")
        self.slice_label.setText(f"{view.index + 1} / {n}" if n else "– / –")
        self._update_title()
        if uid is None:
            self._decode_timer.stop()
            self._hide_progress()
            self.hover_label.setText("")
            self.tag_browser.set_source(None)
        elif uid != old_uid:
            self._bad_seen = 0
            self._decode_timer.start()
            self.stack_shown.emit(self._stacks[uid])
            self._update_tags()
        elif back_to_slices:  # the same stack's own slices after MPR planes: marks and AI text again
            self.stack_shown.emit(self._stacks[uid])
        self._sync_slab_controls()

    def _on_viewport(self, index: int, vp: ViewportState) -> None:
        """Render a viewport's state: its stack, plane and slice here, then its window, zoom and turn (the
        view's own :meth:`SliceView.render_state`)."""
        if index >= len(self._rendered):
            return
        self._show_viewport(index, vp)
        self.grid.view(index).render_state()

    def _mark_other_patients(self) -> None:
        """Each viewport showing another patient than a viewport beside it is marked in its corner text
        (deliberate comparisons stay possible; a reader must see them), cleared once they match."""
        other = self.state.other_patient_viewports()
        for i, view in enumerate(self.grid.views()):
            view.overlay.set_other_patient(i in other)

    def _show_viewport(self, index: int, vp: ViewportState) -> None:
        old_uid = self._active_uid_seen
        view = self.grid.view(index)
        if vp.stack_key is None:
            if self._rendered[index] is not None:
                _close_planes(view)
                view.clear()
                self._rendered[index] = None
                self._release_unused()
                if index == self.state.active:
                    self._active_changed(old_uid)
            return
        entry = self.state.catalogue[vp.stack_key]
        want: Rendered = (vp.stack_key, vp.orientation, vp.oblique, vp.slab)
        if self._rendered[index] != want:
            source = self._source(entry, vp)
            old = view.planes()
            turned = self._rendered[index]
            if (
                isinstance(source, PlaneSlices)
                and old is not None
                and turned is not None
                and turned[0] == vp.stack_key
                and turned[3] == vp.slab
                and Orientation.OBLIQUE in (turned[1], vp.orientation)
            ):  # the crosshair turned this plane: keep window, zoom and the image until the new plane
                self._rendering = True
                try:
                    view.swap_planes(source, self._index_of(entry, vp, source))
                finally:
                    self._rendering = False
                old.close()
                self._rendered[index] = want
                if index == self.state.active:
                    self._active_changed(old_uid)
                self._refresh_reference_lines()
                return
            self._rendering = True
            try:
                view.set_volume(source, self._contexts[vp.stack_key], index=self._index_of(entry, vp, source))
            finally:
                self._rendering = False
            if old is not None:
                old.close()
            self._rendered[index] = want
            self._release_unused()
            if index == self.state.active:
                self._active_changed(old_uid)
            self._refresh_reference_lines()
            return
        target = self._index_of(entry, vp, view.volume)
        if view.index != target:
            self._rendering = True
            try:
                view.set_index(target)
            finally:
                self._rendering = False
            self._refresh_reference_lines()

    def _source(self, entry: CatalogueEntry, vp: ViewportState) -> StackVolume | PlaneSlices:
        uid = entry.key
        volume = self._volumes.get(uid)
        if volume is None:
            volume = self._volumes[uid] = StackVolume(entry.stack)
        if vp.orientation is Orientation.NATIVE:
            return volume
        loader = self._loaders.get(uid)
        if loader is None:
            loader = self._loaders[uid] = VolumeLoader(entry.stack)
        return PlaneSlices(loader, entry, vp)

    @staticmethod
    def _index_of(entry: CatalogueEntry, vp: ViewportState, source: object) -> int:
        """The view index of the viewport's position (mm, or a slice index without geometry)."""
        if isinstance(source, PlaneSlices):
            return source.index_of(vp.position_mm)
        if entry.geometry is None:
            return max(0, min(entry.slice_count - 1, round(vp.position_mm)))
        return entry.geometry.nearest_slice(vp.position_mm)

    def _on_view_index(self, view: SliceView, index: int) -> None:
        """A view moved (wheel, keys, cine, slider): the state learns its position, and sync follows."""
        i = self.grid.index_of(view)
        if i is None:
            return
        if not self._rendering and i < len(self._rendered) and self._rendered[i] is not None:
            vp = self.state.viewport(i)
            if vp.stack_key is not None:
                entry = self.state.catalogue[vp.stack_key]
                planes = view.planes()
                if planes is not None:
                    position = planes.position(index)
                elif entry.geometry is not None:
                    position = float(entry.geometry.locations[index])
                else:
                    position = float(index)
                if position != vp.position_mm:
                    self._moving = True
                    try:
                        self.state.set_position(i, position)  # synced viewports follow
                    finally:
                        self._moving = False
                    self._refresh_reference_lines()
        if view is self.view:
            self._on_index_changed(index)

    def _viewport_plane(self, index: int) -> Plane | None:
        """The plane viewport ``index`` shows now (None: empty, or a stack without geometry)."""
        vp = self.state.viewports[index]
        if vp.stack_key is None or self._rendered[index] is None:
            return None
        view = self.grid.view(index)
        planes = view.planes()
        if planes is not None:
            return planes.plane(view.index)
        geom = self.state.catalogue[vp.stack_key].geometry
        return None if geom is None or not view.count() else native_plane(geom, view.index)

    def _refresh_reference_lines(self) -> None:
        """Each viewport draws the planes of the other viewports of its frame of reference as lines."""
        if self._moving or not hasattr(self, "act_reference_lines"):
            return
        n = len(self._rendered)
        crosshair = self.state.tool is Tool.CROSSHAIR  # the crosshair's lines are the reference lines
        on = (self.act_reference_lines.isChecked() or crosshair) and n > 1
        planes = [self._viewport_plane(i) for i in range(n)] if on else [None] * n
        frames = [
            self.state.catalogue[vp.stack_key].frame_of_reference_uid if vp.stack_key else None
            for vp in self.state.viewports
        ]
        for i, view in enumerate(self.views()):
            lines: list[ReferenceLine] = []
            target = planes[i]
            for j, other in enumerate(planes):
                if target is None or other is None or j == i or frames[j] is None or frames[j] != frames[i]:
                    continue
                known = self._ref_cache.get((i, j))
                if known is not None and known[0] == target and known[1] == other:
                    seg = known[2]
                else:
                    seg = reference_line(target, other)
                    self._ref_cache[(i, j)] = (target, other, seg)
                if seg is not None:
                    turnable = self.state.viewports[j].orientation is not Orientation.NATIVE
                    lines.append(
                        ReferenceLine(f"viewport{j}", seg[0], seg[1], REFERENCE_COLORS[j % 6], turnable)
                    )
            view.set_reference_lines(lines)

    def _release_unused(self) -> None:
        """Close the slices and volumes of stacks no viewport shows any more."""
        shown = {vp.stack_key for vp in self.state.viewports if vp.stack_key is not None}
        mpr = {
            vp.stack_key
            for vp in self.state.viewports
            if vp.stack_key is not None and vp.orientation is not Orientation.NATIVE
        }
        for uid in [u for u in self._volumes if u not in shown]:
            self._volumes.pop(uid).close()
        for uid in [u for u in self._loaders if u not in mpr]:
            self._loaders.pop(uid).close()

    def _on_stack_dropped(self, index: int, stack_uid: str) -> None:
        if stack_uid not in self._stacks:
            return
        self.state.set_active(index)
        self.browser.select(stack_uid)
        if self.state.viewport(index).stack_key != stack_uid:
            self.show_in_viewport(index, stack_uid)
        self.view.setFocus()

    def _sync_slab_controls(self) -> None:
        if not hasattr(self, "slab_combo"):
            return
        vp = self.state.viewport(self.state.active)
        mode = vp.slab.mode if vp.slab is not None else None
        self.slab_combo.blockSignals(True)
        self.slab_combo.setCurrentIndex([m for m, _ in SLAB_CHOICES].index(mode))
        self.slab_combo.blockSignals(False)
        self.slab_combo.setEnabled(vp.orientation is not Orientation.NATIVE)
        self.slab_spin.blockSignals(True)
        self.slab_spin.setValue(vp.slab.thickness_mm if vp.slab is not None else self._slab_thickness)
        self.slab_spin.blockSignals(False)
        self.slab_spin.setEnabled(vp.orientation is not Orientation.NATIVE)

    def _on_slab_combo(self, row: int) -> None:
        self.set_slab(SLAB_CHOICES[row][0])

    def _on_slab_spin(self, value: float) -> None:
        self._slab_thickness = float(value)
        vp = self.state.viewport(self.state.active)
        if vp.slab is not None:
            self.set_slab(vp.slab.mode, value)

    def show_item(self, stack_uid: str, index: int = 0) -> None:
        """Show a stack at a slice (a double-click in the load report); a closed stack is ignored."""
        if stack_uid in self._stacks:
            self.show_stack(stack_uid)
            self.set_slice(index)
            self.view.setFocus()

    def close_study(self) -> None:
        """File › Close study: every stack of the shown study leaves the browser and the session."""
        uid = self._current_uid
        if uid is None:
            self.show_status("No study shown")
            return
        owner = self._owners[uid]
        self._close_stacks([u for u, o in self._owners.items() if o[:3] == owner[:3]])

    def clear_all(self) -> None:
        """File › Clear all: close every study."""
        self._close_stacks(list(self._stacks))

    def _close_stacks(self, uids: Sequence[str]) -> None:
        gone = set(uids)
        if not gone:
            return
        for uid in gone:
            if uid in self.state.catalogue:
                self.state.remove_stack(uid)  # its viewports are emptied (and their views cleared)
            for table in (self._stacks, self._contexts, self._sources, self._owners):
                table.pop(uid, None)
        self._release_unused()
        self.browser.remove_stacks(gone)
        self.report_panel.forget_stacks(gone)
        self.stacks_closed.emit(sorted(gone))
        self._update_title()
        left = [self._stacks[u] for u in self.browser.stack_uids() if u in self._stacks]
        if self._current_uid is None and left:
            self.show_stack(_preferred_stack(left).uid)
        self.show_status(f"Closed {len(gone)} stack(s)")

    def open_paths(
        self, paths: Sequence[str | Path], *, source: SourceRef | None = None, show: bool = True
    ) -> None:
        """Load ``paths`` (files, folders, zips, DICOMDIR) in the background, like a drop. ``source``
        says where the study came from when that is not these paths (a PACS node: the paths are its
        cache folders, neither recent studies nor the dialogs' last folder). ``show=False`` only lists
        the stacks in the browser (a further series of a study still arriving): what is on screen, a
        preview included, and the status line stay as they are."""
        names = [str(p) for p in paths]
        if not names:
            return
        if source is None or not source.is_pacs:
            self.settings.add_recent(names)
            first = Path(names[0])
            self.settings.last_folder = str(first if first.is_dir() else first.parent)
        job = LoadJob(names, self, source=source)
        job.done.connect(lambda report, j=job: self._on_load_done(j, report, show=show))
        job.failed.connect(lambda msg, j=job: self._on_load_failed(j, msg, show=show))
        self._jobs.append(job)
        if show:
            job.progress.connect(self._on_load_progress)
            job.provisional.connect(self._on_load_provisional)
            self._show_progress("Scanning", 0, 0)
            self.show_status("Scanning…", 0)
        job.start()

    def cancel_loading(self) -> None:
        for job in self._jobs:
            if isinstance(job, LoadJob):
                job.cancel()
        self.show_status("Cancelling…", 2000)

    def is_loading(self) -> bool:
        return any(isinstance(j, LoadJob) for j in self._jobs)

    # ============================================================== public API: extension points
    def add_panel_below_image(self, widget: QWidget, stretch: int = 0) -> None:
        self._central_layout.addWidget(widget, stretch)

    def showEvent(self, ev: QShowEvent) -> None:
        super().showEvent(ev)
        if not self._docks_sized:
            self._docks_sized = True
            self.size_side_docks()

    def size_side_docks(self) -> None:
        """The visible side docks at their first widths (:data:`~viewer.qt.style.LEFT_DOCK_PX`,
        :data:`~viewer.qt.style.RIGHT_DOCK_PX`), whatever their contents ask: a wide tree elides or
        scrolls inside its dock instead of taking the image's room. Window resizes leave them as they are
        (the image takes the difference), as do the user's own drags afterwards."""
        widths = {
            Qt.DockWidgetArea.LeftDockWidgetArea: LEFT_DOCK_PX,
            Qt.DockWidgetArea.RightDockWidgetArea: RIGHT_DOCK_PX,
        }
        docks = [
            d
            for d in self.findChildren(QDockWidget)
            if d.isVisible() and not d.isFloating() and self.dockWidgetArea(d) in widths
        ]
        if docks:
            sizes = [widths[self.dockWidgetArea(d)] for d in docks]
            self.resizeDocks(docks, sizes, Qt.Orientation.Horizontal)
            layout = self.layout()
            if layout is not None:
                layout.activate()  # now, not at the next layout pass: the first frame has these widths

    def add_dock(
        self, widget: QWidget, title: str, area: Qt.DockWidgetArea = Qt.DockWidgetArea.RightDockWidgetArea
    ) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{title.lower().replace(' ', '_')}")
        dock.setWidget(widget)
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetClosable
            | QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
        )
        existing = [
            d
            for d in self.findChildren(QDockWidget)
            if d is not dock and self.dockWidgetArea(d) == area and not d.isFloating()
        ]
        self.addDockWidget(area, dock)
        if existing and area in (
            Qt.DockWidgetArea.RightDockWidgetArea,
            Qt.DockWidgetArea.BottomDockWidgetArea,
        ):
            self.tabifyDockWidget(existing[-1], dock)
        return dock

    def menu(self, name: str) -> QMenu:
        if name in self._menus:
            return self._menus[name]
        bar = self.menuBar()
        menu = QMenu(name, self)
        menu.setObjectName(f"menu_{name}")
        rank = MENU_ORDER.index(name) if name in MENU_ORDER else MENU_ORDER.index("Help") - 0.5
        before = None
        for other, m in self._menus.items():
            other_rank = MENU_ORDER.index(other) if other in MENU_ORDER else MENU_ORDER.index("Help") - 0.5
            if other_rank > rank and (before is None or other_rank < before[0]):
                before = (other_rank, m)
        if before is None:
            bar.addMenu(menu)
        else:
            bar.insertMenu(before[1].menuAction(), menu)
        self._menus[name] = menu
        return menu

    def menu_names(self) -> list[str]:
        """Menu titles in menu-bar order."""
        return [a.text() for a in self.menuBar().actions() if a.menu() is not None]

    @property
    def toolbar(self) -> QToolBar:
        return self._toolbar

    def add_status_widget(self, widget: QWidget) -> None:
        self.statusBar().addPermanentWidget(widget)

    def show_status(self, text: str, timeout_ms: int = 5000) -> None:
        self.statusBar().showMessage(text, timeout_ms)

    def set_slice_marks(self, key: str, indices: Sequence[int], color: str) -> None:
        self.slider.set_marks(key, indices, color)

    def set_image_corner_text(self, key: str, html: str, compact: str = "") -> None:
        """An extension's text in the active viewport's corner (it moves with the active viewport);
        ``compact``: the one line a small viewport shows instead (the full text is its tooltip)."""
        if html:
            self._corner_html[key] = (html, compact)
        else:
            self._corner_html.pop(key, None)
        self.view.overlay.set_extra_html(key, html, compact)

    def set_title_badge(self, text: str) -> None:
        self._title_badge = text
        self._update_title()

    def set_stack_badge(self, stack_uid: str, text: str) -> None:
        self.browser.set_badge(stack_uid, text)

    def register_shortcut(
        self, key: str | QKeySequence, callback: Callable[[], None], description: str
    ) -> QAction:
        """A keyed command of an extension (F1 section "Extensions"): an entry of the action registry."""
        seq = key if isinstance(key, QKeySequence) else QKeySequence(key)
        name = seq.toString(QKeySequence.SequenceFormat.PortableText)
        return self.add_action(ActionSpec(f"extension_{name}", description, callback, (name,), "Extensions"))

    def bindings(self) -> list[Binding]:
        """Every key and mouse binding, as listed by F1 (keys from the action registry)."""
        return mouse_bindings() + self.actions_registry.bindings()

    # ============================================================== loading
    def _show_progress(self, phase: str, done: int, total: int, unit: str = "files") -> None:
        self.progress_label.setText(phase)
        self.progress.setRange(0, max(total, 0))
        self.progress.setValue(done)
        self.progress.setFormat(f"%v / %m {unit}" if total else "…")
        for w in (self.progress_label, self.progress, self.cancel_button):
            w.show()

    def decoded_count(self) -> int:
        """Slices of the shown stack already decoded (in the volume's cache or known bad)."""
        vol = self._volume
        if vol is None:
            return 0
        return sum(1 for i in range(len(vol)) if vol.cached(i) is not None or i in vol.bad_slices)

    def is_decoding(self) -> bool:
        """True while the decode progress of the shown stack is followed (and shown)."""
        return self._decode_timer.isActive()

    def _poll_decoded(self) -> None:
        """Decode progress of the slices the background prefetch works on around the current slice.

        Counting the whole stack stalled the bar (e.g. at "2 / 3 slices") when one prefetch could not
        reach or hold every slice: the rest is decoded only once the reader scrolls towards it.
        """
        self._note_bad_slices()
        if self.is_loading():
            return
        vol = self._volume
        if vol is None:
            self._decode_timer.stop()
            self._hide_progress()
            return
        reach = vol.prefetch_reach(self.view.native_index())
        done = sum(1 for i in reach if vol.cached(i) is not None or i in vol.bad_slices)
        if done >= len(reach):
            self._decode_timer.stop()
            self._hide_progress()
            return
        self._show_progress("Decoding", done, len(reach), unit="slices")

    def _note_bad_slices(self) -> None:
        """Slices of the shown stack found undecodable (while viewing or prefetching) join the load
        report, once each."""
        vol, uid = self._volume, self._current_uid
        if vol is None or uid is None or len(vol.bad_slices) == self._bad_seen:
            return
        bad = dict(vol.bad_slices)
        self._bad_seen = len(bad)
        ctx = self._contexts[uid]
        added = [
            i
            for i, msg in sorted(bad.items())
            if self.report_panel.add_bad_slice(ctx.stack, i, msg, ctx.patient)
        ]
        if added:
            self.show_status(
                f"{len(added)} slice(s) of this stack cannot be shown: see View › Load report", 8000
            )

    def _hide_progress(self) -> None:
        if not self.is_loading():
            for w in (self.progress_label, self.progress, self.cancel_button):
                w.hide()

    def _on_load_progress(self, done: int, total: int) -> None:
        self._show_progress("Scanning", done, total)

    def _on_load_provisional(self, stack: Stack) -> None:
        """The first files of a big folder, sorted among themselves: shown while the scan goes on when the
        viewer shows nothing yet (first image in ~0.02 s instead of after the whole scan, 0.2-0.4 s for
        1,000 files, far longer on a network share). Only the image and a "Preview" line: the final stack
        replaces it when the scan ends (or the view empties if it finds nothing)."""
        self.show_preview(stack, f"Preview of the first {len(stack)} files while the rest are scanned…")

    def show_preview(self, stack: Stack, message: str, *, keep_place: bool = False) -> bool:
        """Show ``stack`` (not added to the browser) with ``message`` in the status bar while the viewer
        shows nothing else, until the next load ends or :meth:`end_preview`; False when something is
        shown already (a preview never replaces what the reader is looking at). ``keep_place``: the
        loaded series opens at the preview's slice (a retrieve's preview, which the reader may have
        scrolled for a while), not at its first slice."""
        if self._closed or self._preview is not None or any(r is not None for r in self._rendered):
            return False
        self._preview_keeps_place = keep_place
        self._preview = StackVolume(stack, cache_bytes=PREVIEW_CACHE_BYTES)
        self.view.set_volume(self._preview, StackContext(stack), index=len(stack) // 2)
        self.show_status(message, 0)
        return True

    def update_preview(self, stack: Stack, message: str) -> bool:
        """Replace the preview on screen with ``stack``, the same series grown by more slices (a retrieve
        streaming in): each view on the preview keeps its slice by patient position (not index), its
        window and zoom. False when no view shows the preview any more (the load ended, or the reader
        opened something else): the caller stops sending them."""
        old = self._preview
        views = [v for v in self.grid.views() if old is not None and v.volume is old]
        if self._closed or old is None or not views or not stack.slices:
            return False
        self._preview = volume = StackVolume(stack, cache_bytes=PREVIEW_CACHE_BYTES)
        context = StackContext(stack)
        for view in views:
            shown = view.context.stack if view.context is not None else stack
            view.replace_volume(volume, context, matching_slice(shown, view.index, stack))
        old.close()
        self.show_status(message, 0)
        return True

    def _preview_place(self) -> tuple[str, float] | None:
        """(series UID, position along the normal in mm) of the active view's slice when it shows the
        preview: the loaded series opens there (the reader's place kept)."""
        view = self.view
        if not self._preview_keeps_place or self._preview is None or view.volume is not self._preview:
            return None
        if view.context is None:
            return None
        stack = view.context.stack
        position = slice_position_mm(stack, view.index) if stack.slices else None
        return None if position is None else (stack.series_instance_uid, position)

    def _keep_preview_place(self, place: tuple[str, float] | None) -> None:
        """After a load replaced the preview: the active viewport, when it shows the previewed series as
        acquired, goes to the reader's position in it."""
        index = self.state.active
        entry = self.state.entry(index)
        vp = self.state.viewport(index)
        if place is None or entry is None or entry.geometry is None:
            return
        if vp.orientation is not Orientation.NATIVE or entry.stack.series_instance_uid != place[0]:
            return
        try:
            self.state.set_position(index, place[1])
        except ViewerStateError as exc:
            logger.info("The preview's position could not be kept (%s)", type(exc).__name__)

    def end_preview(self) -> None:
        """The load ended: its stacks are shown by now; a view still on the preview is emptied."""
        preview, self._preview = self._preview, None
        if preview is None:
            return
        for view in self.grid.views():
            if view.volume is preview:
                view.clear()
        preview.close()

    def _on_load_done(self, job: LoadJob, report: LoadReport, *, show: bool = True) -> None:
        self._forget(job)
        if self._closed:
            return  # delivered after close: opening a volume or a thumbnail job now would outlive the window
        self._hide_progress()
        report = rekey_report(report, self._owners)  # another patient's series under an open UID
        new = self.browser.add_report(report)  # first: the report numbers patients as the browser does
        self.report_panel.add_report(report)
        if _needs_attention(report):
            self.report_dock.show()
        for patient in report.patients:
            for study in patient.studies:
                for series in study.series:
                    for stack in series.stacks:
                        if stack.uid not in self._stacks:
                            who = patient_key(patient.patient_id, patient.name)
                            self.state.add_stack(stack, patient_key=who)
                            self._stacks[stack.uid] = stack
                            self._contexts[stack.uid] = StackContext(stack, patient, study)
                            self._sources[stack.uid] = job.source or SourceRef.local(job.paths)
                            self._owners[stack.uid] = stack_owner(patient, study, stack)
        hint = "  (see View › Load report)" if self.report_panel.has_issues() else ""
        if show:
            self.show_status(report.summary() + hint, 8000)
        if new and show:  # a newly opened study is shown (and selected in the browser), not just listed
            first = _preferred_stack(new).uid
            place = self._preview_place()
            empty = self.settings.hang_on_open and all(vp.is_empty for vp in self.state.viewports)
            if not (empty and self.hanging.hang(first) is not None):  # its protocol, in an empty viewer
                self.show_stack(first)
            self._keep_preview_place(place)
        if new:
            thumbs = ThumbnailJob(new, self)
            thumbs.ready.connect(self.browser.set_thumbnail)
            thumbs.failed.connect(lambda _m, j=thumbs: self._forget(j))
            thumbs._thread.finished.connect(lambda j=thumbs: self._forget(j))
            self._jobs.append(thumbs)
            thumbs.start()
        if not show:
            self.load_finished.emit(report)
            return
        self.end_preview()
        if not report.all_stacks() and not report.cancelled:
            self.show_status("No displayable DICOM images found: see the load report", 10000)
            self.report_dock.show()
        self.load_finished.emit(report)

    def _on_load_failed(self, job: LoadJob, message: str, *, show: bool = True) -> None:
        self._forget(job)
        if self._closed:
            return
        self._hide_progress()
        if show:
            self.end_preview()
        if self.privacy_mode():  # an exception's text may name a folder (often the patient's name)
            message = f"{message.split(':', 1)[0]} (details hidden in privacy mode)"
        self.show_status(f"Loading failed: {message}", 10000)
        empty = LoadReport(patients=(), warnings=(f"Loading failed: {message}",))
        self.report_panel.add_report(empty)
        self.report_dock.show()
        self.load_finished.emit(empty)

    def _forget(self, job: Any) -> None:
        if job in self._jobs:
            self._jobs.remove(job)

    def wait_for_jobs(self, ms: int = 30_000) -> None:
        for job in list(self._jobs):
            job.wait(ms)

    # ============================================================== dialogs and actions
    def open_files_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self,
            "Open DICOM files",
            self.settings.last_folder,
            "DICOM files (*.dcm *.dicom *.ima DICOMDIR *.zip);;All files (*)",
        )
        if files:
            self.open_paths(files)

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open DICOM folder", self.settings.last_folder)
        if folder:
            self.open_paths([folder])

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        groups = self.settings.recent()
        if not groups:
            self.recent_menu.addAction("(none)").setEnabled(False)
            return
        for group in groups:
            label = Path(group[0]).name or group[0]
            if len(group) > 1:
                label += f" (+{len(group) - 1})"
            act = self.recent_menu.addAction(label)
            act.setToolTip(group[0])
            act.triggered.connect(lambda _=False, g=group: self.open_paths(g))
        self.recent_menu.addSeparator()
        self.recent_menu.addAction("Clear list").triggered.connect(self.settings.clear_recent)

    def export_dir(self) -> Path:
        """Where export dialogs start: the last export folder, else the user's Pictures (Documents, home),
        never the opened study's folder (often read-only media, and a name that may identify the patient)."""
        last = self.settings.export_folder
        if last and Path(last).is_dir():
            return Path(last)
        for location in (QStandardPaths.StandardLocation.PicturesLocation,
                         QStandardPaths.StandardLocation.DocumentsLocation):
            folder = QStandardPaths.writableLocation(location)
            if folder and Path(folder).is_dir():
                return Path(folder)
        return Path.home()

    def export_dialog(self) -> None:
        if self.current_stack() is None:
            self.show_status("Nothing to export: open a study first")
            return
        default = str(self.export_dir() / "slicewise_view.png")
        path, _ = QFileDialog.getSaveFileName(self, "Export view as PNG", default, "PNG image (*.png)")
        if path:
            self.export_view(path)

    def export_measurement_sr_dialog(self) -> None:
        if self.current_stack() is None:
            self.show_status("Nothing to export: open a study first")
            return
        folder = QFileDialog.getExistingDirectory(
            self, "Export measurements as DICOM SR", str(self.export_dir())
        )
        if not folder:
            return
        try:
            path = self.export_measurement_sr(folder)
        except (MeasurementError, OSError) as exc:
            log_failure(logger, logging.WARNING, "Measurement SR not written", exc)
            self.show_status(f"Measurement SR not written: {exc}")
            return
        self.settings.export_folder = str(path.parent)
        self.show_status(f"Measurement SR written: {path.name}")

    def export_measurement_sr(self, folder: str | Path) -> Path:
        """Write the shown series' measurements (on its own slices) as a TID 1500 measurement SR into
        ``folder``; ROI statistics come from the slices' modality values. The slices are decoded and the
        SR built in the helper process (:func:`viewer.core.measure_sr.write_measurement_sr`); this waits
        for it, at most ``process.RESULT_TIMEOUT_S``. De-identified unless File › Include patient
        name/ID is ticked (and privacy is off)."""
        from viewer.core.airesults import process
        from viewer.core.measure_sr import write_measurement_sr

        stack = self.current_stack()
        if stack is None:
            raise MeasurementError("No series is shown")
        index = {(s.sop_instance_uid, s.source.frame): i for i, s in enumerate(stack.slices)}
        placed = []
        for m in self.measurements.of_study(stack.study_instance_uid):
            r = m.ref
            i = index.get((r.sop_uid, r.frame))
            if r.series_uid == stack.series_instance_uid and r.plane == NATIVE_PLANE and i is not None:
                placed.append((m, i))
        include = self.act_export_phi.isChecked() and not self.privacy_mode()
        future = process.call(write_measurement_sr, stack, placed, Path(folder), include)
        try:
            return future.result(timeout=process.RESULT_TIMEOUT_S)
        except (MeasurementError, OSError):
            raise
        except TimeoutError as exc:
            raise MeasurementError("The measurement SR was not written in time") from exc
        except (SlicewiseError, RuntimeError, ValueError) as exc:  # a bad slice, a dead helper process
            raise MeasurementError(f"The measurement SR could not be built ({type(exc).__name__})") from exc

    def export_view(self, path: str | Path) -> Path:
        include = self.act_export_phi.isChecked() and not self.privacy_mode()
        out = export_png(self.view, path, include_demographics=include)
        self.settings.export_folder = str(Path(out).parent)
        self.show_status("Exported view" + (" with patient identifiers" if include else " (de-identified)"))
        return out

    def _on_remember_recent(self, checked: bool) -> None:
        self.settings.remember_recent = checked

    def _on_export_phi(self, checked: bool) -> None:
        self.settings.export_demographics = checked

    def _on_privacy(self, checked: bool) -> None:
        self._set_privacy(checked)
        self.settings.privacy = checked

    def _set_privacy(self, on: bool) -> None:
        self.act_privacy.setIcon(icon("privacy-on" if on else "privacy-off"))
        for view in self.views():
            view.set_show_phi(not on)
        self.browser.set_privacy(on)
        self.report_panel.set_privacy(on)
        self.tag_browser.set_privacy(on)
        self.privacy_changed.emit(on)

    def _on_playing(self, playing: bool) -> None:
        self.act_cine.setChecked(playing)
        self.act_cine.setIcon(icon("pause" if playing else "play"))

    def _on_fps(self, fps: int) -> None:
        for view in self.views():
            view.set_cine_fps(fps)
        self.settings.cine_fps = fps

    def _apply_preset(self, name: str) -> None:
        if self._volume is not None:
            self.view.apply_preset(name)

    def _save_preset(self, name: str) -> None:
        self.settings.set_preset(name, self.view.current_window())
        self._reload_presets()
        self.show_status(f"Preset {name} saved")

    def _reset_presets(self) -> None:
        self.settings.reset_presets()
        self._reload_presets()

    def _reload_presets(self) -> None:
        for view in self.views():
            view.presets = self.settings.presets()
        for k, (act, name) in enumerate(
            zip(self.preset_actions.actions(), PRESET_KEYS, strict=True), start=1
        ):
            w = self.view.presets[name]
            act.setText(f"{name.capitalize()}  ({w.width:g}/{w.level:g})\t{k}")

    def _toggle_tags(self) -> None:
        self.tag_dock.setVisible(not self.tag_dock.isVisible())
        if self.tag_dock.isVisible():
            self.tag_dock.raise_()

    def _show_report(self) -> None:
        self.report_dock.show()
        self.report_dock.raise_()

    def _toggle_fullscreen(self) -> None:
        self.setWindowState(self.windowState() ^ Qt.WindowState.WindowFullScreen)

    def _toggle_image_only(self) -> None:
        """Hide every docked panel (the image takes the window: on a 1366 x 768 screen 66 % of it
        instead of about a third), or bring the panels back where they were."""
        if self.act_image_only.isChecked():
            self._panels_state = self.saveState()
            for dock in self.findChildren(QDockWidget):
                if not dock.isFloating():
                    dock.hide()
        elif self._panels_state is not None:
            self.restoreState(self._panels_state)
            self._panels_state = None

    def show_help(self) -> KeyboardHelp:
        if self._help is not None:
            self._help.close()
        self._help = KeyboardHelp(self.bindings(), self)
        self._help.show()
        return self._help

    def _about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}", f"<b>{APP_NAME}</b><br>{INTENDED_USE}")

    def _invert(self) -> None:
        self.view.toggle_invert()

    def _header_window(self) -> None:
        if self._volume is not None:
            self.view.reset_window()

    def _escape(self) -> None:
        """Esc: first a half-drawn measurement, a text edit or the selection, then cine and the tool."""
        if self.view.layer.escape():
            return
        self.view.stop_cine()
        if self.state.tool is Tool.CROSSHAIR:
            self.set_crosshair_tool(False)
        self.view.set_tool("window")

    # ============================================================== view feedback
    def _on_index_changed(self, index: int) -> None:
        """The active view moved to ``index`` (its own numbering: slices, or MPR planes)."""
        n = self.view.count()
        if self.slider.value() != index:
            self.slider.blockSignals(True)
            self.slider.setValue(index)
            self.slider.blockSignals(False)
        self.slice_label.setText(f"{index + 1} / {n}")
        self._note_bad_slices()
        if self.tag_dock.isVisible():
            self._update_tags_later()  # not on every step: re-reading a header would slow scrolling
        self.slice_changed.emit(self.view.native_index())

    def _on_hover(self, text: str) -> None:
        self.hover_label.setText(text)

    def _on_tag_visibility(self, visible: bool) -> None:
        if visible:
            if not self.tag_dock.isFloating() and self.tag_dock.width() < TAG_DOCK_MIN_PX:
                # a dock opens at its (narrow) size hint: too narrow for the Value column
                self.resizeDocks([self.tag_dock], [TAG_DOCK_MIN_PX], Qt.Orientation.Horizontal)
            self._update_tags()

    def _update_tags(self) -> None:
        stack = self.current_stack()
        if stack is None or not self.tag_dock.isVisible():
            return
        k = self.view.native_index()
        info = stack.slices[k]
        self.tag_browser.set_source(info.source, f"Slice {k + 1} / {len(stack)}: {info.source.display_name}")

    def _update_title(self) -> None:
        parts = [APP_NAME]
        stack = self.current_stack()
        if stack is not None:
            parts.append(stack.series_description or stack.modality)
        if self._title_badge:
            parts.append(self._title_badge)
        self.setWindowTitle(" — ".join(parts))

    # ============================================================== Qt events
    def keyPressEvent(self, ev: QKeyEvent) -> None:
        """Image keys the focused widget left unused (arrows, Page Up/Down, ...): the action registry."""
        if self.actions_registry.dispatch(ev):
            return
        super().keyPressEvent(ev)

    def step_stack(self, delta: int) -> None:
        uids = self.browser.stack_uids()
        if not uids:
            return
        k = uids.index(self._current_uid) if self._current_uid in uids else -1
        self.show_stack(uids[max(0, min(len(uids) - 1, k + delta))])

    def dragEnterEvent(self, ev: QDragEnterEvent) -> None:
        if ev.mimeData().hasUrls() and any(u.isLocalFile() for u in ev.mimeData().urls()):
            ev.acceptProposedAction()
        else:
            ev.ignore()

    def dragMoveEvent(self, ev: Any) -> None:
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev: QDropEvent) -> None:
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if paths:
            ev.acceptProposedAction()
            self.open_paths(paths)
        else:
            ev.ignore()

    def closeEvent(self, ev: QCloseEvent) -> None:
        editor = self.hanging.editor if hasattr(self, "hanging") else None
        if editor is not None and editor.dirty and not self._closed:
            # unsaved hanging-protocol edits: ask (non-modal) first; Save or Discard then closes the window
            ev.ignore()
            editor.show()
            editor.raise_()
            if self.close not in editor.after_close:
                editor.after_close.append(self.close)
            editor.ask_unsaved()
            return
        self._closed = True
        self.about_to_close.emit()
        for view in self.views():
            view.stop_cine()
        self._decode_timer.stop()
        for job in list(self._jobs):
            job.cancel()
        self.wait_for_jobs()
        self._jobs.clear()
        # closed in "Image only": keep the panels as they were before, or the next start shows none
        panels = self._panels_state if self._panels_state is not None else self.saveState()
        self.settings.save_window(bytes(self.saveGeometry().data()), bytes(panels.data()))
        self.settings.sync()
        for view in self.views():
            _close_planes(view)
            view.clear()
        self.end_preview()
        for volume in self._volumes.values():
            volume.close()
        for loader in self._loaders.values():
            loader.close()
        self._volumes.clear()
        self._loaders.clear()
        super().closeEvent(ev)


START_SIZE = (1440, 900)


def _start_size(window: QWidget) -> QSize:
    """The first size of the window: 1440 x 900, never more than the screen offers (on a 1366 x 768
    laptop screen a bigger window put the timeline and the status bar below its edge where no window
    manager maximised it)."""
    width, height = START_SIZE
    screen = window.screen() or QGuiApplication.primaryScreen()
    if screen is not None:
        avail = screen.availableGeometry()
        width, height = min(width, avail.width()), min(height, avail.height())
    return QSize(width, height)


def _close_planes(view: SliceView) -> None:
    """Stop the reslice thread of a view's MPR planes (before the view drops them)."""
    planes = view.planes()
    if planes is not None:
        planes.close()


def _needs_attention(report: LoadReport) -> bool:
    """Open the load report by itself for real problems; stray non-DICOM files only go to the status bar."""
    if any(s.code != "E-NOT-DICOM" for s in report.skipped):
        return True
    return any(st.warnings or st.label for st in report.all_stacks())


def _preferred_stack(stacks: Sequence[Stack]) -> Stack:
    """The stack to show first: the longest non-localizer stack, else the first."""
    candidates = [s for s in stacks if s.label != "localizer"] or list(stacks)
    return max(candidates, key=len)
