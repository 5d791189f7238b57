"""The load report's skipped files, read as a user reads them (session 12, seen on a screenshot of pydicom's
test files opened at 1366x768): each file named relative to the folder the files share, its whole path in
the tooltip, and a reason that does not repeat its code's meaning ("DICOMDIR index: DICOMDIR index, not
an image"). Real files: pydicom's own test files copied into a folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydicom.data import get_testdata_file
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from viewer.core.dicom.loader import load_paths
from viewer.qt.browser import StudyBrowser
from viewer.qt.load_report import LoadReportPanel, report_sections
from viewer.qt.tree_items import children, top_items


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "opened"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(str(get_testdata_file("DICOMDIR-bigEnd")), folder / "sub" / "DICOMDIR-bigEnd")
    shutil.copy(str(get_testdata_file("MR_small.dcm")), folder / "a.dcm")
    shutil.copy(str(get_testdata_file("MR_small.dcm")), folder / "sub" / "b.dcm")
    (folder / "notes.txt").write_text("not DICOM")
    return folder


def test_skipped_files_are_named_relative_to_their_folder_without_repeated_words(
    qtbot: QtBot, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    report = load_paths([folder])
    rows = {row.what: row for row in report_sections(report)["Skipped files"]}
    assert set(rows) == {"sub/DICOMDIR-bigEnd", "sub/b.dcm", "notes.txt"}
    assert rows["sub/DICOMDIR-bigEnd"].reason == "DICOMDIR index, not an image"
    assert rows["sub/b.dcm"].reason.startswith("Duplicate of a.dcm (same SOP Instance UID and image)")
    assert str(tmp_path) not in rows["sub/b.dcm"].reason
    assert rows["notes.txt"].reason.startswith("not DICOM: ")
    assert rows["notes.txt"].path == str(folder / "notes.txt")

    panel = LoadReportPanel()
    qtbot.addWidget(panel)
    panel.add_report(report)
    (section,) = [t for t in top_items(panel.tree) if t.text(0).startswith("Skipped files")]
    tips = {item.text(0): item.toolTip(0) for item in children(section)}
    assert tips["sub/b.dcm"] == str(folder / "sub" / "b.dcm")  # the whole path on hover


def test_one_skipped_file_keeps_its_whole_path(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "notes.txt").write_text("not DICOM")
    (row,) = report_sections(load_paths([folder]))["Skipped files"]
    assert row.what == str(folder / "notes.txt")


def test_a_patient_without_name_or_id_reads_no_name_in_the_browser(qtbot: QtBot, tmp_path: Path) -> None:
    """It read "(no name)  ·  " with nothing after the separator."""
    write_ct_series(tmp_path / "anon", 2, patient_name="", patient_id="")
    browser = StudyBrowser()
    qtbot.addWidget(browser)
    browser.add_report(load_paths([tmp_path / "anon"]))
    (patient,) = top_items(browser)
    assert patient.text(0) == "(no name)"
