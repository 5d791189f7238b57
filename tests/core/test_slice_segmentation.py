"""The second task, ``slice_segmentation``: masks on the stack's pixel grid, volumes in mL, a DICOM SEG,
all through the registry (the engine and ``slicewise predict`` hold no task-specific code)."""

from __future__ import annotations

import json
import shutil
import subprocess
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
    build_seg_model,
    make_stack,
    write_bleed_series,
)
from viewer.core.airesults.codes import class_code
from viewer.core.errors import ModelContractError, ModelError
from viewer.core.inference.engine import InferenceEngine, load_model_info
from viewer.core.tasks import task_named
from viewer.core.tasks.slice_segmentation import SegmentationPrediction, parse_outputs
from viewer.predict_cli import main as predict_main

BLEED = (2, 3, 4)
N_SLICES = 8
SLICE_MM = 5.0


def _blob_truth() -> np.ndarray:
    """bool (S, 64, 64): the 75 HU blob of blood_hu's bleed slices."""
    return blood_hu(N_SLICES, BLEED) == 75.0


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_seg_model(tmp_path_factory.mktemp("segmodel") / "seg.onnx")


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("segseries") / "s"
    write_bleed_series(folder, N_SLICES, BLEED)
    return folder


def test_the_task_comes_from_the_metadata(seg_model: Path) -> None:
    info = load_model_info(seg_model)
    assert info.task == "slice_segmentation" and info.class_names == SEG_CLASSES
    task = task_named(info.task)
    assert task.output_names == ["slice_masks"] and task.result_type is SegmentationPrediction
    assert not task.tabular and task.cache_arrays is None


def test_masks_sit_on_the_pixel_grid_and_volumes_are_in_ml(seg_model: Path) -> None:
    engine = InferenceEngine(seg_model, provider="cpu", cache=None)
    stack = make_stack(N_SLICES)
    pred = engine.analyse_hu(stack, blood_hu(N_SLICES, BLEED))
    assert isinstance(pred, SegmentationPrediction)
    assert pred.probabilities is not None and pred.probabilities.shape == (N_SLICES, len(SEG_CLASSES), 64, 64)
    assert pred.probabilities.dtype == np.uint8
    truth = _blob_truth()
    for k, gain in enumerate(SEG_CLASS_GAIN):
        mask = pred.mask(k)
        if not gain:
            assert not mask.any()
            continue
        assert pred.lesion_slices(k) == list(BLEED)
        iou = (mask & truth).sum() / (mask | truth).sum()
        assert iou > 0.9  # the 32 px model grid back on the 64 px pixels, not shifted
    voxel_ml = PIXEL_MM * PIXEL_MM * SLICE_MM / 1000.0
    assert pred.grid.voxel_ml == pytest.approx(voxel_ml)
    volumes = pred.volumes_ml()
    truth_ml = truth.sum() * voxel_ml
    assert volumes["subdural"] == pytest.approx(truth_ml, rel=0.06)
    assert volumes["intraparenchymal"] == 0.0
    summary = task_named("slice_segmentation").summary(pred)
    assert summary["volumes_ml"] == {n: pytest.approx(v, abs=1e-3) for n, v in volumes.items()}
    json.dumps(summary, allow_nan=False)


def test_wrong_outputs_are_refused_naming_the_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match=r"'slice_masks' has 4 classes but .* lists 5"):
        load_model_info(build_seg_model(tmp_path / "k.onnx", out_classes=4))
    with pytest.raises(ModelContractError, match=r"'slice_masks' axis 3 is 16 px but .* 'input_size' is 32"):
        load_model_info(build_seg_model(tmp_path / "s.onnx", out_size=16))
    v2 = {"preprocessing": {"version": 2, "kind": "head_mm", "size": 32}}
    with pytest.raises(ModelContractError, match="version 2 cannot be used by task 'slice_segmentation'"):
        load_model_info(build_seg_model(tmp_path / "v2.onnx", metadata=v2))
    # a classification model cannot claim the segmentation task: it has no slice_masks output
    with pytest.raises(ModelContractError, match="no output named 'slice_masks'"):
        load_model_info(build_model(tmp_path / "c.onnx", metadata={"task": "slice_segmentation"}))


