"""Shared tiny synthetic data for the training tests (generated once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """6 studies of 8-10 slices at 64 px: (data folder, labels.csv)."""
    pytest.importorskip("torch")
    from training.synth import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("tiny") / "data"
    cfg = SynthConfig(size=64, min_slices=8, max_slices=10, p_negative=0.2)
    labels = generate_dataset(out, 6, seed=11, cfg=cfg)
    return out, labels
