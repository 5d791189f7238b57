"""The measurements of every study, in memory (:class:`MeasurementSet`, evented) and on disk
(:class:`MeasurementStore`: one small JSON file in the user data folder, 0600, written atomically).

Measurements are keyed by Study / Series / SOP Instance UID and frame (see :class:`ImageRef`), never by
file path, so a study opened again from another folder (or retrieved again from a PACS) shows them
again. The file holds UIDs and pixel coordinates only: no patient name, ID or path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from psygnal import Signal

from viewer.core.errors import MeasurementError
from viewer.core.measure import OBLIQUE_PLANE, UNPLACED_GEOMETRY, ImageRef, Measurement, Shape
from viewer.core.review.fileutil import atomic_write_bytes

log = logging.getLogger(__name__)

STORE_FILE = "measurements.json"
# 3: "geometry" on oblique-plane measurements; 2: "points" (and "text") per measurement, every shape;
# 1: "start"/"end" (1 and 2 are read too: their oblique-plane measurements become unplaced)
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


class MeasurementSet:
    """Every measurement, by id, oldest first. ``changed`` is emitted after each add/remove/replace with
    the ImageRef touched (twice when a replacement moves a measurement to another image)."""

    changed = Signal(object)  # ImageRef

    def __init__(self, measurements: Iterable[Measurement] = ()) -> None:
        self._items: dict[str, Measurement] = {m.id: m for m in measurements}

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Measurement]:
        return iter(list(self._items.values()))

    def __contains__(self, measurement_id: object) -> bool:
        return measurement_id in self._items

    def get(self, measurement_id: str) -> Measurement | None:
        return self._items.get(measurement_id)

    def position(self, measurement_id: str) -> int:
        """Where a measurement is in the oldest-first order (to put it back there)."""
        return list(self._items).index(measurement_id)

    def add(self, m: Measurement, position: int | None = None) -> None:
        """Add ``m`` (newest, or at ``position`` in the oldest-first order)."""
        if position is None or position >= len(self._items):
            self._items[m.id] = m
        else:
            items = list(self._items.values())
            items.insert(max(0, position), m)
            self._items = {x.id: x for x in items}
        self.changed.emit(m.ref)

    def remove(self, measurement_id: str) -> Measurement:
        m = self._items.pop(measurement_id, None)
        if m is None:
            raise MeasurementError(f"No measurement with id {measurement_id}")
        self.changed.emit(m.ref)
        return m

    def replace(self, m: Measurement) -> Measurement:
        """Put ``m`` in place of the measurement with its id (moved, reshaped or retexted); returns the old
        one."""
        old = self._items.get(m.id)
        if old is None:
            raise MeasurementError(f"No measurement with id {m.id}")
        self._items[m.id] = m
        self.changed.emit(m.ref)
        if old.ref != m.ref:
            self.changed.emit(old.ref)
        return old

    def on(self, ref: ImageRef) -> list[Measurement]:
        """The measurements of one image, oldest first."""
        return [m for m in self._items.values() if m.ref == ref]

    def of_study(self, study_uid: str) -> list[Measurement]:
        return [m for m in self._items.values() if m.ref.study_uid == study_uid]


def _to_json(m: Measurement) -> dict[str, object]:
    r = m.ref
    d: dict[str, object] = {
        "id": m.id, "shape": m.shape.value, "points": [list(p) for p in m.points],
        "series_uid": r.series_uid, "plane": r.plane, "sop_uid": r.sop_uid, "frame": r.frame,
    }
    if r.geometry:
        d["geometry"] = r.geometry
    if m.text:
        d["text"] = m.text
    return d


def _point(p: object) -> tuple[float, float]:
    if not (isinstance(p, list) and len(p) == 2 and all(isinstance(v, int | float) for v in p)):
        raise ValueError("a point must be two numbers")
    return float(p[0]), float(p[1])


def _from_json(study_uid: str, d: dict[str, object], version: int) -> Measurement:
    points: tuple[tuple[float, float], ...]
    if version == 1:  # {"start": [x, y], "end": [x, y]}: rulers, ellipses and rectangles
        points = (_point(d["start"]), _point(d["end"]))
    else:
        raw = d["points"]
        if not isinstance(raw, list):
            raise ValueError("'points' is not a list")
        points = tuple(_point(p) for p in raw)
    frame = d["frame"]
    if not isinstance(frame, int):
        raise ValueError("frame must be an integer")
    text = d.get("text", "")
    if not isinstance(text, str):
        raise ValueError("text must be a string")
    plane = str(d["plane"])
    geometry = d.get("geometry", "")
    if not isinstance(geometry, str):
        raise ValueError("geometry must be a string")
    if plane == OBLIQUE_PLANE and not geometry:
        # saved by plane number alone (before version 3): which turned plane it was is not known, so it is
        # kept but drawn on none (it used to appear on every oblique plane of that number)
        geometry, frame = UNPLACED_GEOMETRY, 0
    ref = ImageRef(study_uid, str(d["series_uid"]), plane, str(d["sop_uid"]), frame, geometry)
    return Measurement(shape=Shape(str(d["shape"])), ref=ref, points=points, text=text, id=str(d["id"]))


class MeasurementStore:
    """The JSON file: ``{"version": 2, "studies": {StudyInstanceUID: [measurement, ...]}}``, each
    measurement ``{"id", "shape", "points": [[x, y], ...], "text" (arrows), "series_uid", "plane",
    "sop_uid", "frame", "geometry" (oblique planes: :func:`~viewer.core.measure.plane_geometry_key`)}``.
    Version 1 files (``"start"``/``"end"`` instead of ``"points"``) and version 2 files are read too; their
    oblique-plane measurements (keyed by plane number only) are migrated to the unplaced geometry: kept,
    drawn on no plane. The next save writes version 3."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / STORE_FILE

    def load(self) -> list[Measurement]:
        """Every stored measurement (none when there is no file yet); a damaged file raises
        :class:`MeasurementError` saying where and why."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise MeasurementError(f"Cannot read the measurement store ({type(exc).__name__})") from exc
        try:
            doc = json.loads(raw)
            version = doc.get("version") if isinstance(doc, dict) else "?"
            if version not in READABLE_VERSIONS:
                raise ValueError(f"unknown format (version {version})")
            studies = doc["studies"]
            if not isinstance(studies, dict):
                raise ValueError("'studies' is not an object")
            found = [_from_json(str(uid), d, int(version)) for uid, items in studies.items() for d in items]
        except (ValueError, KeyError, TypeError, MeasurementError) as exc:
            raise MeasurementError(f"The measurement store {STORE_FILE} is damaged: {exc}") from exc
        unplaced = sum(m.ref.geometry == UNPLACED_GEOMETRY for m in found)
        if unplaced and version != FORMAT_VERSION:
            log.info("Measurement store version %s: %d oblique-plane measurement(s) kept unplaced "
                     "(saved without their plane's geometry)", version, unplaced)
        return found

    def save(self, measurements: Iterable[Measurement]) -> None:
        """Write every measurement, all-or-nothing (temp file 0600, fsync, rename)."""
        studies: dict[str, list[dict[str, object]]] = {}
        for m in measurements:
            studies.setdefault(m.ref.study_uid, []).append(_to_json(m))
        data = json.dumps({"version": FORMAT_VERSION, "studies": studies}, indent=1).encode()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_bytes(self.path, data)

    def set_aside(self) -> Path:
        """Move a damaged store out of the way (kept as ``measurements.json.damaged``) so new
        measurements can be saved."""
        target = self.path.with_name(STORE_FILE + ".damaged")
        self.path.replace(target)
        return target
