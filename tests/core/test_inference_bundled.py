"""The bundled model on the demo study (skipped while either is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from viewer.core.constants import RSNA_CLASSES
from viewer.core.inference.engine import InferenceEngine
from viewer.core.paths import bundled_model_path, demo_study_dir

pytestmark = pytest.mark.skipif(
    not bundled_model_path().is_file() or not any(demo_study_dir().rglob("*")),
    reason="bundled model or demo study not present",
)


@pytest.fixture(scope="module")
def demo_stack():  # type: ignore[no-untyped-def]
    from viewer.core.dicom.loader import load_paths

    report = load_paths([demo_study_dir()])
    stacks = [s for s in report.all_stacks() if s.modality == "CT"]
    assert stacks, "the demo study has no CT stack"
    return max(stacks, key=len)


def test_bundled_model_on_demo_study(demo_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from viewer.core.dicom.volume import StackVolume

    engine = InferenceEngine(bundled_model_path(), provider="cpu", cache=None)
    assert engine.info.class_names == RSNA_CLASSES
    assert "research" in engine.info.intended_use.lower()
    volume = StackVolume(demo_stack)
    try:
        hu = volume.load_all()
        a = engine.predict_hu(demo_stack, hu)
        b = engine.predict_hu(demo_stack, hu)
    finally:
        volume.close()
    n, k = len(demo_stack), len(RSNA_CLASSES)
    assert a.slice_probs.shape == (n, k) and a.study_probs.shape == (k,)
    assert np.isfinite(a.slice_probs).all()
    assert (a.slice_probs >= 0).all() and (a.slice_probs <= 1).all()
    assert (a.study_probs >= 0).all() and (a.study_probs <= 1).all()
    np.testing.assert_allclose(a.slice_probs, b.slice_probs, rtol=0, atol=1e-6)  # deterministic
    for j, finding in enumerate(a.findings):
        flagged = {i for r in finding.flagged_ranges for i in range(r.start, r.stop + 1)}
        expected = {int(i) for i in np.flatnonzero(a.slice_probs[:, j] >= engine.info.thresholds[j])}
        assert flagged == expected, finding.class_name
    assert a.badge()


def test_predict_cli_on_demo_study(tmp_path: Path) -> None:
    from viewer.predict_cli import main

    out = tmp_path / "demo.json"
    assert main([str(demo_study_dir()), "--out", str(out), "--quiet", "--provider", "cpu"]) == 0
    doc = json.loads(out.read_text())
    assert any(s["status"] == "ok" for s in doc["stacks"])
    assert doc["model"]["sha256"] and doc["de_identified"]


def test_bundled_study_decision_and_scope_on_the_demo(demo_stack) -> None:  # type: ignore[no-untyped-def]
    from viewer.core.dicom.volume import StackVolume

    engine = InferenceEngine(bundled_model_path(), provider="cpu", cache=None)
    info = engine.info
    assert len(info.study_thresholds) == len(info.class_names)  # chosen at study level, not the slice ones
    any_k = info.class_names.index("any")
    assert info.study_thresholds[any_k] != info.thresholds[any_k]
    with StackVolume(demo_stack) as volume:
        pred = engine.predict_hu(demo_stack, volume.load_all())
    assert pred.study_positive and pred.badge().startswith("ICH suspected: subdural")
    assert pred.applicability is not None
    # the bundled model records the range it was trained on (field of view, thickness, slice count), so
    # the demo passes every check: in scope, without any caution
    assert info.trained_range is not None and info.trained_range.field_of_view_mm is not None
    assert pred.applicability.scope.value == "in_scope" and not pred.applicability.reasons


def test_predict_json_carries_scope_decision_and_warnings(tmp_path: Path) -> None:
    from viewer.predict_cli import main

    out = tmp_path / "demo.json"
    assert main([str(demo_study_dir()), "--out", str(out), "--quiet", "--provider", "cpu", "--no-cache"]) == 0
    stack = next(s for s in json.loads(out.read_text())["stacks"] if s["status"] == "ok")
    assert stack["applicability"]["decision"] in ("in_scope", "caution")
    assert stack["study_decision"]["positive"] is True and stack["study_decision"]["label"] == "ICH suspected"
    assert "warnings" in stack and isinstance(stack["warnings"], list)
