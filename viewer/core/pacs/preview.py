"""A series as it arrives from a retrieve, as a provisional :class:`Stack` to show meanwhile.

The retrieve hands over each instance once it is in the cache (:class:`RetrievedInstance`); a
:class:`SeriesPreview` keeps where one series' instances are (a file, or a member of a cache pack), and
:meth:`SeriesPreview.stack` reads the headers of those added since its last call (headers only, never
pixels: on the retrieve's thread) and sorts every record read so far with the loader's own grouping
(:func:`build_tree`: position along the normal, else InstanceNumber, else arrival order). The stack it
returns holds the series' instances arrived so far; the complete load replaces it once the retrieve has
ended.

Which series streams is chosen before anything arrives, from what the series query already answered
(:func:`main_series`: the image series with the most instances that is not a localizer); the retrieve
fetches it first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from viewer.core.dicom.grouping import build_tree
from viewer.core.dicom.header import HeaderRecord, read_header
from viewer.core.dicom.model import SliceSource, Stack
from viewer.core.pacs.models import SeriesMatch

logger = logging.getLogger(__name__)

# series modalities that hold no images to stream (structured reports, key objects, presentation states,
# segmentations, registrations, RT objects, documents, waveforms)
NOT_IMAGE_MODALITIES = frozenset(
    {
        *("SR", "KO", "PR", "SEG", "REG", "FID", "RWV"),
        *("RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "DOC", "ECG", "AU"),
    }
)
# words of a series description that mark a localizer (scout, topogram, survey) series
LOCALIZER_WORDS = ("localizer", "localiser", "scout", "topogram", "surview", "scanogram", "survey", "pilot")


def is_localizer_description(description: str) -> bool:
    """True when a series description names a localizer ("Scout", "Topogram 0.6 T20s", "3-plane loc")."""
    text = description.lower()
    return any(word in text for word in LOCALIZER_WORDS) or "loc" in text.replace("-", " ").split()


def main_series(series: Sequence[SeriesMatch]) -> str | None:
    """The UID of the series a reader expects to see while a study arrives: of the series the query
    answered, the one with the most instances that is an image series (by modality) and not a localizer
    (by description); the first such on a tie. None when the query said no series' instance count (the
    first image series to arrive is shown then). One instance of a multi-frame series counts once."""
    counted = [s for s in series if s.num_instances and s.modality.upper() not in NOT_IMAGE_MODALITIES]
    if not counted:
        return None
    candidates = [s for s in counted if not is_localizer_description(s.series_description)] or counted
    best = candidates[0]
    for s in candidates[1:]:
        if (s.num_instances or 0) > (best.num_instances or 0):
            best = s
    return best.series_uid


class SeriesPreview:
    """The arrived instances of series ``series_uid`` (``expected``: how many instances the PACS said it
    holds, 0 when it did not say). :meth:`add` is cheap (it keeps the source); :meth:`stack` does the
    reading. Counts are in frames (a multi-frame instance counts its frames, each a slice of the stack).
    Thread-safe: instances may be added from one thread while another builds the stack."""

    def __init__(self, series_uid: str, expected: int = 0) -> None:
        self.series_uid = series_uid
        self._expected_instances = max(0, int(expected))
        self._lock = threading.Lock()
        self._sources: list[SliceSource] = []  # in arrival order
        self._frames = 0  # of the instances added
        self._records: list[HeaderRecord] = []
        self._read = 0  # sources whose header has been read
        self._building = threading.Lock()  # one stack() at a time (it extends the records read)

    @property
    def arrived(self) -> int:
        """Frames of the instances added so far."""
        with self._lock:
            return self._frames

    @property
    def expected(self) -> int:
        """Frames the series is expected to hold: its instances, each arrived multi-frame instance
        counted by its frames (0 when the PACS did not say how many instances)."""
        with self._lock:
            if not self._expected_instances:
                return 0
            return self._expected_instances + self._frames - len(self._sources)

    def add(self, source: Path | SliceSource, frames: int = 1) -> None:
        """One arrived instance: its file, or where it is (a pack member: ``RetrievedInstance.source``)."""
        with self._lock:
            self._sources.append(source if isinstance(source, SliceSource) else SliceSource(source))
            self._frames += max(1, frames)

    def stack(self) -> Stack | None:
        """The series' largest stack of everything arrived so far, sorted (None while no image instance
        has arrived: an SR, a KOS, a file the loader cannot read). A series the grouping splits
        (localizers, another orientation) gives its stack with the most slices."""
        with self._building:
            return self._build()

    def _build(self) -> Stack | None:
        with self._lock:
            new = list(enumerate(self._sources[self._read :], start=self._read))
            self._read = len(self._sources)
        for order, source in new:
            try:
                result = read_header(source, order)
            except Exception as exc:  # read_header reports problems itself; this is the last defence
                logger.debug("No preview of an arrived instance: %s", type(exc).__name__)
                continue
            if isinstance(result, list):  # else skipped (not an image, unreadable): the load reports it
                self._records.extend(r for r in result if r.series_uid == self.series_uid)
        if not self._records:
            return None
        try:
            patients, _duplicates = build_tree(list(self._records), compare=None)
        except Exception as exc:  # a preview is optional: the complete load reports problems
            logger.debug("No preview of the arriving series: %s", type(exc).__name__)
            return None
        stacks = [
            stack
            for patient in patients
            for study in patient.studies
            for series in study.series
            for stack in series.stacks
            if stack.slices
        ]
        return max(stacks, key=len, default=None)


def receiving_text(arrived: int, expected: int) -> str:
    """The status line of a growing preview: "Receiving… 120 of 300 slices" (``arrived`` frames of
    ``expected``, 0 when the PACS did not say: see :attr:`SeriesPreview.arrived`)."""
    if expected >= arrived and expected > 0:
        return f"Receiving… {arrived} of {expected} slices"
    return f"Receiving… {arrived} slice{'' if arrived == 1 else 's'}"
