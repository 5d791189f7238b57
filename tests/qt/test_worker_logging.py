"""Worker failures are logged without the exception text (which may hold patient-named file paths)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from tests.factories import CANARY_NAME, write_ct_series
from viewer.core.dicom.loader import load_paths
from viewer.qt.workers import LoadJob, ThumbnailJob


class _UnreadableJob(LoadJob):
    """A job whose work fails the way file access does: an OSError naming the file."""

    def _run(self) -> None:
        raise FileNotFoundError(2, "No such file or directory", self.paths[0])


def test_a_failed_job_logs_no_path_but_reports_failure(
    qtbot: QtBot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / CANARY_NAME / "slice.dcm")
    job = _UnreadableJob([path])
    with caplog.at_level(logging.DEBUG), qtbot.waitSignal(job.failed, timeout=10_000) as failed:
        job.start()
    job.wait()
    assert "FileNotFoundError" in failed.args[0]
    assert "FileNotFoundError" in caplog.text and "_run" in caplog.text  # still diagnosable
    assert CANARY_NAME not in caplog.text


def test_a_thumbnail_decode_failure_logs_no_path(
    qtbot: QtBot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / CANARY_NAME
    files = write_ct_series(folder, 3)
    stacks = load_paths([folder]).all_stacks()
    for f in files:
        Path(f).unlink()
    job = ThumbnailJob(stacks)
    with caplog.at_level(logging.DEBUG):
        job.start()
        assert job.wait(30_000)
        qtbot.wait(10)
    assert "No thumbnail" in caplog.text
    assert CANARY_NAME not in caplog.text
    assert 'File "' not in caplog.text  # an undecodable stack is expected: one line, no stack trace


@pytest.mark.parametrize("privacy", [False, True])
def test_a_failed_load_hides_the_path_on_screen_in_privacy_mode(
    qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, privacy: bool
) -> None:
    import viewer.core.dicom.loader as loader
    from tests.qt.viewer_helpers import make_window

    path = str(tmp_path / CANARY_NAME / "slice.dcm")

    def failing_scan(*_args: object, **_kwargs: object) -> None:  # what an unexpected OS error looks like
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(loader, "load_paths", failing_scan)
    window = make_window(qtbot)
    window.act_privacy.setChecked(privacy)
    with qtbot.waitSignal(window.load_finished, timeout=10_000):
        window.open_paths([tmp_path])
    shown = window.statusBar().currentMessage() + " ".join(" ".join(r) for r in window.report_panel.rows())
    assert "Loading failed: PermissionError" in shown
    assert (CANARY_NAME in shown) is not privacy  # the path helps the user, unless privacy is on
