"""Lesion masks from the generator (issue 11 item 1): areas agree with the labels, pixels with the DICOM."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("torch")

from training.synth import (
    MIN_LABEL_AREA_MM2,
    SUBTYPES,
    SynthConfig,
    generate_dataset,
    read_masks,
    render_study,
)
from viewer.core.constants import RSNA_CLASSES


def test_fractions_give_the_label_areas() -> None:
    study = render_study(
        np.random.default_rng(3), 20, SynthConfig(size=96), lesion_kinds=["subdural", "epidural"]
    )
    assert set(study.fractions) == {"subdural", "epidural"}
    for kind, frac in study.fractions.items():
        assert frac.shape == study.hu.shape and frac.dtype == np.float32
        assert frac.min() >= 0.0 and frac.max() <= 1.0
        area = frac.sum(axis=(1, 2)) * study.pixel_spacing**2
        labelled = study.labels[:, RSNA_CLASSES.index(kind)].astype(bool)
        assert labelled.any()
        assert np.array_equal(area >= MIN_LABEL_AREA_MM2, labelled)
    negative = render_study(np.random.default_rng(4), 12, SynthConfig(size=64), lesion_kinds=[])
    assert negative.fractions == {}


def _labels(path: Path) -> dict[str, int]:
    with path.open() as fh:
        return {row["ID"]: int(row["Label"]) for row in csv.DictReader(fh)}


def test_written_masks_match_labels_and_dicom_pixels(tmp_path: Path) -> None:
    cfg = SynthConfig(size=128, min_slices=16, max_slices=18, p_negative=0.0, subtle_fraction=0.0)
    labels_path = generate_dataset(tmp_path, 2, seed=5, cfg=cfg, masks=True)
    labels = _labels(labels_path)
    checked = 0
    for i in range(2):
        npz = tmp_path / "masks" / f"study_{i:04d}.npz"
        masks = read_masks(npz)
        with np.load(npz) as data:
            sops = [str(s) for s in data["sop_instance_uids"]]
            ps = float(data["pixel_spacing"])
            assert tuple(str(c) for c in data["classes"]) == SUBTYPES
        assert set(masks) == set(SUBTYPES)
        hu = []
        for j, sop in enumerate(sops):
            ds = pydicom.dcmread(tmp_path / f"study_{i:04d}" / f"{sop}.dcm")
            assert ds.SOPInstanceUID == sop
            assert float(ds.PixelSpacing[0]) == pytest.approx(ps, abs=1e-6)
            assert masks[SUBTYPES[0]][j].shape == (ds.Rows, ds.Columns)
            hu.append(ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
        hu_arr = np.stack(hu)
        for kind, mask in masks.items():
            area = mask.sum(axis=(1, 2)) * ps * ps
            truth = np.array([labels[f"{sop}_{kind}"] for sop in sops], dtype=bool)
            # the uint8 quantisation moves an area by far less than the margin kept here
            assert not (truth & (area < 0.9 * MIN_LABEL_AREA_MM2)).any()
            assert not (~truth & (area > 1.1 * MIN_LABEL_AREA_MM2)).any()
            core = mask >= 0.9
            if core.sum() < 30 or kind == "subarachnoid":  # SAH is a thin sulcal film: blurred away
                continue
            # the mask sits where the written pixels are blood-like, and better there than moved 3 px
            inside = float(np.median(hu_arr[core]))
            assert 45.0 < inside < 95.0, (kind, inside)
            blood = (hu_arr > 45.0) & (hu_arr < 100.0)
            hit = {
                (dy, dx): float(blood[np.roll(core, (dy, dx), axis=(1, 2))].mean())
                for dy in (-3, 0, 3)
                for dx in (-3, 0, 3)
            }
            assert max(hit, key=hit.__getitem__) == (0, 0), (kind, hit)
            checked += 1
    assert checked >= 1
