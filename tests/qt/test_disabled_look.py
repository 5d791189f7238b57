"""The dark style sheet draws a disabled control as disabled. Seen in the PACS dock: "Cancel" with no
retrieve running, "Retrieve" with nothing selected, "Search" while a search runs and a DICOMweb node's
disabled DIMSE fields were drawn exactly as the enabled ones (text #c9d1d9), because the sheet's
``QWidget { color: … }`` overrides the palette's disabled text colour."""

from __future__ import annotations

from PySide6.QtWidgets import QLineEdit, QPushButton, QVBoxLayout, QWidget
from pytestqt.qtbot import QtBot

from viewer.qt.style import stylesheet


def _brightest_text(widget: QWidget) -> int:
    image = widget.grab().toImage()
    return max(
        sum(image.pixelColor(x, y).getRgb()[:3])
        for x in range(image.width())
        for y in range(image.height())
    )


def test_disabled_buttons_and_fields_are_drawn_muted(qtbot: QtBot) -> None:
    host = QWidget()
    host.setStyleSheet(stylesheet())
    layout = QVBoxLayout(host)
    controls = [QPushButton("Cancel"), QPushButton("Cancel"), QLineEdit("ANY-SCP"), QLineEdit("ANY-SCP")]
    for control in controls:
        layout.addWidget(control)
    qtbot.addWidget(host)
    host.show()
    qtbot.waitExposed(host)
    for enabled, disabled in (controls[0:2], controls[2:4]):
        disabled.setEnabled(False)
        assert _brightest_text(disabled) < _brightest_text(enabled) - 150, type(enabled).__name__
