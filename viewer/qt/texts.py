"""Small texts the panels share: counts with their noun, and a patient's name as lists show it."""

from __future__ import annotations

NO_NAME = "(no name)"  # a patient without a name (a blank row or line is easy to miss or misread)


def plural(n: int, noun: str) -> str:
    """``1 image``, ``2 images`` (a regular noun)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def patient_name_text(dicom_name: str) -> str:
    """A DICOM person name as the panels show it: ``SMITH JOHN`` for ``SMITH^JOHN``, :data:`NO_NAME` when
    empty."""
    return dicom_name.replace("^", " ").strip() or NO_NAME
