"""Evaluate an exported .onnx exactly as the viewer runs it, on DICOM folders or on acquisition shifts.

- :func:`evaluate_onnx`: core loader -> ``viewer.core.preprocess.preprocess`` with the model's own
  ``preprocessing`` metadata and the stack's geometry -> ONNX Runtime, on labelled DICOM studies.
- :func:`evaluate_shifts` (``slicewise-train evaluate --shift NAME[,NAME]``): fresh studies rendered by
  ``training.synth`` under each named shift (``training.synth.SHIFTS``), the same seeds for every shift
  (so the heads and lesions are paired), preprocessed the same way, for one or more models side by side
  (e.g. the CNN-GRU and its CNN-only ablation, or a new model and the bundled one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.dataset import find_series, read_labels
from training.errors import LabelMatchError
from training.metrics import evaluate_predictions
from viewer.core.constants import (
    MODEL_INPUT_NAME,
    MODEL_SLICE_OUTPUT,
    MODEL_STUDY_OUTPUT,
    RSNA_CLASSES,
)
from viewer.core.errors import ModelContractError
from viewer.core.preprocess import PreprocessSpec, SliceGeometry, model_slice_order, preprocess

log = logging.getLogger(__name__)


@dataclass
class OnnxModel:
    """An ONNX Runtime session plus what evaluation needs from the model's metadata."""

    session: Any
    spec: PreprocessSpec
    thresholds: dict[str, float]
    study_thresholds: dict[str, float] = field(default_factory=dict)  # empty: the model records none

    def predict(self, hu: np.ndarray, geometry: SliceGeometry | None) -> tuple[np.ndarray, np.ndarray, float]:
        """(slice_probs (S, K) in the stack's order, study_probs (K,), model seconds)."""
        x = preprocess(hu, self.spec, geometry)
        order = model_slice_order(geometry if self.spec.version >= 2 else None, len(x))
        t0 = time.perf_counter()
        sp, st = self.session.run(
            [MODEL_SLICE_OUTPUT, MODEL_STUDY_OUTPUT], {MODEL_INPUT_NAME: x[order][None]}
        )
        elapsed = time.perf_counter() - t0
        out = np.empty_like(sp[0])
        out[order] = sp[0]
        return out, st[0], elapsed


