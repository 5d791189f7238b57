from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from training.dataset import build_items, read_labels, split_items
from training.errors import LabelFormatError, LabelMatchError, NoDicomFoundError
from training.synth import SynthConfig, render_study, write_study
from viewer.core.errors import SlicewiseError
from viewer.core.preprocess import PreprocessSpec


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


RSNA_ROWS = """ID,Label
ID_63eb1e259_epidural,0
ID_63eb1e259_intraparenchymal,0
ID_63eb1e259_intraventricular,0
ID_63eb1e259_subarachnoid,1
ID_63eb1e259_subdural,0
ID_63eb1e259_any,1
ID_2669954a7_epidural,0
ID_2669954a7_intraparenchymal,0
ID_2669954a7_intraventricular,0
ID_2669954a7_subarachnoid,0
ID_2669954a7_subdural,0
ID_2669954a7_any,0
ID_63eb1e259_subarachnoid,1
ID_63eb1e259_any,1
"""


def test_reads_rsna_csv_with_duplicate_rows(tmp_path: Path) -> None:
    labels = read_labels(_write_csv(tmp_path / "l.csv", RSNA_ROWS))
    assert set(labels) == {"ID_63eb1e259", "ID_2669954a7"}
    # RSNA_CLASSES order: any, epidural, intraparenchymal, intraventricular, subarachnoid, subdural
    assert labels["ID_63eb1e259"].tolist() == [1, 0, 0, 0, 1, 0]
    assert labels["ID_2669954a7"].tolist() == [0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "text",
    [
        "Image,Target\nID_1_any,1\n",  # wrong columns
        "ID,Label\nID_1_any,2\n",  # not 0/1
        "ID,Label\nID_1_bleed,1\n",  # unknown subtype
        "ID,Label\nID_1_any,1\n",  # missing subtypes
        RSNA_ROWS + "ID_63eb1e259_any,0\n",  # conflicting duplicate
        "ID,Label\n",  # no rows
    ],
)
def test_bad_label_files_raise_label_format_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(LabelFormatError) as info:
        read_labels(_write_csv(tmp_path / "l.csv", text))
    assert isinstance(info.value, SlicewiseError)


V2_32 = PreprocessSpec(version=2, size=32)


def test_no_dicom_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not dicom")
    csv = _write_csv(tmp_path / "l.csv", RSNA_ROWS)
    with pytest.raises(NoDicomFoundError):
        build_items(tmp_path / "empty", csv, tmp_path / "cache", spec=V2_32)


