"""The public MainWindow API other modules attach through (notes/MAINWINDOW_API.md)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QDockWidget, QLabel
from pytestqt.qtbot import QtBot

from tests.factories import CANARY_ID, write_ct_series
from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.qt.main_window import MainWindow
from viewer.qt.settings import Settings


@pytest.fixture
def loaded(qtbot: QtBot, tmp_path: Path) -> MainWindow:
    write_ct_series(tmp_path / "ct", 10)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    return window


def test_menus_are_created_on_demand_in_order(qtbot: QtBot) -> None:
    window = MainWindow()  # bare: no AI or review extension attached
    qtbot.addWidget(window)
    assert window.menu_names() == ["File", "Edit", "View", "Layout", "Tools", "Help"]
    session = window.menu("Session")
    ai = window.menu("AI")
    assert window.menu("AI") is ai and session is not ai
    assert window.menu_names() == ["File", "Edit", "View", "Layout", "Tools", "AI", "Session", "Help"]


def test_set_slice_clamps_and_emits(qtbot: QtBot, loaded: MainWindow) -> None:
    with qtbot.waitSignal(loaded.slice_changed) as sig:
        loaded.set_slice(99)
    assert sig.args == [9] and loaded.current_slice() == 9
    loaded.set_slice(-5)
    assert loaded.current_slice() == 0


def test_extension_points(qtbot: QtBot, loaded: MainWindow) -> None:
    panel = QLabel("timeline")
    loaded.add_panel_below_image(panel)
    assert panel.parent() is loaded.centralWidget()
    dock = loaded.add_dock(QLabel("findings"), "Findings")
    assert (
        isinstance(dock, QDockWidget) and loaded.dockWidgetArea(dock) == Qt.DockWidgetArea.RightDockWidgetArea
    )
    status = QLabel("AI ready")
    loaded.add_status_widget(status)
    assert status.parent() is not None
    loaded.set_slice_marks("ai", [2, 5], "#ff0000")
    assert loaded.slider.marks() == {"ai": [2, 5]}
    loaded.set_slice_marks("ai", [], "#ff0000")
    assert loaded.slider.marks() == {}
    loaded.set_image_corner_text("ai", "<b>ICH 0.93</b>")
    assert loaded.view.overlay.extra_html() == {"ai": "<b>ICH 0.93</b>"}
    loaded.set_image_corner_text("ai", "")
    assert loaded.view.overlay.extra_html() == {}
    loaded.set_title_badge("ICH suspected: subdural 0.93")
    assert loaded.windowTitle().endswith("ICH suspected: subdural 0.93")
    assert CANARY_ID not in loaded.windowTitle()
    uid = loaded.current_stack().uid
    before = loaded.browser.item_for(uid).text(0)
    loaded.set_stack_badge(uid, "ICH 0.93")
    assert loaded.browser.item_for(uid).text(0) == f"{before}\nICH 0.93"
    loaded.set_stack_badge(uid, "")
    assert loaded.browser.item_for(uid).text(0) == before
    loaded.show_status("hello", 1000)
    assert loaded.statusBar().currentMessage() == "hello"
    assert loaded.toolbar.actions()


def test_register_shortcut_fires_and_is_listed_in_help(qtbot: QtBot, loaded: MainWindow) -> None:
    hits: list[int] = []
    loaded.register_shortcut("Ctrl+Shift+J", lambda: hits.append(1), "Jump to the next flagged slice")
    help_dialog = loaded.show_help()
    qtbot.addWidget(help_dialog)
    texts = help_dialog.texts()
    assert ("Ctrl+Shift+J", "Jump to the next flagged slice") in texts
    for keys in (
        "Mouse wheel",
        "PgDown",
        "Home",
        "End",
        "C",
        "Space",
        "+ or = (also Ctrl +)",
        "Left-drag",
        "0",
        "I",
        "R",
    ):
        assert any(k == keys for k, _ in texts), keys
    loaded.activateWindow()
    loaded.view.setFocus()
    qtbot.waitUntil(lambda: loaded.isActiveWindow(), timeout=2000)
    qtbot.keyClick(
        loaded.view, Qt.Key.Key_J, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    )
    assert hits == [1]


def test_privacy_hides_identifiers_and_export_is_deidentified(
    qtbot: QtBot, loaded: MainWindow, tmp_path: Path
) -> None:
    assert not loaded.privacy_mode()
    assert CANARY_ID in loaded.view.overlay.corner_text("top_left")
    out = loaded.export_view(tmp_path / "view.png")
    img = QImage(str(out))
    assert not img.isNull() and img.width() > 100
    # the export never contained the demographic block: compare with a PHI-including render
    from viewer.qt.export import render_view

    with_phi = render_view(loaded.view, include_demographics=True)
    assert _as_array(with_phi).shape == _as_array(img).shape
    assert not np.array_equal(_as_array(with_phi), _as_array(img))
    assert CANARY_ID in loaded.view.overlay.corner_text("top_left")  # the screen is unchanged
    loaded.act_privacy.trigger()
    assert loaded.privacy_mode()
    assert CANARY_ID not in loaded.view.overlay.corner_text("top_left")


def _as_array(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_RGB32)
    ptr = img.constBits()
    return np.frombuffer(ptr, dtype=np.uint8).reshape(img.height(), img.bytesPerLine()).copy()


def test_settings_persist_between_windows(qtbot: QtBot, tmp_path: Path) -> None:
    window = make_window(qtbot)
    window.fps_spin.setValue(24)
    window.act_privacy.trigger()
    assert not window.act_remember_recent.isChecked()  # folder names may name patients: opt-in
    window.act_remember_recent.trigger()
    window.open_paths([tmp_path])  # an empty folder: still becomes a recent entry
    qtbot.waitUntil(lambda: not window.is_loading(), timeout=10_000)
    window.close()
    settings = Settings()
    assert settings.cine_fps == 24 and settings.privacy
    assert settings.recent()[0] == [str(tmp_path)]
    assert settings.last_folder == str(tmp_path)
    again = make_window(qtbot)
    assert again.fps_spin.value() == 24 and again.privacy_mode()
    assert again.act_remember_recent.isChecked()
    again.act_remember_recent.trigger()  # withdrawn: the stored folders go at once
    assert Settings().recent() == [] and str(tmp_path) not in Settings().path.read_text()


def test_tag_browser_searches_the_current_slice(qtbot: QtBot, loaded: MainWindow) -> None:
    loaded.act_tags.trigger()
    assert loaded.tag_dock.isVisible()
    tags = loaded.tag_browser
    tags.search.setText("ImagePositionPatient")  # keyword search
    rows = tags.visible_rows()
    assert any(name == "Image Position (Patient)" for _, name, _ in rows)
    tags.search.setText("0020,0032")
    assert any(tag == "(0020,0032)" for tag, _, _ in tags.visible_rows())
    tags.search.setText("")
    loaded.act_privacy.trigger()
    values = [v for _, name, v in tags.visible_rows() if name == "Patient ID"]
    assert values == ["•••"]


def test_tag_browser_follows_scrolling_once_it_pauses(qtbot: QtBot, loaded: MainWindow) -> None:
    loaded.act_tags.trigger()
    tags = loaded.tag_browser
    qtbot.waitUntil(lambda: tags.info.text().startswith("Slice 1 / 10"))
    for i in (3, 5, 7):
        loaded.view.set_index(i)
    assert tags.info.text().startswith("Slice 1 / 10")  # not re-read on every step while scrolling
    qtbot.waitUntil(lambda: tags.info.text().startswith("Slice 8 / 10"), timeout=2000)
    assert any(name == "Instance Number" for _, name, _ in tags.visible_rows())


def test_tag_browser_reads_a_zip_member_header(tmp_path: Path) -> None:
    from viewer.core.dicom.model import SliceSource
    from viewer.qt.tag_browser import read_header

    (path,) = write_ct_series(tmp_path / "ct", 1)
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(path, "study/slice.dcm")
    ds = read_header(SliceSource(archive, member="study/slice.dcm"))
    assert ds.Modality == "CT" and "PixelData" not in ds


def test_app_window_has_ai_and_session_menus(qtbot: QtBot) -> None:
    window = make_window(qtbot)
    assert window.menu_names() == ["File", "Edit", "View", "Layout", "Tools", "AI", "Session", "Help"]
    assert window.ai_controller is not None and window.review_controller is not None


def test_tag_browser_reads_a_gzip_file_header(tmp_path: Path) -> None:
    import gzip

    from viewer.core.dicom.loader import load_paths
    from viewer.qt.tag_browser import read_header

    (path,) = write_ct_series(tmp_path / "ct", 1)
    packed = tmp_path / "slice.dcm.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    (stack,) = load_paths([packed]).all_stacks()
    ds = read_header(stack.slices[0].source)
    assert ds.Modality == "CT" and "PixelData" not in ds


def test_image_only_hides_the_side_panels_and_brings_them_back(qtbot) -> None:
    """View › Image only: every docked panel hidden, the image area grows; unchecked, the same panels
    come back."""
    from PySide6.QtWidgets import QDockWidget

    from tests.qt.viewer_helpers import make_window

    window = make_window(qtbot)
    qtbot.waitUntil(lambda: window.grid.width() > 0, timeout=5000)
    shown = {d.objectName() for d in window.findChildren(QDockWidget) if d.isVisible()}
    assert shown  # the studies browser at least
    width = window.grid.width()
    window.act_image_only.trigger()
    qtbot.waitUntil(lambda: window.grid.width() > width, timeout=5000)
    assert not [d for d in window.findChildren(QDockWidget) if d.isVisible()]
    window.act_image_only.trigger()
    qtbot.waitUntil(lambda: window.grid.width() == width, timeout=5000)
    assert {d.objectName() for d in window.findChildren(QDockWidget) if d.isVisible()} == shown


def test_closing_in_image_only_keeps_the_panels_for_the_next_start(qtbot) -> None:
    from PySide6.QtWidgets import QDockWidget

    from tests.qt.viewer_helpers import make_window

    first = make_window(qtbot)
    shown = {d.objectName() for d in first.findChildren(QDockWidget) if d.isVisible()}
    first.act_image_only.trigger()
    first.close()  # the reader quits with the panels hidden
    second = make_window(qtbot)
    qtbot.waitUntil(lambda: bool(second.findChildren(QDockWidget)), timeout=5000)
    assert {d.objectName() for d in second.findChildren(QDockWidget) if d.isVisible()} == shown


def test_the_window_starts_no_bigger_than_the_screen(qtbot) -> None:
    from PySide6.QtGui import QGuiApplication

    from viewer.qt.app import build_main_window

    window = build_main_window()  # its own start size (make_window resizes)
    qtbot.addWidget(window)
    avail = QGuiApplication.primaryScreen().availableGeometry()
    assert avail.width() < 1440  # the offscreen screen is 800 x 600: smaller than the default size
    assert window.width() <= avail.width() and window.height() <= avail.height()
