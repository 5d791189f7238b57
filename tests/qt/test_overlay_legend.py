"""The results overlay's legend / colour bar in the viewport: drawn while the overlay is shown (O), with each
shown segment's colour and label and, for fractional SEGs and Parametric Maps, a colour bar with its
scale; never over the corner texts, letters or scale bar (1920x1080 and 1366x768, one and four
viewports). Set SLICEWISE_SHOTS=DIR to keep the screenshots for a look."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pydicom.sr.coding import Code
from PySide6.QtCore import QRectF
from PySide6.QtGui import QImage
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window, open_and_wait
from tests.result_objects import blob_masks, source_datasets, write_parametric_map, write_seg
from viewer.core.foreign.legend import LegendGroup, LegendRow, scale_of
from viewer.core.state.layout import Layout
from viewer.qt.main_window import MainWindow
from viewer.qt.results import ResultsController
from viewer.qt.results.legend import OverlayLegend
from viewer.qt.slice_view import SliceView

N, SIZE = 6, 64


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("legend_binary")
    paths = write_ct_series(root / "ct", N, rows=SIZE, columns=SIZE, shuffle=False)
    write_seg(source_datasets(paths), root / "results", blob_masks(N, SIZE, SIZE, (2, 3)))
    return root


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fractional SEG (two segments) and a Parametric Map in mL/min over 0-250 of one series."""
    root = tmp_path_factory.mktemp("legend_maps")
    paths = write_ct_series(root / "ct", N, rows=SIZE, columns=SIZE, shuffle=False)
    sources = source_datasets(paths)
    fractions = np.zeros((N, SIZE, SIZE, 2), dtype=np.float32)
    fractions[2, 10:20, 10:20, 0] = 0.8
    fractions[2, 40:50, 40:50, 1] = 0.4
    write_seg(sources, root / "seg", fractions, fractional=True)
    values = np.zeros((N, SIZE, SIZE), dtype=np.float32)
    values[3, 20:30, 20:30] = 100.0
    values[3, 25, 25] = 250.0
    write_parametric_map(sources, root / "pm", values, unit=Code("mL/min", "UCUM", "mL/min"),
                         value_range=(0.0, 250.0))
    return root


def _open(qtbot: QtBot, window: MainWindow, root: Path) -> ResultsController:
    open_and_wait(qtbot, window, [root])
    controller = window.results_controller
    assert isinstance(controller, ResultsController)
    assert controller.wait(60_000)
    return controller


def _painted(view: SliceView) -> list[str]:
    view.overlay.grab()  # paints the overlay now (offscreen windows paint lazily)
    return list(view.overlay.painted_texts)


def _legend_image(view: SliceView) -> QImage:
    assert view.overlay.legend_rect is not None
    image = view.grab().toImage()
    r = view.overlay.legend_rect
    ratio = image.devicePixelRatio()
    return image.copy(int(r.left() * ratio), int(r.top() * ratio), int(r.width() * ratio),
                      int(r.height() * ratio))


def _has_colour(image: QImage, test: object) -> bool:
    for y in range(image.height()):
        for x in range(image.width()):
            c = image.pixelColor(x, y)
            if test(c.red(), c.green(), c.blue()):  # type: ignore[operator]
                return True
    return False


def _assert_clear(view: SliceView) -> None:
    """The legend lies inside the view and covers no corner text, letter or the scale bar."""
    legend = view.overlay.legend_rect
    assert legend is not None
    assert QRectF(view.overlay.rect()).contains(legend), (legend, view.overlay.rect())
    for r in view.overlay.text_rects():
        assert not r.intersects(legend), (r, legend)


