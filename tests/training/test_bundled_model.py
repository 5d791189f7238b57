"""The shipped artefacts: resources/models/slicewise_ich.onnx (+ card) and the demo study."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

import onnx

from training.dataset import find_series, read_labels
from training.evaluate import load_onnx
from training.export import check_gru_nodes, read_metadata
from viewer.core.constants import ONNX_SCHEMA_VERSION, RSNA_CLASSES
from viewer.core.paths import bundled_model_path, demo_study_dir

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
    path = bundled_model_path()
    meta = read_metadata(path)
    (ref,) = find_series(demo_study_dir())
    labels = read_labels(demo_study_dir() / "labels.csv")
    y = np.stack([labels[s] for s in ref.sop_uids])
    # the model's own preprocessing (metadata 'preprocessing'; version 1 when absent), as the viewer runs it
    slice_probs, study_probs, _ = load_onnx(path).predict(ref.read_hu(), ref.geometry)
    sdh = RSNA_CLASSES.index("subdural")
    assert study_probs[sdh] >= meta["thresholds"]["subdural"]
    assert study_probs[0] > 0.5
    pos, neg = y[:, 0] > 0, y[:, 0] == 0
    assert slice_probs[pos, 0].mean() > slice_probs[neg, 0].mean() + 0.5
