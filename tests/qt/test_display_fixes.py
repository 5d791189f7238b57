"""Display defects and gaps of issue 12 on the real window: invalid PixelSpacing, the readout while
scrolling, rotate/flip with their orientation letters, LOSSY, age/sex, local dates, undecodable slices
with their code and in the load report, one UID under two patients, Close study / Clear all, the tag
browser's Value column, projection series as one stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_charset_files
from pydicom.uid import generate_uid
from PySide6.QtCore import QEvent, QLocale, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from tests.factories import make_ct_slice, truncate_file, write_ct_series
from tests.qt.viewer_helpers import make_window, open_and_wait, wheel
from viewer.qt.load_report import TARGET_ROLE
from viewer.qt.main_window import MainWindow
from viewer.qt.overlays import format_date
from viewer.qt.tree_items import children, top_items


def _series(folder: Path, n: int, *, value_step: int = 10, **fields: object) -> list[Path]:
    """``n`` axial slices, slice k filled with HU k * value_step; ``fields`` set on every file."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(n):
        ds = make_ct_slice(
            np.full((32, 32), k * value_step, dtype=np.int16),
            position=(0.0, 0.0, 5.0 * k),
            instance_number=k + 1,
            study_uid=study,
            series_uid=series,
            frame_of_reference_uid=frame,
        )
        for key, value in fields.items():
            setattr(ds, key, value)
        path = folder / f"s{k:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _key(window: MainWindow, key: Qt.Key, mods: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    """Press ``key`` on the image as a user does (the window's action registry runs it)."""
    QTest.keyClick(window.view, key, mods)


def test_zero_pixel_spacing_shows_the_image_in_pixels(qtbot: QtBot, tmp_path: Path) -> None:
    _series(tmp_path / "cr", 1, Modality="CR", PixelSpacing=["0", "0"])
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "cr"])
    view = window.view
    assert 0.5 < view.zoom_factor() < 100  # fitted, not "Zoom 0.00×"
    assert view.image_rect().width() == pytest.approx(32)
    _key(window, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier)  # actual size 1:1
    assert view.zoom_factor() == pytest.approx(1.0, rel=1e-3)
    _key(window, Qt.Key.Key_F)
    assert view.zoom_factor() > 1.0
    assert any(
        "PixelSpacing" in line and "pixels" in line for line in view.overlay.corner_lines("bottom_left")
    )
    assert view.overlay.scale_bar() is None  # no millimetres to show


def test_scale_bar_shows_a_round_length_at_the_view_scale(qtbot: QtBot, tmp_path: Path) -> None:
    from tests.factories import write_ct_series

    write_ct_series(tmp_path / "ct", 3, rows=64, columns=64)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    view = window.view
    col_spacing = window.current_stack().slices[0].pixel_spacing[1]
    for _ in range(2):
        bar = view.overlay.scale_bar()
        assert bar is not None
        mm, px = bar
        assert px == pytest.approx(mm * view.zoom_factor() / col_spacing, rel=1e-3)  # screen px per mm
        assert 30 <= px <= 0.2 * view.overlay.width()
        view.overlay.repaint()
        assert f"{mm} mm" in view.overlay.painted_texts
        view.zoom_by(2.0)  # the bar follows the zoom


