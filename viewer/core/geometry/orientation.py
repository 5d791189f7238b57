"""Orientation letters (R/L, A/P, I/S) for directions in patient space (LPS), as in the IHE BIR overlay."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np

_AXIS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # LPS: -x/+x, -y/+y, -z/+z
OBLIQUE_FRACTION = 0.25  # a secondary axis must carry this much of the direction to be named


class Orientation(str, Enum):
    """A viewport's plane kind; ``NATIVE`` is the stack's own acquisition plane."""

    NATIVE = "native"
    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"
    OBLIQUE = "oblique"


# Display convention (radiological): IOP row / column directions of the standard planes, LPS.
STANDARD_DIRECTIONS: dict[Orientation, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    Orientation.AXIAL: ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),  # right edge L, bottom P
    Orientation.CORONAL: ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),  # right edge L, bottom I
    Orientation.SAGITTAL: ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),  # right edge P, bottom I
}


def direction_letters(vector: Sequence[float] | np.ndarray) -> str:
    """Patient-direction letters for a direction in LPS, strongest first (e.g. ``(1,0,0)`` -> ``"L"``).

    Oblique directions get two or three letters (``"LP"``), as in the IHE BIR orientation overlay.
    """
    v = np.asarray(vector, dtype=float)
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        return ""
    v = v / norm
    order = np.argsort(-np.abs(v))
    letters: list[str] = []
    for axis in order:
        if abs(v[axis]) < OBLIQUE_FRACTION and letters:
            break
        letters.append(_AXIS_LETTERS[axis][1 if v[axis] > 0 else 0])
    return "".join(letters)


def edge_labels(
    row_dir: Sequence[float] | np.ndarray, col_dir: Sequence[float] | np.ndarray
) -> dict[str, str]:
    """Letters for the image edges (``left``, ``right``, ``top``, ``bottom``) of an image whose rows
    run along ``row_dir`` (towards the right edge) and columns along ``col_dir`` (towards the bottom)."""
    row = np.asarray(row_dir, dtype=float)
    col = np.asarray(col_dir, dtype=float)
    return {
        "right": direction_letters(row),
        "left": direction_letters(-row),
        "bottom": direction_letters(col),
        "top": direction_letters(-col),
    }


def orientation_labels(iop: Sequence[float] | None) -> dict[str, str]:
    """Edge letters from ImageOrientationPatient (``{}`` when it is missing or malformed).

    IOP's first triplet points along a row (towards increasing column = the right edge), the second
    along a column (towards increasing row = the bottom edge).
    """
    if iop is None or len(iop) != 6:
        return {}
    return edge_labels(iop[:3], iop[3:])


def classify_normal(normal: Sequence[float] | np.ndarray, threshold: float = 0.8) -> Orientation:
    """AXIAL / CORONAL / SAGITTAL when the plane normal is within ~37° of a patient axis, else OBLIQUE."""
    n = np.asarray(normal, dtype=float)
    norm = float(np.linalg.norm(n))
    if norm == 0.0:
        return Orientation.OBLIQUE
    n = n / norm
    axis = int(np.argmax(np.abs(n)))
    if abs(n[axis]) < threshold:
        return Orientation.OBLIQUE
    return (Orientation.SAGITTAL, Orientation.CORONAL, Orientation.AXIAL)[axis]
