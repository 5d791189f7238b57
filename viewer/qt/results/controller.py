"""Shows others' results (SEG, Parametric Map, SR, presentation states) found by a load: parses them in
the helper process (:mod:`viewer.core.airesults.process`, off the GUI thread), places them on the loaded
slices, draws masks and regions on every viewport that shows such a slice, lists them in the Results
dock, marks their slices on the slider and lists what cannot be shown in the load report."""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from concurrent.futures import Future
from functools import partial
from typing import Any

from PySide6.QtCore import QCoreApplication, QDeadlineTimer, QEventLoop, QObject, Signal

from viewer.core.codes import Code, describe
from viewer.core.dicom.model import LoadReport, ResultFile
from viewer.core.foreign.kinds import ResultKind, result_kind
from viewer.core.foreign.legend import legend_groups
from viewer.core.foreign.match import (
    MaskFrame,
    Placed,
    PlacedEntry,
    PlacedSeg,
    SegObject,
    SliceAt,
    compose_overlay,
    place,
)
from viewer.core.foreign.model import EntryKind, ForeignObject, ResultFailure
from viewer.core.foreign.read import read_result_files
from viewer.qt.actions import ActionSpec
from viewer.qt.load_report import ReportRow
from viewer.qt.results.legend import OverlayLegend
from viewer.qt.results.overlay import LabelOverlay, PixmapCache, RegionGraphic
from viewer.qt.results.panel import NOT_LOADED, ResultsPanel, object_rows
from viewer.qt.slice_view import SliceView

logger = logging.getLogger(__name__)

TOGGLE_KEY = "O"
OPACITY_KEY = "Shift+O"
OPACITY_STEPS = (0.25, 0.5, 0.75, 1.0)
DEFAULT_OPACITY = 0.4  # the anatomy under a segment stays readable
MARK_COLOR = "#ffb000"
REPORT_SECTION = "Result objects not shown"


