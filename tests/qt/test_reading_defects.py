"""Defects found by reading studies through the real window (session 10): each test fails before its fix."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from tests.core.inference_models import blood_hu, build_model, make_stack
from viewer.core.inference.engine import InferenceEngine
from viewer.core.inference.results import StackPrediction
from viewer.qt.ai.timeline import PredictionTimeline
from viewer.qt.tree_items import top_items


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> InferenceEngine:
    model = build_model(tmp_path_factory.mktemp("m") / "tiny.onnx")
    return InferenceEngine(model, provider="cpu", cache=None)


def _predict(engine: InferenceEngine, n: int, bleed: tuple[int, ...]) -> StackPrediction:
    return engine.predict_hu(make_stack(n, uid=f"1.2.3.{n}"), blood_hu(n, bleed))


def test_timeline_shows_every_slice_of_a_longer_stack_after_a_shorter_one(
    qtbot, engine: InferenceEngine
) -> None:
    """A 32-slice stack analysed after a 24-slice one showed slices 1-25 only: the new x range was clamped
    by the previous stack's limits, so the last slices (and their flags) could not be seen or clicked."""
    short, long = _predict(engine, 24, (3, 4)), _predict(engine, 32, (28, 29, 30))
    tl = PredictionTimeline()
    qtbot.addWidget(tl)
    tl.resize(900, 200)
    tl.show()
    qtbot.waitExposed(tl)
    tl.set_prediction(short)
    assert tl.view_box.viewRange()[0] == pytest.approx([-0.5, 23.5])
    tl.set_prediction(long)
    assert tl.view_box.viewRange()[0] == pytest.approx([-0.5, 31.5])
    with qtbot.waitSignal(tl.slice_requested, timeout=2000) as blocker:  # the last flagged slice is reachable
        qtbot.mouseClick(tl.plot.viewport(), Qt.MouseButton.LeftButton, pos=tl.view_to_widget(30, 0.5))
    assert blocker.args == [30]
    tl.set_prediction(short)  # and back to the shorter one: no empty room after its last slice
    assert tl.view_box.viewRange()[0] == pytest.approx([-0.5, 23.5])


def test_studies_warning_column_leaves_the_text_its_room(qtbot, tmp_path) -> None:
    """With one stack warned about (⚠), the warning column took ~80 px of the 266 px Studies dock (it was
    sized for the 64 px thumbnails' icon size), so every row's text wrapped into a ~60 px column at
    1366×768: "(no descri…", "US · 1 …"."""
    from tests.factories import write_ct_series
    from tests.qt.viewer_helpers import make_window, open_and_wait

    write_ct_series(tmp_path / "gap", 5, positions=[0.0, 5.0, 10.0, 20.0, 25.0], series_description="Gap")
    write_ct_series(tmp_path / "ok", 5, series_description="Head 5mm with a long description")
    window = make_window(qtbot, (1366, 768))
    open_and_wait(qtbot, window, [tmp_path / "gap", tmp_path / "ok"])
    browser = window.browser
    warned = [uid for uid in browser.stack_uids() if not browser.item_for(uid).icon(1).isNull()]
    assert len(warned) == 1 and not browser.isColumnHidden(1)  # the ⚠ is still there
    assert browser.columnWidth(1) <= 32
    assert browser.columnWidth(0) >= browser.viewport().width() - 32


