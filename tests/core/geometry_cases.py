"""Stacks with awkward geometry, written as real DICOM files by tests/factories.py and loaded back."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from tests.factories import write_geometry_series
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import Stack
from viewer.core.geometry.orientation import Orientation
from viewer.core.state.layout import Layout
from viewer.core.state.viewer_state import ViewerState

ROWS, COLS = 12, 14
SPACING = (0.8, 0.6)


def _rotation(z_deg: float, x_deg: float) -> np.ndarray:
    a, b = math.radians(z_deg), math.radians(x_deg)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return rx @ rz


def _oblique_iop() -> tuple[float, ...]:
    r = _rotation(30, 10)
    return (*r[:, 0], *r[:, 1])


@dataclass(frozen=True)
class Case:
    name: str
    iop: tuple[float, ...]
    positions: tuple[tuple[float, float, float], ...]  # in k order (ascending along the normal)

    @property
    def n(self) -> int:
        return len(self.positions)


def _along(iop: tuple[float, ...], origin: np.ndarray, offsets: list[float], shear: np.ndarray) -> tuple:
    n = np.cross(iop[:3], iop[3:])
    return tuple(tuple(float(v) for v in origin + d * n + k * shear) for k, d in enumerate(offsets))


AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # rows run right-to-left; the normal points to the feet
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
ORIGIN = np.array([-4.0, -5.0, 10.0])
TILT = math.tan(math.radians(20)) * 2.0

CASES = {
    "axial": Case("axial", AXIAL, _along(AXIAL, ORIGIN, [2.0 * k for k in range(9)], np.zeros(3))),
    "tilted": Case(
        "tilted", AXIAL, _along(AXIAL, ORIGIN, [2.0 * k for k in range(9)], np.array([0, TILT, 0]))
    ),
    "flipped": Case("flipped", FLIPPED, _along(FLIPPED, ORIGIN, [2.0 * k for k in range(9)], np.zeros(3))),
    "oblique": Case(
        "oblique", _oblique_iop(), _along(_oblique_iop(), ORIGIN, [1.5 * k for k in range(9)], np.zeros(3))
    ),
    "uneven": Case("uneven", AXIAL, _along(AXIAL, ORIGIN, [0, 2, 4, 7, 9, 11, 15, 17, 19], np.zeros(3))),
    "sagittal": Case(
        "sagittal", SAGITTAL, _along(SAGITTAL, ORIGIN, [1.5 * k for k in range(9)], np.zeros(3))
    ),
}


def write_case(case: Case, folder: Path, hu: np.ndarray | None = None, **kwargs: object) -> list[Path]:
    """Write the case (reversed, so that sorting has work to do); returns paths in ``k`` order."""
    if hu is None:
        hu = np.arange(case.n * ROWS * COLS).reshape(case.n, ROWS, COLS) % 1000
    rev = write_geometry_series(
        folder,
        hu[::-1],
        positions=case.positions[::-1],
        orientation=case.iop,
        spacing=SPACING,
        **kwargs,  # type: ignore[arg-type]
    )
    return rev[::-1]


def load_stack(folder: Path) -> Stack:
    stacks = load_paths([folder]).all_stacks()
    assert len(stacks) == 1
    return stacks[0]


def mpr_state(folder: Path) -> ViewerState:
    """A 1+3 viewer state with the stack in ``folder`` as axial, coronal and sagittal planes."""
    state = ViewerState()
    key = state.add_stack(load_stack(folder))
    state.set_layout(Layout.ONE_BY_THREE)
    for i, o in enumerate((Orientation.AXIAL, Orientation.CORONAL, Orientation.SAGITTAL)):
        state.show(i, key, o)
    return state


def file_geometry(path: Path) -> tuple[list[float], list[float], list[float]]:
    """IPP, IOP and PixelSpacing as pydicom reads them from the file (the oracle's input)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return (
        [float(v) for v in ds.ImagePositionPatient],
        [float(v) for v in ds.ImageOrientationPatient],
        [float(v) for v in ds.PixelSpacing],
    )


# a field linear in patient position: resliced planes of it are known exactly (tests of planes/reslicing)
FIELD = np.array([0.7, -1.3, 2.1])


def linear_volume(paths: list[Path]) -> np.ndarray:
    """FIELD . p + 5 at every voxel centre, positions from highdicom (independent of our maps)."""
    from highdicom.spatial import PixelToReferenceTransformer

    jj, ii = np.mgrid[0:ROWS, 0:COLS]
    pixels = np.column_stack([ii.ravel(), jj.ravel()])
    out = []
    for path in paths:
        ipp, iop, spacing = file_geometry(path)
        pts = PixelToReferenceTransformer(ipp, iop, spacing)(pixels)
        out.append((pts @ FIELD + 5.0).reshape(ROWS, COLS))
    return np.asarray(out, dtype=np.float64)

