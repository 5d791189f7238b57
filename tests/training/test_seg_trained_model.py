"""The small trained segmentation model (tests/data/slicewise_seg_tiny.onnx, made by
``slicewise-train segment``) on a fresh synthetic study it never saw, through ``slicewise predict``: the
DICOM SEG read back lies on the lesion and the volumes are close to the generator's truth."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

pytest.importorskip("torch")

from training.synth import SynthConfig, render_study, write_study
from viewer.core.inference.engine import load_model_info
from viewer.predict_cli import main as predict_main

MODEL = Path(__file__).resolve().parents[1] / "data" / "slicewise_seg_tiny.onnx"
KINDS = ("subdural", "intraparenchymal")


def test_the_committed_model_follows_the_contract() -> None:
    assert MODEL.stat().st_size <= 1024 * 1024
    info = load_model_info(MODEL)
    assert info.task == "slice_segmentation" and info.input_size == 128 and info.preprocessing.version == 1


def test_fresh_study_seg_and_volumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(20261129)  # never a training, validation or evaluation seed
    study = render_study(rng, 24, SynthConfig(size=256, subtle_fraction=0.0), lesion_kinds=list(KINDS))
    series = tmp_path / "series"
    sops = write_study(study, series, index=0, rng=rng, rsna_ids=False)
    out, folder = tmp_path / "r.json", tmp_path / "dicom"
    argv = [str(series), "--model", str(MODEL), "--provider", "cpu", "--out", str(out), "--quiet"]
    assert predict_main([*argv, "--no-cache", "--dicom-out", str(folder)]) == 0
    (rec,) = json.loads(out.read_text())["stacks"]
    voxel_ml = study.pixel_spacing**2 * study.thickness / 1000.0
    assert rec["voxel_ml"] == pytest.approx(voxel_ml, rel=1e-4)
    (name,) = rec["dicom_objects"]
    ds = pydicom.dcmread(folder / name)
    seg = hd.seg.Segmentation.from_dataset(ds)
    labels = [s.SegmentLabel for s in ds.SegmentSequence]
    for kind in KINDS:
        truth = study.fractions[kind]
        true_ml = float(truth.sum()) * voxel_ml
        got_ml = rec["volumes_ml"][kind]
        assert abs(got_ml - true_ml) <= 0.35 * true_ml, (kind, got_ml, true_ml)
        # the SEG's frames of this segment, placed by their source SOP Instance UIDs
        mask = np.zeros(truth.shape, dtype=bool)
        arr = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=sops,
            segment_numbers=[labels.index(kind) + 1],
            assert_missing_frames_are_empty=True,
        )
        mask[:] = arr[..., 0] > 0
        ref = truth >= 0.5
        dice = 2 * (mask & ref).sum() / (mask.sum() + ref.sum())
        assert dice > 0.6, (kind, dice)
