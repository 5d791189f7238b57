"""Two viewports showing different patients say so (1x2 brain | bone, another patient's series chosen
into the active viewport): real window offscreen, real DICOM files from tests/factories.py."""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import generate_uid
from pytestqt.qtbot import QtBot

from tests.factories import CANARY_ID, CANARY_NAME, write_ct_series
from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.core.state.catalogue import patient_key
from viewer.core.state.layout import Layout
from viewer.qt.export import render_view

OTHER_NAME, OTHER_ID = "OTHER^PERSON", "OTHER-ID-0077"
OTHER_PATIENT_LINE = "⚠ ≠ other viewport's patient"


def _uid_of(window, description: str, patient_id: str) -> str:  # type: ignore[no-untyped-def]
    for stack in window.loaded_stacks():
        ctx = window.stack_context(stack.uid)
        if stack.series_description == description and ctx.patient.patient_id == patient_id:
            return str(stack.uid)
    raise AssertionError(description)


def test_viewports_of_different_patients_are_marked_until_they_match(qtbot: QtBot, tmp_path: Path) -> None:
    uid = generate_uid()
    write_ct_series(tmp_path / "a" / "soft", 6, rows=16, columns=16, study_uid=uid)
    write_ct_series(tmp_path / "a" / "bone", 6, rows=16, columns=16, study_uid=uid,
                    series_description="Bone 1mm", spacing_z=1.0)
    write_ct_series(tmp_path / "b", 6, rows=16, columns=16, patient_name=OTHER_NAME, patient_id=OTHER_ID)
    window = make_window(qtbot, (1366, 768), hang=True)
    open_and_wait(qtbot, window, [tmp_path / "a" / "soft", tmp_path / "a" / "bone"])
    assert window.state.layout is Layout.ONE_BY_TWO
    left, right = window.views()
    assert OTHER_PATIENT_LINE not in left.overlay.corner_text("top_left")

    open_and_wait(qtbot, window, [tmp_path / "b"])  # the other patient's series into the active viewport
    window.show_stack(_uid_of(window, "Head 5mm", OTHER_ID))
    assert window.state.layout is Layout.ONE_BY_TWO
    ids = {window.stack_context(v.context.stack.uid).patient.patient_id for v in (left, right)}
    assert ids == {CANARY_ID, OTHER_ID}
    for view in (left, right):
        lines = view.overlay.corner_lines("top_left")
        assert lines[0] == OTHER_PATIENT_LINE
        assert view.overlay.other_patient
        assert view.overlay._line_color(lines[1]) == view.overlay._line_color(OTHER_PATIENT_LINE)

    # privacy mode keeps the warning (it names no one); a de-identified export has neither it nor names
    window.act_privacy.trigger()
    assert window.privacy_mode()
    assert left.overlay.corner_lines("top_left")[0] == OTHER_PATIENT_LINE
    window.act_privacy.trigger()
    render_view(left)
    painted = "\n".join(left.overlay.painted_texts)
    assert OTHER_PATIENT_LINE not in painted and OTHER_NAME.split("^")[0] not in painted
    assert CANARY_NAME.split("^")[0] not in painted and OTHER_ID not in painted

    # the same patient again in the active viewport: the marks go
    window.show_stack(_uid_of(window, "Head 5mm", CANARY_ID))
    for view in (left, right):
        assert OTHER_PATIENT_LINE not in view.overlay.corner_text("top_left")
        assert not view.overlay.other_patient


def test_the_patient_key_falls_back_to_the_name_and_never_matches_unknowns() -> None:
    assert patient_key("ID-1", "A^B") == patient_key("ID-1", "C^D") == "id:ID-1"
    assert patient_key("", "Doe^John") == patient_key(" ", "DOE  JOHN") != patient_key("", "Roe^Jane")
    assert patient_key("", "") == ""
