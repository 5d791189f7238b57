"""Review widgets on their own (no MainWindow), plus the key fallback on a real window."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from tests.core.test_review_store import make_prediction
from viewer.core.review import ReviewSession, ReviewStore, StudyReview
from viewer.qt.review.widgets import TEXT_COMMIT_MS, ReviewPanel, SessionDialog, WorklistPanel


@pytest.fixture
def session(tmp_path: Path) -> ReviewSession:
    store = ReviewStore.open(tmp_path / "r.sqlite3")
    s = store.create_session("Widgets", reader="R")
    s.add_study("2.1")
    s.record_ai_result(make_prediction("2.2", {"subdural": [(5, 9)]}))
    s.record_ai_result(make_prediction("2.3", {}))
    return s


def _study(session: ReviewSession, uid: str) -> StudyReview:
    return session.study(uid)


def test_worklist_orders_and_shows_progress(qtbot, session: ReviewSession) -> None:
    panel = WorklistPanel()
    qtbot.addWidget(panel)
    session.set_done("2.3")
    panel.set_studies(session.worklist("ai_first"), current="2.2")
    assert panel.study_uids() == ["2.2", "2.1", "2.3"]
    assert panel.progress_label.text() == "1 of 3 done"
    rows = panel.row_texts()
    assert rows[0][3].startswith("ICH suspected: subdural") and rows[1][3] == "not analysed"
    assert rows[2][5] == "done" and rows[0][5] == "to review"
    # a study not open in the window: named by what the session holds (no patient: it stores none; no
    # UID tail as the study's name), the UID in the tooltip
    assert rows[0][1] == "not open yet" and rows[0][2] == "CT · 20 slices · local files"
    assert rows[1][1] == "not open yet" and rows[1][2] == "local files"
    assert "2.2" in panel.tree.topLevelItem(0).toolTip(2)
    assert "no patient names" in panel.tree.topLevelItem(0).toolTip(1)
    with qtbot.waitSignal(panel.order_changed) as sig:
        panel.ai_first.setChecked(False)
    assert sig.args == ["original"] and panel.order == "original"
    panel.set_studies(session.worklist("original"))
    assert panel.study_uids() == ["2.1", "2.2", "2.3"]
    with qtbot.waitSignal(panel.study_activated) as sig:
        panel.tree.itemClicked.emit(panel.tree.topLevelItem(1), 0)
    assert sig.args == ["2.2"]


def test_review_panel_requests_and_read_only(qtbot, session: ReviewSession) -> None:
    panel = ReviewPanel()
    qtbot.addWidget(panel)
    panel.set_slice_count(20)
    study = _study(session, "2.2")
    panel.set_study(study)
    rows = panel.finding_rows()
    assert len(rows) == 6 and rows[0][0] in ("subdural", "any") and rows[0][2] == "6-10"
    first = panel.selected_finding_id()
    assert first == panel.finding_ids()[0]
    with qtbot.waitSignal(panel.decision_requested) as sig:
        assert panel.request_decision("rejected")
    assert sig.args == [first, "rejected"]
    with qtbot.waitSignal(panel.jump_requested) as sig:
        panel.tree.itemClicked.emit(panel.tree.topLevelItem(0), 0)
    assert sig.args == [study.finding(first).jump_slice]
    panel.set_current_slice(7)
    panel.btn_from_current.click()
    panel.set_current_slice(3)
    panel.btn_to_current.click()
    panel.class_combo.setCurrentText("epidural")
    with qtbot.waitSignal(panel.add_finding_requested) as sig:
        panel.btn_add.click()
    assert sig.args == ["epidural", 3, 7]  # 0-based, ordered
    with qtbot.waitSignal(panel.correction_requested) as sig:
        panel.btn_correct.click()
    assert sig.args == [first, "epidural", 3, 7]
    panel.set_study(study, read_only=True)
    assert not panel.btn_confirm.isEnabled() and panel.note.isReadOnly()
    assert not panel.request_decision("confirmed")


def test_note_is_sent_after_typing_pauses_and_on_study_change(qtbot, session: ReviewSession) -> None:
    panel = ReviewPanel()
    qtbot.addWidget(panel)
    panel.set_study(_study(session, "2.2"))
    sent: list[str] = []
    panel.note_changed.connect(sent.append)
    qtbot.keyClicks(panel.note, "abc")
    assert sent == []  # not per keystroke
    qtbot.waitUntil(lambda: sent == ["abc"], timeout=TEXT_COMMIT_MS * 10)
    panel.note.insertPlainText("d")
    panel.set_study(_study(session, "2.1"))  # switching study flushes at once, for the old study
    assert sent == ["abc", "abcd"]
    assert panel.note.toPlainText() == ""


def test_session_dialog_lists_progress(qtbot, session: ReviewSession) -> None:
    session.set_done("2.1")
    dlg = SessionDialog(session.store.list_sessions())
    qtbot.addWidget(dlg)
    (row,) = dlg.rows()
    assert row[:3] == ["Widgets", "R", "1/3"]
    dlg.accept()
    assert dlg.chosen_id == session.id


def test_review_keys_and_viewer_keys_do_not_collide(qtbot, tmp_path: Path) -> None:
    pytest.importorskip("viewer.qt.main_window")
    from tests.factories import write_ct_series
    from viewer.qt.main_window import MainWindow
    from viewer.qt.review import attach

    w = MainWindow()
    qtbot.addWidget(w)
    rc = attach(w, offer_resume=False)
    w.show()
    qtbot.waitExposed(w)
    write_ct_series(tmp_path / "ct", 6)
    with qtbot.waitSignal(w.load_finished, timeout=30_000):
        w.open_paths([tmp_path / "ct"])
    qtbot.waitUntil(lambda: w.current_stack() is not None, timeout=10_000)
    w.activateWindow()
    w.view.setFocus()
    assert w.view.tool != "ruler"
    qtbot.keyClick(w.view, Qt.Key.Key_M)  # M is the ruler, in a review or not
    assert w.view.tool == "ruler"
    qtbot.keyClick(w.view, Qt.Key.Key_M)
    session = rc.new_session("Keys")
    assert session is not None
    qtbot.keyClick(w.view, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)  # study done
    assert w.view.tool != "ruler"
    stack = w.current_stack()
    assert stack is not None and session.study(stack.study_instance_uid).done
    descriptions = [b[2] for b in w.bindings()]
    assert "Review: confirm the selected AI finding" in descriptions
    assert "Review: next unreviewed study" in descriptions
    w.close()