def _move_mouse(widget: object, pos: QPointF) -> None:
    ev = QMouseEvent(
        QEvent.Type.MouseMove,
        pos,
        QPointF(widget.mapToGlobal(pos.toPoint())),  # type: ignore[attr-defined]
        Qt.MouseButton.NoButton,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(widget, ev)  # type: ignore[arg-type]


def test_readout_follows_the_wheel_without_mouse_moves(qtbot: QtBot, tmp_path: Path) -> None:
    _series(tmp_path / "ct", 6)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    vp = window.view.graphics.viewport()
    centre = QPointF()

    def readout_at_centre() -> bool:
        # the window may still be laying out (the view re-fits): point at the centre until it reads out
        centre.setX(vp.width() / 2)
        centre.setY(vp.height() / 2)
        _move_mouse(vp, centre)
        return "HU 0" in window.hover_label.text()

    qtbot.waitUntil(readout_at_centre, timeout=3000)
    wheel(vp, -2, pos=centre)  # two slices on: HU 20 under the same cursor
    assert window.current_slice() == 2
    assert "HU 20" in window.hover_label.text()
    _key(window, Qt.Key.Key_End)
    assert "HU 50" in window.hover_label.text()


def test_rotate_and_flip_turn_the_image_and_its_letters(qtbot: QtBot, tmp_path: Path) -> None:
    _series(tmp_path / "ct", 2)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    overlay = window.view.overlay
    assert overlay.orientation() == {"right": "L", "left": "R", "top": "A", "bottom": "P"}
    _key(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)  # 90° clockwise
    assert overlay.orientation() == {"right": "A", "left": "P", "top": "R", "bottom": "L"}
    _key(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert overlay.orientation()["right"] == "L"
    _key(window, Qt.Key.Key_H)
    assert overlay.orientation() == {"right": "R", "left": "L", "top": "A", "bottom": "P"}
    _key(window, Qt.Key.Key_V)
    assert overlay.orientation() == {"right": "R", "left": "L", "top": "P", "bottom": "A"}
    # the pixel under a screen point follows the turn: the image's top-left corner is now bottom-right
    rect = window.view.image_rect()
    corner = window.view.image.mapFromParent(QPointF(rect.right() - 1e-3, rect.bottom() - 1e-3))
    assert (int(corner.x()), int(corner.y())) == (0, 0)
    window.act_rotate_cw.trigger()  # the menu does the same
    assert overlay.orientation()["top"] == "L"
    _key(window, Qt.Key.Key_R)  # reset undoes the turn
    assert overlay.orientation()["right"] == "L"


def test_lossy_marker_age_and_sex(qtbot: QtBot, tmp_path: Path) -> None:
    _series(
        tmp_path / "ct",
        2,
        LossyImageCompression="01",
        LossyImageCompressionRatio="338",
        PatientAge="045Y",
        PatientSex="F",
    )
    _series(tmp_path / "plain", 2, PatientAge="", PatientBirthDate="19800615")
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    overlay = window.view.overlay
    assert "LOSSY 338:1" in overlay.corner_lines("top_right")
    assert "45 y  F" in overlay.corner_lines("top_left")
    window.act_privacy.setChecked(True)
    window._set_privacy(True)
    assert "45 y  F" not in overlay.corner_lines("top_left")
    window._set_privacy(False)
    open_and_wait(qtbot, window, [tmp_path / "plain"])
    window.show_stack(window.browser.stack_uids()[-1])
    assert not any("LOSSY" in line for line in overlay.corner_lines("top_right"))
    assert "45 y  O" in overlay.corner_lines("top_left")  # 1980-06-15 to the study date 2026-01-01


@pytest.fixture
def german() -> Iterator[None]:
    saved = QLocale()
    QLocale.setDefault(QLocale(QLocale.Language.German, QLocale.Country.Germany))
    yield
    QLocale.setDefault(saved)


def test_dates_in_the_users_locale(german: None) -> None:
    expected = QLocale().toString(
        QLocale().toDate("29.10.1996", "dd.MM.yyyy"), QLocale.FormatType.ShortFormat
    )
    assert format_date("19961029") == expected == "29.10.96"
    assert format_date("1996.10.29") == expected
    assert format_date("unknown") == "unknown"


def test_an_undecodable_slice_says_its_code_and_joins_the_load_report(qtbot: QtBot, tmp_path: Path) -> None:
    paths = _series(tmp_path / "ct", 5)
    truncate_file(paths[3], 600)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    window.set_slice(3)
    hint = window.view.overlay._hint
    assert hint.startswith("Slice 4 cannot be shown: E-TRUNC-PIXEL (truncated pixel data)")
    sections = window.report_panel.sections()
    (row,) = sections["Slices that cannot be shown"]
    assert row.code == "E-TRUNC-PIXEL" and "slice 4" in row.what and row.index == 3
    window.set_slice(0)
    (item,) = (
        c
        for top in top_items(window.report_panel.tree)
        for c in children(top)
        if c.text(1) == "E-TRUNC-PIXEL"
    )
    assert item.data(0, TARGET_ROLE) == (window.current_stack().uid, 3)  # type: ignore[union-attr]
    window.report_panel.tree.itemDoubleClicked.emit(item, 0)
    assert window.current_slice() == 3


def test_load_report_names_patient_and_series_and_elides_paths_in_the_middle(
    qtbot: QtBot, tmp_path: Path
) -> None:
    paths = write_ct_series(tmp_path / "ct", 6, positions=[0, 5, 10, 15, 25, 30])  # a gap: a warning
    assert paths
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    rows = window.report_panel.sections()["Stacks"]
    assert rows and all(r.what.startswith("CANARY PATIENT · Head 5mm") for r in rows)
    assert all("(no description)" not in r.what for r in rows)
    window._set_privacy(True)
    rows = window.report_panel.sections()["Stacks"]
    assert all(r.what.startswith("Patient 1 · Head 5mm") and "CANARY" not in r.what for r in rows)
    assert window.report_panel.tree.textElideMode() == Qt.TextElideMode.ElideMiddle
    window.show_stack(rows[0].stack_uid or "")
    window._set_privacy(False)


def test_one_series_uid_under_two_patients_in_two_loads_opens_both(qtbot: QtBot, tmp_path: Path) -> None:
    series, study = generate_uid(), generate_uid()
    write_ct_series(tmp_path / "a", 3, series_uid=series, study_uid=study, patient_id="A", patient_name="A^A")
    write_ct_series(tmp_path / "b", 4, series_uid=series, study_uid=study, patient_id="B", patient_name="B^B")
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "a"])
    open_and_wait(qtbot, window, [tmp_path / "b"])
    uids = window.browser.stack_uids()
    assert len(uids) == 2 and len(set(uids)) == 2
    sizes = []
    for uid in uids:
        window.show_stack(uid)
        sizes.append(len(window.current_stack()))  # type: ignore[arg-type]
    assert sorted(sizes) == [3, 4]
    open_and_wait(qtbot, window, [tmp_path / "a"])  # the same folder again: nothing new
    assert len(window.browser.stack_uids()) == 2


