"""Hanging protocols, prior comparison with linked scrolling, and window/zoom sync in the real window
(offscreen, real DICOM files written by tests/factories.py, real actions)."""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import generate_uid
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.core.constants import WINDOW_PRESETS, Window
from viewer.core.paths import user_data_path
from viewer.core.state.hanging import PROTOCOLS_FILENAME
from viewer.core.state.layout import Layout
from viewer.qt.hanging import LINK_MARK_KEY
from viewer.qt.main_window import MainWindow


def _trigger(window: MainWindow, action_id: str) -> None:
    window.actions_registry.action(action_id).trigger()


def _hu(window: MainWindow, index: int, qtbot: QtBot) -> int:
    """The top-left pixel of the slice a viewport shows: the factories write slice k's HU as k there."""
    view = window.views()[index]
    qtbot.waitUntil(lambda: view.shown_index == view.index and view.current_data() is not None,
                    timeout=20_000)
    data = view.current_data()
    assert data is not None
    return int(data[0, 0])


def test_a_head_ct_opened_into_an_empty_viewer_hangs_brain_and_bone(qtbot: QtBot, tmp_path: Path) -> None:
    uid = generate_uid()
    write_ct_series(tmp_path / "soft", 8, rows=16, columns=16, study_uid=uid, series_description="Head 5mm")
    write_ct_series(tmp_path / "bone", 6, rows=16, columns=16, study_uid=uid, spacing_z=1.0,
                    series_description="Bone 1mm")
    window = make_window(qtbot, hang=True)
    open_and_wait(qtbot, window, [tmp_path / "soft", tmp_path / "bone"])
    assert window.state.layout is Layout.ONE_BY_TWO
    left, right = window.views()
    assert left.context is not None and right.context is not None
    assert left.context.stack.series_description == "Head 5mm"
    assert right.context.stack.series_description == "Bone 1mm"
    assert left.current_window() == WINDOW_PRESETS["brain"]
    assert right.current_window() == WINDOW_PRESETS["bone"]
    assert [vp.window for vp in window.state.viewports] == [WINDOW_PRESETS["brain"], WINDOW_PRESETS["bone"]]
    # the user's choice afterwards wins: a second study opened now leaves the layout alone
    window.set_layout(Layout.ONE)
    write_ct_series(tmp_path / "chest", 4, rows=16, columns=16, study_description="CT Chest",
                    series_description="Chest 1mm")
    open_and_wait(qtbot, window, [tmp_path / "chest"])
    assert window.state.layout is Layout.ONE
    # and the action hangs the shown study again on demand (CT chest: one viewport, header window)
    window.view.set_window(Window(1500, -600))
    _trigger(window, "apply_hanging")
    assert window.state.layout is Layout.ONE
    assert window.view.current_window() == Window(80, 40)  # the factories' header window


def test_a_bad_protocol_file_is_reported_and_the_defaults_hang(qtbot: QtBot, tmp_path: Path) -> None:
    path = user_data_path() / PROTOCOLS_FILENAME
    path.write_text('{"protocols": [{"name": "x", "layout": "9x9"}]}')
    window = make_window(qtbot, hang=True)
    message = window.statusBar().currentMessage()
    assert PROTOCOLS_FILENAME in message and "built-in" in message
    write_ct_series(tmp_path / "head", 5, rows=16, columns=16)
    open_and_wait(qtbot, window, [tmp_path / "head"])
    assert window.state.layout is Layout.ONE_BY_TWO  # the default head CT protocol


def test_compare_with_prior_links_scrolling_at_the_matching_anatomy(qtbot: QtBot, tmp_path: Path) -> None:
    # one patient, two dates; the prior was scanned 100 mm further along the table (another frame of
    # reference): slice k of both shows the same anatomy (its top-left pixel holds k)
    write_ct_series(tmp_path / "now", 10, rows=16, columns=16, study_date="20260301", seed=1)
    write_ct_series(tmp_path / "then", 10, rows=16, columns=16, study_date="20240115", seed=2,
                    positions=[100.0 + 5.0 * k for k in range(10)], series_description="Head 5mm std")
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "now"])
    open_and_wait(qtbot, window, [tmp_path / "then"])  # shown in the active viewport: the prior
    _trigger(window, "compare_prior")
    assert window.state.layout is Layout.ONE_BY_TWO
    left, right = window.views()
    assert left.context is not None and right.context is not None
    assert left.context.study is not None and left.context.study.date == "20260301"  # current | prior
    assert right.context.study is not None and right.context.study.date == "20240115"
    assert window.state.link_offset(0, 1) is not None
    assert right.current_window() == left.current_window()  # the prior in the current's window
    assert all(LINK_MARK_KEY in v.overlay.extra_html() for v in window.views())
    for steps in (3, 4, -5):
        window.state.set_active(0)
        window.view.step(steps)
        assert _hu(window, 1, qtbot) == _hu(window, 0, qtbot) == window.views()[0].index
    window.views()[1].step(2)  # scrolling the prior moves the current too
    assert _hu(window, 0, qtbot) == _hu(window, 1, qtbot)
    _trigger(window, "unlink_scroll")
    assert window.state.link_offset(0, 1) is None
    assert not any(LINK_MARK_KEY in v.overlay.extra_html() for v in window.views())
    before = window.views()[1].index
    window.views()[0].step(1)  # unlinked: the prior stays, one slice behind now
    assert window.views()[1].index == before
    window.state.set_active(0)
    _trigger(window, "link_scroll")  # linked again at these positions: the new offset holds
    window.views()[0].step(-2)
    assert _hu(window, 1, qtbot) == _hu(window, 0, qtbot) - 1


