"""Issue 12 defects of the viewer's interaction: resume offer, newly opened study, export folder,
decode progress."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QImage
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QTabBar
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.core.review import ReviewStore
from viewer.qt.settings import Settings


def _front_tab(window: QMainWindow, dock: QDockWidget) -> str:
    """The title of the tab in front in the tab bar that holds ``dock``."""
    for bar in window.findChildren(QTabBar):
        titles = [bar.tabText(i) for i in range(bar.count())]
        if dock.windowTitle() in titles:
            return bar.tabText(bar.currentIndex())
    return dock.windowTitle()  # not tabified: on its own


def test_the_resume_offer_is_visible_on_start(qtbot: QtBot) -> None:
    """It was offered in the worklist dock while the AI findings tab was in front (the app raises it)."""
    session = ReviewStore.shared().create_session("Night batch")
    session.close()
    window = make_window(qtbot)
    rc, ai = window.review_controller, window.ai_controller
    assert rc is not None and ai is not None
    ai.dock.raise_()  # as on a real display, where the app's raise_() before show() takes effect
    qtbot.waitUntil(lambda: _front_tab(window, ai.dock) == "AI findings", timeout=2000)
    assert rc.offer_resume()
    assert "Night batch" in rc.banner.label.text()
    assert _front_tab(window, rc.worklist_dock) == "Worklist" and rc.banner.isVisible()
    window.close()


def test_a_newly_opened_study_is_shown_and_selected(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "a", 4, seed=1)
    write_ct_series(tmp_path / "b", 6, seed=2)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "a"])
    first = window.current_stack()
    assert first is not None
    open_and_wait(qtbot, window, [tmp_path / "b"])
    shown = window.current_stack()
    assert shown is not None and shown.uid != first.uid and len(shown) == 6
    selected = window.browser.selectedItems()
    assert selected and selected[0] is window.browser.item_for(shown.uid)
    window.close()


def test_export_starts_outside_the_study_folder_and_remembers_only_when_allowed(
    qtbot: QtBot, tmp_path: Path
) -> None:
    study = tmp_path / "study"
    write_ct_series(study, 3)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [study])
    assert study not in window.export_dir().parents and window.export_dir() != study
    out = tmp_path / "exports"
    out.mkdir()
    window.export_view(out / "view.png")
    assert window.export_dir() == out  # this run remembers it ...
    window.close()
    assert Settings().export_folder == ""  # ... but it is not written down (remembering is off)
    again = make_window(qtbot)
    again.act_remember_recent.trigger()  # allowed: kept between runs
    open_and_wait(qtbot, again, [study])
    again.export_view(out / "view2.png")
    again.close()
    assert Settings().export_folder == str(out)


def test_decode_progress_finishes_without_scrolling(qtbot: QtBot, tmp_path: Path) -> None:
    """A stack longer than one prefetch's reach: the progress bar counted the whole stack, stopped at
    the prefetch's reach and waited for a scroll (issue 12: "2 / 3 slices" for 30 s)."""
    from viewer.core.dicom.volume import PREFETCH_MAX_SLICES

    write_ct_series(tmp_path / "long", PREFETCH_MAX_SLICES + 8, rows=16, columns=16)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "long"])
    qtbot.waitUntil(lambda: window.decoded_count() >= PREFETCH_MAX_SLICES, timeout=30_000)
    qtbot.waitUntil(lambda: not window.is_decoding(), timeout=30_000)  # it used to wait for a scroll
    assert not window.progress.isVisible()
    assert window.current_slice() == 0  # nobody scrolled
    window.close()


def test_research_use_is_said_once_and_no_empty_timeline_under_non_ct(qtbot: QtBot, tmp_path: Path) -> None:
    """Issue 12: "Research use only" 3-4 times on screen; an empty 190 px AI strip under an MR."""
    from pydicom.data import get_testdata_file

    write_ct_series(tmp_path / "ct", 3)
    window = make_window(qtbot)
    ai = window.ai_controller
    assert ai is not None
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    notices = [w for w in window.findChildren(QLabel)
               if w.isVisible() and "research use only" in w.text().lower()]
    assert notices == [ai.status.research_use]
    assert "research use only" not in " ".join(window.view.overlay.extra_html().values()).lower()
    assert ai.timeline.isVisible()
    open_and_wait(qtbot, window, [get_testdata_file("MR_small.dcm")])
    assert window.current_stack() is not None and window.current_stack().modality == "MR"
    assert not ai.timeline.isVisible()
    window.close()


def _max_contrast(img: QImage, xs: range, ys: range) -> int:
    """Largest grey-level difference between any pixel of the region and its top-left corner."""
    base = img.pixelColor(xs[0], ys[0]).lightness()
    return max(abs(img.pixelColor(x, y).lightness() - base) for x in xs for y in ys)


def test_unticked_menu_toggles_and_check_boxes_draw_a_box(qtbot: QtBot) -> None:
    """The dark style sheet left unticked menu toggles without an indicator and drew the "Study done"
    box in nearly the background colour."""
    window = make_window(qtbot)
    rc = window.review_controller
    assert rc is not None
    box = rc.panel.done
    box.setChecked(False)
    box.setEnabled(True)  # as with a study under review
    rc.review_dock.raise_()
    qtbot.waitUntil(box.isVisible, timeout=2000)
    img = box.grab().toImage()
    assert _max_contrast(img, range(0, 18), range(img.height())) > 60
    menu = window.menu("View")
    toggle = window.report_dock.toggleViewAction()
    assert toggle.isCheckable() and not toggle.isChecked()
    menu.adjustSize()
    shot = menu.grab().toImage()
    y = menu.actionGeometry(toggle).center().y()
    assert _max_contrast(shot, range(2, 26), range(y - 7, y + 8)) > 60
    window.close()


def test_summary_dialog_is_a_table(qtbot: QtBot) -> None:
    window = make_window(qtbot)
    rc = window.review_controller
    assert rc is not None and rc.new_session("Summary") is not None
    dialog = rc._summary_dialog()
    assert dialog is not None
    qtbot.addWidget(dialog)
    header = [dialog.table.horizontalHeaderItem(c).text() for c in range(dialog.table.columnCount())]
    assert header[:3] == ["Class", "Sensitivity", "Specificity"]
    assert [row[0] for row in dialog.rows()][:2] == ["any", "epidural"]
    window.close()
