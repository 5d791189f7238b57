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


def test_bundled_model_maps_the_demo_subdural() -> None:
    """Contract version 2: the bundled model's localisation maps put the demo's subdural on its labelled
    slices, with a volume, and no other subtype's map covers more than a few mL."""
    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.volume import StackVolume
    from viewer.core.inference.engine import InferenceEngine
    from viewer.core.inference.results import StackPrediction

    meta = read_metadata(bundled_model_path())
    assert meta["contract_version"] == 2 and meta["maps"]["classes"] == list(RSNA_CLASSES[1:])
    (stack,) = load_paths([demo_study_dir()]).all_stacks()
    volume = StackVolume(stack)
    try:
        pred = InferenceEngine(bundled_model_path(), provider="cpu", cache=None).analyse_volume(volume)
    finally:
        volume.close()
    assert isinstance(pred, StackPrediction) and pred.maps is not None
    labels = read_labels(demo_study_dir() / "labels.csv")
    sdh_label = np.array([labels[s.sop_instance_uid][RSNA_CLASSES.index("subdural")] for s in stack.slices])
    k = pred.maps.class_names.index("subdural")
    mapped = pred.maps.mask(k).any(axis=(1, 2))
    assert mapped.any() and (sdh_label[mapped] > 0).mean() >= 0.9  # the map sits on labelled slices
    volumes = pred.volumes_ml()
    assert volumes["subdural"] is not None and volumes["subdural"] > 5.0
    assert volumes["any"] is not None and volumes["any"] >= volumes["subdural"]
