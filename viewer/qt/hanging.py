"""Hanging protocols, prior comparison, scroll links and window/zoom sync in the main window.

The decisions live in the core (:mod:`viewer.core.state.hanging`, :mod:`viewer.core.state.priors`,
:class:`~viewer.core.state.viewer_state.ViewerState`'s sync rules and links); this module registers the
Layout menu's actions and applies plans to the viewports (window and zoom sync are the state's rules).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from viewer.core.constants import Window
from viewer.core.errors import ViewerStateError
from viewer.core.geometry.orientation import Orientation
from viewer.core.state.hanging import (
    PROTOCOLS_FILENAME,
    HangingPlan,
    HangingProtocol,
    HangingProtocolError,
    PlannedViewport,
    PriorPlacement,
    ProtocolTable,
    StudySeries,
    choose_protocol,
    load_protocols,
    plan,
)
from viewer.core.state.layout import Layout
from viewer.core.state.priors import (
    StudyRef,
    aligned_position,
    comparison_pair,
    find_prior,
    matching_series,
)
from viewer.core.state.protocol_store import ShownViewport, protocol_from_view, save_protocols
from viewer.qt.actions import ActionSpec
from viewer.qt.protocol_editor import ProtocolEditor

if TYPE_CHECKING:
    from viewer.qt.main_window import MainWindow

log = logging.getLogger(__name__)

LINK_MARK_KEY = "scroll-link"
LINK_MARK_HTML = "<span style='color:#40c8f0'><b>linked</b></span>"


class HangingController(QObject):
    """Owns the protocol table and the Layout menu's hanging, prior, link and sync actions."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self._window = window
        self._marked = False  # a *linked* mark may be drawn in some viewport
        self.path = window.settings.path.parent / PROTOCOLS_FILENAME
        self.table: ProtocolTable = load_protocols(self.path)
        self.editor: ProtocolEditor | None = None
        if self.table.error:
            window.show_status(self.table.error, 20_000)
        state = window.state
        specs = [
            ActionSpec("apply_hanging", "Apply hanging protocol", self.apply_hanging, ("Alt+H",), "Layout",
                       help="Apply the hanging protocol of the shown study (layout, series, windows, prior); "
                       "View › Hanging protocols… edits them"),
            ActionSpec("hang_on_open", "Hang new studies by protocol", self._on_hang_on_open, (), "Layout",
                       checkable=True, help="A study opened into an empty viewer is shown by its protocol"),
            ActionSpec("compare_prior", "Compare with prior", self.compare_with_prior, ("Alt+P",), "Layout",
                       help="Current | prior study of this patient side by side, scrolling linked"),
            ActionSpec("link_scroll", "Link scrolling here", self.link_active, ("Alt+K",), "Layout",
                       help="Link the active viewport's scrolling to the others at their present positions"),
            ActionSpec("unlink_scroll", "Unlink scrolling", self.unlink_active, ("Alt+U",), "Layout",
                       help="Unlink the active viewport's scrolling (to adjust a prior, then link again)"),
            ActionSpec("sync_window", "Window/level sync", self._on_sync_window, ("Alt+W",), "Layout",
                       checkable=True, help="Window/level sync: the active viewport's window goes to the "
                       "others of its modality"),
            ActionSpec("sync_zoom", "Zoom sync", self._on_sync_zoom, ("Alt+Z",), "Layout", checkable=True,
                       help="Zoom sync: the active viewport's zoom and pan go to the others of its modality"),
        ]
        menu = window.menu("Layout")
        menu.addSeparator()
        for spec in specs:
            menu.addAction(window.add_action(spec))
        editor = window.add_action(ActionSpec(
            "hanging_editor", "Hanging protocols…", self.open_editor, (), "View",
            help="Edit the hanging protocols (match, layout, windows, prior); save the current layout"))
        view_menu = window.menu("View")
        view_menu.addSeparator()
        view_menu.addAction(editor)
        menu.addAction(editor)
        self.act_sync_window = window.actions_registry.action("sync_window")
        self.act_sync_zoom = window.actions_registry.action("sync_zoom")
        self.act_hang_on_open = window.actions_registry.action("hang_on_open")
        self.act_hang_on_open.setChecked(window.settings.hang_on_open)
        self.act_sync_window.setChecked(state.sync.window)
        self.act_sync_zoom.setChecked(state.sync.zoom)
        state.events.links.connect(self.refresh_link_marks)
        state.events.viewport.connect(lambda *_: self.refresh_link_marks())
        state.events.layout.connect(lambda *_: self.refresh_link_marks())

    # --- hanging protocols -----------------------------------------------------------------------
    def hang(self, stack_uid: str) -> HangingPlan | None:
        """Show the study of ``stack_uid`` as its protocol says (None: no protocol matched)."""
        w = self._window
        ctx = w.stack_context(stack_uid)
        if ctx is None or ctx.study is None:
            return None
        patient_id = ctx.patient.patient_id if ctx.patient else ""
        stacks = [s for s in w.loaded_stacks() if self._study_key(s.uid) == (patient_id,
                                                                              ctx.study.study_instance_uid)]
        study = StudySeries.of(ctx.study.description, stacks)
        protocol = choose_protocol(self.table.protocols, study)
        if protocol is None:
            return None
        prior = self._prior_of(stack_uid) if protocol.prior is not PriorPlacement.NONE else None
        hung = plan(protocol, study, w.settings.presets(), prior)
        self._place(hung)
        if hung.prior_viewport is not None:
            self._align_and_link(0, hung.prior_viewport)
        elif protocol.prior is PriorPlacement.SIDE_BY_SIDE and prior is not None:
            self.compare_with_prior()
            w.state.set_active(0)
        w.show_status(f"Hanging protocol: {hung.protocol}", 5000)
        return hung

    def _prior_of(self, stack_uid: str) -> StudySeries | None:
        """The study's prior (the patient's latest earlier open study), as the protocols see it."""
        studies = self._studies()
        key = self._study_key(stack_uid)
        active = next((s for s in studies if (s.patient_key, s.study_uid) == key), None)
        prior = find_prior(active, studies) if active is not None else None
        return StudySeries.of("", prior.stacks) if prior is not None and prior.stacks else None

    # --- the protocol editor ---------------------------------------------------------------------
    def open_editor(self) -> ProtocolEditor:
        """View › Hanging protocols…: the non-modal editor (raised when already open)."""
        if self.editor is None:
            presets = tuple(self._window.settings.presets())
            self.editor = ProtocolEditor(
                self.table.protocols, presets, self.save_table, self.protocol_from_view, self._window
            )
            self.editor.finished.connect(self._editor_closed)
            if self.table.error:
                self.editor.message.setText(self.table.error + " Saving replaces it (kept as .damaged).")
        self.editor.show()
        self.editor.raise_()
        return self.editor

    def _editor_closed(self, *_: object) -> None:
        if self.editor is not None:
            self.editor.deleteLater()
        self.editor = None

    def save_table(self, protocols: Sequence[HangingProtocol]) -> str | None:
        """Write the edited table (None when saved, else the reason shown in the editor)."""
        try:
            self.table = save_protocols(self.path, protocols, refused=self.table.error is not None)
        except HangingProtocolError as exc:
            return str(exc)
        except OSError as exc:
            log.warning("Hanging protocols not saved (%s)", type(exc).__name__)
            return f"{PROTOCOLS_FILENAME} could not be written ({type(exc).__name__})"
        self._window.show_status(f"Hanging protocols saved ({len(protocols)})", 4000)
        return None

    def protocol_from_view(self, name: str = "") -> HangingProtocol:
        """A protocol of what the viewports show now, for studies like the active viewport's (raises
        HangingProtocolError when no study is shown)."""
        w = self._window
        state = w.state
        uid = state.viewport(state.active).stack_key
        ctx = w.stack_context(uid) if uid is not None else None
        if uid is None or ctx is None:
            raise HangingProtocolError("Show a study first: the active viewport is empty")
        key = self._study_key(uid)
        stacks = [s for s in w.loaded_stacks() if self._study_key(s.uid) == key]
        study = StudySeries.of(ctx.study.description if ctx.study is not None else "", stacks)
        shown = []
        for i, vp in enumerate(state.viewports):
            entry = state.catalogue.get(vp.stack_key) if vp.stack_key is not None else None
            if entry is None or vp.stack_key is None:
                shown.append(ShownViewport(None))
                continue
            prior = self._study_key(vp.stack_key) != key
            shown.append(ShownViewport(entry.stack, vp.orientation, w.grid.view(i).current_window(), prior,
                                       zoom=vp.scale, rotation=vp.rotation, mirror=vp.mirror, slab=vp.slab))
        made = protocol_from_view(name or "New protocol", study, state.layout, shown, w.settings.presets())
        if not name:
            what = ", ".join(made.body_parts or made.keywords).lower() or "any"
            made = protocol_from_view(f"{made.modality} {what}: saved layout", study, state.layout, shown,
                                      w.settings.presets())
        return made

    def apply_hanging(self) -> None:
        uid = self._window.state.viewport(self._window.state.active).stack_key
        if uid is None:
            self._window.show_status("Open a study first")
        elif self.hang(uid) is None:
            self._window.show_status("No hanging protocol matches this study")

    def _on_hang_on_open(self) -> None:
        self._window.settings.hang_on_open = self.act_hang_on_open.isChecked()

    def _place(self, hung: HangingPlan) -> None:
        w = self._window
        w.state.set_layout(hung.layout)
        for i, planned in enumerate(hung.viewports):
            w.show_in_viewport(i, planned.stack_key, planned.orientation)
        for i, planned in enumerate(hung.viewports):
            self._set_view_window(i, planned.window)
            self._set_view(i, planned)
        w.state.set_active(0)
        w.browser.select(hung.viewports[0].stack_key)

    def _set_view(self, index: int, planned: PlannedViewport) -> None:
        """The protocol's turn, zoom and slab for viewport ``index`` (not synced to the others: each viewport
        of a protocol has its own); a slab only where the viewport shows a resliced plane."""
        state = self._window.state
        try:
            vp = state.viewport(index)
            if (planned.rotation, planned.mirror) != (vp.rotation, vp.mirror):
                state.set_turn(index, planned.rotation, planned.mirror)
            if planned.zoom is not None:
                state.set_zoom(index, planned.zoom, (0.0, 0.0), sync=False)
            if planned.slab is not None and state.viewport(index).orientation is not Orientation.NATIVE:
                state.set_slab(index, planned.slab)
        except ViewerStateError as exc:
            log.info("Protocol view not set: %s", type(exc).__name__)

    # --- prior comparison and links --------------------------------------------------------------
    def compare_with_prior(self) -> None:
        w = self._window
        state = w.state
        vp = state.viewport(state.active)
        uid = vp.stack_key
        if uid is None:
            w.show_status("Open a study first")
            return
        studies = self._studies()
        key = self._study_key(uid)
        active = next(s for s in studies if (s.patient_key, s.study_uid) == key)
        pair = comparison_pair(active, studies)
        if pair is None:
            w.show_status("No other dated study of this patient (same Patient ID) is open to compare with")
            return
        current, prior = pair
        shown = state.catalogue[uid].stack
        other = matching_series(shown, (prior if current is active else current).stacks)
        if other is None:
            w.show_status(f"The other study has no {shown.modality} series to compare with")
            return
        cur_uid, prior_uid = (uid, other.uid) if current is active else (other.uid, uid)
        position = vp.position_mm if current is active else None
        state.set_layout(Layout.ONE_BY_TWO)
        state.unlink(0, 1)
        w.show_in_viewport(0, cur_uid, vp.orientation)
        if position is not None:
            state.set_position(0, position)
        w.show_in_viewport(1, prior_uid, vp.orientation)
        same_frame = self._align_and_link(0, 1)
        self._set_view_window(1, w.grid.view(0).current_window())  # compared in the same window
        state.set_active(0)
        w.show_status("Current | prior" + ("" if same_frame else ": scrolling linked (Alt+U unlinks)"), 6000)

    def _align_and_link(self, a: int, b: int) -> bool:
        """Viewport ``b`` (a prior) placed at ``a``'s anatomy and their scrolling linked, when their frames
        of reference differ; True when they share one (then positions already agree)."""
        state = self._window.state
        state.unlink(a, b)  # an old offset of this pair would move the prior before it is placed
        ka, kb = state.viewport(a).stack_key, state.viewport(b).stack_key
        if ka is None or kb is None:
            return False
        ea, eb = state.catalogue[ka], state.catalogue[kb]
        same_frame = ea.frame_of_reference_uid is not None and (
            ea.frame_of_reference_uid == eb.frame_of_reference_uid
        )
        if not same_frame:
            state.set_position(b, aligned_position(ea, state.viewport(a), eb, state.viewport(b)))
            state.link(a, b)
        return same_frame

    def link_active(self) -> None:
        """Link the active viewport with every other one showing another stack, at today's positions."""
        state = self._window.state
        a = state.active
        if state.viewport(a).stack_key is None:
            self._window.show_status("Nothing to link: the active viewport is empty")
            return
        linked = 0
        for b, vp in enumerate(state.viewports):
            if b != a and vp.stack_key not in (None, state.viewport(a).stack_key):
                try:
                    state.link(a, b)
                    linked += 1
                except ViewerStateError as exc:
                    log.info("Not linked: %s", type(exc).__name__)
        text = f"Scrolling linked with {linked} viewport(s)" if linked else "Nothing to link"
        self._window.show_status(text)

    def unlink_active(self) -> None:
        state = self._window.state
        for b in range(len(state.viewports)):
            if b != state.active:
                state.unlink(state.active, b)
        self._window.show_status("Scrolling unlinked")

    def linked(self, index: int) -> bool:
        state = self._window.state
        return any(
            state.link_offset(index, j) is not None for j in range(len(state.viewports)) if j != index
        )

    def refresh_link_marks(self) -> None:
        """The *linked* mark on each viewport whose scrolling is linked (redrawn only when it changes:
        this runs on every viewport event, scrolling included: without links, and none drawn, it stops at
        once)."""
        if not self._window.state.has_links and not self._marked:
            return
        self._marked = False
        for i, view in enumerate(self._window.views()):
            if i < len(self._window.state.viewports):
                want = LINK_MARK_HTML if self.linked(i) else ""
                self._marked = self._marked or bool(want)
                if view.overlay.extra_html().get(LINK_MARK_KEY, "") != want:
                    view.overlay.set_extra_html(LINK_MARK_KEY, want)

    def _studies(self) -> list[StudyRef]:
        w = self._window
        groups: dict[tuple[str, str], list[str]] = {}
        dates: dict[tuple[str, str], str] = {}
        for stack in w.loaded_stacks():
            key = self._study_key(stack.uid)
            ctx = w.stack_context(stack.uid)
            groups.setdefault(key, []).append(stack.uid)
            dates[key] = ctx.study.date if ctx is not None and ctx.study is not None else ""
        cat = w.state.catalogue
        return [
            StudyRef(key[0], key[1], dates[key], tuple(cat[u].stack for u in uids if u in cat))
            for key, uids in groups.items()
        ]

    def _study_key(self, uid: str) -> tuple[str, str]:
        ctx = self._window.stack_context(uid)
        patient = ctx.patient.patient_id if ctx is not None and ctx.patient is not None else ""
        study = ctx.study.study_instance_uid if ctx is not None and ctx.study is not None else ""
        return patient, study or (ctx.stack.study_instance_uid if ctx is not None else "")

    # --- window and zoom sync --------------------------------------------------------------------
    def _on_sync_window(self) -> None:
        self._window.state.set_sync(window=self.act_sync_window.isChecked())

    def _on_sync_zoom(self) -> None:
        self._window.state.set_sync(zoom=self.act_sync_zoom.isChecked())

    def _set_view_window(self, index: int, window: Window | None) -> None:
        """Give one viewport ``window`` (None: its stack's own window, VOI LUT included), not synced."""
        try:
            self._window.state.set_window(index, window, sync=False)
        except ViewerStateError as exc:
            log.info("Window not set: %s", type(exc).__name__)
