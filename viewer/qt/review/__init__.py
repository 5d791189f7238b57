"""Review-session GUI: Session menu, worklist dock and decision panel attached to a MainWindow."""

from viewer.qt.review.controller import ReviewController, attach

__all__ = ["ReviewController", "attach"]
