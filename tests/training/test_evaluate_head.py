"""Validation/test metrics and thresholds in training use labelled slices only (as ``training.evaluate``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.dataset import StudyItem
from training.metrics import choose_thresholds, evaluate_predictions
from training.model import ModelConfig, SequenceHead
from training.train import evaluate_head
from viewer.core.constants import RSNA_CLASSES

K = len(RSNA_CLASSES)


def _item(key: str, labels: np.ndarray, mask: np.ndarray) -> StudyItem:
    return StudyItem(key, key, labels.astype(np.float32), mask.astype(np.float32), Path("unused.npz"))


def test_unlabelled_slices_are_not_scored_as_negatives() -> None:
    torch.manual_seed(0)
    head = SequenceHead(ModelConfig(use_gru=False, embed_dim=8)).eval()
    rng = np.random.default_rng(0)
    items, embeds = [], {}
    for n in range(4):
        s = 10
        labels = np.zeros((s, K), np.float32)
        labels[2 + n : 5 + n, :] = 1.0
        mask = np.ones(s, np.float32)
        mask[6:] = 0.0  # the last slices carry no labels (their zero rows are not "negative")
        items.append(_item(f"s{n}", labels, mask))
        embeds[f"s{n}"] = torch.from_numpy(rng.normal(size=(s, 8)).astype(np.float32))

    got = evaluate_head(head, embeds, items, items, policy="triage-f1", sensitivity=0.95)

    with torch.no_grad():
        probs = [torch.sigmoid(head(embeds[i.key][None])[0][0]).numpy() for i in items]
        study = [torch.sigmoid(head(embeds[i.key][None])[1][0]).numpy() for i in items]
    keep = [i.mask > 0.5 for i in items]
    ys = [i.labels[k] for i, k in zip(items, keep)]
    ps = [p[k] for p, k in zip(probs, keep)]
    thr = choose_thresholds(ys, ps, 0.95, "triage-f1")
    assert got["thresholds"] == thr
    expected = evaluate_predictions(ys, ps, study, thr)
    for key in ("n_slices", "weighted_log_loss", "slice_auc", "at_thresholds", "slice_prevalence"):
        assert got["test"][key] == expected[key]  # (study AUC is NaN here: every study is positive)
    assert got["test"]["n_slices"] == 4 * 6
    # counting the unlabelled rows as negatives would change the metrics
    naive = evaluate_predictions([i.labels for i in items], probs, study, thr)
    assert naive["n_slices"] == 4 * 10
    assert naive["weighted_log_loss"] != got["test"]["weighted_log_loss"]
