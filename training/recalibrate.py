"""Refit a finished checkpoint's temperatures on labelled validation studies (``slicewise-train calibrate``).

Training fits the temperatures on its internal validation split, which holds the training run's own
acquisitions only. A model claimed for a wider acquisition range (standard, noisy and wide studies)
should be calibrated on studies of that range that it never saw: this command reads such a folder of
DICOM series (RSNA-format labels), preprocesses them with the checkpoint's own preprocessing (as
training does, ``training.dataset.build_items``), computes the CNN embeddings, refits the slice and
study temperatures (``training.calibration.calibrate_head``: Platt-smoothed targets, a class whose fit
ends at a bound keeps T = 1), and re-chooses on the same studies the slice thresholds (the checkpoint's
policy) and the study thresholds (``training.study_thresholds``), since both depend on the calibrated
probabilities. The previous calibration and thresholds are kept in ``calibration_history``. Then
re-export the checkpoint; ``slicewise-train study-thresholds MODEL.onnx`` on the same studies gives the
thresholds on the exported model's float32 outputs (what the viewer sees).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.calibration import calibrate_head
from training.dataset import build_items
from training.metrics import choose_thresholds
from training.study_thresholds import STUDY_POLICY_TEXT, validation_study_thresholds
from training.thresholds import checkpoint_policy
from training.train import (
    Dist,
    embed_all,
    load_checkpoint,
    model_from_checkpoint,
    predict_from_embeddings,
    save_checkpoint,
)
from viewer.core.constants import MODEL_WINDOWS
from viewer.core.preprocess import PreprocessSpec

log = logging.getLogger(__name__)


def checkpoint_spec(ckpt: dict[str, Any]) -> PreprocessSpec:
    """The preprocessing a checkpoint's network was trained with (version 1 and the default windows when it
    records none)."""
    return PreprocessSpec.from_record(
        ckpt, size=int(ckpt["model_config"]["input_size"]), default_windows=MODEL_WINDOWS
    )


def recalibrate_checkpoint(
    ckpt_path: Path,
    data_dir: Path,
    labels_csv: Path,
    *,
    out: Path,
    cache: Path,
    fitted_on: str = "",
    threads: int = 1,
) -> dict[str, Any]:
    """Refit ``ckpt_path``'s temperatures and thresholds on the studies under ``data_dir``; write ``out``.
    Returns {"before": {...}, "after": {...}} with the temperatures and thresholds."""
    torch.set_num_threads(max(1, threads))
    ckpt = load_checkpoint(ckpt_path)
    net = model_from_checkpoint(ckpt)
    items = build_items(Path(data_dir), Path(labels_csv), Path(cache), spec=checkpoint_spec(ckpt))
    if not items:
        raise ValueError(f"no labelled studies under {Path(data_dir).name}")
    embeds = embed_all(net, [i.load() for i in items], Dist())
    before = {
        "calibration": ckpt.get("calibration") or {},
        "thresholds": ckpt.get("thresholds") or {},
        "study_thresholds": ckpt.get("study_thresholds") or {},
    }
    with torch.no_grad():
        temps = calibrate_head(net.head, embeds, [i.labels for i in items], [i.mask for i in items])
    sp, st = predict_from_embeddings(net.head, embeds)
    keep = [i.mask > 0.5 for i in items]
    labels = [i.labels[k] for i, k in zip(items, keep)]
    policy, sensitivity = checkpoint_policy(ckpt)
    slice_thr = choose_thresholds(labels, [p[k] for p, k in zip(sp, keep)], sensitivity, policy)
    study_thr, study_op = validation_study_thresholds(labels, st)
    where = fitted_on or f"{len(items)} validation studies"
    ckpt["calibration_history"] = [*list(ckpt.get("calibration_history") or []), before]
    ckpt["model"] = net.state_dict()
    ckpt["calibration"] = {
        "method": "temperature",
        "temperatures": temps["slice"],
        "study_temperatures": temps["study"],
        "fitted_on": where,
        "fit": "BCE against Platt's smoothed targets, log T in [0.05, 20]; a fit at a bound keeps T = 1",
    }
    ckpt["thresholds"] = slice_thr
    ckpt["study_thresholds"] = study_thr
    ckpt["study_threshold_policy"] = STUDY_POLICY_TEXT.format(sens=0.95) + f"; chosen on {where}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, ckpt)
    after = {
        "calibration": ckpt["calibration"],
        "thresholds": slice_thr,
        "study_thresholds": study_thr,
        "val_study_operating_point": study_op,
        "n_studies": len(items),
        "n_positive_studies": int(np.sum([lab.max(axis=0)[0] > 0.5 for lab in labels])),
    }
    log.info("recalibrated on %d studies: study temperatures %s", len(items), temps["study"])
    return {"before": before, "after": after}
