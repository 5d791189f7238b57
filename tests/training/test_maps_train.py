"""slicewise-train maps: the map decoder trained on a frozen checkpoint; the exported model keeps the base
model's probabilities and adds slice_maps, which the viewer's engine reads (contract version 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

import torch

from training.export import export_model, read_metadata
from training.maps import MapDecoder, MapNet, compare_with_base
from training.model import ICHNet, ModelConfig
from training.train import save_checkpoint
from viewer.core.constants import RSNA_CLASSES


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny 32 px ICHNet checkpoint and its ONNX export (the 'base model')."""
    folder = tmp_path_factory.mktemp("mapsbase")
    torch.manual_seed(0)
    cfg = ModelConfig(widths=(4, 6, 8, 10, 12), embed_dim=8, seq_dim=8, gru_hidden=4, input_size=32)
    net = ICHNet(cfg).eval()
    ckpt = folder / "checkpoint.pt"
    save_checkpoint(ckpt, {"model": net.state_dict(), "model_config": cfg.to_dict()})
    meta = {
        "schema_version": 1,
        "model_name": "tiny-base",
        "model_version": "0.0.1",
        "class_names": list(RSNA_CLASSES),
        "modality": "CT",
        "input_layout": "BSCHW",
        "input_size": 32,
        "windows": [{"width": 80, "level": 40}, {"width": 200, "level": 80}, {"width": 380, "level": 40}],
        "normalization": "test",
        "slice_order": "ascending_position",
        "thresholds": {c: 0.5 for c in RSNA_CLASSES},
        "intended_use": "research use only; trained on synthetic data; not for clinical use",
        "min_slices": 3,
        "exporter": {"opset": 17, "dynamo": False},
    }
    onnx_path = folder / "base.onnx"
    export_model(net, onnx_path, meta, slice_counts=(1, 5), batch_sizes=(1,))
    return ckpt, onnx_path


