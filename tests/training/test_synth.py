from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("torch")

from training.synth import SUBTYPES, SynthConfig, blur_inplane, render_study, write_demo_study, write_study
from viewer.core.constants import RSNA_CLASSES
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.volume import StackVolume


def test_render_study_anatomy_and_labels() -> None:
    rng = np.random.default_rng(0)
    study = render_study(rng, 30, SynthConfig(size=128), lesion_kinds=list(SUBTYPES))
    hu, labels = study.hu, study.labels
    assert hu.shape == (30, 128, 128) and hu.dtype == np.float32
    assert labels.shape == (30, len(RSNA_CLASSES))
    assert hu.min() < -900  # air
    assert hu.max() > 700  # skull
    mid = hu[len(hu) // 2]
    brainish = mid[(mid > 0) & (mid < 60)]
    assert 20 < np.median(brainish) < 45  # parenchyma
    # 'any' is the union of the subtypes, and every drawn subtype labels several slices
    assert np.array_equal(labels[:, 0], labels[:, 1:].max(axis=1))
    assert (labels[:, 1:].sum(axis=0) >= 2).all()
    # and each lesion fades: it does not cover the whole study
    assert labels[:, 0].sum() < len(labels)


def test_negative_study_has_no_labels() -> None:
    study = render_study(np.random.default_rng(1), 24, SynthConfig(size=64), lesion_kinds=[])
    assert study.labels.sum() == 0


def test_blood_is_denser_than_brain() -> None:
    rng = np.random.default_rng(2)
    cfg = SynthConfig(size=128, noise_hu=(0.1, 0.2))
    with_blood = render_study(rng, 30, cfg, lesion_kinds=["intraparenchymal"], overrides={"hu": 80.0})
    pos = with_blood.labels[:, 2].astype(bool)
    assert pos.any()
    assert with_blood.hu[pos].max() > 70


def test_blur_preserves_mean_and_smooths() -> None:
    x = np.zeros((1, 21, 21), np.float32)
    x[0, 10, 10] = 1.0
    y = blur_inplane(x, 1.0)
    assert abs(float(y.sum()) - 1.0) < 1e-5
    assert y[0, 10, 10] < 0.5 and y[0, 10, 11] > 0


def test_written_series_is_read_back_by_the_core(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    study = render_study(rng, 12, SynthConfig(size=64), lesion_kinds=["subdural"])
    sops = write_study(study, tmp_path / "s", index=3, rng=rng, rle=True)
    assert all(s.startswith("ID_") for s in sops)
    ds = pydicom.dcmread(next((tmp_path / "s").glob("*.dcm")))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    assert ds.Modality == "CT" and ds.SliceThickness == 5.0 and str(ds.PatientName) == "SYNTH^0003"
    report = load_paths([tmp_path / "s"])
    (stack,) = report.all_stacks()
    assert [s.sop_instance_uid for s in stack.slices] == sops  # ascending z, as written
    vol = StackVolume(stack)
    hu = vol.load_all()
    vol.close()
    assert np.abs(hu - np.rint(study.hu)).max() <= 1.0  # HU through RescaleIntercept, lossless


def test_demo_study_is_small_and_positive(tmp_path: Path) -> None:
    write_demo_study(tmp_path, size=128, n_slices=20)
    with (tmp_path / "labels.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ID", "Label"]
    assert any(r[0].endswith("_subdural") and r[1] == "1" for r in rows[1:])
    assert len(list(tmp_path.glob("*.dcm"))) == 20


def test_one_seed_writes_the_same_files(tmp_path: Path) -> None:
    from training.synth import generate_dataset

    cfg = SynthConfig(size=48, min_slices=4, max_slices=5)
    for name in ("a", "b"):
        generate_dataset(tmp_path / name, 2, seed=11, cfg=cfg)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 8
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    uids = {pydicom.dcmread(tmp_path / "a" / rel).StudyInstanceUID for rel in files_a if rel.suffix == ".dcm"}
    assert len(uids) == 2  # still one study UID per study


def test_shifts_change_only_their_factor_and_stay_paired() -> None:
    from training.synth import SHIFTS, WIDE, shifted_config

    assert set(SHIFTS) >= {"none", "noise", "rotation", "offcentre", "fov180", "fov400", "matrix512", "thin"}
    with pytest.raises(ValueError, match="unknown shift"):
        shifted_config("fog")
    base = SynthConfig(size=64)
    studies = {
        name: render_study(np.random.default_rng(5), 6, shifted_config(name, base), lesion_kinds=["subdural"])
        for name in ("none", "thin", "fov400", "matrix512")
    }
    assert studies["thin"].thickness == 1.0 and studies["none"].thickness == 5.0
    assert studies["fov400"].field_of_view_mm == pytest.approx(400.0)
    assert studies["matrix512"].hu.shape[-1] == 512
    assert studies["none"].lesions[0].params == studies["fov400"].lesions[0].params  # paired anatomy
    wide = render_study(np.random.default_rng(1), 4, WIDE)
    assert wide.hu.shape[-1] in (256, 512) and wide.kernel in ("smooth", "standard", "sharp")


def test_new_anatomy_is_dense_but_not_labelled() -> None:
    # skull base, orbits and calcifications are drawn on normal heads: dense pixels, no labels
    cfg = SynthConfig(size=96, noise_hu=(0.1, 0.2), p_streaks=1.0, p_motion=1.0)
    study = render_study(np.random.default_rng(4), 40, cfg, lesion_kinds=[])
    assert study.labels.sum() == 0
    low = study.hu[: len(study.hu) // 3]
    assert (low < -500).any() and (low > 700).any()  # sinus/orbit air and skull-base bone low down
    assert study.hu[np.isfinite(study.hu)].size == study.hu.size


def test_written_thin_series_records_thickness_and_kernel(tmp_path: Path) -> None:
    from training.synth import shifted_config

    cfg = shifted_config("thin", SynthConfig(size=32, kernels=("sharp",)))
    study = render_study(np.random.default_rng(2), 5, cfg, lesion_kinds=[])
    write_study(study, tmp_path, index=0, rng=np.random.default_rng(0))
    ds = pydicom.dcmread(next(tmp_path.glob("*.dcm")))
    assert float(ds.SliceThickness) == 1.0 and ds.ConvolutionKernel == "SHARP"


def test_rsna_ids_are_unique_across_seeds_and_studies(tmp_path: Path) -> None:
    """Nine random hex digits drawn from each study's generator: two datasets of different seeds shared an
    ID once (``train``: "conflicting duplicate label"), and two studies whose generators stood in the same
    state got the same IDs whatever their pixels. IDs now come from the study's pixels, index and slice."""
    import re

    from training.synth import RSNA_ID_HEX, generate_dataset

    cfg = SynthConfig(size=32, min_slices=3, max_slices=4)
    a = render_study(np.random.default_rng(3), 4, cfg, lesion_kinds=[])
    b = render_study(np.random.default_rng(4), 4, cfg, lesion_kinds=[])
    sops_a = write_study(a, tmp_path / "a", index=0, rng=np.random.default_rng(9))
    sops_b = write_study(b, tmp_path / "b", index=1, rng=np.random.default_rng(9))
    assert not set(sops_a) & set(sops_b)  # the same generator state, different studies

    ids: dict[int, list[str]] = {}
    for seed in (0, 1):
        labels = generate_dataset(tmp_path / f"seed{seed}", 2, seed=seed, cfg=cfg)
        with labels.open() as fh:
            ids[seed] = sorted({row["ID"].rpartition("_")[0] for row in csv.DictReader(fh)})
    assert ids[0] and ids[1] and not set(ids[0]) & set(ids[1])
    assert all(re.fullmatch(rf"ID_[0-9a-f]{{{RSNA_ID_HEX}}}", i) for i in ids[0] + ids[1])
    assert RSNA_ID_HEX * 4 >= 64  # enough bits that millions of slices do not meet
    again = generate_dataset(tmp_path / "again", 2, seed=0, cfg=cfg)
    with again.open() as fh:
        assert sorted({row["ID"].rpartition("_")[0] for row in csv.DictReader(fh)}) == ids[0]
