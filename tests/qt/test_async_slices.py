"""No decoding on the GUI thread (issue 14): a cold compressed stack scrolls with stand-ins and fills in.

Real decoder processes, real widgets; the GUI thread is watched with ``sys.setprofile`` (which sees
only the thread that installs it), so any call of a decoding function on that thread is recorded.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import CodeType, FrameType

import numpy as np
import pytest
from pydicom.uid import RLELossless
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from tests.factories import compress_files, write_ct_series
from tests.qt.viewer_helpers import make_window, open_and_wait, wheel
from viewer.core.constants import Window
from viewer.core.dicom import isolated, pixels
from viewer.core.dicom.volume import StackVolume

N = 300  # more than one prefetch call decodes (PREFETCH_MAX_SLICES)
DECODERS: dict[CodeType, str] = {
    StackVolume._decode.__code__: "StackVolume._decode",
    pixels.decode_frame.__code__: "decode_frame",
    pixels.decode_stored.__code__: "decode_stored",
    pixels._decode_with_pydicom.__code__: "_decode_with_pydicom",
    isolated.decode_isolated.__code__: "decode_isolated",
    isolated.run_isolated.__code__: "run_isolated",
}


@pytest.fixture
def gui_decoder_calls() -> Iterator[list[tuple[str, int]]]:
    """(function, thread id) of every decoder call made on this (the GUI) thread while active."""
    calls: list[tuple[str, int]] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code in DECODERS:
            calls.append((DECODERS[frame.f_code], threading.get_ident()))

    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(None)


def test_scrolling_a_cold_compressed_stack_never_decodes_on_the_gui_thread(
    qtbot: QtBot, tmp_path: Path, gui_decoder_calls: list[tuple[str, int]]
) -> None:
    compress_files(write_ct_series(tmp_path / "rle", N, rows=32, columns=32), RLELossless)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "rle"])
    view = window.view
    volume = window.current_volume()
    assert volume is not None and volume.needs_decoder(0)
    qtbot.waitUntil(lambda: view.shown_index == 0, timeout=30_000)
    # End: far beyond what the prefetch around slice 1 has decoded, so certainly a cold slice
    qtbot.keyClick(view, Qt.Key.Key_End)
    assert view.index == N - 1 and view.shown_index != N - 1
    for _ in range(30):  # then a fast wheel, three slices a notch, faster than the slices decode
        wheel(view.graphics.viewport(), 3)
        qtbot.wait(1)
    assert view.index == N - 1 - 90
    qtbot.waitUntil(lambda: view.shown_index == view.index, timeout=30_000)
    image = view.image.image
    assert image is not None and image[0, 0] == N - 1 - 90  # write_ct_series: HU k in slice k's corner
    assert "decoding" not in " ".join(view.overlay._corners.get("bottom_left", []))
    window.set_slice(150)
    qtbot.waitUntil(lambda: view.shown_index == 150, timeout=30_000)
    assert view.image.image is not None and view.image.image[0, 0] == 150
    assert gui_decoder_calls == []
    # The watch works: a decode on this thread is seen.
    StackVolume(volume.stack).get_slice(3)
    assert ("StackVolume._decode", threading.get_ident()) in gui_decoder_calls


def test_a_placeholder_says_which_slice_is_decoding(qtbot: QtBot, tmp_path: Path) -> None:
    compress_files(write_ct_series(tmp_path / "rle", 12, rows=32, columns=32), RLELossless)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "rle"])
    view = window.view
    volume = window.current_volume()
    qtbot.waitUntil(lambda: view.shown_index == 0, timeout=30_000)
    assert volume is not None
    fresh = StackVolume(volume.stack)  # nothing decoded yet
    try:
        view.set_volume(fresh, view.context, index=6)  # type: ignore[arg-type]
        if view.shown_index == -1:  # nothing decoded near slice 7 yet
            assert view.overlay._hint == "Decoding slice 7…"
            assert view.current_data() is None
        qtbot.waitUntil(lambda: view.shown_index == 6, timeout=30_000)
        assert view.overlay._hint == "" and view.image.image is not None and view.image.image[0, 0] == 6
    finally:
        fresh.close()


def test_int16_and_float32_slices_render_identically(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "ct", 8, rows=64, columns=64)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    view = window.view
    volume = window.current_volume()
    assert volume is not None and volume.dtype == np.int16
    data = volume.get_slice(5).copy()
    data[10:20, 10:40] = np.arange(-1024, 2000, 101, dtype=np.int16)[:30]
    for w in (Window(80, 40), Window(2000, 500), Window(1, 30)):
        view.set_window(w)
        images = []
        for arr in (data, data.astype(np.float32)):
            view._set_image(arr)  # as set_index does
            images.append(view.graphics.grab().toImage())
            assert view.current_data() is arr  # the HU readout reads the volume's own values
        assert images[0] == images[1], w
        view.image.setImage(data, autoLevels=False, levels=w.levels)  # pyqtgraph's int16 path agrees
        assert view.graphics.grab().toImage() == images[0], w
