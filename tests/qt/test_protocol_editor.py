"""View › Hanging protocols…: the non-modal editor on the real window (offscreen, factory studies): a
protocol edited and saved hangs studies so, in this window and the next; the current layout saved as a
protocol for this kind of study, with each viewport's zoom, turn and slab; a refused file reported and kept
aside; invalid forms refused; the built-ins restored; a prior placed in the last viewport with linked
scrolling; closing the editor (or the window) with unsaved edits asks Save / Discard / Cancel."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QMessageBox
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from tests.qt.viewer_helpers import make_window, open_and_wait
from viewer.core.constants import WINDOW_PRESETS
from viewer.core.geometry.orientation import Orientation
from viewer.core.geometry.reslice import Slab, SlabMode
from viewer.core.paths import user_data_path
from viewer.core.state.hanging import (
    DEFAULT_PROTOCOLS,
    PROTOCOLS_FILENAME,
    HangingProtocol,
    PriorPlacement,
    ViewportRule,
    load_protocols,
)
from viewer.core.state.layout import Layout
from viewer.qt.main_window import MainWindow
from viewer.qt.protocol_editor import ProtocolEditor


def _editor(window: MainWindow) -> ProtocolEditor:
    window.actions_registry.action("hanging_editor").trigger()
    editor = window.hanging.editor
    assert isinstance(editor, ProtocolEditor)
    assert editor.isVisible() and not editor.isModal()  # non-modal: the viewer stays usable
    return editor


def _cell(editor: ProtocolEditor, row: int, column: int) -> QComboBox:
    box = editor.viewports.cellWidget(row, column)
    assert isinstance(box, QComboBox)
    return box


def _head_ct(folder: Path) -> list[Path]:
    uid = generate_uid()
    write_ct_series(folder / "soft", 8, rows=16, columns=16, study_uid=uid, series_description="Head 5mm")
    write_ct_series(folder / "bone", 6, rows=16, columns=16, study_uid=uid, spacing_z=1.0,
                    series_description="Bone 1mm")
    return [folder / "soft", folder / "bone"]


def test_an_edited_protocol_is_saved_and_hangs_studies_here_and_in_the_next_window(
    qtbot: QtBot, tmp_path: Path
) -> None:
    window = make_window(qtbot, hang=True)
    open_and_wait(qtbot, window, _head_ct(tmp_path))
    assert window.views()[1].current_window() == WINDOW_PRESETS["bone"]
    editor = _editor(window)
    assert window.menu("View").actions().count(window.actions_registry.action("hanging_editor")) == 1
    assert editor.list.count() == len(DEFAULT_PROTOCOLS)
    assert editor.list.item(0).text().endswith("(built-in)")
    editor.list.setCurrentRow(0)
    _cell(editor, 1, 2).setCurrentIndex(_cell(editor, 1, 2).findData("subdural"))  # viewport 2: subdural
    _cell(editor, 0, 1).setCurrentIndex(_cell(editor, 0, 1).findData("coronal"))
    assert editor.dirty and editor.windowTitle().endswith("*")
    assert not editor.list.item(0).text().endswith("(built-in)")
    assert editor.save()
    doc = json.loads((user_data_path() / PROTOCOLS_FILENAME).read_text())
    assert doc["version"] == 3
    assert doc["protocols"][0]["viewports"][1]["window"] == "subdural"
    window.actions_registry.action("apply_hanging").trigger()
    assert window.views()[1].current_window() == WINDOW_PRESETS["subdural"]
    assert window.state.viewport(0).orientation is Orientation.CORONAL
    editor.close()
    assert window.hanging.editor is None
    # the next window reads the saved table
    other = make_window(qtbot, hang=True)
    assert other.hanging.table.protocols[0].viewports[1].window == "subdural"


def test_the_current_layout_saved_as_a_protocol_for_this_kind_of_study(qtbot: QtBot, tmp_path: Path) -> None:
    uid = generate_uid()
    write_ct_series(tmp_path / "soft", 8, rows=16, columns=16, study_uid=uid,
                    study_description="CT Sinus without contrast", series_description="Sinus 3mm")
    write_ct_series(tmp_path / "bone", 6, rows=16, columns=16, study_uid=uid, spacing_z=1.0,
                    study_description="CT Sinus without contrast", series_description="Sinus bone 1mm")
    window = make_window(qtbot, hang=True)
    open_and_wait(qtbot, window, [tmp_path / "soft", tmp_path / "bone"])
    assert window.state.layout is Layout.ONE  # the built-in "CT" protocol
    shots = os.environ.get("SLICEWISE_SHOTS")
    bone = next(s for s in window.loaded_stacks() if "bone" in s.series_description)
    window.set_layout(Layout.ONE_BY_TWO)
    window.show_in_viewport(1, bone.uid, Orientation.CORONAL)
    window.grid.view(1).apply_preset("bone")
    window.grid.view(0).apply_preset("subdural")
    editor = _editor(window)
    editor.from_view_button.click()
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        editor.grab().save(str(Path(shots) / "protocol_editor.png"))
    made = editor.protocols[0]
    assert made.name == "CT sinus: saved layout" and made.keywords == ("sinus",)
    assert made.layout is Layout.ONE_BY_TWO and made.viewports[1].orientation is Orientation.CORONAL
    assert [v.window for v in made.viewports] == ["subdural", "bone"]
    assert editor.name.text() == made.name and editor.list.currentRow() == 0
    editor.name.setText("Sinus CT")
    editor.name.textEdited.emit("Sinus CT")
    assert editor.save()
    assert load_protocols(user_data_path() / PROTOCOLS_FILENAME).protocols[0].name == "Sinus CT"
    window.set_layout(Layout.ONE)
    window.actions_registry.action("apply_hanging").trigger()
    assert window.state.layout is Layout.ONE_BY_TWO
    right = window.views()[1]
    assert right.context is not None and right.context.stack.uid == bone.uid
    assert window.state.viewport(1).orientation is Orientation.CORONAL
    assert right.current_window() == WINDOW_PRESETS["bone"]
    assert window.views()[0].current_window() == WINDOW_PRESETS["subdural"]


def test_invalid_forms_refused_a_bad_file_kept_aside_and_builtins_restored(
    qtbot: QtBot, tmp_path: Path
) -> None:
    path = user_data_path() / PROTOCOLS_FILENAME
    path.write_text('{"protocols": [{"name": "mine", "layout": "9x9"}]}')
    window = make_window(qtbot)
    editor = _editor(window)
    assert PROTOCOLS_FILENAME in editor.message.text() and ".damaged" in editor.message.text()
    editor.list.setCurrentRow(1)
    editor.name.setText("")
    editor.name.textEdited.emit("")
    assert "needs a name" in editor.message.text() and not editor.save_button.isEnabled()
    editor.name.setText(editor.protocols[0].name)  # two protocols of one name
    editor.name.textEdited.emit(editor.protocols[0].name)
    assert "already called" in editor.message.text() and not editor.save()
    editor.name.setText("CT, all")
    editor.name.textEdited.emit("CT, all")
    assert editor.save_button.isEnabled()
    editor.move_selected(-1)
    assert [p.name for p in editor.protocols[:2]] == ["CT, all", DEFAULT_PROTOCOLS[0].name]
    editor.new_button.click()
    assert editor.protocols[0].name == "New protocol 1" and len(editor.protocols) == 5
    editor.delete_button.click()
    assert editor.save()
    kept = (path.parent / (PROTOCOLS_FILENAME + ".damaged")).read_text()
    assert kept.startswith('{"protocols": [{"name": "mine"')
    table = load_protocols(path)
    assert table.error is None and table.protocols[0].name == "CT, all"
    editor.restore_button.click()
    assert editor.protocols == list(DEFAULT_PROTOCOLS) and editor.dirty
    assert editor.save() and load_protocols(path).protocols == DEFAULT_PROTOCOLS


def test_a_prior_hangs_in_the_last_viewport_with_scrolling_linked(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "now", 10, rows=16, columns=16, study_date="20260301", seed=1)
    write_ct_series(tmp_path / "then", 10, rows=16, columns=16, study_date="20240115", seed=2,
                    positions=[100.0 + 5.0 * k for k in range(10)], series_description="Head 5mm std")
    window = make_window(qtbot)
    with_prior = HangingProtocol("Head CT with prior", "CT", Layout.ONE_BY_TWO,
                                 (ViewportRule(window="brain"), ViewportRule(window="brain")),
                                 keywords=("head",), prior=PriorPlacement.LAST_VIEWPORT)
    assert window.hanging.save_table((with_prior, *DEFAULT_PROTOCOLS)) is None
    open_and_wait(qtbot, window, [tmp_path / "then"])
    open_and_wait(qtbot, window, [tmp_path / "now"])
    current = next(s for s in window.loaded_stacks() if s.series_description == "Head 5mm")
    hung = window.hanging.hang(current.uid)
    assert hung is not None and hung.prior_viewport == 1
    left, right = window.views()
    assert left.context is not None and left.context.study is not None
    assert right.context is not None and right.context.study is not None
    assert (left.context.study.date, right.context.study.date) == ("20260301", "20240115")
    assert window.state.link_offset(0, 1) is not None and window.hanging.linked(1)
    assert right.current_window() == WINDOW_PRESETS["brain"]
    window.state.set_active(0)
    window.view.step(3)
    qtbot.waitUntil(lambda: all(v.shown_index == v.index for v in window.views()), timeout=20_000)
    assert window.views()[1].index == window.views()[0].index  # the same anatomy: slice k of both


def test_a_side_by_side_prior_protocol_hangs_current_and_prior_linked(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "now", 8, rows=16, columns=16, study_date="20260301", seed=1)
    write_ct_series(tmp_path / "then", 8, rows=16, columns=16, study_date="20240115", seed=2,
                    positions=[50.0 + 5.0 * k for k in range(8)])
    window = make_window(qtbot)
    side = HangingProtocol("Head CT, prior beside", "CT", Layout.ONE, (ViewportRule(window="stroke"),),
                           keywords=("head",), prior=PriorPlacement.SIDE_BY_SIDE)
    assert window.hanging.save_table((side, *DEFAULT_PROTOCOLS)) is None
    open_and_wait(qtbot, window, [tmp_path / "now"])
    current = window.loaded_stacks()[0]
    window.hanging.hang(current.uid)
    assert window.state.layout is Layout.ONE  # no prior open: the protocol's own layout
    open_and_wait(qtbot, window, [tmp_path / "then"])
    window.hanging.hang(current.uid)
    assert window.state.layout is Layout.ONE_BY_TWO and window.state.active == 0
    left, right = window.views()
    assert left.context is not None and left.context.stack.uid == current.uid
    assert right.context is not None and right.context.study is not None
    assert right.context.study.date == "20240115"
    assert window.state.link_offset(0, 1) is not None
    assert left.current_window() == right.current_window() == WINDOW_PRESETS["stroke"]


def _rename(editor: ProtocolEditor, row: int, name: str) -> None:
    editor.list.setCurrentRow(row)
    editor.name.setText(name)
    editor.name.textEdited.emit(name)
    assert editor.dirty and editor.windowTitle().endswith("*")


def _answer(editor: ProtocolEditor, button: QMessageBox.StandardButton) -> None:
    prompt = editor.unsaved_prompt
    assert prompt is not None and prompt.isVisible()
    assert prompt.text() == "Save the changes to the hanging protocols?"
    prompt.button(button).click()


def test_closing_with_unsaved_edits_asks_save_discard_or_cancel(qtbot: QtBot) -> None:
    """The editor lost unsaved edits silently when closed; now Close, Esc and closing the window ask
    (a non-modal box: the test clicks its buttons, nothing waits in exec())."""
    window = make_window(qtbot)
    path = user_data_path() / PROTOCOLS_FILENAME
    before = path.read_text()
    editor = _editor(window)
    _rename(editor, 1, "CT, edited")
    editor.close_button.click()
    assert editor.isVisible() and editor.unsaved_prompt is not None  # asked, not closed
    _answer(editor, QMessageBox.StandardButton.Cancel)
    assert editor.isVisible() and editor.dirty and editor.unsaved_prompt is None
    assert editor.protocols[1].name == "CT, edited"  # the edit is still there
    qtbot.keyClick(editor, Qt.Key.Key_Escape)
    assert editor.isVisible()
    _answer(editor, QMessageBox.StandardButton.Discard)
    assert window.hanging.editor is None and not editor.isVisible()
    assert path.read_text() == before  # discarded: nothing written
    # Save, then close
    editor = _editor(window)
    assert editor.protocols[1].name == "CT"  # the discarded edit is gone
    _rename(editor, 1, "CT, saved")
    editor.close()
    _answer(editor, QMessageBox.StandardButton.Save)
    assert window.hanging.editor is None
    assert load_protocols(path).protocols[1].name == "CT, saved"
    # a form that cannot be saved (typed, not valid: unsaved too): Save leaves the editor open, saying why
    editor = _editor(window)
    _rename(editor, 1, "")
    editor.close()
    _answer(editor, QMessageBox.StandardButton.Save)
    assert editor.isVisible() and "needs a name" in editor.message.text()
    # unsaved edits and the window closes: asked first; Discard closes both
    window.close()
    assert window.isVisible() and editor.unsaved_prompt is not None
    _answer(editor, QMessageBox.StandardButton.Discard)
    assert not window.isVisible() and window.hanging.editor is None
    assert load_protocols(path).protocols[1].name == "CT, saved"


def test_zoom_turn_and_slab_are_saved_with_the_layout_and_hang_again(qtbot: QtBot, tmp_path: Path) -> None:
    window = make_window(qtbot, hang=True)
    open_and_wait(qtbot, window, _head_ct(tmp_path))
    state = window.state
    assert state.layout is Layout.ONE_BY_TWO
    bone = next(s for s in window.loaded_stacks() if "Bone" in s.series_description)
    window.show_in_viewport(1, bone.uid, Orientation.CORONAL)
    state.rotate(0, 1)  # R-turn clockwise, then a left-right flip of what is on screen
    state.flip(0)
    state.set_zoom(0, 0.25, sync=False)
    state.set_slab(1, Slab(SlabMode.MIP, 4.0))
    want = [(state.viewport(i).rotation, state.viewport(i).mirror, state.viewport(i).scale,
             state.viewport(i).slab) for i in (0, 1)]
    assert want == [(3, True, 0.25, None), (0, False, None, Slab(SlabMode.MIP, 4.0))]
    editor = _editor(window)
    editor.from_view_button.click()
    made = editor.protocols[0]
    assert [(v.rotation, v.mirror, v.zoom, v.slab) for v in made.viewports] == want
    assert _cell(editor, 0, 3).currentText() == "0.25 mm/px, 270°, mirrored"
    assert _cell(editor, 1, 3).currentText() == "fitted, MIP 4 mm"
    assert editor.save()
    doc = json.loads((user_data_path() / PROTOCOLS_FILENAME).read_text())
    assert doc["protocols"][0]["viewports"][1]["slab"] == {"mode": "mip", "thickness_mm": 4.0}
    # back to plain viewports, then the protocol hangs the study with the view it was saved with
    state.reset_view(0)
    state.set_slab(1, None)
    window.set_layout(Layout.ONE)
    window.actions_registry.action("apply_hanging").trigger()
    assert state.layout is Layout.ONE_BY_TWO
    assert [(state.viewport(i).rotation, state.viewport(i).mirror, state.viewport(i).scale,
             state.viewport(i).slab) for i in (0, 1)] == want
    left = window.views()[0]
    assert left.view_frame()[0] == pytest.approx(0.25, rel=1e-3)  # on screen: 0.25 mm per screen pixel
    # the View column resets a viewport's view to fitted, unturned, thin
    view_box = _cell(editor, 0, 3)
    view_box.setCurrentIndex(view_box.findData("reset"))
    assert editor.protocols[0].viewports[0].default_view and editor.dirty
    assert editor.protocols[0].viewports[1].slab == Slab(SlabMode.MIP, 4.0)
    assert editor.save()


def test_every_viewport_cell_shows_its_whole_text_in_a_laptop_sized_editor(qtbot: QtBot) -> None:
    """At 1366 x 768 the editor is about 1,100 px wide: the View words ('fitted, unturned, thin') were cut
    to 'fitted, unturned,' when the four columns shared the width equally."""
    window = make_window(qtbot)
    editor = _editor(window)
    editor.resize(1100, 690)
    for row in range(editor.list.count()):
        editor.list.setCurrentRow(row)
        qtbot.wait(10)
        for k in range(editor.viewports.rowCount()):
            for column in range(4):
                box = _cell(editor, k, column)
                text = box.fontMetrics().horizontalAdvance(box.currentText())
                assert box.width() >= text + 16, (row, k, column, box.currentText(), box.width())
