"""Evaluation in plain numpy: rank-based ROC-AUC (ties handled), RSNA weighted log loss, thresholds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from viewer.core.constants import RSNA_CLASS_WEIGHTS, RSNA_CLASSES


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney ROC-AUC with average ranks for ties; NaN when only one class is present."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average rank of each run of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of positions start..end-1
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def weighted_log_loss(y_true: np.ndarray, prob: np.ndarray, eps: float = 1e-7) -> float:
    """RSNA 2019 metric: mean over rows of sum_k w_k * BCE_k / sum_k w_k (w_any = 2)."""
    y = np.asarray(y_true, dtype=np.float64).reshape(-1, len(RSNA_CLASSES))
    p = np.clip(np.asarray(prob, dtype=np.float64).reshape(-1, len(RSNA_CLASSES)), eps, 1 - eps)
    w = np.asarray(RSNA_CLASS_WEIGHTS, dtype=np.float64)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(((bce * w).sum(axis=1) / w.sum()).mean())


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, bins: int = 15) -> float:
    """ECE: the count-weighted mean |observed frequency - mean probability| over equal-width bins."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if len(y) == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y, minlength=bins)
    used = count > 0
    return float(np.abs(sum_y[used] - sum_p[used]).sum() / len(y))


def sensitivity_at_specificity(y_true: np.ndarray, score: np.ndarray, specificity: float) -> float:
    """Highest sensitivity at a threshold whose specificity is at least ``specificity``."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if not y.any() or y.all():
        return float("nan")
    neg = np.sort(s[~y])
    k = int(np.ceil(specificity * len(neg)))  # at least k negatives strictly below the threshold
    t = neg[k - 1] if k >= 1 else -np.inf
    return float((s[y] > t).mean())


def threshold_for_sensitivity(y_true: np.ndarray, score: np.ndarray, sensitivity: float = 0.95) -> float:
    """Highest threshold with sensitivity (``score >= t``) >= ``sensitivity``; 0.5 without positives."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    pos = np.sort(s[y])[::-1]
    if len(pos) == 0:
        return 0.5
    k = int(np.ceil(sensitivity * len(pos)))  # need at least k positives at or above t
    return float(pos[max(k, 1) - 1])


def evaluate_predictions(
    slice_labels: Sequence[np.ndarray],
    slice_probs: Sequence[np.ndarray],
    study_probs: Sequence[np.ndarray],
    thresholds: dict[str, float] | None = None,
) -> dict[str, object]:
    """Per-class slice AUC, study AUC, weighted log loss and, with thresholds, sensitivity/specificity."""
    y = np.concatenate(slice_labels)
    p = np.concatenate(slice_probs)
    ys = np.stack([lab.max(axis=0) for lab in slice_labels])
    ps = np.stack(study_probs)
    out: dict[str, object] = {
        "n_studies": len(slice_labels),
        "n_slices": len(y),
        "weighted_log_loss": round(weighted_log_loss(y, p), 5),
        "slice_auc": {c: round(roc_auc(y[:, k], p[:, k]), 5) for k, c in enumerate(RSNA_CLASSES)},
        "study_auc": {c: round(roc_auc(ys[:, k], ps[:, k]), 5) for k, c in enumerate(RSNA_CLASSES)},
        "slice_prevalence": {c: round(float(y[:, k].mean()), 4) for k, c in enumerate(RSNA_CLASSES)},
        "slice_ece": {
            c: round(expected_calibration_error(y[:, k], p[:, k]), 5) for k, c in enumerate(RSNA_CLASSES)
        },
        "slice_sensitivity_at_specificity_0.97": {
            c: round(sensitivity_at_specificity(y[:, k], p[:, k], 0.97), 5)
            for k, c in enumerate(RSNA_CLASSES)
        },
    }
    if thresholds:
        ops: dict[str, dict[str, float]] = {}
        for k, c in enumerate(RSNA_CLASSES):
            pred = p[:, k] >= thresholds[c]
            pos, neg = y[:, k] > 0.5, y[:, k] <= 0.5
            ops[c] = {
                "sensitivity": round(float(pred[pos].mean()) if pos.any() else float("nan"), 4),
                "specificity": round(float((~pred[neg]).mean()) if neg.any() else float("nan"), 4),
            }
        out["at_thresholds"] = ops
    return out