def test_parse_checks_shape_and_values() -> None:
    good = [np.full((1, 3, 5, 8, 8), 1.5, np.float32)]
    (maps,) = parse_outputs(good, 3, 5)
    assert maps.shape == (3, 5, 8, 8) and float(maps.max()) == 1.0
    with pytest.raises(ModelContractError, match=r"expected \(1, 4, 5, size, size\)"):
        parse_outputs(good, 4, 5)
    with pytest.raises(ModelContractError, match="slice_masks"):
        parse_outputs([np.zeros((1, 3, 5, 8, 6), np.float32)], 3, 5)
    with pytest.raises(ModelError, match="NaN"):
        parse_outputs([np.full((1, 3, 5, 8, 8), np.nan, np.float32)], 3, 5)


def test_classification_only_parts_refuse_a_segmentation_model(seg_model: Path) -> None:
    engine = InferenceEngine(seg_model, provider="cpu", cache=None)
    with pytest.raises(ModelContractError, match=r"'slice_segmentation'.*slice classification results only"):
        engine.predict_hu(make_stack(N_SLICES), blood_hu(N_SLICES, BLEED))


def _predict(model: Path, series: Path, out: Path, *extra: str) -> int:
    return predict_main(
        [
            str(series),
            "--model",
            str(model),
            "--provider",
            "cpu",
            "--out",
            str(out),
            "--quiet",
            "--no-cache",
            *extra,
        ]
    )


def test_predict_writes_volumes_and_a_dicom_seg(seg_model: Path, series_dir: Path, tmp_path: Path) -> None:
    out, folder = tmp_path / "r.json", tmp_path / "dicom"
    assert _predict(seg_model, series_dir, out, "--dicom-out", str(folder)) == 0
    doc = json.loads(out.read_text())
    assert doc["model"]["task"] == "slice_segmentation"
    (rec,) = doc["stacks"]
    assert rec["status"] == "ok" and rec["task"] == "slice_segmentation"
    truth_ml = _blob_truth().sum() * PIXEL_MM * PIXEL_MM * SLICE_MM / 1000.0
    assert rec["volumes_ml"]["subdural"] == pytest.approx(truth_ml, rel=0.06)
    assert rec["volumes_ml"]["intraventricular"] == 0.0
    by_class = {f["class"]: f for f in rec["findings"]}
    assert by_class["epidural"]["lesion_slices"] == [[BLEED[0], BLEED[-1]]]
    (name,) = rec["dicom_objects"]

    sources = {pydicom.dcmread(p).SOPInstanceUID for p in series_dir.glob("*.dcm")}
    ds = pydicom.dcmread(folder / name)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert ds.SegmentationType == "BINARY"
    assert ds.PatientIdentityRemoved == "YES" and not str(ds.PatientName)
    referenced = {
        item.ReferencedSOPInstanceUID for item in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == sources
    assert [s.SegmentLabel for s in ds.SegmentSequence] == list(SEG_CLASSES)
    for segment, cls in zip(ds.SegmentSequence, SEG_CLASSES):
        code = segment.SegmentedPropertyTypeCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator) == (
            class_code(cls).value,
            class_code(cls).scheme_designator,
        )
    # empty frames omitted: one frame per bleed slice for each of the two masked classes
    assert int(ds.NumberOfFrames) == 2 * len(BLEED)
    seg = hd.seg.segread(folder / name)
    frame_sources = {
        fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for fg in ds.PerFrameFunctionalGroupsSequence
    }
    assert frame_sources <= sources and len(frame_sources) == len(BLEED)
    assert seg.number_of_segments == len(SEG_CLASSES)
    # the SEG's own pixels agree with the mask the volume came from
    volume = seg.get_volume(combine_segments=False)
    assert int(volume.array[..., 0].sum()) == by_class["epidural"]["voxels"]


def test_predict_refuses_csv_for_a_segmentation_model(
    seg_model: Path, series_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _predict(seg_model, series_dir, tmp_path / "r.csv") == 2
    assert "use --out results.json" in capsys.readouterr().err


def test_dciodvfy_finds_no_errors_in_the_seg(seg_model: Path, series_dir: Path, tmp_path: Path) -> None:
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dicom3tools' dciodvfy is not installed (Debian package dicom3tools)")
    folder = tmp_path / "dicom"
    assert (
        _predict(
            seg_model, series_dir, tmp_path / "r.json", "--dicom-out", str(folder), "--include-identifiers"
        )
        == 0
    )
    (path,) = folder.glob("*.dcm")
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], errors
