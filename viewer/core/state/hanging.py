"""Hanging protocols: which layout, series, plane and window a newly opened study is shown with.

A protocol is a row of a small rule table: it matches a study by modality and by body part -- the series'
BodyPartExamined where the study has one, else words of its study or series descriptions -- and says
the layout and, per viewport, which series
(:class:`SeriesChoice`), which plane and which window preset, and where a prior study of the patient
goes (:class:`PriorPlacement`). The first matching protocol wins; the table is kept as versioned JSON in
the settings folder (``hanging_protocols.json``), written with the built-in defaults when missing, edited
in View › Hanging protocols… (:mod:`viewer.core.state.protocol_store` saves it). A file that cannot be
read or understood is reported (:class:`HangingProtocolError`, with the place and the reason) and the
built-in defaults are used.

Qt-free: the window applies a :class:`HangingPlan` through the viewer state.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from viewer.core.constants import Window
from viewer.core.dicom.model import Stack
from viewer.core.errors import GeometryError, SlicewiseError
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.reslice import Slab, SlabMode
from viewer.core.review.fileutil import atomic_write_bytes, private_dir
from viewer.core.state.layout import Layout
from viewer.core.state.priors import matching_series

log = logging.getLogger(__name__)

PROTOCOLS_FILENAME = "hanging_protocols.json"
# 2: "prior" per protocol; 3: per viewport "zoom", "rotation", "mirror" and "slab". Older files are read
# too (what they lack is the default: fitted, unturned, thin, no prior)
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
BONE_WORDS = ("bone", "osteo", "knochen")


class HangingProtocolError(SlicewiseError):
    """The hanging-protocol file is unreadable or does not describe valid protocols."""


class SeriesChoice(str, Enum):
    """Which of the study's series a viewport shows."""

    MAIN = "main"  # the longest non-localizer series (what a study opens with)
    BONE = "bone"  # the thinnest series described as bone (kernel), else the main one
    NEXT = "next"  # the next series not yet shown by this protocol, else the main one


class PriorPlacement(str, Enum):
    """Where the patient's prior study goes when one is open (none: the protocol ignores priors)."""

    NONE = "none"
    SIDE_BY_SIDE = "side_by_side"  # current | prior (1x2, as Compare with prior), scrolling linked
    LAST_VIEWPORT = "last_viewport"  # the layout's last viewport shows the prior's matching series


@dataclass(frozen=True)
class ViewportRule:
    """One viewport of a protocol: which series, plane and window preset, and how it is viewed: ``zoom``
    in mm (view units) per screen pixel (None: fitted to the viewport), the display turn (``mirror``
    left-right first, then ``rotation`` quarter turns clockwise, as ``ViewportState``) and a thick
    ``slab`` (resliced planes only)."""

    series: SeriesChoice = SeriesChoice.MAIN
    orientation: Orientation = Orientation.NATIVE
    window: str | None = None  # a window preset's name; None: the header's window
    zoom: float | None = None
    rotation: int = 0
    mirror: bool = False
    slab: Slab | None = None

    def __post_init__(self) -> None:
        if self.zoom is not None and not (math.isfinite(self.zoom) and self.zoom > 0):
            raise ValueError(f"a viewport's zoom must be a positive number of mm per screen pixel, "
                             f"got {self.zoom!r}")
        if self.rotation not in (0, 1, 2, 3):
            raise ValueError(f"a viewport's rotation is 0-3 quarter turns, got {self.rotation!r}")
        if self.slab is not None and self.orientation is Orientation.NATIVE:
            raise ValueError("a slab needs a resliced plane (axial, coronal or sagittal), not 'as acquired'")

    @property
    def default_view(self) -> bool:
        """Fitted, unturned, thin: nothing beyond series, plane and window."""
        return self.zoom is None and self.rotation == 0 and not self.mirror and self.slab is None


