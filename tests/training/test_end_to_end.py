"""synth -> a few training steps -> export -> parity -> evaluate through onnxruntime."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

import onnx
import torch

from training.dataset import find_series, read_labels
from training.errors import CheckpointError
from training.evaluate import evaluate_onnx, load_onnx
from training.export import check_gru_nodes, export_checkpoint, read_metadata
from training.train import TrainConfig, load_checkpoint, model_from_checkpoint, train
from viewer.core.constants import MODEL_INPUT_NAME, MODEL_SLICE_OUTPUT, MODEL_STUDY_OUTPUT, RSNA_CLASSES


@pytest.fixture(scope="module")
def run(tiny_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data, labels = tiny_data
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(
        data=str(data),
        labels=str(labels),
        out=str(out),
        size=64,
        cnn_epochs=1,
        gru_epochs=2,
        batch=2,
        cnn_crop=6,
        gru_crop=8,
        max_steps=3,
        progress=False,
        val_frac=0.2,
        test_frac=0.2,
    )
    ckpt = train(cfg)
    assert ckpt.is_file()
    return out


def test_training_writes_both_variants_and_metrics(run: Path) -> None:
    report = json.loads((run / "metrics.json").read_text())
    for tag in ("cnn_only", "cnn_gru"):
        assert set(report[tag]["thresholds"]) == set(RSNA_CLASSES)
        assert np.isfinite(report[tag]["test"]["weighted_log_loss"])
    assert report["split"]["train"] + report["split"]["val"] + report["split"]["test"] == 6
    assert (run / "cnn_only.pt").is_file() and (run / "last.pt").is_file()


def test_checkpoint_carries_config_and_loads_weights_only(run: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["model_config"]["use_gru"] is True and ckpt["model_config"]["input_size"] == 64
    net = model_from_checkpoint(ckpt)
    slices, study = net(torch.rand(1, 5, 3, 64, 64))
    assert slices.shape == (1, 5, 6) and study.shape == (1, 6)

    # an arbitrary pickled object is refused (weights_only=True), with no silent fallback
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    bad = tmp_path / "bad.pt"
    torch.save({"model": {}, "model_config": {}, "x": Evil()}, bad, pickle_module=pickle)
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "missing.pt")


def test_resume_continues_from_last_checkpoint(run: Path, tiny_data: tuple[Path, Path]) -> None:
    data, labels = tiny_data
    before = load_checkpoint(run / "last.pt")
    cfg = TrainConfig(
        data=str(data),
        labels=str(labels),
        out=str(run),
        size=64,
        cnn_epochs=1,
        gru_epochs=int(before["epoch"]) + 2,
        batch=2,
        cnn_crop=6,
        gru_crop=8,
        max_steps=0,
        progress=False,
        val_frac=0.2,
        test_frac=0.2,
        resume=True,
    )
    train(cfg)
    after = load_checkpoint(run / "last.pt")
    assert before["stage"] == after["stage"] == "gru"
    assert after["epoch"] == before["epoch"] + 1  # one more epoch, not a restart


def test_export_parity_metadata_and_evaluate(run: Path, tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    import onnxruntime as ort

    out = tmp_path / "m.onnx"
    diff = export_checkpoint(run / "checkpoint.pt", out)  # default: S in 1,2,7,40,128 and B in 1,2
    assert diff < 1e-4
    model = onnx.load(str(out))
    assert check_gru_nodes(model) >= 1  # every GRU node has linear_before_reset == 1
    meta = read_metadata(out)
    assert meta["schema_version"] == 1 and meta["class_names"] == list(RSNA_CLASSES)
    assert meta["input_size"] == 64 and meta["input_layout"] == "BSCHW"
    assert [w["width"] for w in meta["windows"]] == [80, 200, 380]
    assert set(meta["thresholds"]) == set(RSNA_CLASSES)
    assert "research use only" in meta["intended_use"]
    assert all(isinstance(p.value, str) and json.loads(p.value) is not None for p in model.metadata_props)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [MODEL_INPUT_NAME]
    assert [o.name for o in sess.get_outputs()] == [MODEL_SLICE_OUTPUT, MODEL_STUDY_OUTPUT]
    probs, study = sess.run(None, {MODEL_INPUT_NAME: np.random.rand(1, 9, 3, 64, 64).astype(np.float32)})
    assert probs.shape == (1, 9, 6) and study.shape == (1, 6)
    assert (probs >= 0).all() and (probs <= 1).all()

    data, labels = tiny_data
    result = evaluate_onnx(out, data, labels)
    assert result["n_studies"] == 6
    assert np.isfinite(result["weighted_log_loss"])
    # the study decision at the model's study thresholds, counted here study by study
    onnx_model, label_rows = load_onnx(out), read_labels(labels)
    flagged, positive = [], []
    for ref in find_series(data):
        study_any = onnx_model.predict(ref.read_hu(), ref.geometry)[1][0]
        flagged.append(bool(study_any >= meta["study_thresholds"]["any"]))
        positive.append(any(label_rows[s][0] > 0.5 for s in ref.sop_uids if s in label_rows))
    decision = result["study_decision"]
    assert decision["n_positive"] == sum(positive)
    assert decision["positives_found"] == sum(f and p for f, p in zip(flagged, positive))
    assert decision["normal_flagged"] == sum(f and not p for f, p in zip(flagged, positive))

    # issue 10: millimetre preprocessing, calibration and the trained range travel in the metadata
    assert meta["preprocessing"]["version"] == 2 and meta["preprocessing"]["kind"] == "head_mm"
    assert meta["preprocessing"]["size"] == 64 and meta["preprocessing"]["field_mm"] == 230.0
    ckpt = load_checkpoint(run / "checkpoint.pt")
    temps = meta["calibration"]["temperatures"]
    assert meta["calibration"]["method"] == "temperature" and set(temps) == set(RSNA_CLASSES)
    net = model_from_checkpoint(ckpt)
    assert net.head.slice_temperature.tolist() == pytest.approx([temps[c] for c in RSNA_CLASSES], abs=1e-4)
    assert meta["trained_range"]["matrix"] == [64, 64]
    assert meta["trained_range"]["slice_thickness_mm"] == [5.0, 5.0]
    lo, hi = meta["trained_range"]["field_of_view_mm"]
    assert 230.0 <= lo <= hi <= 260.0
    assert "Div" in {n.op_type for n in model.graph.node}  # the temperatures are in the graph
    assert set(meta["study_thresholds"]) == set(RSNA_CLASSES)  # chosen at study level by training


def test_viewer_engine_runs_a_v2_model_in_stack_order(
    run: Path, tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    """The viewer's engine reads the model's preprocessing (v2) and gives the probabilities evaluate gives."""
    from training.evaluate import load_onnx
    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.volume import StackVolume
    from viewer.core.inference.engine import InferenceEngine
    from viewer.core.preprocess import geometry_from_stack

    out = tmp_path / "m.onnx"
    export_checkpoint(run / "checkpoint.pt", out, parity=False)
    engine = InferenceEngine(out, provider="cpu", cache=None)
    assert engine.info.preprocessing.version == 2 and engine.info.preprocessing.size == 64
    data, _ = tiny_data
    stack = load_paths([data / "study_0000"]).all_stacks()[0]
    vol = StackVolume(stack)
    try:
        pred = engine.predict_volume(vol, use_cache=False)
        hu = vol.load_all()
    finally:
        vol.close()
    ref, _, _ = load_onnx(out).predict(hu, geometry_from_stack(stack))
    np.testing.assert_allclose(pred.slice_probs, ref, atol=1e-5)

    # the same study stored with a flipped row direction (mirrored columns, normal pointing down, so the
    # stack runs top to bottom) and unsigned pixels gives the same probabilities, slice by slice
    import pydicom

    flipped = tmp_path / "flipped"
    flipped.mkdir()
    for path in sorted((data / "study_0000").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        cols, ps = int(ds.Columns), float(ds.PixelSpacing[1])
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, ::-1]).tobytes()
        ds.ImageOrientationPatient = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x0 + (cols - 1) * ps, y0, z0]
        ds.save_as(flipped / path.name)
    stack_f = load_paths([flipped]).all_stacks()[0]
    vol_f = StackVolume(stack_f)
    try:
        pred_f = engine.predict_volume(vol_f, use_cache=False)
    finally:
        vol_f.close()
    assert [s.sop_instance_uid for s in stack_f.slices] == [s.sop_instance_uid for s in stack.slices][::-1]
    np.testing.assert_allclose(pred_f.slice_probs[::-1], pred.slice_probs, atol=1e-5)
    np.testing.assert_allclose(pred_f.study_probs, pred.study_probs, atol=1e-5)


def test_thresholds_command_reproduces_training_and_switches_policy(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_data: tuple[Path, Path]
) -> None:
    from training.cli import main

    report = json.loads((run / "metrics.json").read_text())
    assert report["cnn_gru"]["threshold_policy"] == "triage-f1"  # the TrainConfig default
    copy = tmp_path / "ckpt.pt"
    # same policy on the checkpoint's own split -> the thresholds training chose, without retraining
    assert main(["thresholds", str(run / "checkpoint.pt"), "--policy", "triage", "--out", str(copy)]) == 0
    summary = json.loads(capsys.readouterr().out)
    for c in RSNA_CLASSES:
        assert summary["thresholds"][c] == pytest.approx(report["cnn_gru"]["thresholds"][c], abs=2e-6)
    assert load_checkpoint(copy)["metrics"]["weighted_log_loss"] == pytest.approx(
        report["cnn_gru"]["test"]["weighted_log_loss"], abs=1e-4
    )

    assert main(["thresholds", str(copy), "--policy", "sensitivity"]) == 0  # in place
    capsys.readouterr()
    ckpt = load_checkpoint(copy)
    assert ckpt["train_config"]["threshold_policy"] == "sensitivity"
    assert [h["threshold_policy"] for h in ckpt["threshold_history"]] == ["triage-f1", "triage-f1"]
    assert ckpt["threshold_history"][-1]["thresholds"] == summary["thresholds"]
    out = tmp_path / "m.onnx"
    export_checkpoint(copy, out, parity=False)
    meta = read_metadata(out)
    assert meta["thresholds"] == ckpt["thresholds"]
    assert meta["threshold_policy"].startswith("per class, the highest threshold with slice-level")
    # study thresholds: chosen at study level on the same validation split, exported beside the slice ones
    assert set(ckpt["study_thresholds"]) == set(RSNA_CLASSES)
    assert meta["study_thresholds"] == ckpt["study_thresholds"]
    assert "study level" in meta["study_threshold_policy"]

    # the exported model's study thresholds re-chosen on studies through ONNX Runtime, metadata only
    data, labels = tiny_data
    assert main(["study-thresholds", str(out), "--data", str(data), "--labels", str(labels), "--write"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert read_metadata(out)["study_thresholds"] == report["study_thresholds"]
    assert report["at_chosen"]["n_studies"] > 0 and report["at_chosen"]["sensitivity"] >= 0.95
    # --slice-policy: the slice thresholds are re-chosen on the same (fresh) studies as well
    argv = ["study-thresholds", str(out), "--data", str(data), "--labels", str(labels), "--write"]
    assert main([*argv, "--slice-policy", "triage", "--chosen-on", "six tiny studies"]) == 0
    report = json.loads(capsys.readouterr().out)
    meta = read_metadata(out)
    assert meta["thresholds"] == report["slice_thresholds"] and set(meta["thresholds"]) == set(RSNA_CLASSES)
    assert meta["threshold_policy"].endswith("; chosen on six tiny studies")
    assert report["slice_at_thresholds"]["any"]["sensitivity"] >= 0.95

    with pytest.raises(SystemExit):  # argparse refuses an unknown policy
        main(["thresholds", str(copy), "--policy", "f2"])


def test_evaluate_shift_reports_each_shift_and_model(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cli import main
    from viewer.core.paths import bundled_model_path

    model = tmp_path / "m.onnx"
    export_checkpoint(run / "checkpoint.pt", model, parity=False, model_version="9.9.9")
    assert read_metadata(model)["model_version"] == "9.9.9"
    bundled = bundled_model_path()
    out = tmp_path / "shifts.json"
    argv = [
        "evaluate",
        str(model),
        "--shift",
        "none,thin",
        "--studies",
        "2",
        "--seed",
        "77",
        "--out",
        str(out),
    ]
    argv += ["--compare", f"bundled={bundled}"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "thin" in table and "bundled" in table
    result = json.loads(out.read_text())
    assert set(result["shifts"]) == {"none", "thin"}
    for shift in ("none", "thin"):
        for name in ("model", "bundled"):
            m = result["shifts"][shift][name]["metrics"]
            assert m["n_studies"] == 2 and 0.0 <= m["slice_ece"]["any"] <= 1.0
    # models with study thresholds report the study decision (sensitivity, normal studies unflagged)
    for name in ("model", "bundled"):
        summary = result["shifts"]["none"][name]["summary"]
        decision = result["shifts"]["none"][name]["metrics"]["study_decision"]
        assert decision["n_studies"] == 2
        assert summary["normal_unflagged"] == decision["normal_unflagged_share"]
    # the same study seeds under every shift: same heads, lesions and slice counts
    assert (
        result["shifts"]["none"]["model"]["metrics"]["n_slices"]
        == result["shifts"]["thin"]["model"]["metrics"]["n_slices"]
    )
    # the card is generated from these files, with the targets marked
    card = tmp_path / "CARD.md"
    assert main(["card", str(run), "--model", str(model), "--shifts", str(out), "--out", str(card)]) == 0
    text = card.read_text()
    assert "| thin |" in text and "slice `any` AUC >= 0.98" in text and "CNN only (ablation)" in text
    assert "Preprocessing version 2" in text and "temperature" in text
    assert main(["evaluate", str(model), "--shift", "fog"]) == 2
    assert main(["evaluate", str(model)]) == 2  # neither --data nor --shift


def test_calibrate_command_refits_temperatures_on_fresh_studies(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_data: tuple[Path, Path]
) -> None:
    # issue 10: temperatures refitted on validation studies of the claimed range, thresholds re-chosen
    # on them, the previous calibration kept; the exported graph applies the new temperatures
    from training.calibration import T_MAX, T_MIN
    from training.cli import main
    from training.study_thresholds import FALLBACK_THRESHOLD, P_USABLE_HI, P_USABLE_LO

    data, labels = tiny_data
    out = tmp_path / "recal.pt"
    argv = ["calibrate", str(run / "checkpoint.pt"), "--data", str(data), "--labels", str(labels)]
    assert main([*argv, "--out", str(out), "--fitted-on", "six tiny studies"]) == 0
    result = json.loads(capsys.readouterr().out)
    before, ckpt = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(out)
    assert ckpt["calibration_history"][-1]["calibration"] == before["calibration"]
    cal = ckpt["calibration"]
    assert cal["fitted_on"] == "six tiny studies" and result["after"]["n_studies"] == 6
    for key in ("temperatures", "study_temperatures"):
        assert set(cal[key]) == set(RSNA_CLASSES)
        assert all(T_MIN < t < T_MAX for t in cal[key].values())
    state = ckpt["model"]
    assert state["head.study_temperature"].tolist() == pytest.approx(
        [cal["study_temperatures"][c] for c in RSNA_CLASSES], abs=1e-4
    )
    for c, t in ckpt["study_thresholds"].items():
        assert t == FALLBACK_THRESHOLD or P_USABLE_LO <= t <= P_USABLE_HI, c
    # same weights: the exported model ranks the studies as the original does, class by class
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    export_checkpoint(run / "checkpoint.pt", a, parity=False)
    export_checkpoint(out, b, parity=False)
    assert read_metadata(b)["calibration"]["study_temperatures"] == cal["study_temperatures"]
    ma, mb = load_onnx(a, threads=1), load_onnx(b, threads=1)
    ref = find_series(data)[0]
    hu = ref.read_hu()
    (sa, _, _), (sb, _, _) = ma.predict(hu, ref.geometry), mb.predict(hu, ref.geometry)
    for k, c in enumerate(RSNA_CLASSES):
        ta, tb = before["calibration"]["temperatures"][c], cal["temperatures"][c]
        la = np.log(sa[:, k] / (1 - sa[:, k])) * ta
        lb = np.log(sb[:, k] / (1 - sb[:, k])) * tb
        assert lb == pytest.approx(la, abs=2e-3 * max(1.0, float(np.abs(la).max())))
