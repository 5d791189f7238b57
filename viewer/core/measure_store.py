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
from viewer.core.measure import ImageRef, Measurement, Shape
from viewer.core.review.fileutil import atomic_write_bytes

log = logging.getLogger(__name__)

STORE_FILE = "measurements.json"
FORMAT_VERSION = 1


class MeasurementSet:
    """Every measurement, by id. ``changed`` is emitted after each add/remove (with the ImageRef touched)."""

    changed = Signal(object)  # ImageRef

    def __init__(self, measurements: Iterable[Measurement] = ()) -> None:
        self._items: dict[str, Measurement] = {m.id: m for m in measurements}

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Measurement]:
        return iter(list(self._items.values()))

    def add(self, m: Measurement) -> None:
        self._items[m.id] = m
        self.changed.emit(m.ref)

    def remove(self, measurement_id: str) -> Measurement:
        m = self._items.pop(measurement_id, None)
        if m is None:
            raise MeasurementError(f"No measurement with id {measurement_id}")
        self.changed.emit(m.ref)
        return m

    def on(self, ref: ImageRef) -> list[Measurement]:
        """The measurements of one image, oldest first."""
        return [m for m in self._items.values() if m.ref == ref]

    def remove_last(self, ref: ImageRef) -> Measurement | None:
        """Remove the newest measurement of an image (None when it has none)."""
        mine = self.on(ref)
        return self.remove(mine[-1].id) if mine else None

    def of_study(self, study_uid: str) -> list[Measurement]:
        return [m for m in self._items.values() if m.ref.study_uid == study_uid]


def _to_json(m: Measurement) -> dict[str, object]:
    r = m.ref
    return {
        "id": m.id, "shape": m.shape.value, "start": list(m.start), "end": list(m.end),
        "series_uid": r.series_uid, "plane": r.plane, "sop_uid": r.sop_uid, "frame": r.frame,
    }


def _from_json(study_uid: str, d: dict[str, object]) -> Measurement:
    start, end = d["start"], d["end"]
    if not (isinstance(start, list) and isinstance(end, list) and len(start) == 2 and len(end) == 2):
        raise ValueError("start/end must be two numbers each")
    frame = d["frame"]
    if not isinstance(frame, int):
        raise ValueError("frame must be an integer")
    ref = ImageRef(study_uid, str(d["series_uid"]), str(d["plane"]), str(d["sop_uid"]), frame)
    return Measurement(
        shape=Shape(str(d["shape"])), ref=ref,
        start=(float(start[0]), float(start[1])), end=(float(end[0]), float(end[1])), id=str(d["id"]),
    )


class MeasurementStore:
    """The JSON file: ``{"version": 1, "studies": {StudyInstanceUID: [measurement, ...]}}``."""

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
            if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
                version = doc.get("version") if isinstance(doc, dict) else "?"
                raise ValueError(f"unknown format (version {version})")
            studies = doc["studies"]
            if not isinstance(studies, dict):
                raise ValueError("'studies' is not an object")
            return [_from_json(str(uid), d) for uid, items in studies.items() for d in items]
        except (ValueError, KeyError, TypeError) as exc:
            raise MeasurementError(f"The measurement store {STORE_FILE} is damaged: {exc}") from exc

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
