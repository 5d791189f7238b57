"""The PACS dock at a laptop's 1366 x 768 (issue 12: its 420 px minimum, 519 px once a search listed a
long study description, took the image's width): it fits the side panels' width, its controls wrap
instead of being cut, long columns end in '…' with the text in full in the tooltip, and it sits as a tab
beside the Studies browser, so that the right side's dock tabs keep their titles."""

from __future__ import annotations

from PySide6.QtCore import QRect, Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QLineEdit,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTabBar,
    QTreeWidget,
    QWidget,
)
from pytestqt.qtbot import QtBot

from tests.qt.viewer_helpers import make_window
from viewer.core.pacs.models import SeriesMatch, StudyMatch
from viewer.core.pacs.worklist import AiStatus, WorklistRow
from viewer.qt.pacs.controller import PacsController
from viewer.qt.pacs.widgets import COLUMN_CAP_PX, QueryPanel, series_label
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
    _two_lines(panel.results)  # the columns do not fit: each study is two lines
    # what a reader picks a study by (date, modality, description), not only the patient's name and ID
    assert _shown(panel.results) == (
        f"DOE JOHN0 MIDDLENAME · PID00000\u20282026-01-01 · CT · {LONG_DESCRIPTION} · 3 series"
    )
    item = panel.results.topLevelItem(0)
    assert item is not None and item.toolTip(3) == LONG_DESCRIPTION  # cut on screen, whole in the tooltip
    assert item.toolTip(0) == "DOE JOHN0 MIDDLENAME"

    pacs.show_worklist()
    rows = [WorklistRow(s, AiStatus.POSITIVE, 0.97) for s in _studies()]
    pacs.worklist.show_rows(rows)
    qtbot.wait(50)
    _inside_and_whole(pacs.worklist)
    _two_lines(pacs.worklist.rows)
    assert _shown(pacs.worklist.rows) == (
        f"AI positive 0.97 · DOE JOHN0 MIDDLENAME · PID00000\u20282026-01-01 10:15 · {LONG_DESCRIPTION}"
    )
    assert pacs.dock.width() <= LEFT_DOCK_PX + 4

    # a dock the reader widens shows the columns, each at most COLUMN_CAP_PX wide, every row one line
    window.resizeDocks([pacs.dock], [700], Qt.Orientation.Horizontal)
    qtbot.waitUntil(lambda: not pacs.worklist.compact_rows.compact, timeout=5000)
    _columns(pacs.worklist.rows)
    pacs.show_query()  # the other tab, resized as it is shown
    qtbot.waitUntil(lambda: not panel.compact_rows.compact, timeout=5000)
    _columns(panel.results)


def _columns(tree: QTreeWidget) -> None:
    """A wide list: the header, every column at most COLUMN_CAP_PX wide (the last one stretched), each
    row one line."""
    header = tree.header()
    assert not tree.isHeaderHidden()
    assert all(
        not tree.isColumnHidden(c) and 0 < header.sectionSize(c) <= COLUMN_CAP_PX
        for c in range(header.count() - 1)
    )
    top = tree.topLevelItem(0)
    assert top is not None and 0 < tree.visualItemRect(top).height() < 2 * tree.fontMetrics().height()


def _two_lines(tree: QTreeWidget) -> None:
    """A narrow list: no header, one column as wide as the list, each study row drawn on two lines."""
    assert tree.isHeaderHidden()
    assert [c for c in range(tree.columnCount()) if not tree.isColumnHidden(c)] == [0]
    assert tree.header().sectionSize(0) >= tree.viewport().width() - 2
    top = tree.topLevelItem(0)
    assert top is not None and tree.visualItemRect(top).height() >= 2 * tree.fontMetrics().height()


def _shown(tree: QTreeWidget) -> str:
    """The text drawn for the first row (a line separator between its two lines)."""
    option = QStyleOptionViewItem()
    delegate = tree.itemDelegate()
    assert isinstance(delegate, QStyledItemDelegate)
    delegate.initStyleOption(option, tree.model().index(0, 0))
    return str(option.text)


def test_a_study_without_a_patient_name_and_one_of_one_image_read_right(qtbot: QtBot) -> None:
    panel = QueryPanel()
    qtbot.addWidget(panel)
    panel.resize(260, 600)
    panel.show()
    panel.show_studies([StudyMatch("1.2.3", "", "", "20000101", "", "", "", ("MR",), 1)])
    item = panel.results.topLevelItem(0)
    assert item is not None and item.text(0) == "(no name)"  # a blank row is easy to miss
    assert _shown(panel.results) == "(no name)\u20282000-01-01 · MR · 1 series"
    assert series_label(SeriesMatch("1.2.3", "1.2.3.4", series_number=1, modality="MR", num_instances=1)) == (
        "Se 1 · MR · 1 image"
    )
