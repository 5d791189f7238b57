"""Opening studies: real drops, command-line paths, malformed files, zip archives, cancel."""

from __future__ import annotations

import zipfile
from pathlib import Path

from pytestqt.qtbot import QtBot

from tests.factories import CANARY_ID, CANARY_NAME, write_ct_series
from tests.qt.viewer_helpers import LOAD_TIMEOUT_MS, drop_paths, make_window, open_and_wait
from viewer.core.dicom.model import LoadReport
from viewer.qt.app import build_main_window


def test_drop_of_a_folder_loads_and_shows_the_study(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "ct", 12)
    window = make_window(qtbot)
    with qtbot.waitSignal(window.stack_shown, timeout=LOAD_TIMEOUT_MS) as shown:
        drop_paths(qtbot, window, [tmp_path / "ct"])
    stack = shown.args[0]
    assert len(stack) == 12
    assert window.current_stack() is stack
    assert window.current_volume() is not None and len(window.current_volume()) == 12
    assert window.view.image.image is not None
    assert [s.uid for s in window.loaded_stacks()] == [stack.uid]
    assert window.source_paths(stack.uid) == [str(tmp_path / "ct")]
    assert window.slider.maximum() == 11
    qtbot.waitUntil(lambda: not window.is_loading())
    # the rest of the stack streams in behind the first slice; the progress bar then goes away
    qtbot.waitUntil(lambda: window.decoded_count() == 12, timeout=10_000)
    qtbot.waitUntil(lambda: window.progress.isHidden(), timeout=5_000)


def test_drop_of_individual_files_and_a_second_study_adds_it(qtbot: QtBot, tmp_path: Path) -> None:
    first = write_ct_series(tmp_path / "a", 6)
    write_ct_series(tmp_path / "b", 9)
    window = make_window(qtbot)
    with qtbot.waitSignal(window.load_finished, timeout=LOAD_TIMEOUT_MS):
        drop_paths(qtbot, window, first)
    with qtbot.waitSignal(window.load_finished, timeout=LOAD_TIMEOUT_MS):
        drop_paths(qtbot, window, [tmp_path / "b"])
    sizes = sorted(len(s) for s in window.loaded_stacks())
    assert sizes == [6, 9]
    assert len(window.current_stack()) == 9  # the newly dropped study is shown (issue 12)
    other = next(s for s in window.loaded_stacks() if len(s) == 6)
    window.show_stack(other.uid)
    assert window.current_stack() is other


def test_malformed_file_in_a_dropped_folder_is_reported_and_the_rest_loads(
    qtbot: QtBot, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    write_ct_series(folder, 10)
    # a DICOM preamble and magic, then garbage: looks like DICOM, cannot be parsed
    (folder / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + bytes(range(256)) * 4)
    (folder / "notes.txt").write_text("not an image")
    window = make_window(qtbot)
    with qtbot.waitSignal(window.load_finished, timeout=LOAD_TIMEOUT_MS) as done:
        drop_paths(qtbot, window, [folder])
    report: LoadReport = done.args[0]
    assert len(window.current_stack()) == 10
    skipped = {Path(s.path).name for s in report.skipped}
    assert {"broken.dcm", "notes.txt"} <= skipped
    assert window.report_dock.isVisible()
    rows = window.report_panel.rows()
    assert any("broken.dcm" in what and code.startswith("E-") for what, code, _ in rows)


def test_zip_archive_opens(qtbot: QtBot, tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "ct", 5)
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in paths:
            zf.write(p, f"study/{p.name}")
    window = make_window(qtbot)
    with qtbot.waitSignal(window.stack_shown, timeout=LOAD_TIMEOUT_MS):
        drop_paths(qtbot, window, [archive])
    assert len(window.current_stack()) == 5
    assert window.view.image.image[0, 0] == 0.0


def test_build_main_window_with_paths_and_empty_folder(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "ct", 4)
    window = build_main_window([tmp_path / "ct"])
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.current_stack() is not None, timeout=LOAD_TIMEOUT_MS)
    (tmp_path / "empty").mkdir()
    report = open_and_wait(qtbot, window, [tmp_path / "empty"])
    assert isinstance(report, LoadReport) and not report.all_stacks()
    assert len(window.current_stack()) == 4


