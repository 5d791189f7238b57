"""The stacks loaded into the viewer, with their geometry (computed once) and what sync needs to know."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from viewer.core.dicom.model import Stack
from viewer.core.errors import GeometryError
from viewer.core.geometry.stack import StackGeometry

log = logging.getLogger(__name__)


def patient_key(patient_id: str, name: str) -> str:
    """Who a stack belongs to, for telling viewports of different patients apart: the PatientID, or the
    name when the ID is missing ("" when both are: unknown, never taken for a different patient). PHI:
    never shown or logged."""
    pid = patient_id.strip()
    if pid:
        return f"id:{pid}"
    who = " ".join(name.replace("^", " ").split()).upper()
    return f"name:{who}" if who else ""


@dataclass(frozen=True, eq=False)
class CatalogueEntry:
    """One loaded stack. ``geometry`` is None when the stack has no usable patient geometry (then its
    viewports scroll by index and never sync by position)."""

    key: str
    stack: Stack
    patient_key: str = ""  # groups studies of one patient (priors); never shown or logged
    geometry: StackGeometry | None = field(default=None)

    @property
    def frame_of_reference_uid(self) -> str | None:
        return self.stack.frame_of_reference_uid or None

    @property
    def modality(self) -> str:
        return self.stack.modality

    @property
    def slice_count(self) -> int:
        return len(self.stack)

    @classmethod
    def of(cls, stack: Stack, key: str | None = None, patient_key: str = "") -> CatalogueEntry:
        try:
            geometry: StackGeometry | None = StackGeometry.from_stack(stack)
        except GeometryError as exc:
            log.info("Stack without usable geometry (%s): it scrolls by index", type(exc).__name__)
            geometry = None
        return cls(key=key or stack.uid, stack=stack, patient_key=patient_key, geometry=geometry)