@dataclass(frozen=True)
class HangingProtocol:
    name: str
    modality: str  # "CT", "MR", ... ("*": any)
    layout: Layout
    viewports: tuple[ViewportRule, ...]
    # words of which one must occur in the study or a series description (any case); empty: any study
    keywords: tuple[str, ...] = ()
    min_series: int = 1  # the study must have at least this many image series
    # BodyPartExamined values (CID 4031, e.g. "HEAD", "BRAIN") of which the study's series must name one;
    # decisive when the series carry BodyPartExamined, else the keywords decide
    body_parts: tuple[str, ...] = ()
    prior: PriorPlacement = PriorPlacement.NONE

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a protocol needs a name")
        if not self.modality.strip():
            raise ValueError(f"protocol {self.name!r} has no modality (\"*\": any)")
        if not self.viewports:
            raise ValueError(f"protocol {self.name!r} has no viewports")
        if len(self.viewports) > self.layout.viewport_count:
            raise ValueError(
                f"protocol {self.name!r}: {len(self.viewports)} viewports do not fit the "
                f"{self.layout.value} layout ({self.layout.viewport_count})"
            )

    def matches(self, study: StudySeries) -> bool:
        if self.modality != "*" and self.modality.upper() != study.modality.upper():
            return False
        if len(study.stacks) < self.min_series:
            return False
        if self.body_parts and study.body_parts:
            return bool(study.body_parts & {_body_part(b) for b in self.body_parts})
        if self.keywords:
            text = " ".join([study.description, *(s.series_description for s in study.stacks)]).lower()
            return any(word.lower() in text for word in self.keywords)
        return not self.body_parts  # a body-part rule cannot match a study that names none


def _body_part(value: str) -> str:
    """BodyPartExamined compared without case, spaces or underscores ("Head " == "HEAD")."""
    return value.upper().replace(" ", "").replace("_", "")


@dataclass(frozen=True)
class StudySeries:
    """One study's image stacks (localizers left out) and its description, as the protocols see it."""

    description: str
    stacks: tuple[Stack, ...]

    @property
    def modality(self) -> str:
        return self.main.modality if self.stacks else ""

    @property
    def body_parts(self) -> frozenset[str]:
        """The BodyPartExamined values its image series name (normalised); empty when none does."""
        return frozenset(_body_part(s.body_part) for s in self.stacks if s.body_part.strip())

    @property
    def main(self) -> Stack:
        return max(self.stacks, key=len)

    @classmethod
    def of(cls, description: str, stacks: Sequence[Stack]) -> StudySeries:
        images = [s for s in stacks if s.label != "localizer"] or list(stacks)
        return cls(description=description, stacks=tuple(images))


@dataclass(frozen=True)
class PlannedViewport:
    stack_key: str
    orientation: Orientation
    window: Window | None  # None: the header's window
    zoom: float | None = None  # mm per screen pixel; None: fitted
    rotation: int = 0
    mirror: bool = False
    slab: Slab | None = None


@dataclass(frozen=True)
class HangingPlan:
    protocol: str
    layout: Layout
    viewports: tuple[PlannedViewport, ...]
    prior_viewport: int | None = None  # the viewport that shows the prior study (to link its scrolling)
    prior: PriorPlacement = PriorPlacement.NONE


DEFAULT_PROTOCOLS: tuple[HangingProtocol, ...] = (
    HangingProtocol(
        "Head CT: brain | bone",
        "CT",
        Layout.ONE_BY_TWO,
        (ViewportRule(SeriesChoice.MAIN, window="brain"), ViewportRule(SeriesChoice.BONE, window="bone")),
        keywords=("head", "brain", "skull", "cranial", "cerebr", "neuro", "kopf", "schädel"),
        body_parts=("HEAD", "BRAIN", "SKULL"),
    ),
    HangingProtocol("CT", "CT", Layout.ONE, (ViewportRule(),)),
    HangingProtocol(
        "MR: four series",
        "MR",
        Layout.TWO_BY_TWO,
        (ViewportRule(), ViewportRule(SeriesChoice.NEXT), ViewportRule(SeriesChoice.NEXT),
         ViewportRule(SeriesChoice.NEXT)),
        min_series=4,
    ),
    HangingProtocol("MR", "MR", Layout.ONE, (ViewportRule(),)),
)


