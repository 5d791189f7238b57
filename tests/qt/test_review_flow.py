"""Review GUI on the real MainWindow with the real AI controller: open a session, analyze, decide by
key, note, done, close the window, reopen, resume: everything is there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from tests.factories import CANARY_ID, CANARY_NAME

pytest.importorskip("viewer.core.dicom.volume")
pytest.importorskip("viewer.qt.main_window")

from tests.core.inference_models import build_model, write_bleed_series
from viewer.core.review import ReviewStore
from viewer.qt import ai as ai_gui
from viewer.qt.main_window import MainWindow
from viewer.qt.review import ReviewController, attach

BLEED = (5, 6, 7, 14)
Made = tuple[MainWindow, ai_gui.AIController, ReviewController]


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ct")
    write_bleed_series(folder / "head", 20, BLEED)
    return folder / "head"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return build_model(tmp_path / "tiny.onnx")


@pytest.fixture
def make(qtbot, model: Path) -> Iterator[object]:
    made: list[Made] = []

    def _make() -> Made:
        w = MainWindow()
        qtbot.addWidget(w)
        ai = ai_gui.attach(w)
        ai.set_model_path(model)
        ai.set_provider("cpu")
        rc = attach(w)
        w.show()
        qtbot.waitExposed(w)
        made.append((w, ai, rc))
        return w, ai, rc

    yield _make
    for w, ai, _rc in made:
        ai.shutdown()
        w.close()


def _answer_add(qtbot, rc: ReviewController, add: bool) -> None:
    """Click "Add to session" or "Just view" in the question asked after a load during a session."""
    qtbot.waitUntil(lambda: rc.add_prompt is not None and rc.add_prompt.isVisible(), timeout=5000)
    box = rc.add_prompt
    assert box is not None
    wanted = "Add to session" if add else "Just view"
    button = next(b for b in box.buttons() if b.text() == wanted)
    button.click()
    assert rc.add_prompt is None


def _open(qtbot, w: MainWindow, folder: Path) -> None:
    with qtbot.waitSignal(w.load_finished, timeout=30_000):
        w.open_paths([folder])
    qtbot.waitUntil(lambda: w.current_stack() is not None, timeout=10_000)


def test_decide_by_key_close_reopen_resume(
    qtbot, make, series: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w, ai, rc = make()
    assert not rc.banner.isVisible()  # nothing to resume on a first start
    _open(qtbot, w, series)
    stack = w.current_stack()
    assert stack is not None
    session = rc.new_session("Night batch", CANARY_NAME)
    assert session is not None and not session.read_only
    assert rc.worklist.study_uids() == [stack.study_instance_uid]
    assert rc.worklist.progress_label.text() == "0 of 1 done"
    assert rc.status.text().startswith("Review: Night batch 0/1")

    ai.analyze()
    qtbot.waitUntil(lambda: (s := rc.current_study()) is not None and s.ai is not None, timeout=30_000)
    study = rc.current_study()
    assert study is not None and study.ai is not None and study.ai.positive
    assert len(rc.panel.finding_ids()) == 6
    first, second = rc.panel.finding_ids()[:2]
    assert study.finding(first).positive  # AI-positive findings are listed first

    # clicking a finding jumps to its slice
    w.set_slice(0)
    rc.panel._jump_to_item(rc.panel.tree.topLevelItem(0))
    assert w.current_slice() == study.finding(first).jump_slice

    w.activateWindow()
    w.view.setFocus()
    assert rc.panel.selected_finding_id() == first
    qtbot.keyClick(w.view, Qt.Key.Key_A)  # confirm; the selection moves on
    assert rc.panel.selected_finding_id() == second
    qtbot.keyClick(w.view, Qt.Key.Key_X)  # reject
    rc.panel.class_combo.setCurrentText("subarachnoid")
    rc.panel.from_spin.setValue(3)
    rc.panel.to_spin.setValue(4)
    rc.panel.btn_add.click()
    rc.panel.note.setPlainText("follow-up CT")
    rc.panel.impression.setText("acute bleed")
    rc.panel.impression.editingFinished.emit()
    qtbot.waitUntil(lambda: session.study(stack.study_instance_uid).note == "follow-up CT", timeout=5000)
    w.set_slice(9)
    qtbot.waitUntil(lambda: (p := session.last_position()) is not None and p.slice_index == 9, timeout=5000)
    w.view.setFocus()
    qtbot.keyClick(w.view, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)  # study done
    saved = session.study(stack.study_instance_uid)
    assert saved.finding(first).decision == "confirmed" and saved.finding(second).decision == "rejected"
    assert saved.done and saved.impression == "acute bleed"
    assert rc.worklist.progress_label.text() == "1 of 1 done"
    assert "✓ confirmed" in rc.panel.finding_rows()[0][3]
    w.set_slice(11)  # the reader scrolls and quits before the position timer fires
    w.close()  # flushes the position and releases the session lock

    # reopen: the resume offer brings back the session, study and slice
    w2, _ai2, rc2 = make()
    qtbot.waitUntil(rc2.banner.isVisible, timeout=5000)
    assert "Night batch" in rc2.banner.label.text() and "1/1" in rc2.banner.label.text()
    with qtbot.waitSignal(w2.load_finished, timeout=30_000):
        rc2.banner.btn_resume.click()
    qtbot.waitUntil(lambda: w2.current_slice() == 11, timeout=10_000)
    assert rc2.session is not None and not rc2.session.read_only
    again = rc2.current_study()
    assert again is not None and again.study_uid == stack.study_instance_uid
    assert again.finding(first).decision == "confirmed" and again.finding(second).decision == "rejected"
    assert any(f.source == "reader" and f.class_name == "subarachnoid" for f in again.findings)
    assert rc2.panel.note.toPlainText() == "follow-up CT" and rc2.panel.done.isChecked()
    assert rc2.panel.impression.text() == "acute bleed"
    rows = rc2.panel.finding_rows()
    assert any(r[0] == "subarachnoid (reader)" and r[2] == "3-4" for r in rows)
    # no patient identifiers in the logs of the whole flow
    assert CANARY_NAME not in caplog.text and CANARY_ID not in caplog.text


def test_second_window_on_the_same_session_is_read_only(qtbot, make, series: Path) -> None:
    _w1, _ai1, rc1 = make()
    session = rc1.new_session("Shared")
    assert session is not None
    w2, _ai2, rc2 = make()
    other = rc2.open_session(session.id)
    assert other is not None and other.read_only
    assert "another window" in rc2.panel.banner.text() and rc2.panel.banner.isVisibleTo(rc2.panel)
    assert "(read-only)" in rc2.status.text()
    _open(qtbot, w2, series)
    assert not rc2.panel.btn_confirm.isEnabled()
    assert ReviewStore.shared() is rc1.store is rc2.store  # one store object (one write path) per process


def test_closing_a_session_on_purpose_means_no_resume_offer(qtbot, make) -> None:
    _w1, _ai1, rc1 = make()
    assert rc1.new_session("Finished") is not None
    rc1.act_close.trigger()
    assert rc1.session is None and rc1.worklist.progress_label.text() == "No review session"
    _w2, _ai2, rc2 = make()
    qtbot.wait(50)
    assert not rc2.offer_resume() and not rc2.banner.isVisible()


def test_worklist_navigation_and_loading_a_study_from_its_paths(qtbot, make, tmp_path: Path) -> None:
    from tests.core.test_review_store import make_prediction
    from tests.factories import write_ct_series

    a, b = tmp_path / "a", tmp_path / "b"
    write_ct_series(a, 6, seed=1)
    write_ct_series(b, 8, seed=2)
    w, _ai, rc = make()
    _open(qtbot, w, a)
    session = rc.new_session("Two studies")
    assert session is not None
    uid_a = w.current_stack().study_instance_uid
    _open(qtbot, w, b)  # loading during a session asks first
    assert rc.worklist.study_uids() == [uid_a]
    _answer_add(qtbot, rc, add=True)
    uid_b = next(s.study_instance_uid for s in w.loaded_stacks() if s.study_instance_uid != uid_a)
    assert w.current_stack().study_instance_uid == uid_b  # the newly opened study is shown
    rc.go_to_study(uid_a)
    assert rc.worklist.study_uids() == [uid_a, uid_b]
    rc.on_prediction(None, make_prediction(uid_b, {"subdural": [(2, 3)]}, n_slices=8))
    assert rc.worklist.study_uids() == [uid_b, uid_a]  # AI-positive first
    rc.worklist.ai_first.setChecked(False)
    assert rc.worklist.study_uids() == [uid_a, uid_b]
    w.activateWindow()
    w.view.setFocus()
    qtbot.waitUntil(w.isActiveWindow, timeout=2000)
    qtbot.keyClick(w.view, Qt.Key.Key_BracketRight)  # next unreviewed study
    assert rc.current_study_uid == uid_b and w.current_stack().study_instance_uid == uid_b
    qtbot.keyClick(w.view, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(w.view, Qt.Key.Key_BracketLeft)
    assert rc.current_study_uid == uid_a
    w.close()

    w2, _ai2, rc2 = make()
    _open(qtbot, w2, a)
    rc2.open_session(session.id)
    with qtbot.waitSignal(w2.load_finished, timeout=30_000):
        rc2.go_to_study(uid_b)  # not loaded in this window: opened from the recorded paths
    qtbot.waitUntil(lambda: w2.current_stack() is not None
                    and w2.current_stack().study_instance_uid == uid_b, timeout=10_000)
    assert rc2.current_study_uid == uid_b and rc2.panel.done.isChecked()


def test_store_warning_stays_on_the_review_panel(qtbot, make, tmp_path: Path) -> None:
    from viewer.core.review.fileutil import private_dir
    from viewer.core.review.store import DB_FILENAME

    db = private_dir(tmp_path / "review") / DB_FILENAME
    db.write_bytes(b"")  # an empty database file: kept aside, and the reader is told so
    w, _ai, _rc = make()
    rc = ReviewController(w, ReviewStore.open(db))
    assert "0 bytes" in rc.panel.banner.text() and rc.panel.banner.isVisibleTo(rc.panel)
    session = rc.new_session("After")
    assert session is not None and not session.read_only
    assert "0 bytes" in rc.panel.banner.text()  # opening a session does not hide it
    rc.close_session()
    assert "0 bytes" in rc.panel.banner.text()


def _three_studies(root: Path) -> Path:
    write_bleed_series(root / "a", 20, BLEED)
    write_bleed_series(root / "b", 12, (2,))
    write_bleed_series(root / "c", 8, ())
    return root


def test_every_background_result_reaches_the_open_session(qtbot, make, tmp_path: Path) -> None:
    """Auto-analyse on, 3 CT studies opened, one shown: all 3 results are recorded (issue 10 item 10)."""
    w, ai, rc = make()
    session = rc.new_session("Background batch")
    assert session is not None
    ai.auto_action.setChecked(True)
    with qtbot.waitSignal(w.load_finished, timeout=30_000):
        w.open_paths([_three_studies(tmp_path / "three")])
    _answer_add(qtbot, rc, add=True)
    stacks = w.loaded_stacks()
    assert len({s.study_instance_uid for s in stacks}) == 3
    qtbot.waitUntil(lambda: all(w.browser.badge(s.uid) for s in stacks), timeout=60_000)
    shown = w.current_stack()
    assert shown is not None
    recorded = {s.study_uid: s.ai for s in session.studies()}
    assert set(recorded) == {s.study_instance_uid for s in stacks}
    assert all(result is not None for result in recorded.values()), recorded
    by_len = {len(s): recorded[s.study_instance_uid] for s in stacks}
    assert by_len[20].positive and not by_len[8].positive  # type: ignore[union-attr]
    assert sum(1 for s in stacks if s.uid != shown.uid) == 2  # two of them were never displayed


def test_results_before_the_session_opens_are_recorded_when_it_opens(qtbot, make, tmp_path: Path) -> None:
    w, ai, rc = make()
    ai.auto_action.setChecked(True)
    with qtbot.waitSignal(w.load_finished, timeout=30_000):
        w.open_paths([_three_studies(tmp_path / "later")])
    stacks = w.loaded_stacks()
    qtbot.waitUntil(lambda: all(w.browser.badge(s.uid) for s in stacks), timeout=60_000)
    session = rc.new_session("Opened afterwards")
    assert session is not None
    recorded = {s.study_uid: s.ai for s in session.studies()}
    analysed = {u for u, result in recorded.items() if result is not None}
    assert analysed == {s.study_instance_uid for s in stacks}


def test_a_folder_opened_during_a_session_joins_it_only_when_the_reader_says_so(
    qtbot, make, tmp_path: Path
) -> None:
    """Issue 12: opening a folder while a session is open used to add every study silently."""
    from tests.factories import write_ct_series

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for k, folder in enumerate((a, b, c)):
        write_ct_series(folder, 4, seed=k + 1)
    w, _ai, rc = make()
    _open(qtbot, w, a)
    session = rc.new_session("Ask first")
    assert session is not None
    uid_a = w.current_stack().study_instance_uid
    _open(qtbot, w, b)
    _answer_add(qtbot, rc, add=False)  # just view
    uid_b = w.current_stack().study_instance_uid  # the new study is shown ...
    assert uid_b != uid_a
    assert [s.study_uid for s in session.studies()] == [uid_a]  # ... but not added
    assert "not added" in w.statusBar().currentMessage()
    _open(qtbot, w, c)
    _answer_add(qtbot, rc, add=True)
    uid_c = w.current_stack().study_instance_uid
    assert [s.study_uid for s in session.studies()] == [uid_a, uid_c]
    assert rc.act_add_loaded.isEnabled()
    rc.act_add_loaded.trigger()  # the explicit action adds the rest
    assert [s.study_uid for s in session.studies()] == [uid_a, uid_c, uid_b]


def test_study_done_needs_ctrl_says_so_and_is_undone_with_ctrl_z(qtbot, make, tmp_path: Path) -> None:
    """Issue 12: a stray D toggled "study done" with no feedback or undo."""
    from tests.factories import write_ct_series

    write_ct_series(tmp_path / "ct", 5)
    w, _ai, rc = make()
    _open(qtbot, w, tmp_path / "ct")
    assert rc.new_session("Keys") is not None
    w.activateWindow()
    w.view.setFocus()
    qtbot.waitUntil(w.isActiveWindow, timeout=2000)
    for key in (Qt.Key.Key_D, Qt.Key.Key_Return):  # neither a letter nor plain Return marks it done
        qtbot.keyClick(w.view, key)
    study = rc.current_study()
    assert study is not None and not study.done
    qtbot.keyClick(w.view, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    study = rc.current_study()
    assert study is not None and study.done
    assert "marked done" in w.statusBar().currentMessage()
    qtbot.keyClick(w.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    study = rc.current_study()
    assert study is not None and not study.done and rc.panel.done.isChecked() is False
    assert w.statusBar().currentMessage().startswith("Undone: study marked done")
    ctrl_shift = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    qtbot.keyClick(w.view, Qt.Key.Key_Z, ctrl_shift)
    study = rc.current_study()
    assert study is not None and study.done  # redone


def test_worklist_names_studies_by_patient_date_description_and_modality(
    qtbot, make, tmp_path: Path
) -> None:
    """Issue 12: the worklist listed studies by the tail of their Study UID."""
    from tests.factories import write_ct_series
    from viewer.qt.overlays import format_date

    write_ct_series(tmp_path / "ct", 4, patient_name="Doe^Jane")
    w, _ai, rc = make()
    _open(qtbot, w, tmp_path / "ct")
    assert rc.new_session("Names") is not None
    (row,) = rc.worklist.row_texts()
    assert row[1] == "Doe Jane" and row[2] == f"{format_date('20260101')} · CT · CT Head"  # locale's date
    # the review panel's title names the study the same way, not by its UID's tail
    title = rc.panel.title.text()
    assert title.startswith(f"Doe Jane · {format_date('20260101')} · CT Head: "), title
    w.act_privacy.trigger()  # identifiers hidden: the patient becomes a number
    (row,) = rc.worklist.row_texts()
    assert row[1] == "Patient 1" and "Doe" not in " ".join(row)
    assert rc.panel.title.text().startswith("Patient 1 · ") and "Doe" not in rc.panel.title.text()


def test_review_sr_export_is_built_outside_the_viewer_and_de_identified(
    qtbot, make, series: Path, tmp_path: Path
) -> None:
    """Review › Export DICOM SR writes the reader's review SR (built in the helper process) de-identified
    by default, with the patient's identity when asked."""
    from pydicom import dcmread

    w, ai, rc = make()
    _open(qtbot, w, series)
    assert rc.new_session("Export") is not None
    ai.analyze()
    qtbot.waitUntil(lambda: (s := rc.current_study()) is not None and s.ai is not None, timeout=30_000)
    out = rc.export("sr", tmp_path / "review.dcm")
    assert out == tmp_path / "review.dcm"
    sr = dcmread(out)
    assert "reader review" in sr.SeriesDescription and sr.PatientIdentityRemoved == "YES"
    assert CANARY_NAME not in str(sr.get("PatientName", "")) and CANARY_ID not in str(sr.get("PatientID", ""))
    rc.act_identifiers.setChecked(True)
    full = dcmread(rc.export("sr", tmp_path / "full.dcm"))
    assert str(full.PatientID) == CANARY_ID and str(full.StudyInstanceUID) == rc.current_study_uid


