"""One viewport's state (a frozen value: every change makes a new one) and the tools a viewport offers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from viewer.core.constants import Window
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.reslice import Slab

Vec3 = tuple[float, float, float]


class Tool(str, Enum):
    """What the left mouse button does in every viewport."""

    WINDOW = "window"
    PAN = "pan"
    ZOOM = "zoom"
    RULER = "ruler"
    ANGLE = "angle"
    ELLIPSE = "ellipse"
    RECTANGLE = "rectangle"
    CROSSHAIR = "crosshair"


# Display turns, applied after the image's own axes: screen (x, y) = matrix @ image (col, row); y is down.
ROTATE_CW = np.array([[0, -1], [1, 0]], dtype=int)
FLIP_H = np.array([[-1, 0], [0, 1]], dtype=int)
FLIP_V = np.array([[1, 0], [0, -1]], dtype=int)


def turn_matrix(rotation: int, mirror: bool) -> np.ndarray:
    """The 2×2 integer matrix taking image (column, row) directions to screen (x, y): mirrored left-right
    first (``mirror``), then ``rotation`` quarter turns clockwise."""
    m = np.linalg.matrix_power(ROTATE_CW, int(rotation) % 4)
    return m @ FLIP_H if mirror else m


@dataclass(frozen=True)
class ViewportState:
    """What a viewport shows and how.

    ``position_mm`` is where the viewport's plane lies along its normal (``point . normal``, mm); for a
    stack without patient geometry it is the slice index. ``window`` None is the stack's own window (the
    header's, VOI LUT function included, else one from the data: key 0); ``invert`` is the reader's
    inversion on top of MONOCHROME1's. ``scale`` is the magnification in view units (mm, or image pixels
    without a usable PixelSpacing) per screen pixel, None when the image is fitted to the viewport (and
    fitted again when the viewport is resized); ``pan`` is the view centre's offset from the image centre
    in view units along the screen's x and y (ignored while fitted). The display turn is ``mirror``
    (left-right, in image axes) followed by ``rotation`` quarter turns clockwise (:func:`turn_matrix`);
    a flip or rotation of what is on screen is composed into that pair by the state's intents.
    """

    stack_key: str | None = None
    orientation: Orientation = Orientation.NATIVE
    position_mm: float = 0.0
    window: Window | None = None
    invert: bool = False
    scale: float | None = None
    pan: tuple[float, float] = (0.0, 0.0)
    rotation: int = 0
    mirror: bool = False
    slab: Slab | None = None
    # an oblique plane's directions (row, column) in patient space; ignored for other orientations
    oblique: tuple[Vec3, Vec3] | None = None

    @property
    def is_empty(self) -> bool:
        return self.stack_key is None

    @property
    def fitted(self) -> bool:
        return self.scale is None

    def turn(self) -> np.ndarray:
        """The display turn (:func:`turn_matrix`)."""
        return turn_matrix(self.rotation, self.mirror)
