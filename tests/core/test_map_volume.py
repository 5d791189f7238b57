"""Bleed volumes from the localisation maps (issue 11 item 3): the estimator named by metadata
``maps.volume`` (``soft``: summed probability above a floor x a per-class scale, ``any`` the per-voxel
capped sum of the scaled classes; ``mask``, the default for older models: the voxels at the map
thresholds), the one place volumes are made for the findings panel, ``predict`` and the AI SR."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.core.inference_models import (
    PIXEL_MM,
    SEG_CLASSES,
    blood_hu,
    build_model,
    make_stack,
    write_bleed_series,
)
from viewer.core.errors import ModelContractError
from viewer.core.inference.cache import PredictionCache
from viewer.core.inference.engine import InferenceEngine, load_model_info
from viewer.core.inference.results import StackPrediction
from viewer.core.inference.volume import VolumeMethod
from viewer.core.inference.volume_reading import VolumeState
from viewer.predict_cli import main as predict_main

BLEED = (2, 3, 4)
N_SLICES = 8
VOXEL_ML = PIXEL_MM * PIXEL_MM * 5.0 / 1000.0
MAPS = {
    "output": "slice_maps",
    "classes": list(SEG_CLASSES),
    "size": 16,
    "thresholds": {c: 0.5 for c in SEG_CLASSES},
}
SOFT = {
    "method": "soft",
    "floor": 0.05,
    "scales": {"epidural": 0.5, "subdural": 0.5, "intraventricular": 2.0},
}


def _model(path: Path, volume: object | None) -> Path:
    maps = dict(MAPS) if volume is None else {**MAPS, "volume": volume}
    return build_model(path, maps_factor=2, metadata={"maps": maps})


def _analyse(model: Path, cache: PredictionCache | None = None) -> StackPrediction:
    engine = InferenceEngine(model, provider="cpu", cache=cache)
    pred = engine.analyse_hu(make_stack(N_SLICES), blood_hu(N_SLICES, BLEED))
    assert isinstance(pred, StackPrediction) and pred.maps is not None
    return pred


def _every_map(pred: StackPrediction) -> StackPrediction:
    """``pred`` with the maps of every class, also those not shown (classes the classifier does not flag:
    this test model flags only some of the classes its maps find)."""
    assert pred.maps is not None
    return replace(pred, maps=replace(pred.maps, hidden=frozenset()))


def test_the_estimator_comes_from_the_metadata(tmp_path: Path) -> None:
    info = load_model_info(_model(tmp_path / "soft.onnx", SOFT))
    assert info.maps is not None
    volume = info.maps.volume
    assert volume.method is VolumeMethod.SOFT and volume.floor == 0.05
    assert volume.scales == (0.5, 1.0, 2.0, 1.0, 0.5)  # in the maps' class order; absent classes 1.0
    assert volume.to_metadata(SEG_CLASSES)["scales"] == dict(zip(SEG_CLASSES, volume.scales))
    older = load_model_info(_model(tmp_path / "older.onnx", None))
    assert older.maps is not None and older.maps.volume.method is VolumeMethod.MASK


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ({"method": "fuzzy"}, "volume method is 'fuzzy'"),
        ({"method": "soft", "floor": 1.5}, "volume floor must be a number in"),
        ({"method": "soft", "scales": {"any": 1.0}}, "volume scales must be an object"),
        ({"method": "soft", "scales": {"subdural": -1}}, "volume scales must be numbers"),
        ({"method": "soft", "scales": {"subdural": True}}, "volume scales must be numbers"),
        ([1, 2], "volume must be an object"),
    ],
)
def test_a_bad_estimator_refuses_the_model_naming_it(tmp_path: Path, volume: object, message: str) -> None:
    with pytest.raises(ModelContractError, match=message):
        load_model_info(_model(tmp_path / "bad.onnx", volume))


def test_soft_volumes_are_the_scaled_summed_probabilities(tmp_path: Path) -> None:
    soft = _every_map(_analyse(_model(tmp_path / "soft.onnx", SOFT)))
    mask = _every_map(_analyse(_model(tmp_path / "mask.onnx", None)))
    assert soft.maps is not None and mask.maps is not None
    # the same maps and masks (the overlay and the SEG): only the volumes differ
    np.testing.assert_array_equal(soft.maps.pixels, mask.maps.pixels)
    assert soft.maps.voxel_counts() == mask.maps.voxel_counts()
    pixels = soft.maps.pixels.astype(np.float64) / 255.0
    kept = np.where(pixels >= 0.05, pixels, 0.0)
    summed = kept.sum(axis=(0, 2, 3))  # per class, in voxels
    volumes = soft.volumes_ml()
    for k, name in enumerate(SEG_CLASSES):
        assert volumes[name] == pytest.approx(summed[k] * soft.maps.volume.scale(k) * VOXEL_ML, rel=1e-6)
    # any: per voxel the scaled classes summed, capped at 1 (here epidural and subdural carry the same
    # map at 0.5 each, so the union is the unscaled map: the blob's volume, once)
    scales = np.asarray(soft.maps.volume.scales)[None, :, None, None]
    union = np.minimum((kept * scales).sum(axis=1), 1.0).sum()
    assert volumes["any"] == pytest.approx(union * VOXEL_ML, rel=1e-5)
    blob_ml = (blood_hu(N_SLICES, BLEED) == 75.0).sum() * VOXEL_ML
    assert volumes["any"] == pytest.approx(blob_ml, rel=0.08)
    assert volumes["subdural"] == pytest.approx(volumes["any"] / 2, rel=0.02)
    # the mask method counts the voxels at the thresholds, as before
    mask_volumes = mask.volumes_ml()
    assert mask_volumes["subdural"] == pytest.approx(mask.maps.voxel_counts()[4] * VOXEL_ML)
    assert mask_volumes["any"] == pytest.approx(mask.maps.union_count() * VOXEL_ML)


def test_the_cache_keeps_the_estimator(tmp_path: Path) -> None:
    model = _model(tmp_path / "soft.onnx", SOFT)
    first = _analyse(model, PredictionCache(tmp_path / "c"))
    second = _analyse(model, PredictionCache(tmp_path / "c"))
    assert second.from_cache and not first.from_cache
    assert second.volumes_ml() == pytest.approx(first.volumes_ml())


def test_predict_reports_the_estimators_volumes(tmp_path: Path) -> None:
    series = tmp_path / "s"
    write_bleed_series(series, N_SLICES, BLEED)
    model = _model(tmp_path / "soft.onnx", SOFT)
    out = tmp_path / "r.json"
    args = [str(series), "--model", str(model), "--provider", "cpu", "--out", str(out)]
    assert predict_main([*args, "--quiet", "--no-cache"]) == 0
    doc = json.loads(out.read_text())
    scales = dict(zip(SEG_CLASSES, (0.5, 1.0, 2.0, 1.0, 0.5)))
    assert doc["model"]["maps"]["volume"] == {"method": "soft", "floor": 0.05, "scales": scales}
    (rec,) = doc["stacks"]
    assert rec["maps"]["volume_method"] == "soft"
    pred = _analyse(model)
    assert pred.maps is not None
    volumes = rec["maps"]["volumes_ml"]
    for name, reading in pred.volume_readings().items():  # none for a flagged class below its threshold
        value = reading.measured_ml
        assert volumes[name] == (None if value is None else pytest.approx(value, abs=1e-3))
    by_class = {f["class"]: f for f in rec["maps"]["findings"]}
    assert by_class["subdural"]["volume_ml"] == pytest.approx(volumes["subdural"], abs=1e-3)
    assert by_class["subdural"]["voxels"] == pred.maps.voxel_counts()[4]  # the SEG's voxels


def test_the_maps_of_a_class_the_classifier_does_not_flag_are_not_shown(tmp_path: Path) -> None:
    """A "No ICH flagged" study showed "epidural 0.2 mL" and drew its voxels: a class the slice classifier
    does not flag (no study decision, no slice at its threshold) has no voxel, no volume (null in
    predict's JSON, with a note) and an empty SEG segment; its probabilities are kept."""
    pred = _analyse(_model(tmp_path / "soft.onnx", SOFT))
    assert pred.maps is not None
    flagged = {f.class_name for f in pred.findings if f.positive or f.flagged}
    unflagged = set(SEG_CLASSES) - flagged
    assert unflagged and flagged & set(SEG_CLASSES)  # this test model flags some map classes, not all
    every = _every_map(pred)
    assert every.maps is not None
    counts, raw_counts = pred.maps.voxel_counts(), every.maps.voxel_counts()
    masks = pred.maps.masks()
    # the maps find an unflagged class (epidural: this model's map of it is the subdural one) ...
    assert any(raw_counts[k] for k, name in enumerate(SEG_CLASSES) if name in unflagged)
    for k, name in enumerate(SEG_CLASSES):
        if name in unflagged:
            assert counts[k] == 0 and not masks[..., k].any()  # ... but no unflagged class is shown
            reading = pred.volume_readings()[name]
            assert reading.state is VolumeState.NOT_SHOWN and reading.measured_ml is None
            assert reading.text == "–" and "does not flag" in reading.note
        else:
            assert counts[k] == raw_counts[k]
            np.testing.assert_array_equal(masks[..., k], every.maps.mask(k))
    np.testing.assert_array_equal(pred.maps.pixels, every.maps.pixels)  # probabilities kept
    # any: the union of the shown classes only
    shown = [k for k, n in enumerate(SEG_CLASSES) if n in flagged]
    assert pred.maps.union_count() == int(masks[..., shown].any(axis=-1).sum())
    # predict's JSON and CSV: no volume for them, a note says why
    series = tmp_path / "s"
    write_bleed_series(series, N_SLICES, BLEED)
    out = tmp_path / "r.json"
    model = tmp_path / "soft.onnx"
    assert predict_main([str(series), "--model", str(model), "--provider", "cpu", "--out", str(out),
                         "--quiet", "--no-cache"]) == 0
    (rec,) = json.loads(out.read_text())["stacks"]
    for name in unflagged:
        assert rec["maps"]["volumes_ml"][name] is None
        assert "does not flag" in rec["maps"]["volume_notes"][name]
    assert any(rec["maps"]["volumes_ml"][name] for name in flagged & set(SEG_CLASSES))
