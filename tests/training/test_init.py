"""``train --init``: a run starts from another checkpoint's weights; an unfitting one is refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("torch")

import torch

from tests.training.tiny_train import tiny_train_config
from training.errors import CheckpointError
from training.model import ModelConfig
from training.train import TrainConfig, load_checkpoint, load_init, train


def _cfg(data: Path, labels: Path, out: Path) -> TrainConfig:
    return tiny_train_config(data, labels, out)


@pytest.fixture(scope="module")
def base(tiny_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    data, labels = tiny_data
    cfg = _cfg(data, labels, tmp_path_factory.mktemp("init") / "base")
    train(cfg)
    return cfg


def _params(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Trainable tensors under ``prefix`` (batch-norm running statistics move even at lr 0)."""
    moving = ("running_", "num_batches")
    return {k: v for k, v in state.items() if k.startswith(prefix) and not any(m in k for m in moving)}


def test_init_starts_both_stages_from_the_checkpoint(base: TrainConfig, tmp_path: Path) -> None:
    init = Path(base.out) / "checkpoint.pt"
    # lr 0: the weights a run ends with are the weights it started from
    cfg = replace(base, out=str(tmp_path / "warm"), init=str(init), lr=0.0, gru_lr=0.0, seed=1)
    train(cfg)
    src = load_checkpoint(init)["model"]
    got = load_checkpoint(tmp_path / "warm" / "checkpoint.pt")["model"]
    for prefix in ("cnn.", "head.cnn_head.", "head.gru.", "head.mix.", "head.seq_head.", "head.study_head."):
        want = _params(src, prefix)
        assert want, prefix
        for k, v in want.items():
            assert torch.equal(got[k], v), k
    # a run without --init starts elsewhere (the comparison above can fail)
    cold = replace(cfg, out=str(tmp_path / "cold"), init="")
    train(cold)
    fresh = load_checkpoint(tmp_path / "cold" / "checkpoint.pt")["model"]
    assert not torch.equal(fresh["cnn.stem.0.0.weight"], src["cnn.stem.0.0.weight"])


def test_init_from_a_cnn_only_checkpoint_leaves_the_sequence_head_fresh(base: TrainConfig) -> None:
    cfg = ModelConfig(use_gru=True, input_size=64, widths=(8, 12, 16, 24))
    weights = load_init(Path(base.out) / "cnn_only.pt", cfg)
    assert any(k.startswith("cnn.") for k in weights) and "head.cnn_head.weight" in weights
    assert not any(k.startswith(("head.gru.", "head.study_head.")) for k in weights)
    assert not any("temperature" in k for k in weights)


def test_an_unfitting_init_checkpoint_is_refused_before_training(base: TrainConfig, tmp_path: Path) -> None:
    init = Path(base.out) / "checkpoint.pt"
    cfg = replace(base, out=str(tmp_path / "bad"), init=str(init), widths="8,16,24,32")
    with pytest.raises(CheckpointError, match=r"widths \(8, 12, 16, 24\) != \(8, 16, 24, 32\)"):
        train(cfg)
    assert not (tmp_path / "bad" / "cnn_only.pt").exists()
    with pytest.raises(CheckpointError, match="not found"):
        train(replace(cfg, init=str(tmp_path / "missing.pt")))
