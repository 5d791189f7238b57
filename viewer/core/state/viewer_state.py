"""The viewer's state: catalogue, layout, viewports, active viewport, tool, selection and sync rules.

Qt-free and evented (psygnal), after napari's ``ViewerModel``: widgets render what the events announce
and call the intent methods (``scroll``, ``set_window``, ``set_layout``, ``link`` ...); nothing here
knows about widgets. Every viewport change emits ``events.viewport(index, state)``, including the
changes that sync rules make in other viewports.

Sync rules (``SyncSettings``):

* **scroll**: moving one viewport moves every other viewport whose plane is parallel (within ~25°):
  by patient position when both stacks share a FrameOfReferenceUID, else only when the two viewports
  were linked (``link``), by the same distance plus the offset captured at link time (priors,
  other scanners).
* **window**: a new window is copied to viewports showing the same modality.
* **zoom**: the scale (mm per screen pixel) and pan are copied to viewports showing the same modality.

Both copy only changes made with ``sync=True`` (the default: the user's own change in a viewport); a
change that is itself applied per viewport (a hanging protocol's window) passes ``sync=False``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
from psygnal import Signal, SignalGroup

from viewer.core.constants import Window
from viewer.core.dicom.model import Stack
from viewer.core.errors import ViewerStateError
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.plane import Plane, common_point, rotate_vector
from viewer.core.geometry.reslice import Slab
from viewer.core.state.catalogue import CatalogueEntry
from viewer.core.state.layout import Layout
from viewer.core.state.planes import base_plane, plane_at, scroll_grid
from viewer.core.state.viewport import Tool, Vec3, ViewportState

log = logging.getLogger(__name__)

PARALLEL_SYNC_COS = 0.9  # planes within ~25° of parallel scroll together


@dataclass(frozen=True)
class PlanePoses:
    """The planes of one frame of reference at a moment (:meth:`ViewerState.plane_poses`): each of its
    viewports' state (stack, orientation, oblique directions, position) and the crosshair point."""

    frame_key: str
    viewports: tuple[tuple[int, ViewportState], ...]
    crosshair: Vec3 | None

    def planes(self) -> tuple[tuple[object, ...], ...]:
        """What a plane turn changes: per viewport, its stack, orientation, directions and position."""
        return tuple(
            (i, vp.stack_key, vp.orientation, vp.oblique, vp.position_mm) for i, vp in self.viewports
        )

    def same_as(self, other: PlanePoses) -> bool:
        """Nothing a move or turn changes differs: the same planes and the same crosshair point (a point
        first placed where the planes already cross, unset before, counts as the same: nothing moved on
        screen)."""
        if self.planes() != other.planes():
            return False
        return self.crosshair == other.crosshair or self.crosshair is None or other.crosshair is None


@dataclass(frozen=True)
class MprReturn:
    """What the MPR layout replaced (:meth:`ViewerState.enter_mpr`): the layout, the viewports and the
    active viewport before it, and the stack it reslices. Leaving MPR puts them back, with that stack's
    own (acquired) slices at the MPR's patient position, as OHIF's MPR toggle returns to the layout
    before it and RadiAnt's and Horos's MPR windows close onto the 2D viewer."""

    key: str
    layout: Layout
    viewports: tuple[ViewportState, ...]
    active: int


MPR_PLANES = (Orientation.AXIAL, Orientation.CORONAL, Orientation.SAGITTAL)


@dataclass(frozen=True)
class SyncSettings:
    scroll: bool = True
    window: bool = False
    zoom: bool = False


class ViewerEvents(SignalGroup):
    catalogue = Signal()  # stacks added or removed
    layout = Signal(object)  # Layout
    viewport = Signal(int, object)  # index, ViewportState
    active = Signal(int)
    tool = Signal(object)  # Tool
    selection = Signal(object)  # tuple[str, ...]
    sync = Signal(object)  # SyncSettings
    links = Signal()  # manual scroll links (offsets) changed
    crosshair = Signal(str, object)  # frame key, point (patient mm) or None


