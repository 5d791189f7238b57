"""Dark theme and icons: the QSS in ``resources/styles`` and the SVGs in ``resources/icons``."""

from __future__ import annotations

import logging
from functools import lru_cache

from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from viewer.core.paths import icon_path, resources_dir

logger = logging.getLogger(__name__)

ACCENT = "#2f81f7"
WARNING_COLOR = "#e3b341"
OVERLAY_COLOR = "#e6edf3"
MUTED_COLOR = "#6e7681"  # text of something present but empty (the disabled text colour)
# The side docks' first widths: the Studies dock on the left, the AI findings (tabbed with the worklist,
# review and results) on the right. With both, the image keeps 60 % of a 1366 px wide window (820 px)
# and 70 % of a 1920 px one; the panels' texts fit these widths.
LEFT_DOCK_PX = 266
RIGHT_DOCK_PX = 264


@lru_cache(maxsize=64)
def icon(name: str) -> QIcon:
    """A bundled SVG icon by stem name (``resources/icons/<name>.svg``)."""
    return QIcon(str(icon_path(name)))


def stylesheet() -> str:
    path = resources_dir() / "styles" / "dark.qss"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        logger.warning("Dark stylesheet not found; using the platform style")
        return ""
    return text.replace("@ICONS@", icon_path("check").parent.as_posix())  # QSS urls: absolute paths


def apply_dark_theme(app: QApplication) -> None:
    """Fusion style, a dark palette (for dialogs QSS does not reach) and the QSS."""
    app.setStyle("Fusion")
    pal = QPalette()
    colors = {
        QPalette.ColorRole.Window: "#161b22",
        QPalette.ColorRole.WindowText: "#c9d1d9",
        QPalette.ColorRole.Base: "#0d1117",
        QPalette.ColorRole.AlternateBase: "#111820",
        QPalette.ColorRole.ToolTipBase: "#1f2630",
        QPalette.ColorRole.ToolTipText: "#e6edf3",
        QPalette.ColorRole.Text: "#c9d1d9",
        QPalette.ColorRole.Button: "#21262d",
        QPalette.ColorRole.ButtonText: "#c9d1d9",
        QPalette.ColorRole.BrightText: "#ffffff",
        QPalette.ColorRole.Highlight: "#1f6feb",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: ACCENT,
        QPalette.ColorRole.PlaceholderText: "#6e7681",
    }
    for role, value in colors.items():
        pal.setColor(role, QColor(value))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(MUTED_COLOR))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(MUTED_COLOR))
    app.setPalette(pal)
    app.setStyleSheet(stylesheet())
