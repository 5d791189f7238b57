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

    def stacks_of_series(self, series_uids: Iterable[str]) -> tuple[str, ...]:
        """The loaded stacks (uids) of these SeriesInstanceUIDs."""
        wanted = set(series_uids)
        return tuple(uid for uid, st in self._stacks.items() if st.series_instance_uid in wanted)

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
    # loaded stacks of the series it references (Referenced Series Sequence): where a SEG without a
    # frame to draw belongs (the AI's SEG of a stack without findings has only empty segments)
    series_stacks: tuple[str, ...] = ()

    @property
    def references_loaded(self) -> bool:
        return bool(self.layers) or bool(self.series_stacks)

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
    placed = {k: tuple(v) for k, v in layers.items()}
    return PlacedSeg(obj, placed, unplaced, wrong, index.stacks_of_series(obj.referenced_series))


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


@dataclass(frozen=True, eq=False)
class OverlayTile:
    """One slice's visible masks as an RGBA uint8 image cropped to where they are drawn: ``rgba``
    (height, width, 4) starts at pixel (``row``, ``column``) of the slice."""

    rgba: np.ndarray
    row: int
    column: int


def _colour(obj: SegObject, number: int) -> tuple[int, int, int]:
    for s in obj.segments:
        if s.number == number:
            return s.color
    return (255, 80, 80)


def compose_overlay(
    layers: Sequence[tuple[SegObject, MaskFrame]], hidden: frozenset[tuple[str, int]] = frozenset()
) -> OverlayTile | None:
    """Each visible segment in its colour: opaque where a binary mask is set, alpha = the value for
    fractional masks and maps (a stronger frame wins where two overlap). ``hidden`` holds
    (SEG SOP Instance UID, segment number) pairs. None when nothing is to be drawn."""
    shown = [(o, f) for o, f in layers if (o.sop_instance_uid, f.segment) not in hidden]
    boxes = []
    for _, f in shown:
        rows, cols = np.flatnonzero(f.mask.any(axis=1)), np.flatnonzero(f.mask.any(axis=0))
        if rows.size:
            boxes.append((int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1))
    if not boxes:
        return None
    r0, r1 = min(b[0] for b in boxes), max(b[1] for b in boxes)
    c0, c1 = min(b[2] for b in boxes), max(b[3] for b in boxes)
    out = np.zeros((r1 - r0, c1 - c0, 4), dtype=np.uint8)
    for obj, frame in shown:
        mask = frame.mask[r0:r1, c0:c1]
        if mask.dtype == np.bool_:
            alpha = mask.astype(np.uint8) * np.uint8(255)
        else:
            alpha = (np.clip(mask, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        stronger = alpha > out[..., 3]
        out[stronger, :3] = _colour(obj, frame.segment)
        out[stronger, 3] = alpha[stronger]
    return OverlayTile(out, r0, c0)