def test_the_decoder_sees_the_cnn_maps_and_keeps_the_probabilities(base: tuple[Path, Path]) -> None:
    from training.train import load_checkpoint, model_from_checkpoint

    net = model_from_checkpoint(load_checkpoint(base[0]))
    x = torch.rand(1, 5, 3, 32, 32)
    for stride, fine in ((2, True), (4, False)):
        model = MapNet(net, MapDecoder(net.cfg.widths, fine=fine)).eval()
        with torch.no_grad():
            slice_logits, study_logits, maps = model(x)
            ref_slice, ref_study = net(x)
        assert maps.shape == (1, 5, 5, 32 // stride, 32 // stride)
        assert torch.equal(slice_logits, ref_slice) and torch.equal(study_logits, ref_study)


def test_cli_trains_exports_a_model_the_viewer_reads(base: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.core.inference_models import blood_hu, make_stack
    from training.cli import main as train_main
    from viewer.core.inference.engine import InferenceEngine, load_model_info
    from viewer.core.inference.results import StackPrediction

    ckpt, base_onnx = base
    out = tmp_path / "run"
    argv = ["maps", str(ckpt), "--base-model", str(base_onnx), "--out", str(out), "--studies", "2"]
    argv += ["--val-studies", "1", "--max-epochs", "2", "--threads", "1", "--workers", "0"]
    argv += ["--seed", "7100091", "--synth-size", "64", "--max-slices", "8"]
    assert train_main(argv) == 0
    model = out / "slicewise_ich.onnx"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["parity_max_abs_diff"] <= 1e-4 and metrics["epochs"] == 2
    assert metrics["unchanged_vs_base_max_abs_diff"] < 1e-5
    meta = read_metadata(model)
    assert meta["contract_version"] == 2 and meta["model_version"] == "0.2.0"
    assert meta["maps"]["size"] == 16 and meta["maps"]["classes"] == list(RSNA_CLASSES[1:])
    assert set(meta["maps"]["thresholds"]) == set(RSNA_CLASSES[1:])
    assert meta["thresholds"] == read_metadata(base_onnx)["thresholds"]  # the base model's metadata kept
    info = load_model_info(model)
    assert info.maps is not None and info.maps.size == 16
    rng = np.random.default_rng(1)
    x = rng.random((1, 9, 3, 32, 32), dtype=np.float32)
    assert compare_with_base(model, base_onnx, [x]) < 1e-5
    pred = InferenceEngine(model, provider="cpu", cache=None).analyse_hu(make_stack(8), blood_hu(8, (3, 4)))
    assert isinstance(pred, StackPrediction) and pred.maps is not None
    assert pred.maps.pixels.shape == (8, 5, 64, 64)


# ------------------------------------------------------------------------- a version-2 base model
V2_METADATA = {"size": 32, "field_mm": 230.0, "slab_mm": 5.0}


@pytest.fixture(scope="module")
def base_v2(base: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny base with version-2 preprocessing recorded (metadata only: the weights do not care)."""
    from training.export import rewrite_metadata
    from viewer.core.preprocess import PreprocessSpec

    spec = PreprocessSpec(version=2, **V2_METADATA)  # type: ignore[arg-type]
    out = tmp_path_factory.mktemp("mapsbase2") / "base_v2.onnx"
    rewrite_metadata(base[1], {"preprocessing": spec.to_metadata()}, out=out)
    return base[0], out


def test_version_2_targets_sit_on_the_blood_of_the_inputs() -> None:
    """The targets go through the pixels' own version-2 transform (head centre, mm grid, slabs): on the
    map grid the blood fractions lie where the inputs show blood density, for an off-centre head."""
    from training.maps import acquisition_config, model_inputs_and_targets
    from training.synth import render_study
    from viewer.core.preprocess import PreprocessSpec

    spec = PreprocessSpec(version=2, size=64, field_mm=230.0, slab_mm=5.0)
    cfg = acquisition_config("wide", synth_size=128, max_slices=10)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        study = render_study(rng, 10, cfg)
        if study.fractions and max(float(f.max()) for f in study.fractions.values()) > 0.9:
            break
    x, y = model_inputs_and_targets(study, spec, 32)
    assert x.shape == (10, 3, 64, 64) and y.shape == (10, 5, 32, 32)
    blood = y.max(axis=1) >= 0.5
    assert blood.any()
    brain_window = x[:, 0].reshape(10, 32, 2, 32, 2).mean(axis=(2, 4))  # (HU - 0) / 80 on the map grid
    tissue = (brain_window > 0.2) & (brain_window < 0.55) & ~(y.max(axis=1) > 0)
    assert brain_window[blood].mean() > brain_window[tissue].mean() + 0.15


def test_cli_trains_maps_on_a_version_2_base(base_v2: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.core.inference_models import blood_hu, make_stack
    from training.cli import main as train_main
    from viewer.core.inference.engine import InferenceEngine, load_model_info
    from viewer.core.inference.results import StackPrediction

    ckpt, base_onnx = base_v2
    out = tmp_path / "run"
    argv = ["maps", str(ckpt), "--base-model", str(base_onnx), "--out", str(out), "--studies", "2"]
    argv += ["--val-studies", "1", "--max-epochs", "1", "--threads", "1", "--workers", "0"]
    argv += ["--seed", "7100093", "--synth-size", "64", "--max-slices", "6", "--acquisitions", "wide"]
    assert train_main(argv) == 0
    model = out / "slicewise_ich.onnx"
    meta = read_metadata(model)
    assert meta["preprocessing"]["version"] == 2 and "preprocessing version 2" in meta["maps"]["grid"]
    assert json.loads((out / "metrics.json").read_text())["preprocessing_version"] == 2
    info = load_model_info(model)
    assert info.preprocessing.version == 2 and info.maps is not None and info.maps.size == 16
    pred = InferenceEngine(model, provider="cpu", cache=None).analyse_hu(make_stack(8), blood_hu(8, (3, 4)))
    assert isinstance(pred, StackPrediction) and pred.maps is not None and pred.maps.head_grid is not None
    assert pred.maps.pixels.shape == (8, 5, 64, 64)


# ------------------------------------------------------------------ full-resolution maps and attaching
def test_a_full_resolution_decoder_reads_the_input_at_full_resolution(base: tuple[Path, Path]) -> None:
    """Stride 1: maps on the model grid itself; a change of one input pixel changes the map there (the
    1x1 path of the input), the base model's probabilities stay exactly the base model's."""
    from training.maps import build_decoder
    from training.train import load_checkpoint, model_from_checkpoint

    net = model_from_checkpoint(load_checkpoint(base[0]))
    decoder = build_decoder(net, dim=16, fine_dim=8, map_stride=1)
    torch.nn.init.constant_(decoder.pixel.weight, 1.0)
    model = MapNet(net, decoder).eval()
    x = torch.rand(1, 5, 3, 32, 32)
    with torch.no_grad():
        slice_logits, study_logits, maps = model(x)
        ref_slice, ref_study = net(x)
        y = x.clone()
        y[0, 2, :, 9, 20] += 0.5
        changed = (model(y)[2] - maps).abs().sum(dim=2)[0]  # (S, H, W)
    assert decoder.stride == 1 and maps.shape == (1, 5, 5, 32, 32)
    assert torch.equal(slice_logits, ref_slice) and torch.equal(study_logits, ref_study)
    assert changed[2, 9, 20] == changed.max() and changed[2, 9, 20] > 0
    assert changed[[0, 1, 3, 4]].max() == 0  # other slices untouched


def test_seg_loss_weights_false_negatives_with_tversky_beta() -> None:
    from training.seg import seg_loss

    target = torch.zeros(1, 2, 8, 8)
    target[0, 0, 2:6, 2:6] = 1.0
    missed = torch.full((1, 2, 8, 8), -4.0)  # predicts nothing: all false negatives
    dice = seg_loss(missed, target)
    tversky = seg_loss(missed, target, alpha=0.3, beta=0.7)
    weighted = seg_loss(missed, target, pos_weight=torch.tensor([3.0, 1.0]))
    assert tversky > dice and weighted > dice
    exact = torch.where(target > 0, 8.0, -8.0)
    assert seg_loss(exact, target, alpha=0.3, beta=0.7) < 0.01


def test_cli_trains_full_resolution_maps_and_attaches_them_to_another_gru(
    base: tuple[Path, Path], tmp_path: Path
) -> None:
    """``maps --map-stride 1`` exports 32 px maps on a 32 px model; ``maps-attach`` puts that decoder on a
    model with the same CNN and another GRU without training (its probabilities, the decoder's maps and
    metadata), and refuses a model with another CNN."""
    from training.cli import main as train_main
    from training.errors import DecoderMismatchError
    from training.maps import attach_decoder
    from training.train import load_checkpoint, model_from_checkpoint
    from viewer.core.inference.engine import load_model_info

    ckpt, base_onnx = base
    out = tmp_path / "run"
    argv = ["maps", str(ckpt), "--base-model", str(base_onnx), "--out", str(out), "--studies", "2"]
    argv += ["--val-studies", "1", "--max-epochs", "1", "--threads", "1", "--workers", "0"]
    argv += ["--seed", "7100095", "--synth-size", "64", "--max-slices", "6", "--map-stride", "1"]
    argv += ["--tversky-alpha", "0.3", "--tversky-beta", "0.7", "--pos-weight", "1,1,1,3,1"]
    assert train_main(argv) == 0
    maps_model = out / "slicewise_ich.onnx"
    meta = read_metadata(maps_model)
    assert meta["maps"]["size"] == 32 and "full resolution" in meta["maps"]["grid"]
    assert len(meta["metrics"]["maps"]["cnn_sha256"]) == 64

    # another GRU on the same CNN: a different head, same CNN weights
    net = model_from_checkpoint(load_checkpoint(ckpt))
    torch.manual_seed(5)
    for p in net.head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    other_ckpt, other_onnx = tmp_path / "other.pt", tmp_path / "other.onnx"
    save_checkpoint(other_ckpt, {"model": net.state_dict(), "model_config": net.cfg.to_dict()})
    base_meta = dict(read_metadata(base_onnx), model_version="0.0.2")
    export_model(net.eval(), other_onnx, base_meta, slice_counts=(1, 5), batch_sizes=(1,))
    attached = tmp_path / "attached.onnx"
    argv = ["maps-attach", str(maps_model), "--decoder", str(out / "maps.pt")]
    argv += ["--checkpoint", str(other_ckpt), "--base-model", str(other_onnx)]
    argv += ["--out", str(attached), "--model-version", "0.2.9"]
    assert train_main(argv) == 0
    x = np.random.default_rng(3).random((1, 6, 3, 32, 32), dtype=np.float32)
    assert compare_with_base(attached, other_onnx, [x]) < 1e-5  # the new GRU's probabilities
    with pytest.raises(Exception, match="differ"):
        compare_with_base(attached, base_onnx, [x])  # not the old ones
    new_meta = read_metadata(attached)
    assert new_meta["model_version"] == "0.2.9" and new_meta["maps"] == meta["maps"]
    assert new_meta["metrics"]["maps"]["attached"]["maps_vs_decoder_model_max_abs_diff"] < 1e-5
    info = load_model_info(attached)
    assert info.maps is not None and info.maps.size == 32

    # another CNN: refused by the fingerprint
    for p in net.cnn.parameters():
        p.data.mul_(1.1)
    moved = tmp_path / "moved.pt"
    save_checkpoint(moved, {"model": net.state_dict(), "model_config": net.cfg.to_dict()})
    with pytest.raises(DecoderMismatchError, match="trained on CNN"):
        attach_decoder(out / "maps.pt", maps_model, moved, other_onnx, tmp_path / "x.onnx", model_version="0")
