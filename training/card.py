"""Write MODEL_CARD.md beside an exported model from the run's metrics.json and the model metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from viewer.core.constants import RSNA_CLASSES


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and v != v) else f"{v:.3f}"


def _table(report: dict[str, Any]) -> list[str]:
    rows = [
        "| Metric (held-out synthetic test split) | CNN only (ablation) | CNN + BiGRU (bundled) |",
        "|---|---|---|",
    ]
    a, b = report["cnn_only"]["test"], report["cnn_gru"]["test"]
    rows.append(
        f"| RSNA weighted log loss (slice level, lower is better) | "
        f"{a['weighted_log_loss']:.4f} | {b['weighted_log_loss']:.4f} |"
    )
    for c in RSNA_CLASSES:
        rows.append(f"| slice ROC-AUC `{c}` | {_fmt(a['slice_auc'][c])} | {_fmt(b['slice_auc'][c])} |")
    for c in RSNA_CLASSES:
        rows.append(f"| study ROC-AUC `{c}` | {_fmt(a['study_auc'][c])} | {_fmt(b['study_auc'][c])} |")
    return rows


def _heldout_table(heldout: dict[str, dict[str, Any]]) -> list[str]:
    names = list(heldout)
    rows = ["| Metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    rows.append(
        "| RSNA weighted log loss | "
        + " | ".join(f"{heldout[n]['weighted_log_loss']:.4f}" for n in names)
        + " |"
    )
    for c in RSNA_CLASSES:
        rows.append(
            f"| slice ROC-AUC `{c}` | " + " | ".join(_fmt(heldout[n]["slice_auc"][c]) for n in names) + " |"
        )
    rows.append(
        "| study ROC-AUC `any` | " + " | ".join(_fmt(heldout[n]["study_auc"]["any"]) for n in names) + " |"
    )
    return rows


def write_card(
    run_dir: Path,
    onnx_path: Path,
    out: Path,
    *,
    commands: list[str],
    extra: dict[str, str],
    heldout: dict[str, dict[str, Any]] | None = None,
    heldout_note: str = "",
    wall_time_s: float | None = None,
    limits_extra: list[str] | None = None,
    heldout_bundled: str | None = None,
    thresholds_note: str = "",
) -> Path:
    """``heldout_bundled``: the ``heldout`` entry evaluated with this very model (its thresholds), whose
    sensitivity/specificity join the threshold table; ``thresholds_note``: extra text under that table."""
    report = json.loads((run_dir / "metrics.json").read_text())
    from training.export import read_metadata

    meta = read_metadata(onnx_path)
    gru = report["cnn_gru"]
    thr = meta["thresholds"]
    ops = gru["test"].get("at_thresholds", {})
    held_ops: dict[str, dict[str, float]] = {}
    if heldout and heldout_bundled:
        held_ops = heldout[heldout_bundled].get("at_thresholds") or {}
    split = report["split"]
    wall = wall_time_s or report["train_wall_s"]
    lines = [
        "# Slicewise ICH model card (`slicewise_ich.onnx`)",
        "",
        "**Research use only; not for clinical use.** Trained on synthetic data only; it has never seen a",
        "real patient's CT and its numbers say nothing about performance on real scans.",
        "",
        "## What it is",
        f"- Name/version: `{meta['model_name']}` {meta['model_version']}; one ONNX file "
        f"({onnx_path.stat().st_size / 1e6:.2f} MB), opset 17, legacy exporter (dynamo=False).",
        "- Task: per-slice multi-label intracranial haemorrhage (any + epidural, intraparenchymal,",
        "  intraventricular, subarachnoid, subdural), plus a study-level score per class.",
        "- Architecture (`training/model.py`): a small residual 2D CNN per slice (stem 24 ch, stages",
        "  32/48/64/96, stride 2 each, global average + max pooling -> 128-d embedding); the embedding",
        "  and its differences to the previous/next slice -> Linear(128) -> 2-layer bidirectional GRU",
        "  (hidden 96) -> per-slice head = Linear(CNN feature) + Linear(GRU state) (residual on the CNN",
        "  feature); study head = Linear([max over slices, mean over slices]). ~0.64 M parameters.",
        "- Input `slices` float32 [batch, num_slices, 3, "
        f"{meta['input_size']}, {meta['input_size']}], slices in ascending position along the normal,",
        "  from `viewer.core.preprocess.preprocess_stack`: HU -> square pad with air -> area resize to "
        f"{meta['input_size']} px -> three windows (width/level "
        + ", ".join(f"{w['width']:g}/{w['level']:g}" for w in meta["windows"])
        + ") scaled to [0, 1].",
        f"  **Input size is {meta['input_size']} px** (not the 256 px default) to keep CPU training and",
        "  inference fast; it is recorded in the metadata (`input_size`) and the viewer preprocesses to it.",
        "- Outputs `slice_probs` [batch, num_slices, 6] and `study_probs` [batch, 6], post-sigmoid,",
        f"  class order {', '.join(RSNA_CLASSES)}. Minimum slices: {meta['min_slices']}.",
        "",
        "## Training data",
        f"- {meta['train_data']}.",
        "- Generator `training/synth.py`: 256x256 CT slices, 5 mm, 24-40 slices per study, skull with",
        "  diploe, grey/white matter, sulci, fissure, ventricles, basal ganglia, noise and partial volume;",
        "  ~40 % normal studies; haemorrhages with subtype-typical shape/place/density, ~30 % subtle.",
        f"- Split by patient (seed {split['seed']}): {split['train']} train / {split['val']} validation / "
        f"{split['test']} test studies ({split['train_slices']} training slices).",
        "- Recipe (`training/train.py`): stage 1 trains the CNN with the per-slice head (the CNN-only",
        "  ablation) on random 12-slice windows (random reversal and left-right flip), AdamW, warmup +",
        "  cosine LR, BCE weighted like the RSNA metric (any x2) plus a study loss; stage 2 freezes the CNN",
        "  and trains the GRU head on 32-slice windows of the CNN embeddings (random reversal, embeddings",
        "  of left-right mirrored slices as augmentation). Each stage keeps its epoch with the lowest",
        "  validation weighted log loss. Both variants are evaluated on the same split.",
        f"- Training wall time: {wall / 60:.1f} min on a shared 2-core CPU "
        "(2 torch threads), including preprocessing.",
        "",
        "## Held-out metrics (synthetic test split)",
        "",
        *_table(report),
        "",
        f"Thresholds: {meta['threshold_policy']}.",
        "",
        "`any` is the triage class (few missed bleeds, more false alarms); a subtype's threshold weighs",
        "missed slices against false flags (precision), so that the flagged slices stay meaningful even",
        "for rare subtypes. Slice-level operating points on the test split"
        + (" and on the independent held-out set below:" if held_ops else ":"),
        "",
        "| class | threshold | test sensitivity | test specificity |"
        + (" held-out sensitivity | held-out specificity |" if held_ops else ""),
        "|---|---|---|---|" + ("---|---|" if held_ops else ""),
        *[
            f"| `{c}` | {thr[c]:.3f} | {_fmt(ops.get(c, {}).get('sensitivity'))} | "
            f"{_fmt(ops.get(c, {}).get('specificity'))} |"
            + (
                f" {_fmt(held_ops.get(c, {}).get('sensitivity'))} | "
                f"{_fmt(held_ops.get(c, {}).get('specificity'))} |"
                if held_ops
                else ""
            )
            for c in RSNA_CLASSES
        ],
        "",
        *([thresholds_note, ""] if thresholds_note else []),
        *(
            [
                "## Independent held-out set, evaluated through ONNX Runtime as the viewer runs it",
                "",
                heldout_note,
                "",
                *_heldout_table(heldout),
                "",
            ]
            if heldout
            else []
        ),
        "## Limits",
        "- Synthetic data only: simplified anatomy (ellipsoidal skull, no skull base, orbits, sinuses,",
        "  calcifications, motion or beam-hardening artefacts), lesion shapes from simple formulas.",
        "  Expect it to fail on real CT; it demonstrates the pipeline, not diagnostic skill.",
        "- Thresholds were chosen on a synthetic validation split; they are not calibrated for any site.",
        "- Trained for axial head CT with ~5 mm slices only; other series are out of scope.",
        *[f"- {x}" for x in limits_extra or []],
        "",
        "## Reproduce",
        "```",
        *commands,
        "```",
        *[f"- {k}: {v}" for k, v in extra.items()],
        "",
    ]
    out.write_text("\n".join(lines))
    return out