def test_a_study_arriving_in_parts_is_asked_about_once_and_only_the_reader_answers(
    qtbot, make, tmp_path: Path
) -> None:
    """A PACS retrieve lists each further series of a study as it arrives (open_paths(show=False)), so
    load_finished fires once per part. The question about adding the study must stay the one open
    question: a second load closed it, which recorded "Just view" for the study without the reader."""
    from tests.factories import write_ct_series

    write_ct_series(tmp_path / "a", 4, seed=1)
    w, _ai, rc = make()
    _open(qtbot, w, tmp_path / "a")
    session = rc.new_session("Parts")
    assert session is not None
    for part, seed in (("b1", 2), ("b2", 3)):  # two series of one study, loaded one after the other
        write_ct_series(tmp_path / part, 4, seed=seed, study_uid="1.2.826.0.1.3680043.8.498.4242")
    with qtbot.waitSignal(w.load_finished, timeout=30_000):
        w.open_paths([tmp_path / "b1"], show=False)
    qtbot.waitUntil(lambda: rc.add_prompt is not None and rc.add_prompt.isVisible(), timeout=5000)
    first = rc.add_prompt
    with qtbot.waitSignal(w.load_finished, timeout=30_000):
        w.open_paths([tmp_path / "b2"], show=False)
    assert rc.add_prompt is first and first.isVisible()  # the same question, still open
    assert len(session.studies()) == 1
    _answer_add(qtbot, rc, add=True)
    assert len(session.studies()) == 2