class ViewerState:
    """The whole viewer state; read through properties, change through intent methods."""

    def __init__(self) -> None:
        self.events = ViewerEvents()
        self._catalogue: dict[str, CatalogueEntry] = {}
        self._layout = Layout.ONE
        self._viewports: list[ViewportState] = [ViewportState()]
        self._active = 0
        self._tool = Tool.WINDOW
        self._selection: tuple[str, ...] = ()
        self._sync = SyncSettings()
        self._offsets: dict[tuple[str, str], float] = {}  # (stack a, stack b) -> pos_b - pos_a (mm)
        self._crosshair: dict[str, Vec3] = {}  # frame key -> the crosshair point (patient mm)
        self._mpr: MprReturn | None = None  # what the MPR layout replaced, while it is shown

    # --- reading ---------------------------------------------------------------------------------
    @property
    def catalogue(self) -> Mapping[str, CatalogueEntry]:
        return MappingProxyType(self._catalogue)

    @property
    def layout(self) -> Layout:
        return self._layout

    @property
    def viewports(self) -> tuple[ViewportState, ...]:
        return tuple(self._viewports)

    @property
    def active(self) -> int:
        return self._active

    @property
    def tool(self) -> Tool:
        return self._tool

    @property
    def selection(self) -> tuple[str, ...]:
        return self._selection

    @property
    def sync(self) -> SyncSettings:
        return self._sync

    def viewport(self, index: int) -> ViewportState:
        self._check_viewport(index)
        return self._viewports[index]

    def entry(self, index: int) -> CatalogueEntry | None:
        """The catalogue entry a viewport shows (None when empty)."""
        key = self.viewport(index).stack_key
        return None if key is None else self._catalogue[key]

    def other_patient_viewports(self) -> frozenset[int]:
        """The viewports that show another patient than some other viewport of the layout (by the
        catalogue's ``patient_key``; a stack of unknown patient is never counted as different)."""
        keys = {
            i: self._catalogue[vp.stack_key].patient_key
            for i, vp in enumerate(self._viewports)
            if vp.stack_key is not None and vp.stack_key in self._catalogue
        }
        known = {i: k for i, k in keys.items() if k}
        if len(set(known.values())) < 2:
            return frozenset()
        return frozenset(known)

    @property
    def in_mpr(self) -> bool:
        """True while the MPR layout (:meth:`enter_mpr`) is shown; choosing a layout leaves it."""
        return self._mpr is not None

    @property
    def has_links(self) -> bool:
        """True when some pair of stacks scrolls linked (``link``)."""
        return bool(self._offsets)

    def link_offset(self, a: int, b: int) -> float | None:
        ka, kb = self.viewport(a).stack_key, self.viewport(b).stack_key
        if ka is None or kb is None:
            return None
        return self._offsets.get((ka, kb))

    # --- catalogue -------------------------------------------------------------------------------
    def add_stack(self, stack: Stack, *, patient_key: str = "") -> str:
        """Add a loaded stack (its geometry is computed once here); returns its key."""
        entry = CatalogueEntry.of(stack, patient_key=patient_key)
        self._catalogue[entry.key] = entry
        self.events.catalogue.emit()
        return entry.key

    def remove_stack(self, key: str) -> None:
        if key not in self._catalogue:
            raise ViewerStateError(f"No stack {key!r} in the catalogue")
        del self._catalogue[key]
        self._crosshair.pop(key, None)
        if self._mpr is not None and self._mpr.key == key:
            self._mpr = None  # nothing to go back to: the viewports empty, the layout stays
        self._offsets = {k: v for k, v in self._offsets.items() if key not in k}
        for i, vp in enumerate(self._viewports):
            if vp.stack_key == key:
                self._set(i, ViewportState())
        self.events.catalogue.emit()

    # --- layout, active, tool, selection ---------------------------------------------------------
    def set_layout(self, layout: Layout) -> None:
        """Switch layout: viewports keep their content in order; new ones start empty. From the MPR layout
        this leaves MPR (:meth:`leave_mpr`): the reader gets the acquired slices back."""
        layout = Layout(layout)
        if layout is self._layout:
            return
        if self._mpr is not None:
            self.leave_mpr(layout)
            return
        n = layout.viewport_count
        self._viewports = (self._viewports + [ViewportState()] * n)[:n]
        self._layout = layout
        moved = self._active >= n
        if moved:  # before the layout event: its listeners read the active viewport
            self._active = 0
        self.events.layout.emit(layout)
        if moved:
            self.events.active.emit(0)

    def enter_mpr(self, index: int) -> None:
        """MPR: viewport ``index``'s stack axial | coronal | sagittal in a 1×3 layout, the planes through
        the point it shows (its crosshair point, else its image centre); the layout and viewports before
        are kept for :meth:`leave_mpr`."""
        _, entry = self._shown(index)
        if entry.geometry is None:
            raise ViewerStateError("This stack has no patient geometry: it cannot be resliced")
        point = self.crosshair_or_default(index)
        if self._mpr is None:
            self._mpr = MprReturn(entry.key, self._layout, tuple(self._viewports), self._active)
        else:  # MPR of another stack, from the MPR layout: leaving still returns to the layout before
            self._mpr = replace(self._mpr, key=entry.key)
        viewports = list(self._viewports)
        for i, plane in enumerate(MPR_PLANES):
            old = viewports[i] if i < len(viewports) else ViewportState()
            new = ViewportState(stack_key=entry.key, orientation=plane)
            if (old.stack_key, old.orientation, old.oblique) == (entry.key, plane, None):
                new = replace(old, slab=None)  # this plane already: its window, zoom and turn stay
            if i < len(viewports):
                viewports[i] = self._through(entry, new, point)
            else:
                viewports.append(self._through(entry, new, point))
        self._apply_layout(Layout.ONE_BY_THREE, viewports, 0)

    def leave_mpr(self, layout: Layout | None = None) -> None:
        """Leave MPR: the viewports from before MPR come back, the resliced stack's own (acquired) slices
        at the slice through the MPR's point (crosshair, else where the planes cross), in ``layout`` (None:
        the layout from before MPR). When the resliced stack's viewport would not fit ``layout`` it moves
        to the first place (the reader keeps the series being read); it becomes the active viewport."""
        back = self._mpr
        if back is None:
            return
        self._mpr = None
        key = back.key
        shown = [i for i, vp in enumerate(self._viewports) if vp.stack_key == key]
        if self._active in shown:
            shown.insert(0, self._active)
        point = self.crosshair_or_default(shown[0]) if shown else None
        viewports = [
            vp if vp.stack_key is None or vp.stack_key in self._catalogue else ViewportState()
            for vp in back.viewports
        ]
        own = [i for i, vp in enumerate(viewports) if vp.stack_key == key]
        target = back.active if back.active in own else (own[0] if own else back.active)
        if target not in own:  # MPR of a stack dropped into the MPR layout: it gets the active place
            viewports[target] = ViewportState(stack_key=key)
            own.append(target)
        if point is not None:
            entry = self._catalogue[key]
            for i in own:
                viewports[i] = self._through(entry, viewports[i], point)
        layout = back.layout if layout is None else Layout(layout)
        if target >= layout.viewport_count:
            viewports.insert(0, viewports.pop(target))
            target = 0
        self._apply_layout(layout, viewports, target)

    def _apply_layout(self, layout: Layout, viewports: list[ViewportState], active: int) -> None:
        """Show ``layout`` with ``viewports`` (cut or padded with empty ones) and ``active``: the layout
        event first (its listeners read the new viewports and active one), then a viewport event for each
        viewport whose content changed, then the active event."""
        n = layout.viewport_count
        new = (viewports + [ViewportState()] * n)[:n]
        old = self._viewports
        changed = [i for i in range(n) if i >= len(old) or old[i] != new[i]]
        self._viewports = new
        was_active, self._active = self._active, min(max(active, 0), n - 1)
        layout_changed = layout is not self._layout
        self._layout = layout
        if layout_changed:
            self.events.layout.emit(layout)
        for i in changed:
            if not self._viewports[i].is_empty or (i < len(old) and not old[i].is_empty):
                self.events.viewport.emit(i, self._viewports[i])
        if self._active != was_active:
            self.events.active.emit(self._active)

    def set_active(self, index: int) -> None:
        self._check_viewport(index)
        if index != self._active:
            self._active = index
            self.events.active.emit(index)

    def set_tool(self, tool: Tool) -> None:
        tool = Tool(tool)
        if tool is not self._tool:
            self._tool = tool
            self.events.tool.emit(tool)

    def select(self, items: Sequence[str]) -> None:
        selection = tuple(items)
        if selection != self._selection:
            self._selection = selection
            self.events.selection.emit(selection)

    def set_sync(
        self, *, scroll: bool | None = None, window: bool | None = None, zoom: bool | None = None
    ) -> None:
        new = SyncSettings(
            scroll=self._sync.scroll if scroll is None else scroll,
            window=self._sync.window if window is None else window,
            zoom=self._sync.zoom if zoom is None else zoom,
        )
        if new != self._sync:
            self._sync = new
            self.events.sync.emit(new)

    # --- what a viewport shows -------------------------------------------------------------------
    def show(
        self, index: int, key: str, orientation: Orientation = Orientation.NATIVE, *, first: bool = False
    ) -> None:
        """Put a stack into a viewport (drag and drop from the browser), at its middle position (``first``:
        at its first slice or plane), in its own window (None) and a fitted, unrotated view; a viewport
        that shows this stack in this plane already keeps its window, inversion, zoom and turn."""
        self._check_viewport(index)
        entry = self._entry(key)
        vp = ViewportState(stack_key=key, orientation=self._usable(entry, orientation))
        old = self._viewports[index]
        if (old.stack_key, old.orientation, old.oblique) == (key, vp.orientation, None):
            vp = replace(old, slab=None)
        grid = scroll_grid(entry, vp)
        self._set(index, replace(vp, position_mm=grid.snap(grid.low) if first else grid.middle))

    def set_orientation(
        self, index: int, orientation: Orientation, *, oblique: tuple[Vec3, Vec3] | None = None
    ) -> None:
        """Show the viewport's stack in another plane (through the volume centre): fitted and unturned
        (the window stays)."""
        vp, entry = self._shown(index)
        orientation = self._usable(entry, orientation)
        if orientation is Orientation.OBLIQUE and oblique is None:
            raise ViewerStateError("An oblique viewport needs its row and column directions")
        new = replace(
            vp, orientation=orientation, oblique=oblique, scale=None, pan=(0.0, 0.0), rotation=0, mirror=False
        )
        self._set(index, replace(new, position_mm=scroll_grid(entry, new).middle))

    def set_slab(self, index: int, slab: Slab | None) -> None:
        vp, _ = self._shown(index)
        self._set(index, replace(vp, slab=slab))

    # --- scrolling and sync ----------------------------------------------------------------------
    def scroll(self, index: int, steps: int) -> None:
        """Move ``steps`` slices (native) or voxel steps (MPR) along the viewport's normal."""
        vp, entry = self._shown(index)
        self._move(index, scroll_grid(entry, vp).moved(vp.position_mm, int(steps)))

    def set_position(self, index: int, position_mm: float) -> None:
        """Jump to a position along the viewport's normal (snapped to its grid)."""
        vp, entry = self._shown(index)
        self._move(index, scroll_grid(entry, vp).snap(float(position_mm)))

    def go_to_point(self, index: int, point: Sequence[float]) -> None:
        """Scroll the viewport to the plane through a patient point (crosshair click elsewhere)."""
        vp, entry = self._shown(index)
        if entry.geometry is None:
            raise ViewerStateError("This stack has no patient geometry to place a point in")
        normal = base_plane(entry.geometry, vp).normal
        self.set_position(index, float(np.dot(np.asarray(point, float), normal)))

    def _move(self, index: int, position: float) -> None:
        vp = self._viewports[index]
        if position == vp.position_mm:
            return
        self._set(index, replace(vp, position_mm=position))
        self._follow_crosshair(index)
        if self._sync.scroll:
            self._sync_scroll(index)

    def _sync_scroll(self, source: int) -> None:
        src = self._viewports[source]
        src_entry = self._catalogue[src.stack_key] if src.stack_key else None
        if src_entry is None or not any(
            vp.stack_key is not None for i, vp in enumerate(self._viewports) if i != source
        ):
            return  # nothing else shown (one viewport): no plane to work out on every scroll step
        src_plane = plane_at(src_entry, src)
        for i, vp in enumerate(self._viewports):
            if i == source or vp.stack_key is None:
                continue
            entry = self._catalogue[vp.stack_key]
            target = self._synced_position(src_entry, src, src_plane, entry, vp)
            if target is None:
                continue
            snapped = scroll_grid(entry, vp).snap(target)
            if snapped != vp.position_mm:
                self._set(i, replace(vp, position_mm=snapped))

    def _synced_position(
        self,
        a: CatalogueEntry,
        va: ViewportState,
        plane_a: Plane | None,
        b: CatalogueEntry,
        vb: ViewportState,
    ) -> float | None:
        if a.key == b.key and va.orientation == vb.orientation and va.oblique == vb.oblique:
            return va.position_mm
        sign = 1.0
        if a.geometry is not None and b.geometry is not None and plane_a is not None:
            normal_b = base_plane(b.geometry, vb).normal
            cos = float(np.dot(plane_a.normal, normal_b))
            if abs(cos) < PARALLEL_SYNC_COS:
                return None  # crossing planes: reference lines, not scrolling
            sign = 1.0 if cos > 0 else -1.0
            same_frame = a.frame_of_reference_uid is not None and (
                a.frame_of_reference_uid == b.frame_of_reference_uid
            )
            if same_frame:
                return float(np.dot(plane_a.center, normal_b))
        offset = self._offsets.get((a.key, b.key))
        if offset is None:
            return None
        return sign * va.position_mm + offset

    def link(self, a: int, b: int, offset_mm: float | None = None) -> None:
        """Scroll viewports ``a`` and ``b`` together although their frames of reference differ (a prior):
        with the offset between their positions now, or ``offset_mm`` (b's position minus a's)."""
        va, ea = self._shown(a)
        vb, eb = self._shown(b)
        if ea.key == eb.key:
            raise ViewerStateError("A stack is always in step with itself; link two different stacks")
        sign = 1.0
        if ea.geometry is not None and eb.geometry is not None:
            cos = float(np.dot(base_plane(ea.geometry, va).normal, base_plane(eb.geometry, vb).normal))
            sign = 1.0 if cos >= 0 else -1.0
        offset = vb.position_mm - sign * va.position_mm if offset_mm is None else float(offset_mm)
        self._offsets[(ea.key, eb.key)] = offset
        self._offsets[(eb.key, ea.key)] = (
            va.position_mm - sign * vb.position_mm if offset_mm is None else (-sign * float(offset_mm))
        )
        self.events.links.emit()

    def unlink(self, a: int, b: int) -> None:
        ka, kb = self.viewport(a).stack_key, self.viewport(b).stack_key
        if ka is None or kb is None:
            return
        removed = [self._offsets.pop(k, None) for k in ((ka, kb), (kb, ka))]
        if any(v is not None for v in removed):
            self.events.links.emit()

    # --- crosshair and oblique planes ------------------------------------------------------------
    def frame_key(self, index: int) -> str | None:
        """What viewport ``index`` shares a crosshair with: its stack's FrameOfReferenceUID (else the stack
        itself); None when it is empty or its stack has no patient geometry."""
        vp = self.viewport(index)
        if vp.stack_key is None:
            return None
        entry = self._catalogue[vp.stack_key]
        if entry.geometry is None:
            return None
        return entry.frame_of_reference_uid or entry.key

    def frame_viewports(self, index: int) -> list[int]:
        """The viewports sharing viewport ``index``'s crosshair (itself included)."""
        key = self.frame_key(index)
        if key is None:
            return []
        return [i for i in range(len(self._viewports)) if self.frame_key(i) == key]

    def crosshair(self, index: int) -> Vec3 | None:
        """The crosshair point (patient mm) of viewport ``index``'s frame of reference, if one was set."""
        key = self.frame_key(index)
        return None if key is None else self._crosshair.get(key)

    def crosshair_or_default(self, index: int) -> Vec3:
        """The crosshair point, else the point the frame's viewport planes share (the three MPR planes
        cross in one point) nearest viewport ``index``'s image centre."""
        known = self.crosshair(index)
        if known is not None:
            return known
        vp, entry = self._shown(index)
        own = plane_at(entry, vp)
        if own is None:
            raise ViewerStateError("This stack has no patient geometry for a crosshair")
        planes = [p for i in self.frame_viewports(index) if (p := self.plane(i)) is not None]
        return common_point(planes, own.center)

    def plane(self, index: int) -> Plane | None:
        """The plane viewport ``index`` shows (None: empty, or no patient geometry)."""
        vp = self.viewport(index)
        if vp.stack_key is None:
            return None
        return plane_at(self._catalogue[vp.stack_key], vp)

    def set_crosshair(self, index: int, point: Sequence[float] | np.ndarray) -> None:
        """Put the crosshair of viewport ``index``'s frame of reference at a patient point: every other
        viewport of that frame scrolls to the plane through it (viewport ``index`` stays: the point was
        picked in its plane)."""
        key = self.frame_key(index)
        if key is None:
            raise ViewerStateError(f"Viewport {index} shows no stack with patient geometry: no crosshair")
        p = np.asarray(point, dtype=float).reshape(-1)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise ViewerStateError(f"A crosshair point needs three finite coordinates (mm), got {point!r}")
        vec: Vec3 = (float(p[0]), float(p[1]), float(p[2]))
        self._crosshair[key] = vec
        for i in self.frame_viewports(index):
            if i != index:
                self._place(i, vec)
        self.events.crosshair.emit(key, vec)

    def _follow_crosshair(self, index: int) -> None:
        """A viewport scrolled (wheel, keys): the crosshair point moves with its plane (projected onto it),
        so the lines keep crossing where the planes do and a turn is about a point on every plane."""
        if not self._crosshair:
            return  # no crosshair placed anywhere: nothing to move (the common case, on every scroll step)
        key = self.frame_key(index)
        point = None if key is None else self._crosshair.get(key)
        if key is None or point is None:
            return
        plane = self.plane(index)
        if plane is None:
            return
        n = plane.normal
        p = np.asarray(point) + (plane.position_mm - float(np.dot(n, point))) * n
        moved: Vec3 = (float(p[0]), float(p[1]), float(p[2]))
        if moved != point:
            self._crosshair[key] = moved
            self.events.crosshair.emit(key, moved)

    def _place(self, index: int, point: Vec3) -> None:
        """Scroll viewport ``index`` (only it: no scroll sync) to the plane through ``point``."""
        vp, entry = self._shown(index)
        self._set(index, self._through(entry, vp, point))

    @staticmethod
    def _through(entry: CatalogueEntry, vp: ViewportState, point: Vec3) -> ViewportState:
        """``vp`` at the position of its grid nearest the plane through ``point`` (the stack has geometry)."""
        assert entry.geometry is not None
        normal = base_plane(entry.geometry, vp).normal
        return replace(vp, position_mm=scroll_grid(entry, vp).snap(float(np.dot(np.asarray(point), normal))))

    def rotate_plane(
        self, index: int, target: int, angle: float, *, start: tuple[Vec3, Vec3] | None = None
    ) -> None:
        """Turn viewport ``target``'s plane by ``angle`` radians about viewport ``index``'s normal, through
        the crosshair point (a drag of ``target``'s crosshair line in viewport ``index`` with Ctrl held):
        ``target`` then shows an oblique plane. ``start``: the (row, column) directions to turn from (the
        plane's at the start of the drag, so a drag's steps never accumulate rounding), default its current
        ones."""
        self.rotate_planes(index, [target], angle, start=None if start is None else {target: start})

    def turnable_planes(self, index: int) -> list[int]:
        """The viewports whose planes a rotation handle in viewport ``index`` turns together: the other
        resliced (MPR) viewports of its frame of reference (a viewport of the stack's own slices stays)."""
        return [
            i for i in self.frame_viewports(index)
            if i != index and self.viewport(i).orientation is not Orientation.NATIVE
        ]

    def rotate_planes(
        self,
        index: int,
        targets: Sequence[int],
        angle: float,
        *,
        start: Mapping[int, tuple[Vec3, Vec3]] | None = None,
    ) -> None:
        """Turn the planes of viewports ``targets`` together by ``angle`` radians about viewport ``index``'s
        normal, through the crosshair point (one intent: a drag of a rotation handle in viewport ``index``
        turns both other MPR planes, as in RadiAnt, Horos and 3D Slicer). One rotation for all, so the
        angles between the turned planes (perpendicular MPR planes stay perpendicular) and with viewport
        ``index``'s plane are kept. ``start``: per target, the (row, column) directions to turn from (the
        planes' at the start of the drag), default their current ones. All targets are checked before any
        changes; the crosshair event is emitted once."""
        if not np.isfinite(angle):
            raise ViewerStateError(f"A plane turns by a finite angle, got {angle!r}")
        key = self.frame_key(index)
        todo = list(dict.fromkeys(int(t) for t in targets))
        for target in todo:
            if index == target:
                raise ViewerStateError(
                    "A viewport's plane turns about another viewport's normal, not its own"
                )
            if key is None or self.frame_key(target) != key:
                raise ViewerStateError(
                    f"Viewports {index} and {target} do not share a frame of reference: no crosshair to turn"
                )
            if self.viewport(target).orientation is Orientation.NATIVE:
                raise ViewerStateError(
                    f"Viewport {target} shows the stack's own slices: "
                    "only a resliced (MPR) plane turns (Alt+M)"
                )
        if not todo:
            return
        assert key is not None
        axis_plane = self.plane(index)
        assert axis_plane is not None
        point = self.crosshair_or_default(index)
        axis = axis_plane.normal
        self._crosshair[key] = point
        for target in todo:
            target_plane = self.plane(target)
            assert target_plane is not None
            given = None if start is None else start.get(target)
            row, col = given if given is not None else (target_plane.row_dir, target_plane.col_dir)
            new_row, new_col = rotate_vector(row, axis, angle), rotate_vector(col, axis, angle)
            vp, entry = self._shown(target)
            new = replace(vp, orientation=Orientation.OBLIQUE, oblique=(new_row, new_col))
            grid = scroll_grid(entry, new)
            assert entry.geometry is not None
            normal = base_plane(entry.geometry, new).normal
            self._set(target, replace(new, position_mm=grid.snap(float(np.dot(np.asarray(point), normal)))))
        self.events.crosshair.emit(key, point)

    def reset_planes(self, index: int) -> None:
        """Back to orthogonal planes: every oblique viewport of viewport ``index``'s frame of reference
        shows the standard plane (axial, coronal or sagittal) its normal is nearest, through the crosshair."""
        key = self.frame_key(index)
        if key is None:
            return
        point = self._crosshair.get(key)
        for i in self.frame_viewports(index):
            vp, entry = self._shown(i)
            if vp.orientation is not Orientation.OBLIQUE:
                continue
            plane = plane_at(entry, vp)
            assert plane is not None and entry.geometry is not None
            axis = int(np.argmax(np.abs(plane.normal)))
            orientation = (Orientation.SAGITTAL, Orientation.CORONAL, Orientation.AXIAL)[axis]
            new = replace(vp, orientation=orientation, oblique=None)
            centre = point if point is not None else plane.center
            normal = base_plane(entry.geometry, new).normal
            position = scroll_grid(entry, new).snap(float(np.dot(np.asarray(centre), normal)))
            self._set(i, replace(new, position_mm=position))

    def plane_poses(self, index: int) -> PlanePoses | None:
        """The planes of viewport ``index``'s frame of reference now (to undo a turn or an Alt+O with
        :meth:`restore_planes`); None when it has no patient geometry."""
        key = self.frame_key(index)
        if key is None:
            return None
        shown = tuple((i, self._viewports[i]) for i in self.frame_viewports(index))
        return PlanePoses(key, shown, self._crosshair.get(key))

    def restore_planes(self, poses: PlanePoses) -> bool:
        """Put the planes of a frame of reference back as in ``poses`` (undo / redo of a crosshair move, a
        plane turn or an Alt+O): each viewport that still shows the same stack gets its orientation, oblique
        directions and position back (its window, zoom and slab stay), and the crosshair point its place.
        False when no viewport still shows its stack (nothing to restore)."""
        todo = [
            (i, old) for i, old in poses.viewports
            if i < len(self._viewports) and self._viewports[i].stack_key == old.stack_key
            and self.frame_key(i) == poses.frame_key
        ]
        if not todo:
            return False
        for i, old in todo:
            vp = self._viewports[i]
            self._set(i, replace(vp, orientation=old.orientation, oblique=old.oblique,
                                 position_mm=old.position_mm))
        if poses.crosshair is None:
            self._crosshair.pop(poses.frame_key, None)
        else:
            self._crosshair[poses.frame_key] = poses.crosshair
        self.events.crosshair.emit(poses.frame_key, poses.crosshair)
        return True

    # --- window, zoom, pan, rotation -------------------------------------------------------------
    def set_window(self, index: int, window: Window | None, *, sync: bool = True) -> None:
        """Show ``window`` (None: the stack's own window, key 0); with window sync on and ``sync`` (the
        reader's own change), the viewports of the same modality get it too."""
        vp, _ = self._shown(index)
        if window is not None and not (window.width > 0 and np.isfinite(window.level)):
            raise ViewerStateError(
                f"Window width {window.width:g} must be positive and level {window.level:g} finite"
            )
        self._set(index, replace(vp, window=window))
        if self._sync.window and sync:
            for i in self.same_modality(index):
                self._set(i, replace(self._viewports[i], window=window))

    def toggle_invert(self, index: int) -> None:
        """Invert the display (or undo it); not synced."""
        vp, _ = self._shown(index)
        self._set(index, replace(vp, invert=not vp.invert))

    def set_zoom(
        self, index: int, scale: float | None, pan: tuple[float, float] | None = None, *, sync: bool = True
    ) -> None:
        """Show ``scale`` view units (mm) per screen pixel, centred ``pan`` from the image centre (None:
        the pan stays); ``scale`` None fits the image to the viewport, centred. Zoom sync copies both to
        the viewports of the same modality."""
        vp, _ = self._shown(index)
        if scale is None:
            new_scale, new_pan = None, (0.0, 0.0)
        else:
            if not (np.isfinite(scale) and scale > 0):
                raise ViewerStateError(f"Zoom scale {scale!r} must be positive (mm per screen pixel)")
            new_scale = float(scale)
            new_pan = vp.pan if pan is None else (float(pan[0]), float(pan[1]))
            if not all(np.isfinite(new_pan)):
                raise ViewerStateError(f"Pan {new_pan!r} must be finite")
        self._set(index, replace(vp, scale=new_scale, pan=new_pan))
        if self._sync.zoom and sync:
            for i in self.same_modality(index):
                self._set(i, replace(self._viewports[i], scale=new_scale, pan=new_pan))

    def fit(self, index: int, *, sync: bool = True) -> None:
        """Fit the image to the viewport, centred (F)."""
        self.set_zoom(index, None, sync=sync)

    def same_modality(self, index: int) -> list[int]:
        """The other viewports showing a stack of viewport ``index``'s modality (window/zoom sync)."""
        _, entry = self._shown(index)
        return [
            i
            for i, other in enumerate(self._viewports)
            if i != index
            and other.stack_key is not None
            and self._catalogue[other.stack_key].modality == entry.modality
        ]

    def rotate(self, index: int, quarter_turns: int = 1) -> None:
        """Rotate what is on screen clockwise by quarter turns (negative: counter-clockwise); the image is
        fitted again."""
        vp, _ = self._shown(index)
        rotation = (vp.rotation + int(quarter_turns)) % 4
        self._set(index, replace(vp, rotation=rotation, scale=None, pan=(0.0, 0.0)))

    def set_turn(self, index: int, rotation: int, mirror: bool) -> None:
        """Show viewport ``index`` with the display turn (``mirror`` left-right first, then ``rotation``
        quarter turns clockwise), fitted again (a hanging protocol's turn; R and flips are relative)."""
        vp, _ = self._shown(index)
        self._set(
            index, replace(vp, rotation=int(rotation) % 4, mirror=bool(mirror), scale=None, pan=(0.0, 0.0))
        )

    def flip(self, index: int, *, horizontal: bool = True) -> None:
        """Mirror what is on screen left-right (``horizontal``) or top-bottom; the image is fitted again.
        Composed into (mirror, rotation): a screen flip after R^r is R^-r (or R^(2-r) vertically) after a
        mirror."""
        vp, _ = self._shown(index)
        rotation = -vp.rotation if horizontal else 2 - vp.rotation
        self._set(
            index, replace(vp, rotation=rotation % 4, mirror=not vp.mirror, scale=None, pan=(0.0, 0.0))
        )

    def reset_view(self, index: int, *, sync: bool = True) -> None:
        """R: the stack's own window, no inversion, fitted, unrotated and unflipped (position stays); the
        window and the fit go to synced viewports as a reader's own change would."""
        vp, _ = self._shown(index)
        self._set(
            index,
            replace(vp, window=None, invert=False, scale=None, pan=(0.0, 0.0), rotation=0, mirror=False),
        )
        if sync and (self._sync.window or self._sync.zoom):
            for i in self.same_modality(index):
                other = self._viewports[i]
                if self._sync.window:
                    other = replace(other, window=None)
                if self._sync.zoom:
                    other = replace(other, scale=None, pan=(0.0, 0.0))
                self._set(i, other)

    # --- helpers ---------------------------------------------------------------------------------
    def _set(self, index: int, vp: ViewportState) -> None:
        if self._viewports[index] != vp:
            self._viewports[index] = vp
            self.events.viewport.emit(index, vp)

    def _check_viewport(self, index: int) -> None:
        if not 0 <= index < len(self._viewports):
            raise ViewerStateError(
                f"No viewport {index} in the {self._layout.value} layout (0..{len(self._viewports) - 1})"
            )

    def _entry(self, key: str) -> CatalogueEntry:
        try:
            return self._catalogue[key]
        except KeyError:
            raise ViewerStateError(f"No stack {key!r} in the catalogue") from None

    def _shown(self, index: int) -> tuple[ViewportState, CatalogueEntry]:
        vp = self.viewport(index)
        if vp.stack_key is None:
            raise ViewerStateError(f"Viewport {index} is empty")
        return vp, self._catalogue[vp.stack_key]

    @staticmethod
    def _usable(entry: CatalogueEntry, orientation: Orientation) -> Orientation:
        orientation = Orientation(orientation)
        if orientation is not Orientation.NATIVE and entry.geometry is None:
            raise ViewerStateError(
                "The stack has no patient geometry: it can only be shown as acquired, "
                f"not {orientation.value}"
            )
        return orientation
