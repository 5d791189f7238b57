"""Two CPU processes under torchrun (gloo) for a few steps of both stages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from training.train import load_checkpoint


def test_torchrun_two_cpu_processes(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, labels = tiny_data
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "training.cli",
        "train",
        "--data",
        str(data),
        "--labels",
        str(labels),
        "--out",
        str(out),
        "--size",
        "32",
        "--cnn-epochs",
        "1",
        "--gru-epochs",
        "1",
        "--batch",
        "1",
        "--cnn-crop",
        "4",
        "--gru-crop",
        "6",
        "--max-steps",
        "2",
        "--no-progress",
        "--val-frac",
        "0.2",
        "--test-frac",
        "0.2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed: world 2, backend gloo" in proc.stderr
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["model_config"]["use_gru"] is True
    assert load_checkpoint(out / "last.pt")["step"] == 2
