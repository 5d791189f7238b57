"""The outline of an SR or presentation-state graphic as x (column) and y (row) arrays in image pixel
units, ready to draw on the image item (its (0, 0) is the image's top-left corner, as in DICOM)."""

from __future__ import annotations

import math

import numpy as np

from viewer.core.foreign.model import Graphic, GraphicType

CURVE_POINTS = 96


def outline(g: Graphic) -> tuple[np.ndarray, np.ndarray]:
    pts = np.asarray(g.points, dtype=float).reshape(-1, 2)
    t = np.linspace(0.0, 2 * math.pi, CURVE_POINTS + 1)
    if g.type is GraphicType.CIRCLE:
        centre, edge = pts[0], pts[1]
        r = float(np.linalg.norm(edge - centre))
        return centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)
    if g.type is GraphicType.ELLIPSE:
        centre = (pts[0] + pts[1]) / 2
        u, v = (pts[1] - pts[0]) / 2, (pts[3] - pts[2]) / 2
        xy = centre[None, :] + np.cos(t)[:, None] * u[None, :] + np.sin(t)[:, None] * v[None, :]
        return xy[:, 0], xy[:, 1]
    return pts[:, 0].copy(), pts[:, 1].copy()


def is_marker(g: Graphic) -> bool:
    """Points are drawn as markers, not joined."""
    return g.type in (GraphicType.POINT, GraphicType.MULTIPOINT)
