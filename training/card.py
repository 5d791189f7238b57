"""Write MODEL_CARD.md from a run's metrics.json, the exported model's metadata and a shift evaluation.

``slicewise-train card RUN_DIR --model M.onnx --shifts shifts.json --out MODEL_CARD.md``: everything
in the card is read from those files (nothing hand-typed), with the CNN-only ablation beside the
CNN-GRU on the same split and on every shift, and the issue-10 targets marked met or not met.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from viewer.core.constants import RSNA_CLASSES

SUBTYPES = RSNA_CLASSES[1:]


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return f"{v:.{digits}f}"


def _ok(flag: bool | None) -> str:
    return "n/a" if flag is None else ("met" if flag else "**not met**")


def _ge(v: float | None, t: float) -> bool | None:
    return None if v is None or v != v else v >= t


def _le(v: float | None, t: float) -> bool | None:
    return None if v is None or v != v else v <= t


def _split_table(report: dict[str, Any]) -> list[str]:
    a, b = report["cnn_only"]["test"], report["cnn_gru"]["test"]
    rows = [
        "| Metric (test split) | CNN only (ablation) | CNN + BiGRU |",
        "|---|---|---|",
        f"| RSNA weighted log loss | {_fmt(a['weighted_log_loss'], 4)} | {_fmt(b['weighted_log_loss'], 4)} |",
    ]
    for c in RSNA_CLASSES:
        rows.append(f"| slice ROC-AUC `{c}` | {_fmt(a['slice_auc'][c])} | {_fmt(b['slice_auc'][c])} |")
    for c in RSNA_CLASSES:
        rows.append(f"| study ROC-AUC `{c}` | {_fmt(a['study_auc'][c])} | {_fmt(b['study_auc'][c])} |")
    for c in ("any", "epidural", "subdural"):
        ka = a.get("slice_sensitivity_at_specificity_0.97", {}).get(c)
        kb = b.get("slice_sensitivity_at_specificity_0.97", {}).get(c)
        rows.append(f"| slice sensitivity at specificity 0.97 `{c}` | {_fmt(ka)} | {_fmt(kb)} |")
    rows.append(
        f"| ECE `any` (15 bins) | {_fmt(a.get('slice_ece', {}).get('any'), 4)} | "
        f"{_fmt(b.get('slice_ece', {}).get('any'), 4)} |"
    )
    return rows


def _shift_table(shifts: dict[str, Any]) -> list[str]:
    names = list(next(iter(shifts["shifts"].values())))
    head = "| shift | " + " | ".join(f"{n}: AUC any / wLL / ECE any / study AUC any" for n in names) + " |"
    rows = [head, "|---" * (len(names) + 1) + "|"]
    for shift, per_model in shifts["shifts"].items():
        cells = []
        for n in names:
            s = per_model[n]["summary"]
            cells.append(
                f"{_fmt(s['auc_any'])} / {_fmt(s['weighted_log_loss'], 4)} / {_fmt(s['ece_any'], 4)} / "
                f"{_fmt(s['study_auc_any'])}"
            )
        rows.append(f"| {shift} | " + " | ".join(cells) + " |")
    return rows


def targets(shifts: dict[str, Any], model: str = "model", ablation: str | None = "cnn_only") -> list[str]:
    """The issue-10 item-6 targets on the fresh held-out studies of the shift evaluation ('none')."""
    per = shifts["shifts"]
    clean = per["none"][model]["metrics"]
    auc = clean["slice_auc"]
    sens = clean.get("slice_sensitivity_at_specificity_0.97", {})
    rows = ["| Target (fresh held-out synthetic studies) | measured | |", "|---|---|---|"]
    rows.append(f"| slice `any` AUC >= 0.98 | {_fmt(auc['any'])} | {_ok(_ge(auc['any'], 0.98))} |")
    sub = [auc[c] for c in SUBTYPES]
    worst = None if any(v is None or v != v for v in sub) else min(sub)
    rows.append(f"| every subtype slice AUC >= 0.97 | min {_fmt(worst)} | {_ok(_ge(worst, 0.97))} |")
    for c in ("subdural", "epidural"):
        v = sens.get(c)
        rows.append(
            f"| {c} slice sensitivity >= 0.80 at specificity >= 0.97 | {_fmt(v)} | {_ok(_ge(v, 0.80))} |"
        )
    ece = clean["slice_ece"]["any"]
    rows.append(f"| ECE(`any`) <= 0.02 | {_fmt(ece, 4)} | {_ok(_le(ece, 0.02))} |")
    base_auc = auc["any"]
    for shift, entry in per.items():
        if shift == "none":
            continue
        s = entry[model]["summary"]
        if s["auc_any"] is None or base_auc is None:
            good, delta = None, "n/a"
        else:
            good = bool(_ge(s["auc_any"], base_auc - 0.01) and _le(s["ece_any"], 0.03))
            delta = f"{s['auc_any'] - base_auc:+.3f}"
        rows.append(
            f"| shift `{shift}`: AUC(any) within 0.01 of no shift, ECE <= 0.03 | "
            f"{_fmt(s['auc_any'])} ({delta}), ECE {_fmt(s['ece_any'], 4)} | {_ok(good)} |"
        )
    if ablation and ablation in per["none"]:
        a = per["none"][ablation]["summary"]
        g = per["none"][model]["summary"]
        rows.append(
            f"| CNN-GRU beats CNN-only on weighted log loss | {_fmt(g['weighted_log_loss'], 4)} vs "
            f"{_fmt(a['weighted_log_loss'], 4)} | {_ok(g['weighted_log_loss'] < a['weighted_log_loss'])} |"
        )
        ga, aa = g["study_auc_any"], a["study_auc_any"]
        better = None if ga is None or aa is None or ga != ga or aa != aa else ga > aa
        rows.append(
            f"| CNN-GRU beats CNN-only on study-level AUC(any) | {_fmt(ga)} vs {_fmt(aa)} | {_ok(better)} |"
        )
    return rows


def maps_section(meta: dict[str, Any], evaluation: dict[str, Any] | None) -> list[str]:
    """The card's section on the localisation maps (metadata ``maps`` and its ``metrics.maps``, and a
    ``slicewise-train maps-eval`` result), with the issue-11 targets marked met or not met."""
    spec = meta.get("maps")
    if not spec:
        return []
    trained = (meta.get("metrics") or {}).get("maps") or {}
    thr = spec["thresholds"]
    lines = [
        "## Localisation maps and bleed volume (contract version 2)",
        f"- Output `{spec['output']}` [batch, slices, {len(spec['classes'])}, {spec['size']}, "
        f"{spec['size']}]: per-subtype probability maps ({', '.join(spec['classes'])}) on the model's "
        f"input grid at {spec['size']} px, post-sigmoid. A pixel belongs to a class at or above its "
        "map threshold: "
        + ", ".join(f"{c} {thr[c]:.2f}" for c in spec["classes"])
        + f" ({spec.get('thresholds_chosen_on', 'chosen per class for the best Dice on validation')}).",
        "- A light decoder on the frozen CNN's feature maps (training/maps.py); the CNN and the GRU are "
        "the base model's, unchanged, so `slice_probs` and `study_probs` and every figure above still hold.",
        "- Shown only for flagged classes: the viewer, `predict` and the AI SR / SEG give no voxels and no "
        "volume for a class the classifier does not flag (no study decision, no slice at its threshold), "
        "and `any` is the union of the flagged classes' maps; `maps-eval` measures every class's maps, "
        "flagged or not.",
    ]
    if spec.get("trained"):
        lines.append(f"- Decoder training: {spec['trained']}.")
    if trained:
        lines.append(
            f"- Last training run: {trained.get('train_studies', '')}; {trained.get('train_slices')} "
            f"training slices, {trained.get('epochs')} epochs, {trained.get('decoder_parameters')} "
            "parameters, "
            f"{trained.get('train_s', 0) / 60:.1f} min of training after "
            f"{trained.get('data_s', 0) / 60:.1f} min of data (shared 2-core CPU, 2 threads); outputs "
            "unchanged versus the base model: max abs diff "
            f"{_fmt(trained.get('unchanged_vs_base_max_abs_diff'), 2)}; ONNX Runtime vs PyTorch "
            f"{_fmt(trained.get('parity_max_abs_diff'), 7)}."
        )
    if not evaluation:
        return [*lines, ""]
    dice = evaluation["dice_lesion_slices"]
    strict = evaluation["dice_lesion_or_predicted_slices"]
    peak = evaluation["peak_inside_lesion"]
    vol = evaluation["volume_error"]
    lines += [
        "",
        f"Fresh held-out studies ({evaluation['studies']}: standard and noisy, seed {evaluation['seed']}), "
        "written as DICOM and run through the viewer's engine (`slicewise-train maps-eval`):",
        "",
        "| Class | Dice on lesion slices | Dice incl. false-positive slices | map peak inside the lesion "
        "(flagged TP slices) | volume median abs. error (pairs >= 1 mL) |",
        "|---|---|---|---|---|",
    ]
    for c in ("any", *spec["classes"]):
        v = vol.get(c, {})
        lines.append(
            f"| {c} | {_fmt(dice.get(c))} | {_fmt(strict.get(c))} | "
            + (
                f"{_fmt(peak.get(c))} ({evaluation['flagged_tp_slices'].get(c, 0)})"
                if c in peak
                else "—"
            )
            + f" | {_fmt(v.get('median_abs_pct'), 1)} % ({v.get('pairs_ge_1ml', 0)}) |"
        )
    dice_ok = all(d is not None and d >= 0.6 for d in dice.values())
    peak_all = evaluation.get("peak_inside_lesion_all")
    vol_ok = all(
        v.get("median_abs_pct") is not None and v["median_abs_pct"] <= 20.0
        for c, v in vol.items()
        if v.get("pairs_ge_1ml")
    )
    worst = min((d for d in dice.values() if d is not None), default=None)
    errors = [f"{c} {_fmt(v.get('median_abs_pct'), 1)} %" for c, v in vol.items() if v.get("pairs_ge_1ml")]
    lines += [
        "",
        "| Target (issue 11) | measured | |",
        "|---|---|---|",
        f"| Dice >= 0.6 per subtype on lesion slices | min {_fmt(worst)} | {_ok(dice_ok)} |",
        f"| map maximum inside the lesion on >= 90 % of flagged TP slices | {_fmt(peak_all)} | "
        f"{_ok(_ge(peak_all, 0.9))} |",
        f"| volume median absolute error <= 20 % per class | {', '.join(errors)} | {_ok(vol_ok)} |",
        "",
    ]
    return lines


def write_card(
    run_dir: Path,
    onnx_path: Path,
    out: Path,
    *,
    shifts_path: Path | None = None,
    maps_path: Path | None = None,
    commands: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> Path:
    from training.export import read_metadata

    report = json.loads((Path(run_dir) / "metrics.json").read_text())
    meta = read_metadata(onnx_path)
    shifts = json.loads(Path(shifts_path).read_text()) if shifts_path else None
    split = report["split"]
    pre = meta.get("preprocessing") or {"version": 1}
    cal = meta.get("calibration") or {}
    exporter = meta.get("exporter", {})
    thr = meta["thresholds"]
    lines = [
        "# Slicewise ICH model card (`slicewise_ich.onnx`)",
        "",
        "**Research use only; not for clinical use.** Trained on synthetic data only; it has never seen a",
        "real patient's CT and its numbers say nothing about performance on real scans.",
        "",
        "## What it is",
        f"- `{meta['model_name']}` {meta['model_version']}: one ONNX file "
        f"({onnx_path.stat().st_size / 1e6:.2f} MB), opset {exporter.get('opset', 17)}, legacy exporter "
        f"(dynamo=False); {exporter.get('architecture', '')}.",
        "- Per-slice multi-label intracranial haemorrhage (`any` + 5 subtypes) and a study score per class;",
        "  architecture in `training/model.py` (residual 2D CNN per slice -> neighbour differences ->",
        "  2-layer BiGRU -> per-slice head residual on the CNN feature; study head on max/mean pooling).",
        f"- Input {meta['input_size']} px, windows "
        + ", ".join(f"{w['width']:g}/{w['level']:g}" for w in meta["windows"])
        + f" (width/level). Preprocessing version {pre['version']}: {meta['normalization']}.",
        *(
            [
                f"  Grid {pre['field_mm']:g} mm ({pre['field_mm'] / pre['size']:.3f} mm/px), "
                f"slab {pre['slab_mm']:g} mm, head threshold {pre['head_threshold_hu']:g} HU."
            ]
            if pre["version"] >= 2
            else []
        ),
        *(
            [
                "- Calibration: per-class temperature scaling inside the graph (logits / T before the "
                f"sigmoid), fitted on the {cal.get('fitted_on', 'validation split')}; slice T "
                + ", ".join(f"{c} {t:.2f}" for c, t in cal.get("temperatures", {}).items())
                + "."
            ]
            if cal
            else []
        ),
        *(
            ["- Trained range (`trained_range`): " + json.dumps(meta["trained_range"])]
            if meta.get("trained_range")
            else []
        ),
        "",
        "## Training",
        f"- {meta['train_data']}; split by patient (seed {split['seed']}): {split['train']} train / "
        f"{split['val']} validation / {split['test']} test studies "
        f"({split['train_slices']} training slices).",
        f"- Wall time {report['train_wall_s'] / 60:.1f} min (preprocessing included).",
        "",
        "## Test split (same split for both variants)",
        "",
        *_split_table(report),
        "",
        f"Slice thresholds ({meta['threshold_policy']}): "
        + ", ".join(f"{c} {thr[c]:.3f}" for c in RSNA_CLASSES)
        + ".",
        *(
            [
                "Study thresholds (`study_thresholds`): "
                + ", ".join(f"{c} {v:.3f}" for c, v in meta["study_thresholds"].items())
                + "."
            ]
            if meta.get("study_thresholds")
            else ["No `study_thresholds` in this model's metadata."]
        ),
        "",
    ]
    if shifts:
        lines += [
            f"## Fresh held-out studies and acquisition shifts ({shifts['studies']} studies per shift, seed "
            f"{shifts['seed']}, never used in training; paired across shifts)",
            "",
            "Each shift sets one factor of `training.synth.SynthConfig` to its strongest value "
            "(`training.synth.SHIFTS`); run through ONNX Runtime with the model's own preprocessing "
            "(`slicewise-train evaluate --shift`).",
            "",
            *_shift_table(shifts),
            "",
            "## Targets (issue 10, item 6)",
            "",
            *targets(shifts),
            "",
        ]
    lines += maps_section(meta, json.loads(Path(maps_path).read_text()) if maps_path else None)
    lines += [
        "## Limits",
        "- Synthetic data only (simplified anatomy and lesion shapes); expect it to fail on real CT.",
        "- Thresholds and temperatures were chosen on a synthetic validation split, not for any site.",
        *[f"- {n}" for n in notes],
        "",
        "## Reproduce",
        "```",
        *commands,
        "```",
        "",
    ]
    out.write_text("\n".join(lines))
    return out