def test_browser_lists_study_and_thumbnails_arrive_off_the_gui_thread(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "ct", 8)
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    uid = window.current_stack().uid
    item = window.browser.item_for(uid)
    assert item is not None and "8 images" in item.text(0) and "Head 5mm" in item.text(0)
    qtbot.waitUntil(lambda: not item.icon(0).isNull() and item.icon(0).availableSizes() != [], timeout=10_000)
    patient_row = item.parent().parent()
    assert CANARY_NAME.split("^")[0] in patient_row.text(0).upper()
    window.act_privacy.trigger()
    assert CANARY_ID not in patient_row.text(0) and "Patient 1" in patient_row.text(0)
    assert CANARY_ID not in window.view.overlay.corner_text("top_left")


def test_cancel_stops_a_load_and_reports_it(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "ct", 150)
    window = make_window(qtbot)
    with qtbot.waitSignal(window.load_finished, timeout=LOAD_TIMEOUT_MS) as done:
        window.open_paths([tmp_path / "ct"])
        window.cancel_loading()
    report: LoadReport = done.args[0]
    assert report.cancelled
    assert not window.is_loading()


def test_two_patients_sharing_a_series_uid_are_both_in_the_catalogue_and_open(
    qtbot: QtBot, tmp_path: Path
) -> None:
    from pydicom.uid import generate_uid

    same = {"study_uid": generate_uid(), "series_uid": generate_uid()}
    write_ct_series(tmp_path / "a", 4, patient_id="P1", patient_name="A^A", **same)  # type: ignore[arg-type]
    write_ct_series(tmp_path / "b", 6, patient_id="P2", patient_name="B^B", **same)  # type: ignore[arg-type]
    window = make_window(qtbot)
    open_and_wait(qtbot, window, [tmp_path])
    stacks = window.loaded_stacks()
    assert sorted(len(s) for s in stacks) == [4, 6]
    assert window.browser.topLevelItemCount() == 2  # two patients
    for stack in stacks:
        window.show_stack(stack.uid)
        assert window.current_stack() is stack
        assert window.current_volume() is not None and len(window.current_volume()) == len(stack)
    qtbot.waitUntil(lambda: not window.is_loading())


def test_the_first_files_are_previewed_while_a_big_folder_is_scanned(qtbot: QtBot, tmp_path: Path) -> None:
    """A preview of the first files read is shown before the scan ends, then replaced by the final stack
    (the same file's pixels); nothing of the preview is left behind."""
    import numpy as np

    from viewer.core.dicom.model import Stack
    from viewer.core.dicom.volume import StackVolume

    write_ct_series(tmp_path / "ct", 120)
    window = make_window(qtbot)
    shown: list[tuple[Stack, int]] = []  # (provisional stack, slices in the view when it arrived)
    window.open_paths([tmp_path / "ct"])
    job = next(j for j in window._jobs if hasattr(j, "provisional"))
    # connected after the window's own slot, so it sees what the window did with the preview
    job.provisional.connect(lambda stack: shown.append((stack, window.view.count())))
    with qtbot.waitSignal(window.load_finished, timeout=LOAD_TIMEOUT_MS):
        pass
    assert shown, "no preview for a 120-file folder"
    preview, count = shown[0]
    assert 1 < len(preview) < 120 and count == len(preview)  # the view showed the preview
    final = window.current_stack()
    assert final is not None and len(final) == 120 and window.view.count() == 120
    assert window._preview is None
    info = preview.slices[len(preview) // 2]
    k = next(i for i, s in enumerate(final.slices) if s.source == info.source)
    with StackVolume(preview) as vol:
        np.testing.assert_array_equal(vol.get_slice(len(preview) // 2), window.current_volume().get_slice(k))