class ResultsController(QObject):
    """Owns the Results dock, the overlays of every viewport and the parsed objects."""

    results_changed = Signal()
    _parsed = Signal(object, object)  # (files, Future), emitted from the helper's callback thread

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window = window
        self.objects: list[ForeignObject] = []
        self.failures: list[ResultFailure] = []
        self.placed: list[Placed] = []
        self.visible = True
        self.legend_visible = True  # the overlay's legend / colour bar (View menu), while the overlay is
        self.opacity = DEFAULT_OPACITY
        self.hidden: set[tuple[str, int]] = set()
        self._pending = 0
        self._own: set[str] = set()  # paths of the AI's own objects: shown without raising the dock
        self._masks: dict[SliceAt, list[tuple[SegObject, MaskFrame]]] = {}
        self._entries: dict[SliceAt, list[tuple[PlacedEntry, bool]]] = {}
        self._cache = PixmapCache()
        self._legends: dict[str, OverlayLegend | None] = {}  # by stack uid, for the shown segments
        self._overlays: dict[SliceView, LabelOverlay] = {}
        self._graphics: dict[SliceView, tuple[SliceAt | None, list[RegionGraphic]]] = {}
        self.panel = ResultsPanel()
        self.panel.set_opacity(self.opacity)
        self.dock = window.add_dock(self.panel, "Results")
        self._build_actions()
        self.panel.show_requested.connect(window.show_item)
        self.panel.opacity_changed.connect(self.set_opacity)
        self.panel.overlay_toggled.connect(self.set_visible)
        self.panel.segment_toggled.connect(self.set_segment_visible)
        self._parsed.connect(self._on_parsed)
        window.load_finished.connect(self._on_load_finished)
        window.stacks_closed.connect(self._on_stacks_closed)
        window.stack_shown.connect(lambda _s: self._update_marks())
        window.grid.view_created.connect(self._watch)
        for view in window.views():
            self._watch(view)

    # --- actions --------------------------------------------------------------------------------
    def _build_actions(self) -> None:
        w = self.window
        self.toggle_action = w.add_action(
            ActionSpec(
                "results_overlay",
                "Show others' results on the image",
                self.toggle_visible,
                (TOGGLE_KEY,),
                "View",
                help="Results: show/hide SEG overlays (with their legend) and SR/presentation-state regions",
                checkable=True,
            )
        )
        self.toggle_action.setChecked(True)
        self.opacity_action = w.add_action(
            ActionSpec(
                "results_opacity",
                "Overlay opacity step",
                self.step_opacity,
                (OPACITY_KEY,),
                "View",
                help="Results: overlay opacity 25 / 50 / 75 / 100 %",
            )
        )
        self.legend_action = w.add_action(
            ActionSpec(
                "results_legend",
                "Overlay legend",
                lambda: self.set_legend_visible(not self.legend_visible),
                (),
                "View",
                help="Results: the overlay's legend (segment colours, colour bar of probability maps)",
                checkable=True,
            )
        )
        self.legend_action.setChecked(True)
        menu = w.menu("View")
        menu.addSeparator()
        menu.addActions([self.toggle_action, self.opacity_action, self.legend_action])

    def toggle_visible(self) -> None:
        self.set_visible(not self.visible)

    def set_visible(self, on: bool) -> None:
        self.visible = bool(on)
        for widget in (self.toggle_action, self.panel.show_box):
            widget.blockSignals(True)
            widget.setChecked(self.visible)
            widget.blockSignals(False)
        self._refresh_all(force=True)

    def set_legend_visible(self, on: bool) -> None:
        self.legend_visible = bool(on)
        self.legend_action.blockSignals(True)
        self.legend_action.setChecked(self.legend_visible)
        self.legend_action.blockSignals(False)
        self._refresh_all()

    def step_opacity(self) -> None:
        later = [v for v in OPACITY_STEPS if v > self.opacity + 1e-6]
        self.set_opacity(later[0] if later else OPACITY_STEPS[0])

    def set_opacity(self, value: float) -> None:
        self.opacity = min(1.0, max(0.0, float(value)))
        self.panel.blockSignals(True)
        self.panel.set_opacity(self.opacity)
        self.panel.blockSignals(False)
        self._refresh_all()

    def set_segment_visible(self, seg_uid: str, number: int, shown: bool) -> None:
        key = (seg_uid, number)
        if shown:
            self.hidden.discard(key)
        else:
            self.hidden.add(key)
        self._cache.clear()
        self._legends.clear()
        self._refresh_all()

    # --- loading and parsing ---------------------------------------------------------------------
    def _on_load_finished(self, report: LoadReport) -> None:
        self.add_result_files(list(report.result_files))

    def add_result_files(self, files: list[ResultFile]) -> None:
        """Read ``files`` (result objects set aside by a scan) in the helper process and show them."""
        if not files:
            if self.objects or self.failures:
                self._place()  # new stacks may be the ones earlier objects reference
            return
        from viewer.core.airesults import process

        self._pending += 1
        try:
            future = process.call(read_result_files, files)
        except (OSError, RuntimeError) as exc:
            self._pending -= 1
            self._fail_all(files, exc)
            return
        future.add_done_callback(partial(self._deliver, files))

    def add_own_result_files(self, files: list[ResultFile]) -> None:
        """Show the AI's own objects (its maps' SEG, written at Analyze) like others' results, but leave the
        AI findings panel in front: the dock is not raised for them."""
        self._own.update(f.path for f in files)
        self.add_result_files(files)

    def _deliver(self, files: list[ResultFile], future: Future[list[ForeignObject | ResultFailure]]) -> None:
        with contextlib.suppress(RuntimeError):  # on the helper's callback thread (RuntimeError: closed)
            self._parsed.emit(files, future)

    def _on_parsed(
        self, files: list[ResultFile], future: Future[list[ForeignObject | ResultFailure]]
    ) -> None:
        self._pending = max(0, self._pending - 1)
        try:
            results = future.result(timeout=0)
        except Exception as exc:  # the helper died or refused: every file of this load is listed
            self._fail_all(files, exc)
            return
        for r in results:
            if isinstance(r, ResultFailure):
                self.failures.append(r)
            else:
                self._keep(r)
        self._place()
        others = any(f.path not in self._own for f in files)
        if others and any(p.references_loaded for p in self.placed):
            self.dock.raise_()

    def _keep(self, obj: ForeignObject) -> None:
        """Add ``obj``; one that carries the SOP Instance UID of an object already listed replaces it in
        place (Analyze run again on a stack writes its SEG again under the same UID: listed twice, it was
        drawn twice and its legend repeated)."""
        for i, known in enumerate(self.objects):
            if obj.sop_instance_uid and known.sop_instance_uid == obj.sop_instance_uid:
                self.objects[i] = obj
                return
        self.objects.append(obj)

    def _fail_all(self, files: list[ResultFile], exc: BaseException) -> None:
        logger.warning("Result objects could not be read (%s)", type(exc).__name__)
        for f in files:
            name = f.source.display_name if f.source is not None else f.path
            self.failures.append(
                ResultFailure(
                    name,
                    _kind(f),
                    str(Code.RESULT_MALFORMED),
                    f"The reader process failed ({type(exc).__name__})",
                )
            )
        self._place()

    def is_busy(self) -> bool:
        return self._pending > 0

    def wait(self, ms: int = 30_000) -> bool:
        """Process events until every submitted parse has been shown (tests); False on timeout."""
        deadline = QDeadlineTimer(ms)
        while self._pending and not deadline.hasExpired():
            QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        return not self._pending

    def _on_stacks_closed(self, _uids: list[str]) -> None:
        if not self.window.loaded_stacks():  # Clear all: the results go with the images
            self.objects.clear()
            self.failures.clear()
            self.hidden.clear()
        self._place()

    # --- placing and drawing ---------------------------------------------------------------------
    def _place(self) -> None:
        self.placed = place(self.objects, self.window.loaded_stacks())
        masks: dict[SliceAt, list[tuple[SegObject, MaskFrame]]] = defaultdict(list)
        entries: dict[SliceAt, list[tuple[PlacedEntry, bool]]] = defaultdict(list)  # (entry, labelled)
        for p in self.placed:
            if isinstance(p, PlacedSeg):
                for at, frames in p.layers.items():
                    masks[at].extend((p.obj, f) for f in frames)
            else:
                # a presentation state's texts are its labels; an SR region is named by its group
                labelled = p.obj.kind is not ResultKind.PRESENTATION_STATE
                for e in p.entries:
                    if e.entry.graphic is not None:
                        for at in e.slices:
                            entries[at].append((e, labelled or e.entry.kind is EntryKind.TEXT))
        self._masks, self._entries = dict(masks), dict(entries)
        self._cache.clear()
        self._legends.clear()
        self.panel.set_rows(object_rows(self.placed, self.failures, self._stack_name), self.hidden)
        self._update_report()
        self._refresh_all(force=True)
        self._update_marks()
        self.results_changed.emit()

    def _stack_name(self, uid: str) -> str:
        ctx = self.window.stack_context(uid)
        if ctx is None:
            return uid
        st = ctx.stack
        return st.series_description or f"{st.modality} series {st.series_number or ''}".strip()

    def _update_report(self) -> None:
        rows = [ReportRow(f.display_name, f.code, f"{describe(f.code)}: {f.reason}") for f in self.failures]
        for p in self.placed:
            if not p.references_loaded:
                name = getattr(p.obj, "title", "") or p.obj.description or p.obj.sop_instance_uid
                what = f"{p.obj.kind} · {name}"
                rows.append(ReportRow(what, str(Code.NO_LOADED_IMAGE), f"{NOT_LOADED}: listed under Results"))
        self.window.report_panel.set_section(REPORT_SECTION, rows)
        if self.failures:
            self.window.report_dock.show()

    def _watch(self, view: SliceView) -> None:
        view.shown_changed.connect(lambda _i, v=view: self._refresh(v))

    def _refresh_all(self, force: bool = False) -> None:
        for view in self.window.views():
            self._refresh(view, force)

    def slice_at(self, view: SliceView) -> SliceAt | None:
        """The loaded slice ``view`` shows (None: empty, decoding, or an MPR plane)."""
        ctx = view.context
        if ctx is None or view.planes() is not None or view.shown_index < 0:
            return None
        return SliceAt(ctx.stack.uid, view.shown_index)

    def overlay(self, view: SliceView) -> LabelOverlay:
        item = self._overlays.get(view)
        if item is None:
            item = self._overlays[view] = LabelOverlay(view.image)
        return item

    def legend(self, view: SliceView) -> OverlayLegend | None:
        """The legend ``view`` shows: its stack's shown segments, while the overlay and legend are on
        (a dictionary look-up on a slice change; worked out when the stack or hidden segments change)."""
        ctx = view.context
        if not (self.visible and self.legend_visible) or ctx is None or view.planes() is not None:
            return None
        uid = ctx.stack.uid
        if uid not in self._legends:
            segs = [p for p in self.placed if isinstance(p, PlacedSeg)]
            groups = legend_groups(segs, uid, frozenset(self.hidden))
            self._legends[uid] = OverlayLegend(groups) if groups else None
        return self._legends[uid]

    def _refresh(self, view: SliceView, force: bool = False) -> None:
        at = self.slice_at(view)
        value = None
        if at is not None and at in self._masks:
            cached = self._cache.get(at)
            value = (
                cached
                if cached is not False
                else self._cache.put(at, compose_overlay(self._masks[at], frozenset(self.hidden)))
            )
        if value is not None or view in self._overlays:
            self.overlay(view).show(value, self.opacity, self.visible)  # type: ignore[arg-type]
        view.overlay.set_legend(self.legend(view))
        drawn, graphics = self._graphics.get(view, (None, []))
        want = at if self.visible else None
        if drawn == want and not force:
            return
        for g in graphics:
            g.remove()
        new = []
        if want is not None:
            rows, columns = view.image_size()
            for e, labelled in self._entries.get(want, []):
                graphic = e.entry.graphic.in_pixels(rows, columns) if e.entry.graphic is not None else None
                label = self._label(e, want) if labelled else ""
                new.append(RegionGraphic(view.image, graphic, label))
        self._graphics[view] = (want, new)

    def _label(self, e: PlacedEntry, at: SliceAt) -> str:
        entry = e.entry
        if entry.kind is EntryKind.TEXT:
            return entry.value
        values = [
            f"{o.entry.name} {o.entry.value}"
            for o in self._same_group(entry.group, entry.tracking_uid)
            if o.entry.kind is EntryKind.MEASUREMENT and (not o.slices or at in o.slices)
        ]
        return " · ".join(v for v in (entry.group or entry.name, *values) if v)

    def _same_group(self, group: str, tracking_uid: str) -> list[PlacedEntry]:
        return [
            e
            for p in self.placed
            if not isinstance(p, PlacedSeg)
            for e in p.entries
            if e.entry.group == group and e.entry.tracking_uid == tracking_uid
        ]

    def layers(self, at: SliceAt) -> list[tuple[SegObject, MaskFrame]]:
        """The masks placed on slice ``at`` (every SEG's), in load order."""
        return list(self._masks.get(at, ()))

    def graphics(self, view: SliceView) -> list[RegionGraphic]:
        return list(self._graphics.get(view, (None, []))[1])

    def _update_marks(self) -> None:
        stack = self.window.current_stack()
        marks: set[int] = set()
        if stack is not None:
            marks = {at.index for at in (*self._masks, *self._entries) if at.stack_uid == stack.uid}
            for p in self.placed:
                if not isinstance(p, PlacedSeg):
                    marks.update(s.index for e in p.entries for s in e.slices if s.stack_uid == stack.uid)
        self.window.set_slice_marks("results", sorted(marks), MARK_COLOR)


def _kind(f: ResultFile) -> ResultKind:
    return result_kind(f.sop_class_uid) or ResultKind.SR


def attach(window: Any) -> ResultsController:
    """Add the Results dock, overlays and keys to ``window`` (a MainWindow)."""
    controller = ResultsController(window)
    window.results_controller = controller  # a Python reference for the window's lifetime
    ai = getattr(window, "ai_controller", None)
    if ai is not None:  # a segmentation model's SEG, written at Analyze, is shown like others' results
        ai.task_objects_ready.connect(controller.add_own_result_files)
    return controller
