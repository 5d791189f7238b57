"""Study decision vs slice flags (issue 10 item 1): the badge follows the study thresholds only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.core.inference_models import blood_hu, build_model, make_stack
from viewer.core.constants import RSNA_CLASSES
from viewer.core.inference.engine import InferenceEngine
from viewer.core.inference.postprocess import make_findings, study_decision

K = len(RSNA_CLASSES)


def test_flagged_slices_alone_do_not_make_the_study_positive() -> None:
    slice_probs = np.full((10, K), 0.01, dtype=np.float32)
    slice_probs[4, 0] = 0.2  # one slice above the 'any' slice threshold 0.05
    study = np.full(K, 0.1, dtype=np.float32)  # study 'any' 0.1 < its study threshold 0.3
    findings = make_findings(RSNA_CLASSES, slice_probs, study, [0.05] * K, [0.3] * K)
    assert findings[0].flagged and not findings[0].positive
    assert not any(study_decision(RSNA_CLASSES, study, [0.3] * K))


def test_subtypes_are_named_only_when_any_is_positive() -> None:
    study = np.array([0.2, 0.05, 0.05, 0.05, 0.05, 0.9], dtype=np.float32)  # subdural high, any low
    assert study_decision(RSNA_CLASSES, study, [0.3] * K) == (False,) * K
    study[0] = 0.5
    assert study_decision(RSNA_CLASSES, study, [0.3] * K) == (True, False, False, False, False, True)


def test_engine_uses_the_models_study_thresholds(tmp_path: Path) -> None:
    strict = {c: 0.99 for c in RSNA_CLASSES}
    lenient = {c: 0.01 for c in RSNA_CLASSES}
    hu = blood_hu(10, (3, 4))
    a = InferenceEngine(build_model(tmp_path / "a.onnx", metadata={"study_thresholds": strict}), cache=None)
    b = InferenceEngine(build_model(tmp_path / "b.onnx", metadata={"study_thresholds": lenient}), cache=None)
    pa, pb = a.predict_hu(make_stack(10), hu), b.predict_hu(make_stack(10), hu)
    np.testing.assert_array_equal(pa.slice_probs, pb.slice_probs)
    assert pa.flagged_slices() == pb.flagged_slices() == [3, 4]  # slice flags keep their own thresholds
    assert not pa.study_positive and pa.badge() == f"No ICH flagged (any {pa.study_probs[0]:.2f})"
    assert pb.study_positive and pb.badge().startswith("ICH suspected")
    assert pa.study_thresholds == (0.99,) * K


def test_without_study_thresholds_the_slice_thresholds_decide(tmp_path: Path) -> None:
    engine = InferenceEngine(build_model(tmp_path / "m.onnx"), cache=None)
    assert engine.info.study_thresholds == () and engine.info.decision_thresholds == engine.info.thresholds
