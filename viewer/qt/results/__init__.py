"""Others' results on the image: SEG overlays, SR and presentation-state regions, the Results dock."""

from viewer.qt.results.controller import ResultsController, attach

__all__ = ["ResultsController", "attach"]
