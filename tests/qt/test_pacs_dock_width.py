"""The PACS dock at a laptop's 1366 x 768 (issue 12: its 420 px minimum, 519 px once a search listed a
long study description, took the image's width): it fits the side panels' width, its controls wrap
instead of being cut, long columns end in '…' with the text in full in the tooltip, and it sits as a tab
beside the Studies browser, so that the right side's dock tabs keep their titles."""

from __future__ import annotations

from PySide6.QtCore import QRect
from PySide6.QtWidgets import QAbstractButton, QApplication, QLineEdit, QTabBar, QWidget
from pytestqt.qtbot import QtBot

from tests.qt.viewer_helpers import make_window
from viewer.core.pacs.models import StudyMatch
from viewer.core.pacs.worklist import AiStatus, WorklistRow
from viewer.qt.pacs.controller import PacsController
from viewer.qt.pacs.widgets import COLUMN_CAP_PX
from viewer.qt.style import LEFT_DOCK_PX

IMAGE_SHARE = 0.6
LONG_DESCRIPTION = "CT HEAD WITHOUT CONTRAST (ROUTINE STROKE PROTOCOL, AXIAL 5 MM AND 0.625 MM)"


def _studies() -> list[StudyMatch]:
    return [
        StudyMatch(f"1.2.826.0.1.{k}", f"DOE^JOHN{k}^MIDDLENAME", f"PID{k:05d}", "20260101", "101500", "",
                   description, ("CT",), 3)
        for k, description in enumerate((LONG_DESCRIPTION, "CT BRAIN", "MR KNEE LEFT"))
    ]


def _inside_and_whole(panel: QWidget) -> None:
    """Every visible button and line edit lies inside the panel and is at least as wide as it needs."""
    bounds = QRect(0, 0, panel.width(), panel.height())
    for control in panel.findChildren(QAbstractButton) + panel.findChildren(QLineEdit):
        if not control.isVisible() or control.parent() is None or not isinstance(control.parent(), QWidget):
            continue
        if control.metaObject().className() == "QToolButton":  # the date edits' calendar arrows, etc.
            continue
        rect = QRect(control.mapTo(panel, control.rect().topLeft()), control.size())
        name = getattr(control, "text", lambda: "")() or control.objectName() or type(control).__name__
        assert bounds.contains(rect), (name, rect, bounds)
        assert control.width() >= control.minimumSizeHint().width(), name


def test_the_pacs_dock_fits_beside_the_image_without_cut_controls(qtbot: QtBot) -> None:
    window = make_window(qtbot, (1366, 768))
    pacs = window.pacs_controller
    assert isinstance(pacs, PacsController)
    pacs.panel.set_nodes(["Orthanc (loopback)"])
    pacs.worklist.set_nodes(["Orthanc (loopback)"])
    pacs.show_query()
    pacs.panel.show_studies(_studies())
    pacs.panel.set_retrieving(True)
    pacs.panel.set_progress(12, 40)
    qtbot.wait(50)
    QApplication.processEvents()

    assert pacs.dock.minimumSizeHint().width() <= LEFT_DOCK_PX  # it was 420
    assert pacs.dock.width() <= LEFT_DOCK_PX + 4  # it was 519 with the long description listed
    central = window.centralWidget()
    assert central is not None and central.width() >= IMAGE_SHARE * window.width()
    # a tab beside the Studies browser; every dock tab bar reads in full and none lies over the status bar
    assert window.browser_dock in window.tabifiedDockWidgets(pacs.dock)
    status = window.statusBar().geometry()
    bars = [b for b in window.findChildren(QTabBar) if b.parent() is window and b.isVisible()]
    shown = [b for b in bars if window.rect().intersects(b.geometry())]
    assert any("PACS" in [b.tabText(i) for i in range(b.count())] for b in shown)
    for bar in shown:
        assert not bar.geometry().intersects(status), [bar.tabText(i) for i in range(bar.count())]
        for i in range(bar.count()):
            assert bar.tabRect(i).width() >= bar.tabSizeHint(i).width(), bar.tabText(i)

    panel = pacs.panel
    _inside_and_whole(panel)
    header = panel.results.header()
    assert all(header.sectionSize(c) <= COLUMN_CAP_PX for c in range(header.count()))
    item = panel.results.topLevelItem(0)
    assert item is not None and item.toolTip(3) == LONG_DESCRIPTION  # cut on screen, whole in the tooltip
    assert item.toolTip(0) == "DOE JOHN0 MIDDLENAME"

    pacs.show_worklist()
    rows = [WorklistRow(s, AiStatus.POSITIVE, 0.97) for s in _studies()]
    pacs.worklist.show_rows(rows)
    qtbot.wait(50)
    _inside_and_whole(pacs.worklist)
    header = pacs.worklist.rows.header()
    assert all(header.sectionSize(c) <= COLUMN_CAP_PX for c in range(header.count()))
    assert pacs.dock.width() <= LEFT_DOCK_PX + 4