def test_close_study_and_clear_all(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "a", 3, patient_id="A", patient_name="A^A")
    write_ct_series(tmp_path / "b", 4, patient_id="B", patient_name="B^B")
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "a"])
    open_and_wait(qtbot, window, [tmp_path / "b"])
    window.show_stack(window.browser.stack_uids()[1])
    closed: list[list[str]] = []
    window.stacks_closed.connect(closed.append)
    window.act_close_study.trigger()
    assert len(closed) == 1 and len(window.browser.stack_uids()) == 1
    assert len(window.current_stack()) == 3  # type: ignore[arg-type]
    assert window.browser.topLevelItemCount() == 1
    window.act_clear_all.trigger()
    assert window.current_stack() is None and window.browser.stack_uids() == []
    assert window.browser.topLevelItemCount() == 0
    assert window.view.overlay._hint  # the empty view's hint is back
    open_and_wait(qtbot, window, [tmp_path / "a"])  # and it can be opened again
    assert len(window.current_stack()) == 3  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [(1920, 1080), (1366, 768)])
def test_tag_browser_value_column_is_visible_at_the_dock_width(
    qtbot: QtBot, tmp_path: Path, size: tuple[int, int]
) -> None:
    _series(tmp_path / "ct", 2)
    window = make_window(qtbot, size)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    window.tag_dock.show()
    window.tag_dock.raise_()
    qtbot.waitUntil(lambda: window.tag_browser.tree.topLevelItemCount() > 0, timeout=5000)
    QApplication.processEvents()
    tree = window.tag_browser.tree
    header = tree.header()
    visible = tree.viewport().width() - header.sectionViewportPosition(3)
    assert visible >= 120, (size, visible)
    assert header.sectionSize(3) >= 120


def test_rotating_mip_is_one_stack_with_letters_per_view(qtbot: QtBot, tmp_path: Path) -> None:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    folder = tmp_path / "mip"
    folder.mkdir()
    for k in range(7):
        angle = np.pi * k / 7
        ds = make_ct_slice(
            np.zeros((16, 16), dtype=np.int16),
            position=(0.0, 0.0, 0.0),
            orientation=(float(np.cos(angle)), float(np.sin(angle)), 0.0, 0.0, 0.0, -1.0),
            instance_number=k + 1,
            study_uid=study,
            series_uid=series,
            frame_of_reference_uid=frame,
            image_type=("DERIVED", "SECONDARY", "MIP"),
        )
        ds.save_as(folder / f"v{k}.dcm", enforce_file_format=True)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [folder])
    assert len(window.browser.stack_uids()) == 1 and len(window.current_stack()) == 7  # type: ignore[arg-type]
    assert window.view.overlay.orientation()["right"] == "L"
    window.set_slice(5)  # 129°: the row points mostly back, then to the patient's right
    assert window.view.overlay.orientation()["right"] == "PR"


def test_names_in_iso_2022_in_browser_and_overlay(qtbot: QtBot, tmp_path: Path) -> None:
    src = Path(get_charset_files("chrH31.dcm")[0])
    expected = str(pydicom.dcmread(src).PatientName).replace("^", " ")
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [src])
    assert expected in window.view.overlay.corner_lines("top_left")
    assert top_items(window.browser)[0].text(0).startswith(expected)


def test_load_report_numbers_patients_as_the_browser_does_in_privacy_mode(
    qtbot: QtBot, tmp_path: Path
) -> None:
    write_ct_series(tmp_path / "a", 3, patient_id="A", patient_name="A^A")
    write_ct_series(tmp_path / "b", 4, positions=[0, 5, 15, 20], patient_id="B", patient_name="B^B")  # a gap
    window = make_window(qtbot)
    window._set_privacy(True)
    open_and_wait(qtbot, window, [tmp_path / "a"])
    open_and_wait(qtbot, window, [tmp_path / "b"])
    rows = window.report_panel.sections()["Stacks"]
    assert rows and all(r.what.startswith("Patient 2 · ") for r in rows)
    assert top_items(window.browser)[1].text(0) == "Patient 2"
    window._set_privacy(False)