def test_labels_matching_no_slice(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = tiny_data
    csv = _write_csv(tmp_path / "l.csv", RSNA_ROWS)
    with pytest.raises(LabelMatchError):
        build_items(data, csv, tmp_path / "cache", spec=V2_32)


def test_items_match_labels_by_sop_and_cache(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, labels_csv = tiny_data
    labels = read_labels(labels_csv)
    items = build_items(data, labels_csv, tmp_path / "cache", spec=V2_32)
    assert len(items) == 6
    assert sum(len(i) for i in items) == len(labels)
    for item in items:
        x = item.load()
        assert x.shape == (len(item), 3, 32, 32) and x.dtype == np.float16
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert item.mask.all()
        acq = item.acquisition  # the facts the model's trained_range is made of
        assert acq["matrix"] == 64 and acq["slice_thickness_mm"] == 5.0 and acq["slices"] == len(item)
        assert 230 <= acq["field_of_view_mm"] <= 260
    assert sum(float(i.labels[:, 0].sum()) for i in items) == sum(float(v[0]) for v in labels.values())
    # a second build reads the cache (same files, nothing new written)
    before = sorted(p.name for p in (tmp_path / "cache").iterdir())
    again = build_items(data, labels_csv, tmp_path / "cache", spec=V2_32)
    assert [i.cache_path.name for i in again] == [i.cache_path.name for i in items]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == before


def test_split_is_by_patient_and_deterministic(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "d"
    rows = ["ID,Label"]
    for i in range(10):
        study = render_study(rng, 3, SynthConfig(size=32), lesion_kinds=[])
        # patients 0..4 each have two studies
        sops = write_study(study, root / f"s{i}", index=i // 2, rng=rng)
        rows += [
            f"{s}_{c},0"
            for s in sops
            for c in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")
        ]
    csv = _write_csv(tmp_path / "l.csv", "\n".join(rows) + "\n")
    items = build_items(root, csv, tmp_path / "cache", spec=PreprocessSpec(version=2, size=16))
    a = split_items(items, seed=3, val_frac=0.2, test_frac=0.2)
    b = split_items(items, seed=3, val_frac=0.2, test_frac=0.2)
    assert [[i.key for i in part] for part in a] == [[i.key for i in part] for part in b]
    patients = [{i.patient_key for i in part} for part in a]
    assert all(len(part) > 0 for part in a)
    assert (
        not (patients[0] & patients[1])
        and not (patients[0] & patients[2])
        and not (patients[1] & patients[2])
    )
    assert sum(len(p) for p in a) == 10
    shutil.rmtree(tmp_path / "cache")


def test_too_few_patients_for_a_split_is_said_out_loud(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from training.train import TrainConfig, build_split

    rng = np.random.default_rng(1)
    rows = ["ID,Label"]
    for i in range(2):
        study = render_study(rng, 3, SynthConfig(size=32), lesion_kinds=[])
        sops = write_study(study, tmp_path / "d" / f"s{i}", index=i, rng=rng)
        rows += [
            f"{s}_{c},0"
            for s in sops
            for c in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")
        ]
    csv = _write_csv(tmp_path / "l.csv", "\n".join(rows) + "\n")
    cfg = TrainConfig(data=str(tmp_path / "d"), labels=str(csv), out=str(tmp_path / "run"), size=16)
    with caplog.at_level(logging.WARNING, logger="training.train"):
        _, train, val, test = build_split(cfg)
    assert val == train and test == val  # two patients: everything trains, nothing is held out
    assert "metrics are optimistic" in caplog.text


def _thin_study_with_lesion(tmp_path: Path, *, descending_normal: bool) -> tuple[Path, Path, np.ndarray]:
    """A 1 mm study with an epidural, written as the generator writes it or with rows flipped and the slice
    normal pointing to the feet (the loader then sorts it from the vertex down); returns its labels in
    generator order (inferior -> superior)."""
    import pydicom

    from training.synth import label_rows

    cfg = SynthConfig(size=64, thickness_mm=(1.0,), p_negative=0.0, subtle_fraction=0.0)
    rng = np.random.default_rng(5)
    study = render_study(rng, 30, cfg, lesion_kinds=["epidural"], overrides={"z0": 22.0, "h": 8.0, "T": 14.0})
    assert 0 < study.labels[:, 0].sum() < len(study.labels)  # labelled and unlabelled slices
    folder = tmp_path / ("flipped" if descending_normal else "plain")
    sops = write_study(study, folder, index=3, rng=rng)
    if descending_normal:
        for path in folder.glob("*.dcm"):
            ds = pydicom.dcmread(path)
            rows, ps = int(ds.Rows), float(ds.PixelSpacing[0])
            ds.PixelData = np.ascontiguousarray(ds.pixel_array[::-1]).tobytes()
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
            x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x0, y0 + (rows - 1) * ps, z0]
            ds.save_as(path)
    labels = folder / "labels.csv"
    with labels.open("w") as fh:
        fh.write("ID,Label\n")
        fh.writelines(f"{ident},{value}\n" for ident, value in label_rows(sops, study.labels))
    return folder, labels, study.labels.astype(np.float32)


def test_labels_follow_the_slices_under_reversal_and_slab_averaging(tmp_path: Path) -> None:
    """Version 2 reads slices inferior -> superior: a stack whose normal points to the feet is reversed, and
    its labels with it; 1 mm slices averaged into 5 mm slabs keep the slice count and each slice's label."""
    spec = PreprocessSpec(version=2, size=32, field_mm=230.0, slab_mm=5.0)
    plain = build_items(
        *_thin_study_with_lesion(tmp_path, descending_normal=False)[:2], tmp_path / "c1", spec=spec
    )
    folder, labels_csv, truth = _thin_study_with_lesion(tmp_path, descending_normal=True)
    flipped = build_items(folder, labels_csv, tmp_path / "c2", spec=spec)
    assert len(plain) == len(flipped) == 1
    a, b = plain[0], flipped[0]
    assert len(a) == len(b) == len(truth) == 30  # slab averaging keeps one input per slice
    assert not np.array_equal(truth, truth[::-1])  # so a label order that ignored the reversal would show
    np.testing.assert_array_equal(a.labels, truth)  # generator order is inferior -> superior
    np.testing.assert_array_equal(b.labels, truth)  # reversed stack, reversed labels
    np.testing.assert_allclose(b.load().astype(np.float32), a.load().astype(np.float32), atol=1e-3)
