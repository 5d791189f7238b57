"""Export the current view as PNG, de-identified unless the user opts in."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtGui import QImage

from viewer.qt.slice_view import SliceView

logger = logging.getLogger(__name__)


def render_view(view: SliceView, *, include_demographics: bool = False) -> QImage:
    """The image as displayed (zoom, window, overlays, measurements; a selected measurement is drawn
    as if it were not).

    De-identified unless asked: no patient name or ID, no study or series description, no date, no
    hint text (``view.overlay.painted_texts`` lists what was drawn). With ``include_demographics``
    the overlay is drawn as on screen (privacy mode still hides the name and ID).
    """
    with view.overlay.deidentified(not include_demographics), view.layer.unselected():
        return view.graphics.grab().toImage()


def export_png(view: SliceView, path: str | Path, *, include_demographics: bool = False) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    image = render_view(view, include_demographics=include_demographics)
    if not image.save(str(path)):
        raise OSError(f"Could not write the PNG file {path.name}")
    logger.info("Exported the current view as PNG (demographics included: %s)", include_demographics)
    return path