def load_onnx(model_path: Path, *, threads: int = 2) -> OnnxModel:
    import onnxruntime as ort

    from training.export import read_metadata

    meta = read_metadata(model_path)
    try:
        size = int(meta["input_size"])
        classes = list(meta["class_names"])
        thresholds = {c: float(v) for c, v in meta.get("thresholds", {}).items()}
        study_thresholds = {c: float(v) for c, v in meta.get("study_thresholds", {}).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelContractError(f"model metadata incomplete: {exc}") from exc
    if classes != list(RSNA_CLASSES):
        raise ModelContractError(f"model classes {classes} are not the RSNA classes")
    spec = PreprocessSpec.from_record(meta, size=size)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    return OnnxModel(
        sess,
        spec,
        thresholds if len(thresholds) == len(RSNA_CLASSES) else {},
        study_thresholds if len(study_thresholds) == len(RSNA_CLASSES) else {},
    )


def evaluate_onnx(model_path: Path, data_dir: Path, labels_csv: Path, *, threads: int = 2) -> dict[str, Any]:
    """Metrics of ``model_path`` on every labelled stack under ``data_dir`` (unlabelled slices ignored)."""
    model = load_onnx(model_path, threads=threads)
    labels = read_labels(labels_csv)
    refs = [r for r in find_series(data_dir) if any(s in labels for s in r.sop_uids)]
    if not refs:
        raise LabelMatchError("none of the labelled images matches a slice of the DICOM series found")
    ys, sp, st, times = [], [], [], []
    for ref in refs:
        keep = np.array([s in labels for s in ref.sop_uids])
        slice_probs, study_probs, elapsed = model.predict(ref.read_hu(), ref.geometry)
        times.append(elapsed / max(1, len(keep)))
        ys.append(np.stack([labels[s] for s, k in zip(ref.sop_uids, keep) if k]))
        sp.append(slice_probs[keep])
        st.append(study_probs)
    out = evaluate_predictions(ys, sp, st, model.thresholds or None)
    if model.study_thresholds:  # the study decision at the model's study thresholds (as --shift reports)
        from training.study_thresholds import study_operating_point

        out["study_decision"] = study_operating_point(
            np.stack([y.max(axis=0) for y in ys]), np.stack(st), model.study_thresholds
        )
    out["ms_per_slice_median"] = round(1000 * float(np.median(times)), 2)
    return out


def summary(m: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an ``evaluate_predictions`` result (with ``study_decision``, the study
    operating point at the model's study thresholds, when it has them)."""
    out = {
        "auc_any": m["slice_auc"]["any"],
        "weighted_log_loss": m["weighted_log_loss"],
        "ece_any": m["slice_ece"]["any"],
        "study_auc_any": m["study_auc"]["any"],
        "min_subtype_auc": min((v for c, v in m["slice_auc"].items() if c != "any" and v == v), default=None),
    }
    decision = m.get("study_decision")
    if decision:
        out["study_sensitivity"] = decision["sensitivity"]
        out["normal_unflagged"] = decision["normal_unflagged_share"]
    return out


def evaluate_shifts(
    models: dict[str, Path],
    shifts: Sequence[str],
    *,
    studies: int = 40,
    seed: int = 424242,
    threads: int = 2,
    slices: tuple[int, int] = (24, 40),
) -> dict[str, Any]:
    """Per shift, per model: metrics on ``studies`` fresh synthetic studies (seeds from ``seed``).

    The same study seeds are used under every shift, so each shift is compared with ``none`` on the
    same heads and lesions. ``seed`` must not be a training seed (the CLI default is not one).
    """
    from training.study_thresholds import study_operating_point
    from training.synth import SynthConfig, render_study, shifted_config

    loaded = {name: load_onnx(path, threads=threads) for name, path in models.items()}
    results: dict[str, Any] = {"studies": studies, "seed": seed, "shifts": {}}
    for shift in shifts:
        cfg = shifted_config(shift, SynthConfig(min_slices=slices[0], max_slices=slices[1]))
        ys: list[np.ndarray] = []
        preds: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {n: ([], []) for n in loaded}
        t0 = time.perf_counter()
        for child in np.random.SeedSequence(seed).spawn(studies):
            rng = np.random.default_rng(child)
            n = int(rng.integers(cfg.min_slices, cfg.max_slices + 1))
            study = render_study(rng, n, cfg)
            hu = np.rint(study.hu).astype(np.float32)  # as stored in DICOM (integer HU)
            geometry = SliceGeometry(
                (study.pixel_spacing, study.pixel_spacing),
                positions=tuple(float(z) for z in study.z_mm),
                thickness=study.thickness,
            )
            ys.append(study.labels.astype(np.float32))
            for name, model in loaded.items():
                sp, st, _ = model.predict(hu, geometry)
                preds[name][0].append(sp)
                preds[name][1].append(st)
        per_model = {}
        for name, model in loaded.items():
            m = evaluate_predictions(ys, preds[name][0], preds[name][1], model.thresholds or None)
            if model.study_thresholds:
                m["study_decision"] = study_operating_point(
                    np.stack([y.max(axis=0) for y in ys]), np.stack(preds[name][1]), model.study_thresholds
                )
            per_model[name] = {"summary": summary(m), "metrics": m}
        results["shifts"][shift] = per_model
        log.info(
            "shift %s (%.0f s): %s",
            shift,
            time.perf_counter() - t0,
            {n: per_model[n]["summary"] for n in per_model},
        )
    return results
