"""Evaluate an exported .onnx exactly as the viewer runs it: core loader -> preprocess_stack -> ORT."""

from __future__ import annotations

import logging
import time
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
    Window,
)
from viewer.core.errors import ModelContractError
from viewer.core.preprocess import preprocess_stack

log = logging.getLogger(__name__)


def evaluate_onnx(model_path: Path, data_dir: Path, labels_csv: Path, *, threads: int = 2) -> dict[str, Any]:
    """Metrics of ``model_path`` on every labelled stack under ``data_dir`` (unlabelled slices ignored)."""
    import onnxruntime as ort

    from training.export import read_metadata

    meta = read_metadata(model_path)
    try:
        windows = [Window(float(w["width"]), float(w["level"])) for w in meta["windows"]]
        size = int(meta["input_size"])
        classes = list(meta["class_names"])
        thresholds = {c: float(v) for c, v in meta.get("thresholds", {}).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelContractError(f"model metadata incomplete: {exc}") from exc
    if classes != list(RSNA_CLASSES):
        raise ModelContractError(f"model classes {classes} are not the RSNA classes")
    labels = read_labels(labels_csv)
    refs = [r for r in find_series(data_dir) if any(s in labels for s in r.sop_uids)]
    if not refs:
        raise LabelMatchError("none of the labelled images matches a slice of the DICOM series found")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    ys, sp, st, times = [], [], [], []
    for ref in refs:
        keep = np.array([s in labels for s in ref.sop_uids])
        x = preprocess_stack(ref.read_hu(), windows, size)[None]
        t0 = time.perf_counter()
        slice_probs, study_probs = sess.run([MODEL_SLICE_OUTPUT, MODEL_STUDY_OUTPUT], {MODEL_INPUT_NAME: x})
        times.append((time.perf_counter() - t0) / max(1, x.shape[1]))
        ys.append(np.stack([labels[s] for s, k in zip(ref.sop_uids, keep) if k]))
        sp.append(slice_probs[0][keep])
        st.append(study_probs[0])
    out = evaluate_predictions(ys, sp, st, thresholds if len(thresholds) == len(RSNA_CLASSES) else None)
    out["ms_per_slice_median"] = round(1000 * float(np.median(times)), 2)
    return out
