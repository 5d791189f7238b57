"""slicewise-train segment / segment-eval: the segmentation-only model of the slice_segmentation task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from tests.core.inference_models import blood_hu, make_stack
from training.cli import main as train_main
from training.errors import ExportParityError
from training.export import runtime_parity
from training.seg import (
    SEG_OUTPUT,
    SegExportWrapper,
    TinyUNet,
    export_segmentation,
    masks_to_grid,
    seg_metadata,
)
from viewer.core.inference.engine import InferenceEngine, load_model_info
from viewer.core.tasks.slice_segmentation import SegmentationPrediction


def test_export_follows_the_contract_with_parity(tmp_path: Path) -> None:
    net = TinyUNet(base=4)
    path = tmp_path / "seg.onnx"
    diff = export_segmentation(net, path, seg_metadata(32), slice_counts=(1, 5))
    assert diff <= 1e-4
    info = load_model_info(path)
    assert info.task == "slice_segmentation" and info.input_size == 32 and len(info.class_names) == 5
    engine = InferenceEngine(path, provider="cpu", cache=None)
    pred = engine.analyse_hu(make_stack(6), blood_hu(6, (2,)))
    assert isinstance(pred, SegmentationPrediction) and pred.pixels.shape == (6, 5, 64, 64)


def test_the_parity_check_names_an_output_that_differs(tmp_path: Path) -> None:
    """The export's check compares ONNX Runtime with the exported module: weights changed after the export
    are found, with the output, batch and slice count named."""
    import torch

    net = TinyUNet(base=4)
    path = tmp_path / "seg.onnx"
    export_segmentation(net, path, seg_metadata(32), slice_counts=(1,))
    with torch.no_grad():
        next(net.parameters()).add_(0.5)
    with pytest.raises(ExportParityError, match=rf"{SEG_OUTPUT}: .* at batch=1, slices=1"):
        runtime_parity(path, SegExportWrapper(net).eval(), [SEG_OUTPUT], 3, 32, slice_counts=(1,))


def test_masks_go_to_the_model_grid_like_the_pixels() -> None:
    frac = np.zeros((1, 1, 64, 48), dtype=np.float32)
    frac[0, 0, 10:20, 30:40] = 1.0
    grid = masks_to_grid(frac, 32)
    assert grid.shape == (1, 1, 32, 32)
    # padded to 64 x 64 (8 columns of air each side), halved: rows 5-9, columns 19-23
    assert grid[0, 0].sum() == pytest.approx(frac.sum() / 4)
    ys, xs = np.nonzero(grid[0, 0] > 0.99)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (5, 9, 19, 23)


def test_cli_trains_exports_and_evaluates_a_tiny_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["segment", "--out", str(tmp_path / "run"), "--studies", "2", "--val-studies", "1"]
    argv += ["--max-epochs", "1", "--synth-size", "64", "--input-size", "32", "--min-slices", "6"]
    argv += ["--max-slices", "8", "--base", "4", "--threads", "1"]
    assert train_main(argv) == 0
    model = tmp_path / "run" / "slicewise_seg.onnx"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["parity_max_abs_diff"] <= 1e-4 and metrics["epochs"] == 1
    assert load_model_info(model).task == "slice_segmentation"
    capsys.readouterr()
    assert train_main(["segment-eval", str(model), "--studies", "1", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["dice"]) == {
        "epidural",
        "intraparenchymal",
        "intraventricular",
        "subarachnoid",
        "subdural",
    }
    assert result["studies"] == 1
