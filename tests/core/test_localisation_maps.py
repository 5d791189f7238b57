"""Localisation maps of a slice classification model (contract version 2, issue 11 items 1 and 3): the
optional ``slice_maps`` output on the stack's pixel grid, bleed volumes in mL in ``predict``'s JSON and
CSV and in the AI Result SR, the maps as a binary DICOM SEG; models without maps keep working."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from tests.core.inference_models import (
    PIXEL_MM,
    SEG_CLASS_GAIN,
    SEG_CLASSES,
    blood_hu,
    build_model,
    make_stack,
    write_bleed_series,
)
from viewer.core.constants import RSNA_CLASS_COLORS
from viewer.core.errors import ModelContractError, ModelError
from viewer.core.inference.cache import PredictionCache
from viewer.core.inference.engine import InferenceEngine, load_model_info
from viewer.core.inference.results import StackPrediction
from viewer.core.tasks import task_named
from viewer.core.tasks.slice_classification import parse_outputs
from viewer.predict_cli import main as predict_main

BLEED = (2, 3, 4)
N_SLICES = 8
SLICE_MM = 5.0
VOXEL_ML = PIXEL_MM * PIXEL_MM * SLICE_MM / 1000.0


@pytest.fixture(scope="module")
def maps_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("mapsmodel") / "maps.onnx", maps_factor=2)


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mapsseries") / "s"
    write_bleed_series(folder, N_SLICES, BLEED)
    return folder


def _analyse(model: Path) -> StackPrediction:
    engine = InferenceEngine(model, provider="cpu", cache=None)
    pred = engine.analyse_hu(make_stack(N_SLICES), blood_hu(N_SLICES, BLEED))
    assert isinstance(pred, StackPrediction)
    return pred


def test_the_contract_version_and_maps_come_from_the_metadata(maps_model: Path, tmp_path: Path) -> None:
    info = load_model_info(maps_model)
    assert info.contract_version == 2 and info.maps is not None
    assert info.maps.class_names == SEG_CLASSES and info.maps.size == 16
    assert info.maps.thresholds == (0.5,) * 5
    task = task_named(info.task)
    assert [o.name for o in task.outputs_for(info)] == ["slice_probs", "study_probs", "slice_maps"]
    assert task.caches(info)  # the cache keeps the maps too
    plain = load_model_info(build_model(tmp_path / "plain.onnx"))
    assert plain.contract_version == 1 and plain.maps is None
    assert [o.name for o in task.outputs_for(plain)] == ["slice_probs", "study_probs"] and task.caches(plain)


def test_maps_sit_on_the_pixel_grid_with_volumes_in_ml(maps_model: Path) -> None:
    pred = _analyse(maps_model)
    assert pred.maps is not None
    # the tiny model's classifier does not flag epidural, whose map is the subdural one: not shown
    assert pred.maps.hidden == {f.class_name for f in pred.findings if not (f.positive or f.flagged)}
    assert "epidural" in pred.maps.hidden and pred.maps.voxel_counts()[0] == 0
    maps = replace(pred.maps, hidden=frozenset())  # where every class's map lies
    assert maps.probabilities is None and maps.model_maps is not None  # pixel grid made when asked
    assert maps.model_maps.shape == (N_SLICES, 5, 16, 16)
    assert maps.pixels.shape == (N_SLICES, 5, 64, 64) and maps.pixels.dtype == np.uint8
    # counted slice by slice: the same voxels as the whole-stack masks
    assert maps.voxel_counts() == tuple(int(maps.mask(k).sum()) for k in range(5))
    assert maps.union_count() == int(maps.masks().any(axis=-1).sum())
    truth = blood_hu(N_SLICES, BLEED) == 75.0
    for k, gain in enumerate(SEG_CLASS_GAIN):
        mask = maps.mask(k)
        if not gain:
            assert not mask.any()
            continue
        assert maps.lesion_slices(k) == list(BLEED)
        iou = (mask & truth).sum() / (mask | truth).sum()
        assert iou > 0.85  # the 16 px maps (model grid / 2) back on the 64 px pixels, not shifted
        ys, xs = np.nonzero(mask[BLEED[0]])
        ty, tx = np.nonzero(truth[BLEED[0]])
        assert abs(ys.mean() - ty.mean()) < 0.5 and abs(xs.mean() - tx.mean()) < 0.5
    volumes = pred.volumes_ml()
    truth_ml = truth.sum() * VOXEL_ML
    assert volumes["subdural"] == pytest.approx(truth_ml, rel=0.08)
    assert volumes["any"] == pytest.approx(volumes["subdural"])  # the union of the shown classes
    assert volumes["intraparenchymal"] == 0.0


def test_the_maps_change_no_probability(maps_model: Path, tmp_path: Path) -> None:
    with_maps = _analyse(maps_model)
    without = _analyse(build_model(tmp_path / "plain.onnx"))
    assert without.maps is None and without.volumes_ml() == {}
    np.testing.assert_array_equal(with_maps.slice_probs, without.slice_probs)
    np.testing.assert_array_equal(with_maps.study_probs, without.study_probs)


def test_wrong_maps_are_refused_naming_the_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match=r"'slice_maps' has 4 classes but metadata 'maps' classes"):
        load_model_info(build_model(tmp_path / "k.onnx", maps_factor=2, maps_classes=4))
    maps16 = {"output": "slice_maps", "classes": list(SEG_CLASSES), "size": 8, "thresholds": {}}
    maps16["thresholds"] = {c: 0.5 for c in SEG_CLASSES}
    with pytest.raises(ModelContractError, match=r"'slice_maps' axis 3 is 16 px but metadata 'maps' size is"):
        load_model_info(build_model(tmp_path / "s.onnx", maps_factor=2, metadata={"maps": maps16}))
    with pytest.raises(ModelContractError, match="no output named 'slice_maps'"):
        load_model_info(build_model(tmp_path / "n.onnx", metadata={"contract_version": 2, "maps": maps16}))
    with pytest.raises(ModelContractError, match="'contract_version' is 3"):
        load_model_info(build_model(tmp_path / "v.onnx", metadata={"contract_version": 3}))
    with pytest.raises(ModelContractError, match="needs 'contract_version' 2"):
        load_model_info(build_model(tmp_path / "c.onnx", maps_factor=2, metadata={"contract_version": 1}))
    odd = dict(maps16, classes=["epidural", "tumour"])
    with pytest.raises(ModelContractError, match="unique names from 'class_names'"):
        load_model_info(build_model(tmp_path / "o.onnx", metadata={"contract_version": 2, "maps": odd}))
    lacking = dict(maps16, thresholds={"epidural": 0.5})
    with pytest.raises(ModelContractError, match="maps' thresholds' has no value for class"):
        load_model_info(build_model(tmp_path / "t.onnx", metadata={"contract_version": 2, "maps": lacking}))


def test_parse_checks_the_maps_shape_and_values() -> None:
    probs = [np.full((1, 3, 6), 0.5, np.float32), np.full((1, 6), 0.5, np.float32)]
    *_, maps = parse_outputs([*probs, np.full((1, 3, 5, 8, 8), 1.5, np.float32)], 3, 6)
    assert maps.shape == (3, 5, 8, 8) and float(maps.max()) == 1.0
    with pytest.raises(ModelContractError, match=r"slice_maps \(1, 3, 5, 8, 6\)"):
        parse_outputs([*probs, np.zeros((1, 3, 5, 8, 6), np.float32)], 3, 6)
    with pytest.raises(ModelError, match="NaN"):
        parse_outputs([*probs, np.full((1, 3, 5, 8, 8), np.nan, np.float32)], 3, 6)


def test_the_cache_keeps_the_maps(maps_model: Path, tmp_path: Path) -> None:
    stack, hu = make_stack(N_SLICES), blood_hu(N_SLICES, BLEED)
    cache = PredictionCache(tmp_path / "c")
    first = InferenceEngine(maps_model, provider="cpu", cache=cache).analyse_hu(stack, hu)
    # a fresh engine and cache object on the same folder: served from disk, maps included
    engine = InferenceEngine(maps_model, provider="cpu", cache=PredictionCache(tmp_path / "c"))
    second = engine.analyse_hu(stack, hu)
    assert isinstance(first, StackPrediction) and isinstance(second, StackPrediction)
    assert second.from_cache and second.maps is not None and first.maps is not None
    np.testing.assert_array_equal(second.maps.masks(), first.maps.masks())
    assert second.volumes_ml() == pytest.approx(first.volumes_ml())
    # an entry written by a model without maps (same key) is not served as a result without them
    plain = InferenceEngine(build_model(tmp_path / "plain.onnx"), provider="cpu", cache=None)
    assert engine.cache is not None and plain.cache is None
    entry = engine.cache.get(engine.cache_key(hu))
    assert entry is not None
    engine.cache.put(engine.cache_key(hu), entry["slice_probs"], entry["study_probs"], entry["meta"])
    third = engine.analyse_hu(stack, hu)
    assert isinstance(third, StackPrediction) and not third.from_cache and third.maps is not None


def _predict(model: Path, series: Path, out: Path, *extra: str) -> int:
    args = [str(series), "--model", str(model), "--provider", "cpu", "--out", str(out)]
    args += ["--quiet", "--no-cache"]
    return predict_main([*args, *extra])


def test_predict_json_and_csv_carry_the_volumes(maps_model: Path, series_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert _predict(maps_model, series_dir, out) == 0
    doc = json.loads(out.read_text())
    assert doc["model"]["contract_version"] == 2
    assert doc["model"]["maps"] == {
        "classes": list(SEG_CLASSES),
        "size": 16,
        "thresholds": {c: 0.5 for c in SEG_CLASSES},
        "volume": {"method": "mask"},  # no 'volume' in the metadata: the masks' voxels, as before
    }
    (rec,) = doc["stacks"]
    truth_ml = (blood_hu(N_SLICES, BLEED) == 75.0).sum() * VOXEL_ML
    volumes = rec["maps"]["volumes_ml"]
    assert volumes["subdural"] == pytest.approx(truth_ml, rel=0.08)
    assert volumes["any"] == pytest.approx(volumes["subdural"], abs=1e-3)
    assert rec["maps"]["voxel_ml"] == pytest.approx(VOXEL_ML)
    by_class = {f["class"]: f for f in rec["maps"]["findings"]}
    assert by_class["subdural"]["lesion_slices"] == [[BLEED[0], BLEED[-1]]]
    # what each volume means (issue 12: a flagged class read "0.0 mL" although nothing was measured)
    flagged = {f["class"] for f in rec["findings"] if f["positive"] or f["flagged"]}
    notes = rec["maps"]["volume_notes"]
    assert "subarachnoid" in flagged and by_class["subarachnoid"]["voxels"] == 0
    assert notes["subarachnoid"].startswith("volume not measurable: the localisation map is below")
    # and no number that reads as a measured empty volume (as the AI SR records none)
    assert volumes["subarachnoid"] is None and by_class["subarachnoid"]["volume_ml"] is None
    # a class the classifier does not flag has no volume: its map is not shown (epidural's map holds the
    # blood here: "No ICH flagged" studies showed such volumes)
    for name in ("intraventricular", "epidural"):
        assert name not in flagged and volumes[name] is None and by_class[name]["volume_ml"] is None
        assert notes[name].startswith("no volume: the slice classifier does not flag this class")
    assert notes["subdural"] == f"{volumes['subdural']:.1f} mL"
    assert "slices" in rec and "study_decision" in rec  # the classification fields stay

    csv_out = tmp_path / "r.csv"
    assert _predict(maps_model, series_dir, csv_out) == 0
    rows = list(csv.DictReader(csv_out.open()))
    assert len(rows) == N_SLICES
    expected = pytest.approx(volumes["subdural"], abs=1e-3)
    assert [float(r["volume_ml_subdural"]) for r in rows] == [expected] * N_SLICES
    assert float(rows[0]["volume_ml_any"]) == pytest.approx(volumes["any"], abs=1e-3)
    assert {r["volume_ml_subarachnoid"] for r in rows} == {""}  # flagged, map below threshold
    assert {r["volume_ml_intraventricular"] for r in rows} == {""}  # not flagged: no volume


def test_predict_without_maps_writes_no_maps(series_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert _predict(build_model(tmp_path / "plain.onnx"), series_dir, out) == 0
    doc = json.loads(out.read_text())
    assert doc["model"]["maps"] is None and "maps" not in doc["stacks"][0]
    csv_out = tmp_path / "r.csv"
    assert _predict(build_model(tmp_path / "plain.onnx"), series_dir, csv_out) == 0
    assert not [c for c in next(csv.reader(csv_out.open())) if c.startswith("volume_ml")]


def test_dicom_out_writes_volumes_in_the_sr_and_the_maps_as_a_seg(
    maps_model: Path, series_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "dicom"
    assert _predict(maps_model, series_dir, tmp_path / "r.json", "--dicom-out", str(folder)) == 0
    rec = json.loads((tmp_path / "r.json").read_text())["stacks"][0]
    volumes = rec["maps"]["volumes_ml"]
    datasets = {pydicom.dcmread(folder / name).SOPClassUID: folder / name for name in rec["dicom_objects"]}
    sources = {pydicom.dcmread(p).SOPInstanceUID for p in series_dir.glob("*.dcm")}

    sr = hd.sr.srread(datasets["1.2.840.10008.5.1.4.1.1.88.34"])  # Comprehensive 3D SR
    found: dict[str, float] = {}
    for group in sr.content.get_planar_roi_measurement_groups() + sr.content.get_image_measurement_groups():
        finding = group.finding_type
        for m in group.get_measurements(name=hd.sr.CodedConcept("118565006", "SCT", "Volume")):
            assert m.unit == hd.sr.CodedConcept("mL", "UCUM", "milliliter")
            found[finding.meaning] = float(m.value)
    # a volume for every class but those flagged with the map below its threshold (this tiny model has
    # some): 0.0 mL there would record a measured empty volume
    notes = rec["maps"]["volume_notes"]
    unmeasurable = [n for n, note in notes.items() if note.startswith("volume not measurable")]
    # nor for a class not flagged (its map is not shown)
    unflagged = [n for n, note in notes.items() if note.startswith("no volume: the slice classifier")]
    assert unmeasurable and unflagged and len(found) == 6 - len(unmeasurable) - len(unflagged)
    unmeasurable += unflagged
    measured = [v for n, v in volumes.items() if n not in unmeasurable]
    assert sorted(found.values()) == pytest.approx(sorted(measured), abs=1e-3)

    seg_path = datasets["1.2.840.10008.5.1.4.1.1.66.4"]  # Segmentation Storage
    ds = pydicom.dcmread(seg_path)
    assert ds.SegmentationType == "BINARY" and ds.PatientIdentityRemoved == "YES"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == list(SEG_CLASSES)
    for item in ds.SegmentSequence:  # each segment in its class's colour of the timeline and findings panel
        shown = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
        assert "#{:02x}{:02x}{:02x}".format(*shown) == RSNA_CLASS_COLORS[item.SegmentLabel]
    listed = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    referenced = {i.ReferencedSOPInstanceUID for i in listed}
    assert referenced == sources
    seg = hd.seg.segread(seg_path)
    by_class = {f["class"]: f for f in rec["maps"]["findings"]}
    segments = seg.get_volume(combine_segments=False).array
    assert int(segments[..., 4].sum()) == by_class["subdural"]["voxels"]
    # a class not flagged keeps its segment (every class is described) but no voxel: epidural's map holds
    # the blood in this model, and its SEG segment drew it on a study whose classifier did not flag it
    assert int(segments[..., SEG_CLASSES.index("epidural")].sum()) == 0 < by_class["subdural"]["voxels"]
