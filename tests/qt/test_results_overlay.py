"""Others' results in the viewer: a highdicom SEG and TID 1500 SR (and a GSPS) next to a factory series
are drawn on their slices (pixel-registered under zoom, pan, rotation and flips), listed in the Results
dock (a double-click shows the slice) and marked on the slider; what references no loaded image or is
malformed is listed, not dropped, and never stops the load."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from PySide6.QtCore import QPointF
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import (
    OVERLAY_TURNS,
    make_window,
    open_and_wait,
    overlay_offset,
    screen_color,
    turn_view,
)
from tests.result_objects import blob_masks, source_datasets, write_gsps, write_measurement_sr, write_seg
from viewer.qt.main_window import MainWindow
from viewer.qt.results import ResultsController
from viewer.qt.results.panel import STATUS_ROLE

N, SIZE = 6, 64
SEG_SLICES = (2, 3)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("foreign")
    paths = write_ct_series(root / "ct", N, rows=SIZE, columns=SIZE, shuffle=False)
    sources = source_datasets(paths)
    write_seg(sources, root / "results", blob_masks(N, SIZE, SIZE, SEG_SLICES))
    write_measurement_sr(sources, root / "results", 2)
    write_gsps(sources, root / "results", 4)
    return root


def _controller(window: MainWindow) -> ResultsController:
    controller = window.results_controller
    assert isinstance(controller, ResultsController)
    return controller


def _open(qtbot: QtBot, window: MainWindow, paths: list[Path]) -> ResultsController:
    open_and_wait(qtbot, window, paths)
    controller = _controller(window)
    assert controller.wait(60_000)
    return controller


def test_seg_overlay_registered_under_zoom_rotation_and_flip(qtbot: QtBot, study: Path) -> None:
    window = make_window(qtbot)
    controller = _open(qtbot, window, [study])
    view = window.view
    view.set_index(2)
    overlay = controller.overlay(view)
    assert overlay.is_shown()
    # the mask's block: rows 20-25, columns 30-37 (segment 1, red); pixel (22, 33) lies inside
    row, col = 22, 33
    controller.set_opacity(1.0)
    for turn in OVERLAY_TURNS:
        turn_view(window, turn)
        qtbot.wait(20)
        # the overlay pixel of image pixel (row, col) maps to the same scene point as the image pixel
        assert overlay_offset(window, overlay.item, row, col) < 1e-6
        on_image = view.image.mapToScene(QPointF(col + 0.5, row + 0.5))
        colour = screen_color(window, on_image)
        assert colour.red() > 200 and colour.green() < 60 and colour.blue() < 60, (turn, colour.name())
        # and a pixel outside every mask keeps the image's grey
        outside = screen_color(window, view.image.mapToScene(QPointF(5.5, 50.5)))
        assert abs(outside.red() - outside.green()) < 5, (turn, outside.name())
    # segment 2 (blue) only on slice 2; slice 0 has no overlay at all
    blue = screen_color(window, view.image.mapToScene(QPointF(11.5, 41.5)))
    assert blue.blue() > 200 and blue.red() < 60
    view.set_index(0)
    assert not overlay.is_shown()
    view.set_index(3)
    assert overlay.is_shown()


def test_toggle_key_opacity_and_segment_hiding(qtbot: QtBot, study: Path) -> None:
    window = make_window(qtbot)
    controller = _open(qtbot, window, [study])
    view = window.view
    view.set_index(2)
    overlay = controller.overlay(view)
    assert window.actions_registry.key_owner("O") == "results_overlay"
    assert any("Results: show/hide" in b[2] for b in window.bindings())  # listed in F1
    window.actions_registry.action("results_overlay").trigger()
    assert not overlay.is_shown() and not controller.graphics(view)
    window.actions_registry.action("results_overlay").trigger()
    assert overlay.is_shown()
    controller.set_opacity(0.5)
    window.actions_registry.action("results_opacity").trigger()
    assert overlay.item.opacity() == pytest.approx(0.75)
    assert controller.panel.opacity.value() == 75
    red = view.image.mapToScene(QPointF(33.5, 22.5))
    controller.set_opacity(1.0)
    assert screen_color(window, red).red() > 200
    seg_uid = next(p.obj.sop_instance_uid for p in controller.placed if hasattr(p, "layers"))
    controller.set_segment_visible(seg_uid, 1, False)
    hidden = screen_color(window, red)
    assert abs(hidden.red() - hidden.green()) < 5  # grey again: segment 1 hidden, segment 2 still shown
    assert overlay.is_shown()


def test_results_list_jumps_to_the_referenced_slice(qtbot: QtBot, study: Path) -> None:
    window = make_window(qtbot)
    controller = _open(qtbot, window, [study])
    texts = dict(controller.panel.texts())
    seg_title = next(t for t in texts if t.startswith("SEG · Other vendor segmentation"))
    assert "Head 5mm" in seg_title
    assert ("Haemorrhage", "Hemorrhage", "slices 3–4") in texts[seg_title]
    sr_title = next(t for t in texts if t.startswith("SR · Imaging Measurement Report"))
    rows = texts[sr_title]
    assert ("Lesion 1: Area", "42 mm2", "slice 3") in rows
    assert ("AI slices: Hemorrhage", "Present", "slices 3–4") in rows
    assert ("Lesion 1: Image Region", "polygon", "slice 3") in rows
    window.view.set_index(0)
    item = controller.panel.item_for("Lesion 1: Area")
    assert item is not None
    controller.panel.tree.itemDoubleClicked.emit(item, 0)
    assert window.view.index == 2
    # the SR's region is drawn on that slice with its group's measurement as the label
    labels = [g.items[-1].toPlainText() for g in controller.graphics(window.view)]
    assert "Lesion 1 · Area 42 mm2" in labels
    # per-image findings and regions are marked on the slider
    assert window.slider.marks()["results"] == [2, 3, 4]
    # the presentation state's polyline and text on slice 5
    window.view.set_index(4)
    graphics = controller.graphics(window.view)
    assert len(graphics) == 2 and len(graphics[0].items) == 1  # the polyline, unlabelled
    assert graphics[1].items[-1].toPlainText() == "see here"


def test_unreferenced_and_malformed_objects_are_listed_and_the_series_loads(
    qtbot: QtBot, study: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(study / "ct", folder / "ct")
    shutil.copy(str(get_testdata_file("liver.dcm")), folder / "liver_seg.dcm")  # a real SEG, other images
    shutil.copy(str(get_testdata_file("test-SR.dcm")), folder / "other_sr.dcm")  # a real SR, other images
    bad = folder / "broken_seg.dcm"
    shutil.copy(next((study / "results").glob("seg.dcm")), bad)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) - 200])  # pixel data cut short
    window = make_window(qtbot)
    controller = _open(qtbot, window, [folder])
    assert len(window.loaded_stacks()) == 1 and len(window.loaded_stacks()[0]) == N
    texts = dict(controller.panel.texts())
    assert any(
        t.startswith("SEG · Liver Segmentation") and t.endswith("references no loaded image") for t in texts
    )
    liver = next(rows for t, rows in texts.items() if t.startswith("SEG · Liver"))
    assert liver[0][:2] == ("Liver", "Tissue")  # its type is its label: the category is shown
    assert any(t.startswith("SR · ") and t.endswith("references no loaded image") for t in texts)
    broken = next(t for t in texts if "broken_seg.dcm" in t)
    assert broken.endswith("not shown: unreadable result object")
    report = window.report_panel.sections()["Result objects not shown"]
    codes = sorted(r.code for r in report)
    assert codes == ["E-NO-LOADED-IMAGE", "E-NO-LOADED-IMAGE", "E-RESULT-MALFORMED"]
    assert window.report_dock.isVisibleTo(window)
    window.view.set_index(2)
    assert not controller.overlay(window.view).is_shown()
    np.testing.assert_array_equal(window.view.current_data()[0, 0], 2)  # the series itself is intact


def test_each_listed_object_says_its_series_on_a_line_of_its_own(qtbot: QtBot, study: Path) -> None:
    """In the narrow right dock (264 px at 1366×768) one line per object, "SEG · <description> — <series>",
    was cut before the series: every AI SEG read "SEG · Slicewise AI segmentation (…". The series (or why
    the object is not shown) is now the object row's second line, and fits the dock."""
    window = make_window(qtbot, (1366, 768))
    controller = _open(qtbot, window, [study])
    panel = controller.panel
    controller.dock.show()
    controller.dock.raise_()
    qtbot.waitUntil(lambda: panel.tree.topLevelItemCount() >= 3, timeout=10_000)
    metrics = panel.tree.fontMetrics()
    room = panel.tree.viewport().width()
    assert room < 400  # the narrow dock
    for k in range(panel.tree.topLevelItemCount()):
        item = panel.tree.topLevelItem(k)
        title, status = item.text(0).split("\n")
        assert status == item.data(0, STATUS_ROLE) and " · " in title
        assert metrics.horizontalAdvance(status) + 2 * panel.tree.indentation() < room, status
