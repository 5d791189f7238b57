"""Editing and saving the hanging-protocol table (View › Hanging protocols…), Qt-free.

The table is written whole, atomically (a temporary file renamed over the old one, 0600), as version
:data:`~viewer.core.state.hanging.FORMAT_VERSION` JSON. A file that was refused when read (bad JSON, an
unknown layout...) is kept aside as ``hanging_protocols.json.damaged`` before the first save, so the
user's text is not lost. The built-in protocols are the defaults and can be restored at any time.
:func:`protocol_from_view` turns what is on screen into a protocol for that kind of study ("save
current layout as protocol").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from viewer.core.constants import Window
from viewer.core.dicom.model import Stack
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.reslice import Slab
from viewer.core.review.fileutil import atomic_write_bytes, private_dir
from viewer.core.state.hanging import (
    BONE_WORDS,
    DEFAULT_PROTOCOLS,
    HangingProtocol,
    HangingProtocolError,
    PriorPlacement,
    ProtocolTable,
    SeriesChoice,
    StudySeries,
    ViewportRule,
    protocols_from_json,
    protocols_to_json,
)
from viewer.core.state.layout import Layout

log = logging.getLogger(__name__)

DAMAGED_SUFFIX = ".damaged"
# words of a study description that say nothing about the kind of study
STOP_WORDS = frozenset({
    "ct", "mr", "mri", "cr", "dx", "us", "pt", "pet", "nm", "mg", "xa", "with", "without", "w", "wo", "and",
    "contrast", "native", "nativ", "routine", "study", "scan", "exam", "the", "of", "for", "mit", "ohne",
    "km", "iv", "plain", "mm", "axial", "thin", "thick",
})
MAX_KEYWORDS = 3


def save_protocols(
    path: Path, protocols: Sequence[HangingProtocol], *, refused: bool = False
) -> ProtocolTable:
    """Write ``protocols`` to ``path`` atomically and return the new table. ``refused``: the file on disk
    was refused when read; it is kept aside as ``<name>.damaged`` first. Raises
    :class:`HangingProtocolError` for an empty table and OSError when the file cannot be written."""
    if not protocols:
        raise HangingProtocolError("At least one hanging protocol is needed (Restore built-ins: defaults)")
    text = protocols_to_json(protocols)
    protocols_from_json(text, path.name)  # what is written reads back: a last check before replacing
    private_dir(path.parent)
    if refused and path.exists():
        damaged = path.with_name(path.name + DAMAGED_SUFFIX)
        path.replace(damaged)
        log.warning("The refused hanging-protocol file was kept aside (%s)", damaged.name)
    atomic_write_bytes(path, text.encode("utf-8"))
    return ProtocolTable(tuple(protocols), path=path)


def restore_builtins() -> tuple[HangingProtocol, ...]:
    """The built-in protocols (head CT brain | bone, CT, MR four series, MR)."""
    return DEFAULT_PROTOCOLS


def is_builtin(protocol: HangingProtocol) -> bool:
    """True when ``protocol`` is one of the built-ins, unchanged."""
    return protocol in DEFAULT_PROTOCOLS


def with_protocol(protocols: Sequence[HangingProtocol], new: HangingProtocol) -> tuple[HangingProtocol, ...]:
    """The table with ``new`` first (the first match wins), replacing a protocol of the same name."""
    return (new, *(p for p in protocols if p.name != new.name))


def moved(protocols: Sequence[HangingProtocol], index: int, step: int) -> tuple[HangingProtocol, ...]:
    """The table with protocol ``index`` moved ``step`` places up (-) or down (+), clamped."""
    rows = list(protocols)
    target = min(max(index + step, 0), len(rows) - 1)
    rows.insert(target, rows.pop(index))
    return tuple(rows)


def study_keywords(description: str) -> tuple[str, ...]:
    """Up to three words of a study description that name the kind of study ("CT Head without contrast"
    -> ("head",)), lower case, without modality names and words such as *with*, *contrast*."""
    words = [w for w in re.split(r"[^\w]+", description.lower()) if len(w) > 1 and not w.isdigit()]
    kept: list[str] = []
    for w in words:
        if w not in STOP_WORDS and w not in kept:
            kept.append(w)
    return tuple(kept[:MAX_KEYWORDS])


@dataclass(frozen=True)
class ShownViewport:
    """What one viewport shows now: its stack (None: empty), plane and window, whether the stack is a
    prior study's (another study of the patient than the one the protocol is for), and how it is viewed:
    zoom (mm per screen pixel, None: fitted), display turn and slab (``ViewportState``'s)."""

    stack: Stack | None
    orientation: Orientation = Orientation.NATIVE
    window: Window | None = None
    prior: bool = False
    zoom: float | None = None
    rotation: int = 0
    mirror: bool = False
    slab: Slab | None = None


def preset_name(window: Window | None, presets: Mapping[str, Window]) -> str | None:
    """The name of the preset ``window`` is (None: the header's, or a window that is no preset)."""
    if window is None:
        return None
    return next((name for name, w in presets.items() if w == window), None)


def protocol_from_view(
    name: str,
    study: StudySeries,
    layout: Layout,
    shown: Sequence[ShownViewport],
    presets: Mapping[str, Window],
) -> HangingProtocol:
    """A protocol that hangs studies like ``study`` as the viewports show it now: its modality and
    body parts (BodyPartExamined), else up to three keywords of its description; the layout; per
    viewport the series rule (the main series, a bone series, or the next one), plane and window preset
    (a window that is no preset: the header's), zoom, rotation / flip and slab (a slab only on a resliced
    plane; an oblique plane hangs as acquired, without its slab). A viewport showing a prior study makes
    the protocol place the prior in its last viewport. Empty viewports at the end are left out (they stay
    empty)."""
    if not study.stacks:
        raise HangingProtocolError("The shown study has no image series to make a protocol of")
    rows = list(shown[: layout.viewport_count])
    while rows and rows[-1].stack is None:
        rows.pop()
    if not rows:
        raise HangingProtocolError("Every viewport is empty: show the study first")
    main = study.main
    rules = []
    for vp in rows:
        if vp.stack is None or vp.prior or vp.stack is main or vp.stack.uid == main.uid:
            series = SeriesChoice.MAIN
        elif any(w in vp.stack.series_description.lower() for w in BONE_WORDS):
            series = SeriesChoice.BONE
        else:
            series = SeriesChoice.NEXT
        # an oblique plane's turn is not kept by a protocol: the stack's own plane stands in
        plane = Orientation.NATIVE if vp.orientation is Orientation.OBLIQUE else vp.orientation
        thick = vp.slab is not None and vp.slab.thickness_mm > 0
        slab = vp.slab if thick and plane is not Orientation.NATIVE else None
        rules.append(ViewportRule(series, plane, preset_name(vp.window, presets), zoom=vp.zoom,
                                  rotation=vp.rotation % 4, mirror=vp.mirror, slab=slab))
    prior = PriorPlacement.NONE
    if any(vp.prior for vp in rows):
        prior = PriorPlacement.LAST_VIEWPORT
        if not rows[-1].prior:  # the prior goes to the last viewport: the rules keep their order
            k = next(i for i, vp in enumerate(rows) if vp.prior)
            rules.append(rules.pop(k))
    body_parts = tuple(sorted(study.body_parts))
    return HangingProtocol(
        name=name.strip(),
        modality=study.modality or "*",
        layout=layout,
        viewports=tuple(rules),
        keywords=() if body_parts else study_keywords(study.description),
        body_parts=body_parts,
        prior=prior,
    )