def test_resuming_a_session_brings_back_its_ai_result_only_for_the_same_model(
    qtbot, make, series: Path, tmp_path: Path
) -> None:
    """A reader resuming a session sees the AI result being reviewed (found again by the pixels and the
    model's hash), not "no analysis"; a session whose result came from another model shows none."""
    w, ai, rc = make()
    _open(qtbot, w, series)
    stack = w.current_stack()
    assert stack is not None
    session = rc.new_session("Resume AI")
    assert session is not None
    with qtbot.waitSignal(ai.prediction_shown, timeout=30_000):
        ai.analyze()
    recorded = ai.prediction()
    assert recorded is not None
    qtbot.waitUntil(lambda: (s := rc.current_study()) is not None and s.ai is not None, timeout=10_000)
    w.set_slice(3)
    qtbot.waitUntil(lambda: (p := session.last_position()) is not None and p.slice_index == 3, timeout=5000)
    w.close()

    w2, ai2, rc2 = make()
    assert ai2.prediction() is None
    qtbot.waitUntil(rc2.banner.isVisible, timeout=5000)
    with qtbot.waitSignal(w2.load_finished, timeout=30_000):
        rc2.banner.btn_resume.click()
    qtbot.waitUntil(lambda: ai2.prediction() is not None, timeout=30_000)
    shown = ai2.prediction()
    assert shown is not None and shown.stack_uid == stack.uid
    assert shown.model_sha256 == recorded.model_sha256 and shown.badge() == recorded.badge()
    assert ai2.findings.badge.text() == recorded.badge()
    assert ai2.timeline.prediction is shown
    w2.close()

    # another model loaded: the session's result is not shown as if it were this model's
    w3, ai3, rc3 = make()
    ai3.set_model_path(build_model(tmp_path / "other.onnx", metadata={"model_version": "9.9.9"}))
    qtbot.waitUntil(rc3.banner.isVisible, timeout=5000)
    with qtbot.waitSignal(w3.load_finished, timeout=30_000):
        rc3.banner.btn_resume.click()
    qtbot.waitUntil(lambda: "another model" in ai3.findings.badge.text(), timeout=30_000)
    assert ai3.prediction() is None
    assert not ai3.is_running() or ai3.wait(10_000)
    assert ai3.prediction() is None


