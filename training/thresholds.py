"""Re-choose the thresholds of a finished checkpoint without retraining (``slicewise-train thresholds``).

The checkpoint's own ``train_config`` (data, labels, cache, size, seed, split fractions) rebuilds the
exact split training used (``training.train.build_split``); the network's embeddings and head give the
validation and test predictions as at the end of training (``embed_all`` + ``training.train.evaluate_head``),
so the new thresholds are the ones a training run with the new policy would have chosen. The checkpoint
gets the new ``thresholds``, test ``metrics`` and ``val_metrics``, its ``train_config`` the policy, and a
``threshold_history`` entry with the previous thresholds; ``metrics.json`` beside the written checkpoint
(the run report), when present, gets the new entry for this variant. Then re-export it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from training.metrics import canonical_policy, checkpoint_policy_name
from training.study_thresholds import STUDY_POLICY_TEXT, validation_study_thresholds
from training.train import (
    Dist,
    TrainConfig,
    build_split,
    embed_all,
    evaluate_head,
    load_checkpoint,
    model_from_checkpoint,
    predict_from_embeddings,
    save_checkpoint,
)

log = logging.getLogger(__name__)

LEGACY_POLICY = "sensitivity"  # checkpoints written before threshold_policy existed used this rule


def checkpoint_policy(ckpt: dict[str, Any]) -> tuple[str, float]:
    """(canonical policy, sensitivity) the checkpoint's thresholds were chosen with; a pre-0.1.2
    checkpoint's "triage" is today's "triage-youden"."""
    tc = ckpt.get("train_config") or {}
    recorded = str(tc.get("threshold_policy", LEGACY_POLICY))
    return checkpoint_policy_name(recorded), float(tc.get("sensitivity", 0.95))


def recompute_thresholds(
    ckpt_path: Path,
    *,
    policy: str,
    sensitivity: float | None = None,
    out: Path | None = None,
    data: str | None = None,
    labels: str | None = None,
    cache: str | None = None,
    threads: int = 2,
) -> dict[str, Any]:
    """Choose thresholds for ``ckpt_path`` under ``policy``; write the checkpoint to ``out`` (default: in
    place). ``data``/``labels``/``cache`` override the paths recorded in the checkpoint. Returns the
    variant's report entry (``val``, ``test``, ``thresholds``, ``threshold_policy``)."""
    policy = canonical_policy(policy)  # "triage" -> "triage-f1"; the checkpoint records the canonical name
    ckpt_path = Path(ckpt_path)
    out = Path(out) if out is not None else ckpt_path
    ckpt = load_checkpoint(ckpt_path)
    known = {f.name for f in fields(TrainConfig)}
    tc = {k: v for k, v in (ckpt.get("train_config") or {}).items() if k in known}
    if not tc.get("data") or not tc.get("labels"):
        raise ValueError(f"{ckpt_path.name} records no training data/labels; pass --data and --labels")
    tc["threshold_policy"] = policy  # the recorded one may be a legacy name
    cfg = TrainConfig(**tc)
    for name, value in (("data", data), ("labels", labels), ("cache", cache)):
        if value is not None:
            setattr(cfg, name, value)
    if not cfg.cache:  # build_split's default (<out>/cache) would point at the run directory
        cfg.cache = str(ckpt_path.parent / "cache")
    sens = float(sensitivity) if sensitivity is not None else cfg.sensitivity
    torch.set_num_threads(max(1, threads))

    _, train_items, val_items, test_items = build_split(cfg)
    split = ckpt.get("split") or {}
    got = {"train": len(train_items), "val": len(val_items), "test": len(test_items)}
    if split and any(int(split.get(k, -1)) != v for k, v in got.items()):
        raise ValueError(f"the rebuilt split {got} differs from the checkpoint's {split}: wrong data?")

    net = model_from_checkpoint(ckpt)
    eval_items = [*val_items, *test_items]
    embeds = dict(zip([i.key for i in eval_items], embed_all(net, [i.load() for i in eval_items], Dist())))
    entry = evaluate_head(net.head, embeds, val_items, test_items, policy=policy, sensitivity=sens)
    # study thresholds: at study level on the same validation studies, separately from the slice ones
    _, val_study = predict_from_embeddings(net.head, [embeds[i.key] for i in val_items])
    val_labels = [i.labels[i.mask > 0.5] for i in val_items]  # labelled slices only, as for the slices
    study_thr, study_op = validation_study_thresholds(val_labels, val_study)
    entry["study_thresholds"] = study_thr
    entry["val_study_operating_point"] = study_op

    old_policy, old_sens = checkpoint_policy(ckpt)
    history = list(ckpt.get("threshold_history") or [])
    history.append(
        {"threshold_policy": old_policy, "sensitivity": old_sens, "thresholds": ckpt.get("thresholds") or {}}
    )
    ckpt["threshold_history"] = history
    ckpt["thresholds"] = entry["thresholds"]
    ckpt["study_thresholds"] = entry["study_thresholds"]
    ckpt["study_threshold_policy"] = STUDY_POLICY_TEXT.format(sens=0.95) + "; chosen on the validation split"
    ckpt["metrics"] = entry["test"]
    ckpt["val_metrics"] = entry["val"]
    tc_new = {**(ckpt.get("train_config") or {}), "threshold_policy": policy, "sensitivity": sens}
    ckpt["train_config"] = tc_new
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, ckpt)

    report_path = out.parent / "metrics.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        tag = "cnn_gru" if ckpt["model_config"].get("use_gru", True) else "cnn_only"
        report[tag] = {**report.get(tag, {}), **entry}
        report_path.write_text(json.dumps(report, indent=2))
    log.info("thresholds (%s): %s", policy, entry["thresholds"])
    return entry