# Threshold policies (TrainConfig.threshold_policy, ``slicewise-train thresholds --policy``), all on the
# validation split's slices:
#   "triage-f1"     (default; the CLI alias "triage") ``any`` -- the triage class -- at the highest
#                   threshold with sensitivity >= ``sensitivity``; each subtype at the threshold that
#                   maximises F1 (ties -> the higher threshold). F1 weighs false positives against true
#                   positives, so a rare subtype that the model confuses with a common one (epidural vs
#                   subdural) is not flagged on most slices of the common one (model 0.1.2).
#   "triage-youden" ``any`` as above; each subtype at the Youden-J maximum (sensitivity + specificity - 1;
#                   ties -> the higher threshold). J ignores prevalence: model 0.1.1's epidural threshold
#                   flagged ~2 false positives per true positive. Checkpoints written before 0.1.2 recorded
#                   this policy as "triage" (see ``checkpoint_policy_name``).
#   "sensitivity"   every class at the highest threshold with sensitivity >= ``sensitivity`` (model 0.1.0;
#                   gives near-zero thresholds, i.e. many false positives, for the weak subtypes).
#   "youden"        every class, ``any`` included, at the Youden-J maximum.
# Checkpoints and reports always record the canonical name (never the alias "triage").
THRESHOLD_POLICIES: tuple[str, ...] = ("triage-f1", "triage-youden", "sensitivity", "youden")
DEFAULT_THRESHOLD_POLICY = "triage-f1"
POLICY_ALIASES: dict[str, str] = {"triage": DEFAULT_THRESHOLD_POLICY}
POLICY_CHOICES: tuple[str, ...] = ("triage", *THRESHOLD_POLICIES)  # what the CLI accepts
# what a checkpoint's recorded name meant when it was written ("triage" = subtypes at Youden, until 0.1.1)
LEGACY_CHECKPOINT_POLICIES: dict[str, str] = {"triage": "triage-youden"}


def canonical_policy(name: str) -> str:
    """A user-given policy name (CLI, TrainConfig) -> its canonical name; ValueError if unknown."""
    canon = POLICY_ALIASES.get(name, name)
    if canon not in THRESHOLD_POLICIES:
        raise ValueError(f"unknown threshold policy {name!r}; choose one of {', '.join(POLICY_CHOICES)}")
    return canon


def checkpoint_policy_name(recorded: str) -> str:
    """The policy a checkpoint recorded -> its canonical name (old "triage" = today's "triage-youden")."""
    return LEGACY_CHECKPOINT_POLICIES.get(recorded, recorded)