def test_compare_from_the_current_study_keeps_its_slice_and_window(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "now", 8, rows=16, columns=16, study_date="20260301", seed=1)
    write_ct_series(tmp_path / "then", 8, rows=16, columns=16, study_date="20240115", seed=2,
                    positions=[-40.0 + 5.0 * k for k in range(8)])
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "then"])
    open_and_wait(qtbot, window, [tmp_path / "now"])  # the current study, shown in the active viewport
    window.view.set_index(5)
    window.view.set_window(Window(300, 30))
    _trigger(window, "compare_prior")
    left, right = window.views()
    assert left.context is not None and left.context.study is not None
    assert left.context.study.date == "20260301" and left.index == 5
    assert right.current_window() == left.current_window() == Window(300, 30)
    assert _hu(window, 1, qtbot) == _hu(window, 0, qtbot) == 5


def test_compare_with_prior_needs_an_earlier_study_of_the_same_patient(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "a", 4, rows=16, columns=16, study_date="20260301")
    write_ct_series(tmp_path / "b", 4, rows=16, columns=16, study_date="20240101", patient_id="OTHER-1")
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "a", tmp_path / "b"])
    _trigger(window, "compare_prior")
    assert "No other dated study of this patient" in window.statusBar().currentMessage()
    assert window.state.layout is Layout.ONE


def _two_ct_and_an_mr(qtbot: QtBot, tmp_path: Path) -> MainWindow:
    uid = generate_uid()
    write_ct_series(tmp_path / "a", 5, rows=16, columns=16, study_uid=uid, seed=1)
    write_ct_series(tmp_path / "b", 6, rows=16, columns=16, study_uid=uid, seed=2)
    write_ct_series(tmp_path / "m", 7, rows=16, columns=16, modality="MR", seed=3)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "a", tmp_path / "b", tmp_path / "m"])
    window.set_layout(Layout.ONE_BY_THREE)
    modalities = [v.context.stack.modality for v in window.views() if v.context is not None]
    assert sorted(modalities) == ["CT", "CT", "MR"]
    window.state.set_active(next(i for i, m in enumerate(modalities) if m == "CT"))
    return window


def test_window_sync_copies_the_active_window_to_the_same_modality_only(qtbot: QtBot, tmp_path: Path) -> None:
    window = _two_ct_and_an_mr(qtbot, tmp_path)
    views = window.views()
    ct = [i for i, v in enumerate(views) if v.context is not None and v.context.stack.modality == "CT"]
    mr = next(i for i in range(3) if i not in ct)
    active, other = window.state.active, next(i for i in ct if i != window.state.active)
    mr_window = views[mr].current_window()
    views[active].set_window(Window(500, 50))
    assert views[other].current_window() != Window(500, 50)  # off by default
    _trigger(window, "sync_window")
    assert window.state.sync.window
    views[active].set_window(Window(600, 60))
    assert views[other].current_window() == Window(600, 60)
    assert window.state.viewport(other).window == Window(600, 60)
    assert views[mr].current_window() == mr_window
    views[other].set_window(Window(700, 70))  # a change in a viewport that is not active stays there
    assert views[active].current_window() == Window(600, 60)
    _trigger(window, "sync_window")
    views[active].set_window(Window(800, 80))
    assert views[other].current_window() == Window(700, 70)


def test_zoom_sync_copies_the_active_scale_and_pan_to_the_same_modality(qtbot: QtBot, tmp_path: Path) -> None:
    window = _two_ct_and_an_mr(qtbot, tmp_path)
    views = window.views()
    ct = [i for i, v in enumerate(views) if v.context is not None and v.context.stack.modality == "CT"]
    mr = next(i for i in range(3) if i not in ct)
    active, other = window.state.active, next(i for i in ct if i != window.state.active)
    mr_frame = views[mr].view_frame()
    _trigger(window, "zoom_in")
    assert views[other].view_frame()[0] != views[active].view_frame()[0]  # off by default
    _trigger(window, "sync_zoom")
    _trigger(window, "zoom_in")
    _trigger(window, "zoom_in")
    src, dst = views[active].view_frame(), views[other].view_frame()
    assert abs(dst[0] - src[0]) < 1e-6 * src[0]
    assert abs(dst[1] - src[1]) < 1e-6 and abs(dst[2] - src[2]) < 1e-6
    assert views[mr].view_frame() == mr_frame
