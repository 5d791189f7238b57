"""The key of the results overlay: which segments a stack shows, in which colour, and for fractional SEGs
and Parametric Maps the scale their colour ramp stands for (Qt-free: the view paints it).

The legend is worked out per stack, not per slice, so it stays put while scrolling and costs nothing on a
slice change: each SEG or map placed on the stack contributes its segments that have a mask somewhere on
the stack and are not hidden (unticked in the Results dock).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from viewer.core.foreign.match import PlacedSeg
from viewer.core.foreign.model import RGB


@dataclass(frozen=True)
class LegendRow:
    """One segment: its label and colour; ``ramp``: drawn as a colour bar (its value is the opacity)."""

    label: str
    color: RGB
    ramp: bool = False


@dataclass(frozen=True)
class LegendScale:
    """What the two ends of a colour ramp stand for, as the tick labels read."""

    low: str
    middle: str
    high: str
    unit: str = ""


@dataclass(frozen=True)
class LegendGroup:
    """One SEG or Parametric Map on the stack: its title, rows and (fractional, maps) its scale."""

    title: str
    rows: tuple[LegendRow, ...]
    scale: LegendScale | None = None


def format_value(value: float) -> str:
    """A tick label: ``0``, ``0.5``, ``1``, ``12.5``, ``1.2e+03`` (three significant digits)."""
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.3g}"
    return "0" if text in ("-0", "0") else text


def scale_of(low: float, high: float, unit: str = "") -> LegendScale:
    return LegendScale(format_value(low), format_value((low + high) / 2), format_value(high), unit)


def legend_groups(
    placed: Iterable[PlacedSeg], stack_uid: str, hidden: frozenset[tuple[str, int]] = frozenset()
) -> tuple[LegendGroup, ...]:
    """The legend of stack ``stack_uid``: a group per SEG or map with a shown segment on the stack, in
    load order; ``hidden`` holds (SOP Instance UID, segment number) pairs left out."""
    groups = []
    for p in placed:
        on_stack = {f.segment for at, frames in p.layers.items() if at.stack_uid == stack_uid for f in frames}
        obj = p.obj
        rows = tuple(
            LegendRow(s.label, s.color, obj.fractional)
            for s in obj.segments
            if s.number in on_stack and (obj.sop_instance_uid, s.number) not in hidden
        )
        if rows:
            scale = scale_of(*obj.value_range, obj.unit) if obj.fractional else None
            groups.append(LegendGroup(obj.description or str(obj.kind), rows, scale))
    return tuple(groups)
