"""One viewport's state (a frozen value: every change makes a new one) and the tools a viewport offers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

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


@dataclass(frozen=True)
class ViewportState:
    """What a viewport shows and how.

    ``position_mm`` is where the viewport's plane lies along its normal (``point . normal``, mm); for a
    stack without patient geometry it is the slice index. ``zoom`` 1.0 means fit to the viewport;
    ``pan`` is the view centre's offset from the image centre in image pixels (row, column);
    ``rotation`` counts quarter turns clockwise, applied after the flips.
    """

    stack_key: str | None = None
    orientation: Orientation = Orientation.NATIVE
    position_mm: float = 0.0
    window: Window | None = None
    zoom: float = 1.0
    pan: tuple[float, float] = (0.0, 0.0)
    rotation: int = 0
    flip_horizontal: bool = False
    flip_vertical: bool = False
    slab: Slab | None = None
    # an oblique plane's directions (row, column) in patient space; ignored for other orientations
    oblique: tuple[Vec3, Vec3] | None = None

    @property
    def is_empty(self) -> bool:
        return self.stack_key is None
