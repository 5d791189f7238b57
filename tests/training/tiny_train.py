"""The smallest training run the training tests share: 64 px, a tiny CNN, one epoch per stage, 2 steps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from training.train import TrainConfig


def tiny_train_config(data: Path, labels: Path, out: Path, **changes: object) -> TrainConfig:
    """A :class:`TrainConfig` for ``data``/``labels`` writing to ``out`` (cache beside it), changed by
    ``changes``."""
    cfg = TrainConfig(
        data=str(data),
        labels=str(labels),
        out=str(out),
        cache=str(out.parent / "cache"),
        size=64,
        widths="8,12,16,24",
        cnn_epochs=1,
        gru_epochs=1,
        batch=2,
        cnn_crop=6,
        gru_crop=8,
        max_steps=2,
        progress=False,
        val_frac=0.2,
        test_frac=0.2,
    )
    return replace(cfg, **changes)  # type: ignore[arg-type]
