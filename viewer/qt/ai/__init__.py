"""AI analysis UI: prediction timeline, findings panel and the controller that attaches them."""

from viewer.qt.ai.controller import AIController, attach

__all__ = ["AIController", "attach"]
