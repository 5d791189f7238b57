"""A retrieve's preview that grows as its series arrives (issue 13 item 2), in the real window: each
update keeps the reader's slice by patient position (not index), the window and the zoom; the loaded
series then opens at that position; once the preview is gone an update is refused."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import LOAD_TIMEOUT_MS, make_window
from viewer.core.dicom.model import Stack
from viewer.core.geometry.stack import slice_position_mm
from viewer.core.pacs.preview import SeriesPreview


def _preview_of(paths: list[Path], series_uid: str) -> Stack:
    preview = SeriesPreview(series_uid)
    for path in paths:
        preview.add(path)
    stack = preview.stack()
    assert stack is not None
    return stack


def test_a_growing_preview_keeps_the_readers_slice_window_and_zoom(qtbot: QtBot, tmp_path: Path) -> None:
    from pydicom import dcmread

    paths = write_ct_series(tmp_path / "ct", 12, spacing_z=3.0)  # slice k: z = 3k, HU k top-left
    series_uid = str(dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
    window = make_window(qtbot)
    view = window.view
    early = _preview_of([paths[6], paths[8], paths[7]], series_uid)  # arrived out of order
    assert window.show_preview(early, "First image", keep_place=True)
    view.set_index(2)  # the reader scrolls to z = 24 mm (slice 8 of the series)
    assert view.current_data() is not None and view.current_data()[0, 0] == 8
    (x0, x1), (y0, y1) = view.vb.viewRange()
    view.vb.setRange(xRange=(x0 + 5, x1 - 9), yRange=(y0 + 5, y1 - 9), padding=0)  # zoomed with the mouse
    zoomed, shown_window = view.vb.viewRange(), view.current_window()
    old_volume = window._preview

    full = _preview_of(paths[:4] + paths[6:], series_uid)  # more has arrived: 10 of 12
    assert window.update_preview(full, "Receiving… 10 of 12 slices")
    assert view.volume is window._preview and view.volume is not old_volume and view.count() == 10
    assert view.index == 6 and slice_position_mm(full, view.index) == 24.0  # same place, another index
    assert view.current_data() is not None and view.current_data()[0, 0] == 8  # the same slice on screen
    assert view.vb.viewRange() == zoomed and view.current_window() == shown_window
    assert window.statusBar().currentMessage() == "Receiving… 10 of 12 slices"
    assert window.current_stack() is None  # still a preview, not a stack of the browser

    # the whole series loads and replaces the preview at the reader's position (it would open at slice 0)
    with qtbot.waitSignal(window.load_finished, timeout=LOAD_TIMEOUT_MS):
        window.open_paths([tmp_path / "ct"])
    loaded = window.current_stack()
    assert loaded is not None and len(loaded) == 12 and window._preview is None
    assert view.index == 8 and view.current_data() is not None and view.current_data()[0, 0] == 8
    assert not window.update_preview(full, "Receiving…")  # no preview on screen any more
    assert window.current_stack() is loaded
