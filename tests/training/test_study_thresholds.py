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


def logit(q: float) -> float:
    return float(np.log(q / (1 - q)))


def _subtype_case(pos: list[float], neg: list[float], k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Studies with `any` positive throughout; class ``k`` positive in ``pos``, negative in ``neg``."""
    n = len(pos) + len(neg)
    y = np.zeros((n, K))
    y[:, 0] = 1
    y[: len(pos), k] = 1
    p = np.full((n, K), 0.5)
    p[:, k] = pos + neg
    return y, p


def test_saturated_subtype_threshold_keeps_the_negatives_it_excluded_unflagged() -> None:
    # study probabilities of a sharply calibrated class crowd near 1 (float32 steps of 6e-8 there): the F1
    # maximum flags the three positives and excludes the negative just below them; the threshold written
    # must do the same (rounding the lowest flagged score down to 6 decimals used to flag that negative)
    pos = [1.0, 0.99999994, 0.9999997, 0.2]
    neg = [0.9999993, 0.9, 0.01, 0.001]
    y, p = _subtype_case(pos, neg)
    thr = choose_study_thresholds(y, p)["intraparenchymal"]
    assert 0.9999993 < thr <= 0.9999997
    assert ((p[:, 2] >= thr) == np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)).all()


def test_subtype_threshold_leaves_a_margin_on_both_sides_of_the_f1_gap() -> None:
    # F1 maximum: flag the two studies at 0.98 and above; the threshold sits at the logit midpoint of
    # (0.7, 0.98], not on the lowest flagged score (which left a new positive at 0.979 unflagged)
    y, p = _subtype_case([0.999, 0.98, 0.04], [0.7, 0.2, 0.1, 0.05], k=5)
    thr = choose_study_thresholds(y, p)["subdural"]
    assert abs((logit(0.98) - logit(thr)) - (logit(thr) - logit(0.7))) < 1e-4
    assert 0.7 < thr < 0.98


def test_subtype_ties_prefer_the_lower_threshold_that_finds_more_positives() -> None:
    # F1 = 2/3 both when flagging only the study at 0.9 (1 TP) and when flagging down to 0.6 (2 TP, 2 FP):
    # a triage tool names the subtype in both positive studies
    y, p = _subtype_case([0.9, 0.6], [0.8, 0.7, 0.1], k=3)
    thr = choose_study_thresholds(y, p)["intraventricular"]
    assert 0.1 < thr <= 0.6
