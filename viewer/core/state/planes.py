"""Where a viewport's plane lies: the plane for its stack, orientation and position, and the scroll grid."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.plane import Plane, crosshair_plane, native_plane, standard_plane
from viewer.core.geometry.reslice import normal_step
from viewer.core.geometry.stack import StackGeometry
from viewer.core.state.catalogue import CatalogueEntry
from viewer.core.state.viewport import ViewportState


@dataclass(frozen=True)
class ScrollGrid:
    """Positions (mm along the plane normal, or slice indices without geometry) a viewport may take."""

    low: float
    high: float
    step: float
    locations: tuple[float, ...] = ()  # the native slices' own locations (uneven spacing allowed)

    def snap(self, value: float) -> float:
        if self.locations:
            locs = np.asarray(self.locations)
            return float(locs[int(np.argmin(np.abs(locs - value)))])
        clamped = min(max(value, self.low), self.high)
        return self.low + round((clamped - self.low) / self.step) * self.step

    def moved(self, value: float, steps: int) -> float:
        if self.locations:
            locs = np.asarray(self.locations)
            i = int(np.argmin(np.abs(locs - value))) + steps
            return float(locs[min(max(i, 0), len(locs) - 1)])
        return self.snap(value + steps * self.step)

    @property
    def middle(self) -> float:
        if self.locations:
            return self.locations[len(self.locations) // 2]
        count = round((self.high - self.low) / self.step) + 1
        return self.snap(self.low + (count // 2) * self.step)


def base_plane(geom: StackGeometry, vp: ViewportState) -> Plane:
    """The viewport's plane through the volume centre (its orientation, not yet its position)."""
    if vp.orientation is Orientation.NATIVE:
        return native_plane(geom, geom.shape[0] // 2)
    if vp.orientation is Orientation.OBLIQUE:
        row, col = vp.oblique if vp.oblique is not None else (geom.iop[:3], geom.iop[3:])
        return crosshair_plane(geom, row, col)
    return standard_plane(geom, vp.orientation)


def plane_at(entry: CatalogueEntry, vp: ViewportState) -> Plane | None:
    """The plane the viewport shows (None for a stack without geometry)."""
    geom = entry.geometry
    if geom is None:
        return None
    if vp.orientation is Orientation.NATIVE:
        return native_plane(geom, geom.nearest_slice(vp.position_mm))
    base = base_plane(geom, vp)
    return base.shifted(vp.position_mm - base.position_mm)


def scroll_grid(entry: CatalogueEntry, vp: ViewportState) -> ScrollGrid:
    geom = entry.geometry
    if geom is None:
        return ScrollGrid(0.0, float(max(entry.slice_count - 1, 0)), 1.0)
    if vp.orientation is Orientation.NATIVE:
        locs = tuple(float(v) for v in geom.locations)
        return ScrollGrid(locs[0], locs[-1], geom.slice_spacing, locations=locs)
    base = base_plane(geom, vp)
    proj = geom.corners() @ base.normal
    step = normal_step(geom, base)
    low = float(proj.min())
    count = math.floor((float(proj.max()) - low) / step + 1e-6)
    return ScrollGrid(low, low + count * step, step)


def slice_index(entry: CatalogueEntry, vp: ViewportState) -> int:
    """The native slice a viewport is on (its position's nearest slice)."""
    if entry.geometry is None:
        return round(min(max(vp.position_mm, 0), entry.slice_count - 1))
    return entry.geometry.nearest_slice(vp.position_mm)