def choose_protocol(protocols: Sequence[HangingProtocol], study: StudySeries) -> HangingProtocol | None:
    """The first protocol that matches ``study`` (None: no protocol, or a study without images)."""
    if not study.stacks:
        return None
    return next((p for p in protocols if p.matches(study)), None)


def plan(
    protocol: HangingProtocol,
    study: StudySeries,
    presets: Mapping[str, Window],
    prior: StudySeries | None = None,
) -> HangingPlan:
    """What each viewport shows under ``protocol``; an unknown preset name leaves the header's window.
    With ``prior`` (the patient's earlier study) and a LAST_VIEWPORT protocol of two or more viewports,
    the last viewport shows the prior's series best matching the first viewport's (its own plane and
    window); without a matching series it is planned as if there were no prior."""
    main = study.main
    used: list[str] = []
    viewports: list[PlannedViewport] = []
    prior_viewport = None
    for k, rule in enumerate(protocol.viewports):
        stack = _pick(rule.series, study, main, used)
        last = k == len(protocol.viewports) - 1 and k > 0
        if last and prior is not None and protocol.prior is PriorPlacement.LAST_VIEWPORT:
            first = study.stacks[[s.uid for s in study.stacks].index(used[0])]
            match = matching_series(first, prior.stacks)
            if match is not None:
                stack, prior_viewport = match, k
        used.append(stack.uid)
        window = presets.get(rule.window) if rule.window else None
        if rule.window and window is None:
            log.warning("Hanging protocol names an unknown window preset; the header window is used")
        viewports.append(PlannedViewport(stack.uid, rule.orientation, window, rule.zoom, rule.rotation,
                                         rule.mirror, rule.slab))
    return HangingPlan(protocol.name, protocol.layout, tuple(viewports), prior_viewport, protocol.prior)


def _pick(choice: SeriesChoice, study: StudySeries, main: Stack, used: Sequence[str]) -> Stack:
    if choice is SeriesChoice.BONE:
        bone = [s for s in study.stacks if any(w in s.series_description.lower() for w in BONE_WORDS)]
        if bone:  # the thinnest bone series (spacing unknown last), then the longest
            return min(bone, key=lambda s: (s.slice_spacing or float("inf"), -len(s)))
        return main
    if choice is SeriesChoice.NEXT:
        ordered = [main, *sorted((s for s in study.stacks if s is not main), key=_series_order)]
        return next((s for s in ordered if s.uid not in used), main)
    return main


def _series_order(stack: Stack) -> tuple[int, str]:
    return (stack.series_number if stack.series_number is not None else 1 << 30, stack.uid)


# --- the JSON file ---------------------------------------------------------------------------------
def protocols_to_json(protocols: Sequence[HangingProtocol]) -> str:
    rows = []
    for p in protocols:
        row = asdict(p)
        row["layout"] = p.layout.value
        row["keywords"] = list(p.keywords)
        row["body_parts"] = list(p.body_parts)
        row["prior"] = p.prior.value
        row["viewports"] = [
            {
                "series": v.series.value,
                "orientation": v.orientation.value,
                "window": v.window,
                "zoom": v.zoom,
                "rotation": v.rotation,
                "mirror": v.mirror,
                "slab": None if v.slab is None else {"mode": v.slab.mode.value,
                                                     "thickness_mm": v.slab.thickness_mm},
            }
            for v in p.viewports
        ]
        rows.append(row)
    return json.dumps({"version": FORMAT_VERSION, "protocols": rows}, indent=2, ensure_ascii=False) + "\n"


