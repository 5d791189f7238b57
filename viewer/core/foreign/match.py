"""Place parsed result objects on the loaded slices: which stack and slice each mask, measurement,
finding or region belongs to, and which objects reference no loaded image at all."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from viewer.core.dicom.model import Stack
from viewer.core.foreign.model import (
    ForeignObject,
    ImageRef,
    MaskFrame,
    ReportEntry,
    ReportObject,
    Segment,
    SegObject,
)

POSITION_TOLERANCE_MM = 0.05  # a SEG frame without a source reference matches a slice this close


@dataclass(frozen=True, order=True)
class SliceAt:
    """A loaded slice: the stack's uid and the slice's index in it."""

    stack_uid: str
    index: int


class SliceIndex:
    """Finds loaded slices by SOP Instance UID and frame, or by position in a frame of reference."""

    def __init__(self, stacks: Iterable[Stack]) -> None:
        self._by_ref: dict[ImageRef, SliceAt] = {}
        self._by_uid: dict[str, list[SliceAt]] = defaultdict(list)
        self._stacks: dict[str, Stack] = {}
        for stack in stacks:
            self._stacks[stack.uid] = stack
            for i, info in enumerate(stack.slices):
                at = SliceAt(stack.uid, i)
                self._by_ref.setdefault(ImageRef(info.sop_instance_uid, info.source.frame), at)
                self._by_uid[info.sop_instance_uid].append(at)

    def locate(self, ref: ImageRef) -> SliceAt | None:
        return self._by_ref.get(ref)

    def knows(self, sop_instance_uid: str) -> bool:
        return sop_instance_uid in self._by_uid

    def stack(self, uid: str) -> Stack:
        return self._stacks[uid]

    def locate_position(
        self, frame_of_reference_uid: str, position: tuple[float, float, float], shape: tuple[int, int]
    ) -> SliceAt | None:
        """The slice at ``position`` (within POSITION_TOLERANCE_MM) of a stack in the same frame of
        reference and of the mask's size."""
        if not frame_of_reference_uid:
            return None
        p = np.asarray(position, dtype=float)
        for stack in self._stacks.values():
            if stack.frame_of_reference_uid != frame_of_reference_uid or (stack.rows, stack.columns) != shape:
                continue
            for i, info in enumerate(stack.slices):
                if (
                    info.position is not None
                    and np.linalg.norm(np.asarray(info.position) - p) < POSITION_TOLERANCE_MM
                ):
                    return SliceAt(stack.uid, i)
        return None


@dataclass(frozen=True, eq=False)
class PlacedSeg:
    """A SEG's masks by loaded slice, and what could not be placed."""

    obj: SegObject
    layers: dict[SliceAt, tuple[MaskFrame, ...]]
    unplaced: int = 0  # frames whose image is not loaded
    wrong_size: int = 0  # frames whose mask is not the size of their image

    @property
    def references_loaded(self) -> bool:
        return bool(self.layers)

    def slices_of(self, segment: int) -> list[SliceAt]:
        return sorted(at for at, frames in self.layers.items() if any(f.segment == segment for f in frames))


@dataclass(frozen=True)
class PlacedEntry:
    entry: ReportEntry
    slices: tuple[SliceAt, ...] = ()


@dataclass(frozen=True, eq=False)
class PlacedReport:
    obj: ReportObject
    entries: tuple[PlacedEntry, ...]
    references_loaded: bool = False


Placed = PlacedSeg | PlacedReport


def place_seg(obj: SegObject, index: SliceIndex) -> PlacedSeg:
    layers: dict[SliceAt, list[MaskFrame]] = defaultdict(list)
    unplaced = wrong = 0
    for frame in obj.frames:
        at = index.locate(frame.image) if frame.image is not None else None
        if at is None and frame.position is not None:
            at = index.locate_position(
                obj.frame_of_reference_uid, frame.position, (frame.mask.shape[0], frame.mask.shape[1])
            )
        if at is None:
            unplaced += 1
            continue
        stack = index.stack(at.stack_uid)
        if frame.mask.shape != (stack.rows, stack.columns):
            wrong += 1
            continue
        layers[at].append(frame)
    return PlacedSeg(obj, {k: tuple(v) for k, v in layers.items()}, unplaced, wrong)


def place_report(obj: ReportObject, index: SliceIndex) -> PlacedReport:
    entries = []
    for entry in obj.entries:
        found = {at for ref in entry.images if (at := index.locate(ref)) is not None}
        entries.append(PlacedEntry(entry, tuple(sorted(found))))
    loaded = any(index.knows(ref.sop_instance_uid) for ref in obj.referenced) or any(
        e.slices for e in entries
    )
    return PlacedReport(obj, tuple(entries), loaded)


def place(objects: Sequence[ForeignObject], stacks: Iterable[Stack]) -> list[Placed]:
    """Each object placed on ``stacks`` (in the order given)."""
    index = SliceIndex(stacks)
    return [place_seg(o, index) if isinstance(o, SegObject) else place_report(o, index) for o in objects]


def compose_rgba(
    layers: Sequence[tuple[SegObject, MaskFrame]],
    shape: tuple[int, int],
    hidden: set[tuple[str, int]] | None = None,
) -> np.ndarray | None:
    """One slice's masks as a premultiplied-free RGBA uint8 image (rows, columns, 4): each segment in
    its colour, opaque where a binary mask is set, alpha = probability for fractional ones (later
    frames over earlier where they are stronger). None when nothing is to be drawn."""
    hidden = hidden or set()
    out: np.ndarray | None = None
    colours: dict[tuple[str, int], Segment] = {}
    for obj, frame in layers:
        key = (obj.sop_instance_uid, frame.segment)
        if key in hidden:
            continue
        if key not in colours:
            colours[key] = next(
                (s for s in obj.segments if s.number == frame.segment), Segment(frame.segment, "")
            )
        if out is None:
            out = np.zeros((*shape, 4), dtype=np.uint8)
        mask = frame.mask
        alpha = (
            (mask.astype(np.float32) * 255.0 + 0.5).astype(np.uint8)
            if mask.dtype != np.bool_
            else (mask.astype(np.uint8) * 255)
        )
        stronger = alpha > out[..., 3]
        out[stronger, :3] = colours[key].color
        out[stronger, 3] = alpha[stronger]
    return out
