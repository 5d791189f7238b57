"""The shipped artefacts: resources/models/slicewise_ich.onnx (+ card) and the demo study."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

import onnx

from training.dataset import find_series, read_labels
from training.export import check_gru_nodes, read_metadata
from viewer.core.constants import MODEL_INPUT_NAME, ONNX_SCHEMA_VERSION, RSNA_CLASSES, Window
from viewer.core.paths import bundled_model_path, demo_study_dir
from viewer.core.preprocess import preprocess_stack

CONTRACT_KEYS = {
    "schema_version", "model_name", "model_version", "class_names", "modality", "input_layout",
    "input_size", "windows", "normalization", "slice_order", "thresholds", "threshold_policy",
    "metrics", "train_data", "intended_use", "exporter", "min_slices",
}  # fmt: skip


def test_bundled_model_follows_the_contract() -> None:
    path = bundled_model_path()
    assert path.is_file() and path.stat().st_size < 10 * 1024**2
    assert (path.parent / "MODEL_CARD.md").is_file()
    assert "not for clinical use" in (path.parent / "MODEL_CARD.md").read_text()
    model = onnx.load(str(path))
    assert all(json.loads(p.value) is not None for p in model.metadata_props)
    meta = read_metadata(path)
    assert set(meta) >= CONTRACT_KEYS
    assert meta["schema_version"] == ONNX_SCHEMA_VERSION and meta["class_names"] == list(RSNA_CLASSES)
    assert meta["exporter"]["dynamo"] is False
    assert any(o.version == 17 for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert check_gru_nodes(model) >= 1
    assert "synthetic" in meta["intended_use"]


def test_bundled_model_flags_the_demo_subdural() -> None:
    import onnxruntime as ort

    path = bundled_model_path()
    meta = read_metadata(path)
    windows = [Window(w["width"], w["level"]) for w in meta["windows"]]
    (ref,) = find_series(demo_study_dir())
    labels = read_labels(demo_study_dir() / "labels.csv")
    y = np.stack([labels[s] for s in ref.sop_uids])
    x = preprocess_stack(ref.read_hu(), windows, meta["input_size"])[None]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    slice_probs, study_probs = sess.run(None, {MODEL_INPUT_NAME: x})
    sdh = RSNA_CLASSES.index("subdural")
    assert study_probs[0, sdh] >= meta["thresholds"]["subdural"]
    assert study_probs[0, 0] > 0.5
    pos, neg = y[:, 0] > 0, y[:, 0] == 0
    assert slice_probs[0, pos, 0].mean() > slice_probs[0, neg, 0].mean() + 0.5