def test_legend_shows_segments_follows_the_toggle_and_unticked_segments(qtbot: QtBot, binary: Path) -> None:
    window = make_window(qtbot)
    controller = _open(qtbot, window, binary)
    view = window.view
    view.set_index(2)
    texts = _painted(view)
    assert "Haemorrhage" in texts and "Oedema" in texts
    _assert_clear(view)
    legend = _legend_image(view)
    assert _has_colour(legend, lambda r, g, b: r > 200 and g < 60 and b < 60)  # the red swatch
    assert _has_colour(legend, lambda r, g, b: b > 200 and r < 60 and g < 60)  # the blue one
    # per stack: it stays put while scrolling, also over a slice without masks
    view.set_index(0)
    assert "Haemorrhage" in _painted(view)
    window.actions_registry.action("results_overlay").trigger()  # O: overlay and legend go together
    assert "Haemorrhage" not in _painted(view) and view.overlay.legend_rect is None
    window.actions_registry.action("results_overlay").trigger()
    assert "Haemorrhage" in _painted(view)
    seg_uid = next(p.obj.sop_instance_uid for p in controller.placed if hasattr(p, "layers"))
    controller.set_segment_visible(seg_uid, 2, False)
    texts = _painted(view)
    assert "Haemorrhage" in texts and "Oedema" not in texts
    controller.set_segment_visible(seg_uid, 1, False)
    assert "Haemorrhage" not in _painted(view) and view.overlay.legend_rect is None  # nothing shown
    controller.set_segment_visible(seg_uid, 1, True)
    view.set_index(2)
    window.actions_registry.action("results_legend").trigger()  # View › Overlay legend off
    assert "Haemorrhage" not in _painted(view) and view.overlay.legend_rect is None
    assert controller.overlay(view).is_shown()  # the overlay itself stays
    window.actions_registry.action("results_legend").trigger()
    assert "Haemorrhage" in _painted(view)


def test_fractional_seg_and_parametric_map_get_colour_bars_with_their_scales(
    qtbot: QtBot, maps: Path
) -> None:
    window = make_window(qtbot)
    _open(qtbot, window, maps)
    view = window.view
    view.set_index(2)
    texts = _painted(view)
    # two objects: each titled, the SEG's ramps on 0 - 1, the map's on its own range and unit
    assert "Other vendor segmentation" in texts and "Haemorrhage" in texts and "Oedema" in texts
    assert "PROB" in texts
    assert {"0", "0.5", "1", "125", "250", "mL/min"} <= set(texts)
    _assert_clear(view)
    with view.overlay.deidentified():  # a de-identified export: no series description, the key stays
        texts = _painted(view)
    assert "Other vendor segmentation" not in texts and "Haemorrhage" in texts and "250" in texts
    assert "Other vendor segmentation" in _painted(view)
    legend = _legend_image(view)
    assert _has_colour(legend, lambda r, g, b: r > 200 and g < 60 and b < 60)  # the opaque end of a ramp
    shots = os.environ.get("SLICEWISE_SHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        legend.save(str(Path(shots) / "legend_maps.png"))


def test_a_long_legend_is_cut_with_a_count_of_what_is_left() -> None:
    rows = tuple(LegendRow(f"Structure {k}", (200, 40 + k, 40)) for k in range(30))
    ramp = LegendGroup("Map", (LegendRow("P", (9, 9, 9), True),), scale_of(0.0, 1.0))
    legend = OverlayLegend((LegendGroup("Organs", rows), ramp))
    rendered = legend.render(300, 140, 1.0)
    assert rendered is not None
    texts, pm = rendered
    assert pm.height() <= 140 and pm.width() <= 300
    shown = [t for t in texts if t.startswith("Structure")]
    assert 0 < len(shown) < 30 and texts[-1] == f"+{31 - len(shown)} more"
    assert legend.render(300, 12, 1.0) is None  # not one row fits
    full = legend.render(300, 2000, 1.0)
    assert full is not None and "+" not in full[0][-1] and full[0][-3:] == ["0", "0.5", "1"]


@pytest.mark.parametrize("size", [(1920, 1080), (1366, 768)])
def test_legend_clear_of_corner_texts_in_one_and_four_viewports(
    qtbot: QtBot, binary: Path, size: tuple[int, int]
) -> None:
    window = make_window(qtbot, size)
    _open(qtbot, window, binary)
    uid = window.loaded_stacks()[0].uid
    shots = os.environ.get("SLICEWISE_SHOTS")
    for layout in (Layout.ONE, Layout.TWO_BY_TWO):
        window.set_layout(layout)
        for k in range(len(window.views())):
            window.show_in_viewport(k, uid)
        qtbot.wait(50)
        for view in window.views():
            view.set_index(2)
            assert "Haemorrhage" in _painted(view), (layout, view.size())
            _assert_clear(view)
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            window.grab().save(str(Path(shots) / f"legend_{size[0]}x{size[1]}_{layout.name}.png"))
