"""Study-level operating points (model metadata ``study_thresholds``), chosen on validation STUDIES.

The study decision ("ICH suspected" vs "No ICH flagged") reads the model's study probabilities; a
slice-level threshold applied to a study probability flags nearly every study (the first bundled
model flagged 11 of 11 normal studies at the slice `any` threshold 0.048). So the study thresholds are
chosen at study level, separately from the slice thresholds:

- ``any`` (the decision): the highest threshold whose study-level sensitivity on the validation
  studies is >= ``sensitivity`` (0.95); the share of normal studies left unflagged at it is reported
  (target >= 0.90 "where the model allows": when it is lower, sensitivity keeps priority, it is a
  triage tool);
- each subtype (which subtype the badge names once ``any`` is positive): the study-level F1 maximum
  (the lowest threshold among equal maxima), placed at the midpoint, in logit space, of the gap
  between the lowest study score it flags and the highest it leaves unflagged (``f1_margin_threshold``).

No threshold is degenerate: every one lies in the usable range [``P_USABLE_LO``, ``P_USABLE_HI``] =
[0.01, 0.99]. The F1 maximum is taken over thresholds in that range only, on the scores the policy sees
(the exported model's float32 study probabilities): scores above 0.99 count as 0.99, so a class whose
probabilities crowd at 1 gets a threshold below 0.99 chosen from the validation studies, not 0.999999
(which a new positive at 0.99998 would miss). ``any``: the highest threshold in range with the
sensitivity asked. Documented fallback: a class with fewer than ``MIN_STUDY_POSITIVES`` (3) positive or
negative validation studies has no usable F1 maximum and gets 0.5 (even odds of a calibrated
probability); ``choose_study_thresholds_detail`` names the rule each class got.

``slicewise-train study-thresholds MODEL.onnx --data DIR --labels CSV [--write]`` runs an exported
model through ONNX Runtime exactly as ``slicewise-train evaluate`` does, chooses the thresholds on those
studies and, with ``--write``, rewrites only the model's metadata (weights untouched).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.metrics import f1_optimum_gap, roc_auc, threshold_for_sensitivity
from viewer.core.constants import RSNA_CLASSES

log = logging.getLogger(__name__)

STUDY_SENSITIVITY = 0.95
NORMAL_UNFLAGGED_TARGET = 0.90
DECISION_CLASS = "any"
_P_CLIP = 1e-12  # logits of probabilities at 0 or 1 (float32 saturation) stay finite
P_USABLE_LO, P_USABLE_HI = 0.01, 0.99  # no study threshold outside this range (degenerate)
MIN_STUDY_POSITIVES = 3  # per class, positive and negative validation studies for a data-chosen threshold
FALLBACK_THRESHOLD = 0.5
RULE_DATA = "data"
RULE_FALLBACK = "fallback"
STUDY_POLICY_TEXT = (
    "study level, on validation studies: `any` at the highest threshold with study sensitivity >= {sens:.2f} "
    "(the decision); each subtype at the study-level F1 maximum (lowest threshold among equal maxima), at "
    "the logit-space midpoint of the score gap it leaves (names the subtype once `any` is positive); every "
    "threshold within [0.01, 0.99] (scores above 0.99 count as 0.99); a class with < 3 positive or negative "
    "validation studies: 0.5"
)


def choose_study_thresholds(
    study_labels: np.ndarray, study_probs: np.ndarray, sensitivity: float = STUDY_SENSITIVITY
) -> dict[str, float]:
    """(N, K) study labels (0/1) and study probabilities -> {class: study threshold}."""
    return choose_study_thresholds_detail(study_labels, study_probs, sensitivity)[0]


def choose_study_thresholds_detail(
    study_labels: np.ndarray, study_probs: np.ndarray, sensitivity: float = STUDY_SENSITIVITY
) -> tuple[dict[str, float], dict[str, str]]:
    """({class: study threshold}, {class: rule}): ``"data"`` when chosen from the validation studies,
    ``"fallback"`` when the class had fewer than ``MIN_STUDY_POSITIVES`` positive or negative studies."""
    y = np.asarray(study_labels) > 0.5
    p = np.clip(np.asarray(study_probs, dtype=np.float64), None, P_USABLE_HI)  # the usable range's top
    out: dict[str, float] = {}
    rules: dict[str, str] = {}
    for k, name in enumerate(RSNA_CLASSES):
        n_pos, n_neg = int(y[:, k].sum()), int((~y[:, k]).sum())
        if n_pos < MIN_STUDY_POSITIVES or (name != DECISION_CLASS and n_neg < MIN_STUDY_POSITIVES):
            out[name], rules[name] = FALLBACK_THRESHOLD, RULE_FALLBACK
            continue
        if name == DECISION_CLASS:
            t = threshold_for_sensitivity(y[:, k], p[:, k], sensitivity)
            t = math.floor(t * 1e6) / 1e6  # rounded down: the chosen studies stay positive
        else:
            t = f1_margin_threshold(y[:, k], p[:, k])
        out[name], rules[name] = min(max(t, P_USABLE_LO), P_USABLE_HI), RULE_DATA
    return out, rules


def _logit(p: float) -> float:
    q = min(max(p, _P_CLIP), 1.0 - _P_CLIP)
    return math.log(q / (1.0 - q))


def f1_margin_threshold(y_true: np.ndarray, score: np.ndarray) -> float:
    """The study-level F1 maximum with a margin on both sides: the midpoint, in logit space, of the gap
    between the lowest study score flagged at the maximum and the highest score left unflagged (lowest
    threshold among equal maxima), written with the fewest decimals (>= 6) that stay inside that gap.

    Study probabilities of a sharply calibrated class crowd near 1: the top edge of the gap (the lowest
    flagged score itself) leaves no margin for a new positive study, and rounding it down to 6 decimals
    can pass the unflagged scores just below it, flagging negatives the F1 maximum had excluded.
    0.5 when positives or negatives are absent (as ``threshold_f1``).
    """
    gap = f1_optimum_gap(y_true, score)
    if gap is None:
        return 0.5
    flagged, unflagged = gap
    if unflagged is None:  # every study flagged at the maximum: nothing below to keep a margin from
        return math.floor(flagged * 1e6) / 1e6
    mid = _logit(flagged) / 2 + _logit(unflagged) / 2
    t = 1.0 / (1.0 + math.exp(-mid))
    for decimals in range(6, 16):
        scale = 10.0**decimals
        rounded = math.floor(t * scale) / scale
        if unflagged < rounded <= flagged:
            return rounded
    return t


def study_decisions(study_probs: np.ndarray, thresholds: Mapping[str, float]) -> np.ndarray:
    """(N,) bool: the study decision as the viewer makes it (``any`` at its study threshold)."""
    k = RSNA_CLASSES.index(DECISION_CLASS)
    return np.asarray(study_probs)[:, k] >= float(thresholds[DECISION_CLASS])


def study_operating_point(
    study_labels: np.ndarray, study_probs: np.ndarray, thresholds: Mapping[str, float]
) -> dict[str, Any]:
    """Study sensitivity, normal studies flagged / unflagged, and study AUC of ``any``."""
    k = RSNA_CLASSES.index(DECISION_CLASS)
    y = np.asarray(study_labels)[:, k] > 0.5
    flagged = study_decisions(study_probs, thresholds)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return {
        "n_studies": len(y),
        "n_positive": n_pos,
        "n_normal": n_neg,
        "sensitivity": round(float(flagged[y].mean()), 4) if n_pos else float("nan"),
        "positives_found": int(flagged[y].sum()),
        "normal_flagged": int(flagged[~y].sum()),
        "normal_unflagged_share": round(float((~flagged[~y]).mean()), 4) if n_neg else float("nan"),
        "study_auc_any": round(roc_auc(y, np.asarray(study_probs)[:, k]), 4),
    }


def onnx_study_predictions(
    model_path: Path, data_dir: Path, labels_csv: Path, *, threads: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """(study labels (N, K), study probabilities (N, K)) of ``model_path`` on every labelled series under
    ``data_dir``, read and preprocessed as the viewer does (the same path as ``evaluate_onnx``)."""
    y, p, _, _ = onnx_predictions(model_path, data_dir, labels_csv, threads=threads)
    return y, p


def onnx_predictions(
    model_path: Path, data_dir: Path, labels_csv: Path, *, threads: int = 2
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Study labels (N, K) and probabilities (N, K), and per study the labelled slices' labels and
    probabilities ((S_i, K) each), of ``model_path`` on every labelled series under ``data_dir``."""
    from training.dataset import find_series, read_labels
    from training.errors import LabelMatchError
    from training.evaluate import load_onnx

    model = load_onnx(model_path, threads=threads)  # the model's own preprocessing version and geometry
    labels = read_labels(labels_csv)
    refs = [r for r in find_series(data_dir) if any(s in labels for s in r.sop_uids)]
    if not refs:
        raise LabelMatchError("none of the labelled images matches a slice of the DICOM series found")
    ys, ps, slice_ys, slice_ps = [], [], [], []
    for ref in refs:
        probs, study, _ = model.predict(ref.read_hu(), ref.geometry)
        keep = np.array([s in labels for s in ref.sop_uids])
        slice_y = np.stack([labels[s] for s in ref.sop_uids if s in labels])
        ys.append(slice_y.max(axis=0))
        ps.append(study)
        slice_ys.append(slice_y)
        slice_ps.append(probs[keep])
    return np.stack(ys), np.stack(ps), slice_ys, slice_ps