def _cumulative_counts(
    y_true: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int] | None:
    """Candidate thresholds (observed scores, descending, one per run of ties) with TP and FP counts
    of ``score >= t`` at each, plus the positive and negative totals; None without both classes."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(-s, kind="mergesort")  # descending
    s_desc, y_desc = s[order], y[order]
    tp = np.cumsum(y_desc).astype(np.int64)
    fp = np.cumsum(~y_desc).astype(np.int64)
    # predictions at t = s_desc[i] include every score >= t: take the last index of each run of ties
    last = np.concatenate([np.flatnonzero(np.diff(s_desc) != 0), [len(s_desc) - 1]])
    return s_desc[last], tp[last], fp[last], n_pos, n_neg


def threshold_youden(y_true: np.ndarray, score: np.ndarray) -> float:
    """Threshold (``score >= t``) maximising Youden's J = sensitivity + specificity - 1.

    Candidates are the observed scores; J is compared exactly (as ``TP * N - FP * P``, integers), and
    among equal J the higher threshold wins. 0.5 when positives or negatives are absent.
    """
    counts = _cumulative_counts(y_true, score)
    if counts is None:
        return 0.5
    thresholds, tp, fp, n_pos, n_neg = counts
    j_scaled = tp * n_neg - fp * n_pos  # J * P * N
    return float(thresholds[int(np.argmax(j_scaled))])  # first maximum = the highest threshold


def threshold_f1(y_true: np.ndarray, score: np.ndarray) -> float:
    """Threshold (``score >= t``) maximising F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (TP + FP + P).

    Candidates are the observed scores; among equal F1 the higher threshold wins. F1 is a ratio of
    integers below 2**53, so equal ratios give bit-identical float64 quotients (IEEE division is
    correctly rounded) and distinct ones stay distinct. 0.5 when positives or negatives are absent
    (as ``threshold_youden``).
    """
    counts = _cumulative_counts(y_true, score)
    if counts is None:
        return 0.5
    thresholds, tp, fp, n_pos, _ = counts
    f1 = (2 * tp).astype(np.float64) / (tp + fp + n_pos).astype(np.float64)
    return float(thresholds[int(np.argmax(f1))])  # first maximum = the highest threshold


def f1_optimum_gap(y_true: np.ndarray, score: np.ndarray) -> tuple[float, float | None] | None:
    """The score gap in which every threshold attains the F1 maximum: (lowest score flagged, highest score
    left unflagged; None when every score is flagged), or None when positives or negatives are absent.

    Among equal F1 maxima the LOWER threshold wins (more positives found at the same F1: a triage tool).
    Any threshold in ``(unflagged, flagged]`` gives the same counts; ``threshold_f1`` returns the top edge.
    """
    counts = _cumulative_counts(y_true, score)
    if counts is None:
        return None
    thresholds, tp, fp, n_pos, _ = counts
    f1 = (2 * tp).astype(np.float64) / (tp + fp + n_pos).astype(np.float64)
    i = int(np.flatnonzero(f1 == f1.max())[-1])  # candidates descend: the last maximum is the lowest
    below = float(thresholds[i + 1]) if i + 1 < len(thresholds) else None
    return float(thresholds[i]), below


def threshold_policy_text(policy: str, sensitivity: float) -> str:
    """Human-readable policy, as written into the ONNX metadata ``threshold_policy`` and the card."""
    sens = f"the highest threshold with slice-level sensitivity >= {sensitivity:.2f} on the validation split"
    youden = (
        "the threshold maximising Youden's J (sensitivity + specificity - 1) on the validation slices "
        "(ties: the higher threshold)"
    )
    f1 = (
        "the threshold maximising F1 (2 TP / (2 TP + FP + FN), i.e. precision-aware) on the validation "
        "slices (ties: the higher threshold)"
    )
    canon = canonical_policy(policy)
    if canon == "triage-f1":
        return f"`any` (triage): {sens}; each subtype: {f1}"
    if canon == "triage-youden":
        return f"`any` (triage): {sens}; each subtype: {youden}"
    if canon == "sensitivity":
        return f"per class, {sens}"
    return f"per class, {youden}"


def choose_thresholds(
    slice_labels: Sequence[np.ndarray],
    slice_probs: Sequence[np.ndarray],
    sensitivity: float = 0.95,
    policy: str = DEFAULT_THRESHOLD_POLICY,
) -> dict[str, float]:
    """Per-class thresholds on validation slices under ``policy`` (see ``THRESHOLD_POLICIES``; the alias
    "triage" is accepted)."""
    canon = canonical_policy(policy)
    y = np.concatenate(slice_labels)
    p = np.concatenate(slice_probs)
    out: dict[str, float] = {}
    for k, c in enumerate(RSNA_CLASSES):
        triage = canon in ("triage-f1", "triage-youden")
        if canon == "sensitivity" or (triage and c == "any"):
            t = threshold_for_sensitivity(y[:, k], p[:, k], sensitivity)
        elif canon == "triage-f1":
            t = threshold_f1(y[:, k], p[:, k])
        else:
            t = threshold_youden(y[:, k], p[:, k])
        out[c] = math.floor(t * 1e6) / 1e6  # 6 decimals, rounded down: the chosen slices stay flagged
    return out