def test_analysing_a_stack_again_replaces_its_seg_instead_of_listing_it_twice(
    qtbot, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Analyze run twice on one stack (F5 again, or the cached result when reviewing it) listed its AI SEG
    twice under Results, drew it twice (twice as opaque) and repeated its legend; the object carries the
    same SOP Instance UID (derived from the model and the slices), so the new one replaces the old."""
    from tests.qt.viewer_helpers import analysed_bleed_window
    from viewer.core.foreign.match import PlacedSeg

    window = analysed_bleed_window(qtbot, tmp_path, monkeypatch, bleed=(2, 3))
    ai, results = window.ai_controller, window.results_controller
    assert ai is not None and results is not None
    first = [p.obj.sop_instance_uid for p in results.placed if isinstance(p, PlacedSeg)]
    assert len(first) == 1
    with qtbot.waitSignal(ai.task_objects_ready, timeout=60_000):
        ai.analyze()
    assert results.wait(30_000)
    assert [p.obj.sop_instance_uid for p in results.placed if isinstance(p, PlacedSeg)] == first
    assert len(results.objects) == 1
    assert results.panel.tree.topLevelItemCount() == 1  # one object in the Results dock


def test_the_empty_ai_seg_of_a_negative_stack_is_on_that_stack_not_unloaded(
    qtbot, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stack without bleeding gets an AI SEG whose segments are all empty: it was listed in amber as
    "references no loaded image" (E-NO-LOADED-IMAGE, also in the load report) although its series is the
    one on screen. It belongs to that stack and says that nothing is segmented."""
    from tests.qt.viewer_helpers import analysed_bleed_window
    from viewer.core.foreign.match import PlacedSeg
    from viewer.qt.results.panel import NOT_LOADED

    window = analysed_bleed_window(qtbot, tmp_path, monkeypatch, bleed=())
    results = window.results_controller
    assert results is not None
    (seg,) = [p for p in results.placed if isinstance(p, PlacedSeg)]
    assert not seg.layers  # nothing to draw
    assert seg.references_loaded
    top = results.panel.tree.topLevelItem(0)
    texts = " ".join(top.text(c) for c in range(top.columnCount()))
    assert NOT_LOADED not in texts and "E-NO-LOADED-IMAGE" not in texts
    assert window.current_stack().series_description in texts
    children = " ".join(top.child(i).text(0) for i in range(top.childCount()))
    assert "no segment on any slice" in children
    report = window.report_panel.rows() if hasattr(window.report_panel, "rows") else []
    assert not any("E-NO-LOADED-IMAGE" in str(r) for r in report)


def test_a_review_keeps_the_image_its_share_of_a_laptop_screen(qtbot, tmp_path, monkeypatch) -> None:
    """With a review session open at 1366×768, the Review tab's findings tree was made as wide as its
    longest texts ("5-6, 11-29", "? uncertain (→ epidural, slices 3-6)") and the right dock with it: 442 px
    after Analyze, ~720 px after a correction, the two viewports ~185 px each with their corner texts
    overlapping. The columns are now capped (the full text in each cell's tooltip)."""
    from tests.qt.viewer_helpers import make_window, open_and_wait
    from viewer.core.paths import bundled_model_path, demo_study_dir

    monkeypatch.setenv("SLICEWISE_DATA_DIR", str(tmp_path / "data"))
    window = make_window(qtbot, (1366, 768), hang=True)
    ai, review = window.ai_controller, window.review_controller
    assert ai is not None and review is not None
    ai.set_model_path(bundled_model_path())
    ai.set_provider("cpu")
    review.new_session("Night shift")
    open_and_wait(qtbot, window, [demo_study_dir()])
    assert review.add_prompt is not None
    next(b for b in review.add_prompt.buttons() if b.text() == "Add to session").click()
    with qtbot.waitSignal(ai.prediction_ready, timeout=60_000):
        ai.analyze()
    qtbot.waitUntil(lambda: len(review.panel.finding_ids()) >= 2, timeout=10_000)
    first = review.panel.finding_ids()[0]
    review.set_decision(first, "uncertain")
    review.correct_finding(first, "intraparenchymal", 2, 5)
    review.add_finding("intraventricular", 10, 20)
    review.review_dock.raise_()
    qtbot.wait(50)
    central = window.centralWidget()
    assert central is not None
    assert central.width() >= 0.6 * window.width(), (central.width(), review.review_dock.width())
    tree = review.panel.tree
    corrected = next(i for i in top_items(tree) if "intraparenchymal" in i.text(3))
    assert corrected.toolTip(3) == corrected.text(3)  # whatever the column shows, the tooltip says all


def test_the_next_study_of_a_review_does_not_keep_the_previous_patient_beside_it(qtbot, tmp_path) -> None:
    """Head CTs hang brain | bone. Stepping to the worklist's next study replaced the active viewport only:
    the bone window beside it still showed the previous patient, with nothing to say so. The next study
    is now hung by its protocol, every viewport on it."""
    from tests.factories import write_ct_series
    from tests.qt.viewer_helpers import make_window, open_and_wait

    write_ct_series(tmp_path / "a", 12, patient_name="FIRST^PATIENT", patient_id="P-1")
    write_ct_series(tmp_path / "b", 12, patient_name="SECOND^PATIENT", patient_id="P-2", seed=1)
    window = make_window(qtbot, (1366, 768), hang=True)
    review = window.review_controller
    assert review is not None
    review.new_session("Night shift")
    open_and_wait(qtbot, window, [tmp_path / "a", tmp_path / "b"])
    assert review.add_prompt is not None
    next(b for b in review.add_prompt.buttons() if b.text() == "Add to session").click()
    by_patient = {window.stack_context(s.uid).patient.patient_id: s for s in window.loaded_stacks()}

    def studies_on_screen() -> set[str]:
        keys = [vp.stack_key for vp in window.state.viewports if vp.stack_key]
        return {window.stack_context(k).stack.study_instance_uid for k in keys}

    for pid in ("P-1", "P-2", "P-1"):
        review.go_to_study(by_patient[pid].study_instance_uid)
        assert len([vp for vp in window.state.viewports if vp.stack_key]) == 2  # brain | bone
        assert studies_on_screen() == {by_patient[pid].study_instance_uid}, pid
        assert window.current_stack().uid == by_patient[pid].uid


def _drawing_view(qtbot, tmp_path, tool: Qt.Key):
    """A 1200×800 window showing a 6-slice CT with the drawing tool of key ``tool`` on: its view and a
    function from image pixel coordinates to the viewport's (for mouse drags)."""
    from PySide6.QtCore import QPointF

    from tests.factories import write_ct_series
    from tests.qt.viewer_helpers import make_window, open_and_wait

    write_ct_series(tmp_path / "ct", 6)
    window = make_window(qtbot, (1200, 800))
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    view = window.view
    window.activateWindow()
    view.setFocus()
    qtbot.keyClick(view, tool)

    def at(x: float, y: float):
        view.vb.updateMatrix()
        return view.graphics.mapFromScene(view.image.mapToScene(QPointF(x, y)))

    return view, at


def test_a_measurement_label_with_no_place_on_screen_is_moved_in_not_cut(qtbot, tmp_path) -> None:
    """An ROI as wide as the view had every label place beside it off screen: its label was cut at the
    viewport's edge, "Mean -723.5 HU" reading "3.5 HU" (seen in a 2×2 viewport). A label is now moved
    inside the view when none of its places fits."""
    from tests.qt.viewer_helpers import mouse_drag
    from viewer.core.measure import Shape

    view, at = _drawing_view(qtbot, tmp_path, Qt.Key.Key_B)
    mouse_drag(qtbot, view.graphics.viewport(), at(6, 6), at(58, 58))
    (roi,) = view.measurements()
    assert roi.measurement.shape is Shape.RECTANGLE
    view.zoom_by(2.0)  # the ROI now reaches past every edge: no place beside it is on screen
    qtbot.waitUntil(lambda: view.zoom_factor() > 1.5, timeout=2000)
    view.graphics.viewport().repaint()
    qtbot.wait(10)
    visible = view.vb.sceneBoundingRect()
    assert not any(visible.contains(o.rect) for o in roi.label_options(visible))
    label = roi.label.sceneBoundingRect()
    assert visible.contains(label), (visible, label)
    assert roi.text().startswith("Mean")


def test_current_and_prior_side_by_side_each_say_their_study_date(qtbot, tmp_path) -> None:
    """At 1366×768 current | prior are two narrow viewports, whose top-left corner kept name and ID only:
    nothing on screen said which side is the prior. The study date stays there (not in a de-identified
    export)."""
    from tests.factories import write_ct_series
    from tests.qt.viewer_helpers import make_window, open_and_wait
    from viewer.qt.overlays import format_date

    write_ct_series(tmp_path / "now", 8, patient_id="P-7", study_date="20260101")
    write_ct_series(tmp_path / "then", 8, patient_id="P-7", study_date="20250601", seed=1)
    window = make_window(qtbot, (1366, 768))
    open_and_wait(qtbot, window, [tmp_path / "now", tmp_path / "then"])
    window.hanging.compare_with_prior()
    views = [v for v in window.views() if v.context is not None]
    assert len(views) == 2
    qtbot.waitUntil(lambda: all(v.overlay.compact for v in views), timeout=5000)
    dates = []
    for view in views:
        lines = view.overlay.corner_lines("top_left")
        shown = [d for d in (format_date("20260101"), format_date("20250601")) if d in lines]
        assert len(shown) == 1, lines
        dates.append(shown[0])
        with view.overlay.deidentified():
            assert not any(d in view.overlay.corner_lines("top_left") for d in shown)
    assert dates == [format_date("20260101"), format_date("20250601")]  # current | prior


def test_the_studies_browser_selects_what_the_active_viewport_shows(qtbot, tmp_path) -> None:
    """After current | prior (or a click in another viewport) the browser still highlighted the series
    opened last, the prior, while the active (amber) viewport showed the current study."""
    from tests.factories import write_ct_series
    from tests.qt.viewer_helpers import make_window, open_and_wait

    write_ct_series(tmp_path / "now", 8, patient_id="P-7", study_date="20260101")
    write_ct_series(tmp_path / "then", 8, patient_id="P-7", study_date="20250601", seed=1)
    window = make_window(qtbot, (1366, 768))
    open_and_wait(qtbot, window, [tmp_path / "now", tmp_path / "then"])
    browser = window.browser

    def selected() -> list[str]:
        return [str(i.data(0, Qt.ItemDataRole.UserRole + 1)) for i in browser.selectedItems()]

    window.hanging.compare_with_prior()
    current, prior = (window.state.viewport(i).stack_key for i in (0, 1))
    assert current != prior
    assert window.state.active == 0 and selected() == [current]
    window.state.set_active(1)
    assert selected() == [prior]


def test_the_scale_bar_stays_above_the_bottom_letter_in_narrow_viewports(qtbot, tmp_path) -> None:
    """In MPR at 1366×768 (three narrow viewports) the bottom orientation letter moves up above the bottom
    corner texts, but the scale bar stayed where it was, over those texts or the letter ("50 mm" over the
    P and the I)."""
    from tests.factories import write_ct_series
    from tests.qt.viewer_helpers import make_window, open_and_wait

    write_ct_series(tmp_path / "ct", 16)
    window = make_window(qtbot, (1366, 768))
    open_and_wait(qtbot, window, [tmp_path / "ct"])
    window.show_mpr()
    views = window.views()
    assert len(views) == 3
    def composed(view) -> bool:
        view.overlay.repaint()
        return view.overlay.bottom_letter_rect is not None

    checked = 0
    for view in views:
        qtbot.waitUntil(lambda v=view: composed(v), timeout=10_000)
        bar, letter = view.overlay.scale_bar_rect, view.overlay.bottom_letter_rect
        if bar is None:  # no round length fits this narrow a view of so small an image
            continue
        assert letter is not None and not bar.intersects(letter), (bar, letter)
        o = view.overlay
        texts = [r for _, r in o._corner_rects(o.width(), o.height()).values()]
        assert not any(bar.intersects(r) for r in texts), (bar, texts)
        checked += 1
    assert checked  # the axial view has one


def test_a_single_image_series_says_one_image(qtbot, tmp_path) -> None:
    """The Studies rows of pydicom's single-file objects read "US · 1 images"."""
    import pydicom.data

    from tests.qt.viewer_helpers import make_window, open_and_wait

    window = make_window(qtbot)
    open_and_wait(qtbot, window, [pydicom.data.get_testdata_file("CT_small.dcm")])
    (uid,) = window.browser.stack_uids()
    item = window.browser.item_for(uid)
    assert "CT · 1 image" in item.text(0) and "1 images" not in item.text(0)
    assert "1 images" not in item.toolTip(0)


def test_a_measurement_label_keeps_clear_of_the_corner_texts(qtbot, tmp_path) -> None:
    """Zoomed in, a measurement under the top-left corner text had its label drawn under the patient
    lines (painted over the scene), so neither could be read. A label now takes a place clear of the
    corner texts when it has one. (And a horizontal ruler whose start is off screen counts as on screen:
    its box had no height, so its label was left off screen.)"""
    from PySide6.QtCore import QPointF

    from tests.qt.viewer_helpers import mouse_drag

    view, at = _drawing_view(qtbot, tmp_path, Qt.Key.Key_M)  # the distance ruler
    mouse_drag(qtbot, view.graphics.viewport(), at(20, 20), at(26, 20))
    (ruler,) = view.measurements()

    def show(x0: float, y0: float) -> bool:
        """Zoomed in on image (x0, y0) - (x0 + 30, y0 + 30); whether the ruler's usual label place is then
        under a corner text while another of its places is clear of them and on screen."""
        top_left = view.image.mapToView(QPointF(x0, y0))
        bottom_right = view.image.mapToView(QPointF(x0 + 30, y0 + 30))
        view.vb.setRange(
            xRange=(top_left.x(), bottom_right.x()), yRange=(top_left.y(), bottom_right.y()), padding=0
        )
        view.vb.updateMatrix()
        visible, corners = view.vb.sceneBoundingRect(), view.corner_text_scene_rects()
        options = ruler.label_options(visible)
        clear = [o for o in options if not any(o.rect.intersects(r) for r in corners)]
        usual_hidden = any(options[0].rect.intersects(r) for r in corners)
        return usual_hidden and any(visible.contains(o.rect) for o in clear)

    # the ruler brought under the top-left corner texts (where depends on the fonts: searched)
    assert any(show(x0 / 2, y0 / 2) for y0 in range(30, 41) for x0 in range(30, 41))
    view.layer.place_labels()
    corners = view.corner_text_scene_rects()
    label = ruler.label.sceneBoundingRect()
    assert not any(label.intersects(r) for r in corners), (label, corners)
    assert view.vb.sceneBoundingRect().contains(label)