def write_study_thresholds(
    model_path: Path, thresholds: Mapping[str, float], *, policy: str, chosen_on: str, out: Path | None = None
) -> Path:
    """Rewrite only the metadata (``study_thresholds``, ``study_threshold_policy``) of an ONNX model;
    the graph and weights are kept byte for byte."""
    from training.export import rewrite_metadata

    return rewrite_metadata(
        model_path,
        {
            "study_thresholds": {c: float(thresholds[c]) for c in RSNA_CLASSES},
            "study_threshold_policy": f"{policy}; chosen on {chosen_on}",
        },
        out=out,
    )


def choose_for_model(
    model_path: Path,
    data_dir: Path,
    labels_csv: Path,
    *,
    sensitivity: float = STUDY_SENSITIVITY,
    write: bool = False,
    chosen_on: str = "",
    threads: int = 2,
    slice_policy: str | None = None,
    slice_sensitivity: float = 0.95,
) -> dict[str, Any]:
    """Choose study thresholds for an exported model on the studies under ``data_dir``; report the
    operating point there (and under the model's current study thresholds, if any). With
    ``slice_policy`` (``training.metrics`` policies) also choose the slice thresholds on the same studies'
    labelled slices (so that both come from fresh validation studies rather than the training split)."""
    from training.export import read_metadata, rewrite_metadata
    from training.metrics import choose_thresholds, evaluate_predictions, threshold_policy_text

    y, p, slice_y, slice_p = onnx_predictions(model_path, data_dir, labels_csv, threads=threads)
    meta = read_metadata(model_path)
    where = chosen_on or f"{len(y)} validation studies"
    if slice_policy is not None:
        slice_thr = choose_thresholds(slice_y, slice_p, slice_sensitivity, slice_policy)
        at = evaluate_predictions(slice_y, slice_p, list(p), slice_thr)["at_thresholds"]
        if write:
            rewrite_metadata(
                model_path,
                {
                    "thresholds": slice_thr,
                    "threshold_policy": threshold_policy_text(slice_policy, slice_sensitivity)
                    + f"; chosen on {where}",
                },
            )
            meta["thresholds"] = slice_thr
    chosen, rules = choose_study_thresholds_detail(y, p, sensitivity)
    report: dict[str, Any] = {
        "study_thresholds": chosen,
        "study_threshold_rules": rules,
        "at_chosen": study_operating_point(y, p, chosen),
        "at_slice_thresholds": study_operating_point(y, p, meta["thresholds"]),
        "target": {"sensitivity": sensitivity, "normal_unflagged_share": NORMAL_UNFLAGGED_TARGET},
    }
    if slice_policy is not None:
        report["slice_thresholds"] = slice_thr
        report["slice_at_thresholds"] = at
    if "study_thresholds" in meta:
        report["at_current_study_thresholds"] = study_operating_point(y, p, meta["study_thresholds"])
    if write:
        write_study_thresholds(
            model_path,
            chosen,
            policy=STUDY_POLICY_TEXT.format(sens=sensitivity),
            chosen_on=where,
        )
    return report


def evaluate_study_thresholds(
    model_path: Path,
    data_dir: Path,
    labels_csv: Path,
    thresholds_sets: Mapping[str, Mapping[str, float]],
    *,
    threads: int = 2,
) -> dict[str, Any]:
    """Operating points of several threshold sets on the same (held-out) studies."""
    y, p = onnx_study_predictions(model_path, data_dir, labels_csv, threads=threads)
    return {name: study_operating_point(y, p, thr) for name, thr in thresholds_sets.items()}


def validation_study_thresholds(
    study_labels: Sequence[np.ndarray],
    study_probs: Sequence[np.ndarray],
    sensitivity: float = STUDY_SENSITIVITY,
) -> tuple[dict[str, float], dict[str, Any]]:
    """For a checkpoint: thresholds from per-study slice labels (S, K) and study probabilities (K,)."""
    y = np.stack([lab.max(axis=0) for lab in study_labels])
    p = np.stack(study_probs)
    chosen = choose_study_thresholds(y, p, sensitivity)
    return chosen, study_operating_point(y, p, chosen)
