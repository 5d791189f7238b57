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

from training.errors import CheckpointError
from training.evaluate import evaluate_onnx
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

    with pytest.raises(SystemExit):  # argparse refuses an unknown policy
        main(["thresholds", str(copy), "--policy", "f2"])
