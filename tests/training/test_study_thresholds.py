"""Study thresholds chosen at study level (training.study_thresholds) and written into ONNX metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.core.inference_models import build_model
from training.study_thresholds import choose_study_thresholds, study_operating_point, write_study_thresholds
from viewer.core.constants import RSNA_CLASSES

K = len(RSNA_CLASSES)


def test_any_threshold_keeps_95_percent_of_positive_studies() -> None:
    rng = np.random.default_rng(0)
    y = np.zeros((60, K))
    y[:40, 0] = 1
    y[:40, 5] = 1
    p = np.where(y > 0, rng.uniform(0.3, 1.0, y.shape), rng.uniform(0.0, 0.4, y.shape))
    thr = choose_study_thresholds(y, p, 0.95)
    op = study_operating_point(y, p, thr)
    assert op["sensitivity"] >= 0.95 and op["positives_found"] >= 38
    # the highest such threshold: one step higher loses a positive study
    pos = np.sort(p[:40, 0])[::-1]
    assert thr["any"] <= pos[37] and thr["any"] > pos[38]
    assert op["normal_flagged"] == int((p[40:, 0] >= thr["any"]).sum())


def test_write_changes_metadata_only(tmp_path: Path) -> None:
    import onnx

    model = build_model(tmp_path / "m.onnx")
    before = onnx.load(str(model))
    thr = {c: 0.25 for c in RSNA_CLASSES}
    write_study_thresholds(model, thr, policy="test policy", chosen_on="unit test")
    after = onnx.load(str(model))
    assert after.graph.SerializeToString() == before.graph.SerializeToString()
    props = {p.key: p.value for p in after.metadata_props}
    assert json.loads(props["study_thresholds"]) == thr
    assert {p.key: p.value for p in before.metadata_props}["thresholds"] == props["thresholds"]
    from viewer.core.inference.engine import load_model_info

    assert load_model_info(model).study_thresholds == (0.25,) * K