def protocols_from_json(text: str, source: str = PROTOCOLS_FILENAME) -> tuple[HangingProtocol, ...]:
    """Parse the protocol file; raises :class:`HangingProtocolError` saying where and why."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HangingProtocolError(f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                                   f"{exc.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("protocols"), list):
        raise HangingProtocolError(f"{source}: expected an object with a 'protocols' list")
    if doc.get("version", FORMAT_VERSION) not in READABLE_VERSIONS:
        raise HangingProtocolError(f"{source}: version {doc.get('version')!r} is not one of "
                                   f"{', '.join(map(str, READABLE_VERSIONS))}")
    protocols = []
    for n, row in enumerate(doc["protocols"], start=1):
        try:
            protocols.append(_protocol_of(row))
        except (KeyError, TypeError, ValueError) as exc:
            what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise HangingProtocolError(f"{source}: protocol {n}: {what}") from None
    if not protocols:
        raise HangingProtocolError(f"{source}: the 'protocols' list is empty")
    return tuple(protocols)


def _protocol_of(row: object) -> HangingProtocol:
    if not isinstance(row, dict):
        raise TypeError("each protocol must be an object")
    viewports = row["viewports"]
    if not isinstance(viewports, list):
        raise TypeError("'viewports' must be a list")
    keywords = row.get("keywords", [])
    if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
        raise TypeError("'keywords' must be a list of words")
    body_parts = row.get("body_parts", [])
    if not isinstance(body_parts, list) or not all(isinstance(b, str) for b in body_parts):
        raise TypeError("'body_parts' must be a list of BodyPartExamined values")
    rules = []
    for v in viewports:
        if not isinstance(v, dict):
            raise TypeError("each viewport must be an object")
        window = v.get("window")
        if window is not None and not isinstance(window, str):
            raise TypeError("a viewport's 'window' must be a preset name or null")
        rules.append(
            ViewportRule(
                SeriesChoice(v.get("series", SeriesChoice.MAIN.value)),
                Orientation(v.get("orientation", Orientation.NATIVE.value)),
                window,
                zoom=_zoom_of(v.get("zoom")),
                rotation=_rotation_of(v.get("rotation", 0)),
                mirror=_mirror_of(v.get("mirror", False)),
                slab=_slab_of(v.get("slab")),
            )
        )
    min_series = row.get("min_series", 1)
    if not isinstance(min_series, int) or min_series < 1:
        raise ValueError("'min_series' must be a whole number >= 1")
    return HangingProtocol(
        name=str(row["name"]),
        modality=str(row["modality"]),
        layout=Layout(row["layout"]),
        viewports=tuple(rules),
        keywords=tuple(keywords),
        min_series=min_series,
        body_parts=tuple(body_parts),
        prior=PriorPlacement(row.get("prior", PriorPlacement.NONE.value)),
    )


def _zoom_of(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("a viewport's 'zoom' must be mm per screen pixel (a number) or null (fitted)")
    return float(value)


def _rotation_of(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("a viewport's 'rotation' must be a whole number of quarter turns (0-3)")
    return value


def _mirror_of(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError("a viewport's 'mirror' must be true or false")
    return value


def _slab_of(value: object) -> Slab | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError("a viewport's 'slab' must be an object (mode, thickness_mm) or null")
    thickness = value.get("thickness_mm")
    if isinstance(thickness, bool) or not isinstance(thickness, (int, float)) or not thickness > 0:
        raise ValueError("a slab's 'thickness_mm' must be a positive number")
    try:
        return Slab(SlabMode(value.get("mode")), float(thickness))
    except GeometryError as exc:
        raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class ProtocolTable:
    """The protocols in use and, when the file was refused, why (shown to the user once)."""

    protocols: tuple[HangingProtocol, ...] = DEFAULT_PROTOCOLS
    error: str | None = None
    path: Path | None = field(default=None, compare=False)


def load_protocols(path: Path) -> ProtocolTable:
    """The protocols of ``path``; a missing file is created with the defaults; a bad one gives the
    defaults and the error (never raises for the file's content)."""
    if not path.exists():
        try:
            private_dir(path.parent)
            atomic_write_bytes(path, protocols_to_json(DEFAULT_PROTOCOLS).encode("utf-8"))
        except OSError as exc:
            log.warning("Could not write the default hanging protocols (%s)", type(exc).__name__)
        return ProtocolTable(path=path)
    try:
        text = path.read_text(encoding="utf-8")
        return ProtocolTable(protocols_from_json(text, path.name), path=path)
    except (OSError, UnicodeDecodeError) as exc:
        error = f"{path.name}: cannot be read ({type(exc).__name__})"
    except HangingProtocolError as exc:
        error = str(exc)
    log.warning("Hanging protocols refused, using the built-in defaults: %s", error)
    return ProtocolTable(error=f"{error}. The built-in hanging protocols are used.", path=path)
