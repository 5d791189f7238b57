"""Studies from a PACS in the viewer (issue 13): node settings, query dock, retrieve into the cache."""

from viewer.qt.pacs.controller import PacsController, attach

__all__ = ["PacsController", "attach"]