def test_a_session_result_waits_for_the_analysis_running_and_does_not_cancel_it(
    qtbot, make, tmp_path: Path
) -> None:
    """The reader analyses an unrecorded study, then goes to a study the session has a result for: that
    result comes back once the running analysis ends, and the running one is not thrown away."""
    write_bleed_series(tmp_path / "a", 8, (3, 4))
    write_bleed_series(tmp_path / "c", 8, (5,))
    w, ai, rc = make()
    ai.set_model_path(build_model(tmp_path / "slow.onnx", slow_matmuls=40))
    _open(qtbot, w, tmp_path / "a")
    a = w.current_stack()
    assert a is not None and rc.new_session("Waits") is not None
    with qtbot.waitSignal(ai.prediction_shown, timeout=30_000):
        ai.analyze()
    qtbot.waitUntil(lambda: (s := rc.current_study()) is not None and s.ai is not None, timeout=10_000)
    _open(qtbot, w, tmp_path / "c")
    _answer_add(qtbot, rc, False)
    c = next(s for s in w.loaded_stacks() if s.study_instance_uid != a.study_instance_uid)
    ai.set_model_path(ai.model_path())  # the same model: forgets the results held in memory
    ready: list[str] = []
    ai.prediction_ready.connect(lambda stack, _p: ready.append(stack.uid))
    w.show_stack(c.uid)
    ai.analyze()
    assert ai.is_running()
    w.show_stack(a.uid)  # the session has a result for this stack: brought back after c's analysis
    qtbot.waitUntil(lambda: (p := ai.prediction()) is not None and p.stack_uid == a.uid, timeout=30_000)
    assert c.uid in ready and ready.index(c.uid) < ready.index(a.uid)
