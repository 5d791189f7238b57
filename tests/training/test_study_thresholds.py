"""Study thresholds chosen at study level (training.study_thresholds) and written into ONNX metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.core.inference_models import build_model
from training.study_thresholds import (
    FALLBACK_THRESHOLD,
    P_USABLE_HI,
    P_USABLE_LO,
    choose_study_thresholds,
    choose_study_thresholds_detail,
    study_operating_point,
    write_study_thresholds,
)
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


def test_saturated_subtype_threshold_is_never_degenerate() -> None:
    # issue 10: study probabilities of an over-sharpened class crowd at 1 (float32: 1.0, 0.99999994, ...);
    # the threshold used to follow them to 0.9999995 (0.999999 before), so a new positive at 0.9999 was
    # never named. Scores above 0.99 now count as 0.99 and the F1 maximum is chosen on those scores
    pos = [1.0, 0.99999994, 0.9999997, 0.2]
    neg = [0.9999993, 0.9, 0.01, 0.001]
    y, p = _subtype_case(pos, neg)
    thr, rules = choose_study_thresholds_detail(y, p)
    t = thr["intraparenchymal"]
    assert P_USABLE_LO <= t <= P_USABLE_HI and rules["intraparenchymal"] == "data"
    # at most 0.99, the top three count alike; F1 is highest flagging all four positives (2 FP): (0.01, 0.2]
    assert 0.01 < t <= 0.2
    assert ((p[:, 2] >= t) == np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)).all()


def test_saturated_gap_at_the_top_gives_a_threshold_inside_the_usable_range() -> None:
    # the v2b case: positives at 1.0, negatives with other bleeds at 0.9999 and below; the best usable
    # threshold flags everything at 0.99 or above and lies below 0.99, never 0.999999
    pos = [1.0, 1.0, 1.0, 0.99999958]
    neg = [0.9999, 0.99976, 0.3, 0.2, 0.1, 0.01, 0.002, 0.001]
    y, p = _subtype_case(pos, neg)
    t = choose_study_thresholds(y, p)["intraparenchymal"]
    assert 0.3 < t <= P_USABLE_HI
    assert all(q >= t for q in pos)


def test_class_without_usable_positives_falls_back_to_even_odds() -> None:
    # two positive studies cannot place an F1 maximum: the documented fallback 0.5
    y, p = _subtype_case([0.999, 0.98], [0.7, 0.2, 0.1, 0.05], k=1)
    thr, rules = choose_study_thresholds_detail(y, p)
    assert thr["epidural"] == FALLBACK_THRESHOLD == 0.5 and rules["epidural"] == "fallback"
    assert rules["any"] == "data"  # every study is `any`-positive here


def test_subtype_threshold_leaves_a_margin_on_both_sides_of_the_f1_gap() -> None:
    # F1 maximum: flag the two studies at 0.98 and above; the threshold sits at the logit midpoint of
    # (0.7, 0.98], not on the lowest flagged score (which left a new positive at 0.979 unflagged)
    y, p = _subtype_case([0.999, 0.98, 0.04], [0.7, 0.2, 0.1, 0.05], k=5)
    thr = choose_study_thresholds(y, p)["subdural"]
    assert abs((logit(0.98) - logit(thr)) - (logit(thr) - logit(0.7))) < 1e-4
    assert 0.7 < thr < 0.98


def test_subtype_ties_prefer_the_lower_threshold_that_finds_more_positives() -> None:
    # F1 = 2/3 both when flagging down to 0.9 (2 TP) and when flagging down to 0.6 (3 TP, 2 FP):
    # a triage tool names the subtype in the three positive studies
    y, p = _subtype_case([0.95, 0.9, 0.6, 0.005], [0.8, 0.7, 0.1, 0.05, 0.03, 0.01], k=3)
    thr = choose_study_thresholds(y, p)["intraventricular"]
    assert 0.1 < thr <= 0.6
