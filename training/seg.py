"""A small segmentation-only model for the ``slice_segmentation`` task (issue 11 item 6).

    slices [B, S, C, H, W] (preprocessing version 1: pad to square, area resize, CT windows)
      -> per slice a tiny 2D U-Net (3 down / 3 up stages, skip connections)
      -> sigmoid -> ``slice_masks`` [B, S, K, H, W], K = the five haemorrhage subtypes

Trained on freshly rendered synthetic studies (:func:`training.synth.render_study`, in memory) against
their per-subtype blood fractions (the masks of ``slicewise-train synth --masks``), moved onto the model
grid with the same pad + area resize as the pixels; loss = BCE (soft targets) + soft Dice per class.
Exported with the legacy TorchScript exporter (opset 17, dynamic batch and slice axes) and checked
against ONNX Runtime. ``slicewise-train segment`` runs it all.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from training.export import DEFAULT_INTENDED_USE, json_safe, runtime_parity, write_onnx
from training.synth import SUBTYPES, SynthConfig, SynthStudy, render_study, write_study
from viewer.core.constants import MIN_SLICES_FOR_MODEL, MODEL_WINDOWS, ONNX_SCHEMA_VERSION
from viewer.core.preprocess import PreprocessSpec, pad_to_square, preprocess, resize_slices

if TYPE_CHECKING:
    from viewer.core.inference.engine import InferenceEngine
    from viewer.core.tasks import TaskResult

log = logging.getLogger(__name__)

SEG_TASK = "slice_segmentation"
SEG_OUTPUT = "slice_masks"
SEG_MODEL_NAME = "slicewise-ich-seg"
SEG_MODEL_VERSION = "0.1.0"
PARITY_SLICES: tuple[int, ...] = (1, 3, 17)


@dataclass
class SegConfig:
    out: Path
    studies: int = 120
    seed: int = 1_100_011  # training studies; validation uses seed + 1 (never a seed of train.py)
    val_studies: int = 16
    input_size: int = 128
    synth_size: int = 256
    min_slices: int = 20
    max_slices: int = 30
    base: int = 8  # channels of the first U-Net stage (x2 per stage)
    batch: int = 32
    crop: int = 64  # training crops (px of the model grid), mostly centred on lesion pixels
    lr: float = 5e-3
    max_minutes: float = 10.0
    max_epochs: int = 40
    negative_share: float = 0.3  # share of lesion-free slices kept in the training set
    threads: int = 2


class TinyUNet(nn.Module):
    """(N, C, H, W) -> (N, K, H, W) logits; H and W divisible by 16.

    A stride-2 stem (the U-Net runs at half the input resolution, the logits are upsampled bilinearly):
    a quarter of the compute of a full-resolution U-Net, which lets it train on a shared 2-core CPU.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = len(SUBTYPES), base: int = 8) -> None:
        super().__init__()
        widths = (base, base * 2, base * 4, base * 8)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, base, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(base),
            nn.ReLU(inplace=True),
        )

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.down = nn.ModuleList()
        cin = base
        for w in widths:
            self.down.append(block(cin, w))
            cin = w
        self.up = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(block(cin + w, w))
            cin = w
        self.head = nn.Conv2d(cin, num_classes, 1, bias=True)
        assert self.head.bias is not None
        nn.init.constant_(self.head.bias, -3.0)  # prior: lesion pixels are rare (sigmoid(-3) = 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        x = self.stem(x)
        skips = []
        for i, stage in enumerate(self.down):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for stage, skip in zip(self.up, reversed(skips[:-1])):
            x = stage(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skip], dim=1))
        return F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)


class SegExportWrapper(nn.Module):
    """[B, S, C, H, W] -> sigmoid masks [B, S, K, H, W] (the ONNX graph)."""

    def __init__(self, net: TinyUNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s = x.shape[0], x.shape[1]
        y = torch.sigmoid(self.net(x.flatten(0, 1)))
        return y.reshape(b, s, y.shape[1], y.shape[2], y.shape[3])


def spec(size: int) -> PreprocessSpec:
    return PreprocessSpec(version=1, size=size, windows=MODEL_WINDOWS)


def masks_to_grid(fractions: np.ndarray, size: int) -> np.ndarray:
    """(S, K, H, W) fractions -> (S, K, size, size) on the model grid (the pixels' pad + area resize)."""
    s, k, h, w = fractions.shape
    flat = fractions.reshape(s * k, h, w).astype(np.float32)
    return resize_slices(pad_to_square(flat, fill=0.0), size).reshape(s, k, size, size)


def study_fractions(study: Any) -> np.ndarray:
    """(S, K, H, W) float32 blood fractions of a synthetic study, K in SUBTYPES order."""
    out = np.zeros((study.hu.shape[0], len(SUBTYPES), *study.hu.shape[1:]), dtype=np.float32)
    for k, kind in enumerate(SUBTYPES):
        if kind in study.fractions:
            out[:, k] = study.fractions[kind]
    return out


def make_slices(
    n_studies: int, seed: int, cfg: SegConfig, *, negative_share: float
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n_studies`` studies and keep their lesion slices (and a share of the others):
    (inputs (N, C, size, size) uint8 = x * 255, targets (N, K, size, size) uint8 = fraction * 255)."""
    synth = SynthConfig(size=cfg.synth_size, p_negative=0.2)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for child in np.random.SeedSequence(seed).spawn(n_studies):
        rng = np.random.default_rng(child)
        study = render_study(rng, int(rng.integers(cfg.min_slices, cfg.max_slices + 1)), synth)
        target = masks_to_grid(study_fractions(study), cfg.input_size)
        lesion = target.reshape(len(target), -1).max(axis=1) > 0.05
        keep = lesion | (rng.random(len(target)) < negative_share)
        if not keep.any():
            continue
        x = preprocess(study.hu[keep], spec(cfg.input_size))
        xs.append(np.rint(x * 255.0).astype(np.uint8))
        ys.append(np.rint(np.clip(target[keep], 0.0, 1.0) * 255.0).astype(np.uint8))
    return np.concatenate(xs), np.concatenate(ys)


def lesion_crops(
    x: np.ndarray, y: np.ndarray, crop: int, rng: np.random.Generator, p_lesion: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
    """``crop`` x ``crop`` windows of (N, C, H, W) inputs and (N, K, H, W) targets: with probability
    ``p_lesion`` around a random lesion pixel (jittered), else anywhere."""
    n, _, h, w = x.shape
    xs = np.empty((n, x.shape[1], crop, crop), dtype=x.dtype)
    ys = np.empty((n, y.shape[1], crop, crop), dtype=y.dtype)
    for i in range(n):
        cy, cx = rng.integers(crop // 2, h - crop // 2 + 1), rng.integers(crop // 2, w - crop // 2 + 1)
        if rng.random() < p_lesion:
            pts = np.argwhere(y[i].max(axis=0) >= 128)
            if len(pts):
                py, px = pts[rng.integers(len(pts))]
                cy, cx = (
                    py + rng.integers(-crop // 3, crop // 3 + 1),
                    px + rng.integers(-crop // 3, crop // 3 + 1),
                )
        top = int(np.clip(cy - crop // 2, 0, h - crop))
        left = int(np.clip(cx - crop // 2, 0, w - crop))
        xs[i] = x[i, :, top : top + crop, left : left + crop]
        ys[i] = y[i, :, top : top + crop, left : left + crop]
    return xs, ys


def warmup_cosine(frac: float) -> float:
    """The learning-rate factor at ``frac`` (0..1) of a training budget: a linear warm-up over the first
    5 % from 0.05, then cosine decay to 0 (the segmentation and localisation-map decoders' schedule)."""
    frac = min(1.0, frac)
    return min(1.0, 20.0 * frac + 0.05) * 0.5 * (1.0 + float(np.cos(np.pi * frac)))


def seg_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE with soft targets + (1 - soft Tversky index), the index per class over the batch and only for
    the classes present in it (an absent class's index would only push every pixel to 0; BCE covers it).

    The Tversky index weighs false positives by ``alpha`` and false negatives by ``beta``; at 0.5 / 0.5
    (the default) it is the soft Dice. ``pos_weight`` ([K], optional) weighs each class's positive
    targets in the BCE (thin, rare structures).
    """
    weight = None if pos_weight is None else pos_weight.view(1, -1, *([1] * (logits.dim() - 2)))
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
    p = torch.sigmoid(logits)
    dims = (0, *range(2, logits.dim()))
    inter = (p * target).sum(dims)
    truth = target.sum(dims)
    false_pos, false_neg = p.sum(dims) - inter, truth - inter
    index = (inter + 0.5) / (inter + alpha * false_pos + beta * false_neg + 0.5)
    present = (truth > 1.0).float()
    return bce + ((1.0 - index) * present).sum() / present.sum().clamp(min=1.0)


def dice_scores(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> list[float | None]:
    """Per-class Dice of ``pred >= threshold`` vs ``truth >= 0.5`` over all (N, K, H, W) pixels
    (None for a class absent from both)."""
    out: list[float | None] = []
    for k in range(pred.shape[1]):
        p, t = pred[:, k] >= threshold, truth[:, k] >= 0.5
        denom = int(p.sum()) + int(t.sum())
        out.append(None if denom == 0 else 2.0 * float((p & t).sum()) / denom)
    return out


Best = tuple[float, dict[str, torch.Tensor]]  # (mean validation Dice, the weights that reached it)


def end_epoch(
    net: nn.Module,
    epoch: int,
    losses: list[float],
    dice: list[float | None],
    history: list[dict[str, Any]],
    best: Best | None,
) -> Best:
    """Record an epoch's loss and validation Dice in ``history``; the weights with the best mean Dice."""
    mean_dice = float(np.mean([d for d in dice if d is not None] or [0.0]))
    history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_dice": dice})
    log.info("epoch %d loss %.4f val dice %s (mean %.3f)", epoch, np.mean(losses), dice, mean_dice)
    if best is None or mean_dice > best[0]:
        return (mean_dice, {k: v.detach().clone() for k, v in net.state_dict().items()})
    return best


def _predict(net: TinyUNet, x_u8: np.ndarray, batch: int = 64) -> np.ndarray:
    net.eval()
    outs = []
    with torch.no_grad():
        for lo in range(0, len(x_u8), batch):
            x = torch.from_numpy(x_u8[lo : lo + batch].astype(np.float32) / 255.0)
            outs.append(torch.sigmoid(net(x)).numpy())
    return np.concatenate(outs)


def train_segmentation(cfg: SegConfig) -> tuple[Path, dict[str, Any]]:
    """Train, export ``cfg.out / slicewise_seg.onnx`` with a parity check; returns (path, metrics)."""
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    x_tr, y_tr = make_slices(cfg.studies, cfg.seed, cfg, negative_share=cfg.negative_share)
    x_va, y_va = make_slices(cfg.val_studies, cfg.seed + 1, cfg, negative_share=0.1)
    t_data = time.perf_counter() - t0
    log.info("data: %d train / %d val slices in %.0f s", len(x_tr), len(x_va), t_data)
    net = TinyUNet(in_channels=len(MODEL_WINDOWS), base=cfg.base)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps_per_epoch = max(1, len(x_tr) // cfg.batch)
    rng = np.random.default_rng(cfg.seed)
    best: Best | None = None
    history: list[dict[str, Any]] = []
    t_train = time.perf_counter()
    deadline = t_train + cfg.max_minutes * 60.0
    for epoch in range(cfg.max_epochs):
        net.train()
        order = rng.permutation(len(x_tr))
        losses = []
        for i in range(steps_per_epoch):
            idx = np.sort(order[i * cfg.batch : (i + 1) * cfg.batch])
            xb, yb = lesion_crops(x_tr[idx], y_tr[idx], min(cfg.crop, cfg.input_size), rng)
            x = torch.from_numpy(xb.astype(np.float32) / 255.0)
            y = torch.from_numpy(yb.astype(np.float32) / 255.0)
            if rng.random() < 0.5:  # left-right flip: lesions occur on both sides
                x, y = x.flip(-1), y.flip(-1)
            # warm-up, then cosine decay over the time budget (the number of epochs is not known ahead)
            frac = min(1.0, (time.perf_counter() - t_train) / (deadline - t_train))
            for group in opt.param_groups:
                group["lr"] = cfg.lr * warmup_cosine(frac)
            loss = seg_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if time.perf_counter() > deadline:
                break
        dice = dice_scores(_predict(net, x_va), y_va.astype(np.float32) / 255.0)
        best = end_epoch(net, epoch, losses, dice, history, best)
        if time.perf_counter() > deadline:
            break
    assert best is not None
    net.load_state_dict(best[1])
    train_s = time.perf_counter() - t_train
    metrics = {
        "train_slices": len(x_tr),
        "val_slices": len(x_va),
        "data_s": round(t_data, 1),
        "train_s": round(train_s, 1),
        "epochs": len(history),
        "val_dice": dict(zip(SUBTYPES, history[-1]["val_dice"])),
        "best_val_mean_dice": round(best[0], 4),
        "train_studies": f"{cfg.studies} fresh studies (training.synth SynthConfig(size={cfg.synth_size}), "
        f"seed {cfg.seed}); validation {cfg.val_studies} (seed {cfg.seed + 1})",
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": net.state_dict(), "config": _cfg_dict(cfg), "metrics": metrics}, cfg.out / "seg.pt"
    )
    path = cfg.out / "slicewise_seg.onnx"
    metrics["parity_max_abs_diff"] = export_segmentation(net, path, seg_metadata(cfg.input_size, metrics))
    (cfg.out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2))
    return path, metrics


def _cfg_dict(cfg: SegConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["out"] = str(cfg.out)
    return d


def seg_metadata(size: int, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "schema_version": ONNX_SCHEMA_VERSION,
        "task": SEG_TASK,
        "model_name": SEG_MODEL_NAME,
        "model_version": SEG_MODEL_VERSION,
        "class_names": list(SUBTYPES),
        "modality": "CT",
        "input_layout": "BSCHW",
        "input_size": size,
        "windows": [{"width": w.width, "level": w.level} for w in MODEL_WINDOWS],
        "slice_order": "ascending_position",
        "thresholds": {c: 0.5 for c in SUBTYPES},  # a pixel belongs to the class at probability >= 0.5
        "intended_use": DEFAULT_INTENDED_USE,
        "min_slices": MIN_SLICES_FOR_MODEL,
        "train_data": "synthetic head CT studies and their blood-fraction masks from training.synth",
        "metrics": metrics or {},
        "exporter": {"torch": torch.__version__, "onnx": onnx.__version__, "opset": 17, "dynamo": False},
    }


def export_segmentation(
    net: TinyUNet, out_path: Path, metadata: dict[str, Any], *, slice_counts: Sequence[int] = PARITY_SLICES
) -> float:
    """Legacy exporter, opset 17, dynamic batch/slices; returns the parity max abs diff (raises beyond
    :data:`training.export.PARITY_ATOL`)."""
    wrapper = SegExportWrapper(net.eval().cpu()).eval()
    size = int(metadata["input_size"])
    channels = len(metadata["windows"])
    example = torch.rand(1, 2, channels, size, size)
    description = "Slicewise tiny U-Net haemorrhage segmentation."
    write_onnx(wrapper, example, out_path, {SEG_OUTPUT: (0, 1)}, metadata, description)
    return runtime_parity(out_path, wrapper, [SEG_OUTPUT], channels, size, slice_counts=slice_counts)


def analyse_as_dicom(
    engine: InferenceEngine, study: SynthStudy, folder: Path, index: int, rng: np.random.Generator
) -> tuple[TaskResult, float]:
    """Write ``study`` as DICOM into ``folder``, load it with the viewer's loader and analyse it with
    ``engine`` as the viewer does (no cache): (result, seconds of ``analyse_volume``)."""
    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.volume import StackVolume

    write_study(study, folder, index=index, rng=rng, rsna_ids=False)
    (stack,) = load_paths([folder]).all_stacks()
    volume = StackVolume(stack)
    try:
        t0 = time.perf_counter()
        pred = engine.analyse_volume(volume, use_cache=False)
        return pred, time.perf_counter() - t0
    finally:
        volume.close()


def evaluate_segmentation(
    model_path: Path, *, studies: int = 24, seed: int = 1_100_013, synth_size: int = 256, threads: int = 2
) -> dict[str, Any]:
    """Run the exported model as the viewer does (DICOM written, loaded, ``analyse_volume``) on fresh
    studies and compare with the generator's truth on the pixel grid.

    Dice per class: pixels with probability >= the class threshold vs blood fraction >= 0.5, pooled over
    the slices that hold the class (in truth or prediction). Volume: the result's mL vs the true blood
    volume (sum of fractions x voxel); the absolute % error is summarised over (study, class) pairs with
    a true volume of at least 1 mL.
    """
    import tempfile

    from viewer.core.inference.engine import InferenceEngine
    from viewer.core.tasks.slice_segmentation import SegmentationPrediction

    engine = InferenceEngine(model_path, provider="cpu", threads=threads, cache=None)
    names = engine.info.class_names
    inter = np.zeros(len(names))
    sums = np.zeros(len(names))
    pairs: list[dict[str, Any]] = []
    times: list[float] = []
    synth = SynthConfig(size=synth_size, p_negative=0.2)
    with tempfile.TemporaryDirectory(prefix="slicewise-seg-eval-") as tmp:
        for i, child in enumerate(np.random.SeedSequence(seed).spawn(studies)):
            rng = np.random.default_rng(child)
            study = render_study(rng, int(rng.integers(20, 31)), synth)
            pred, seconds = analyse_as_dicom(engine, study, Path(tmp) / f"s{i:03d}", i, rng)
            times.append(seconds)
            assert isinstance(pred, SegmentationPrediction)
            # the stack is sorted ascending along the normal, as the generator's z: same slice order
            truth = study_fractions(study)
            voxel = study.pixel_spacing**2 * study.thickness / 1000.0
            volumes = pred.volumes_ml()
            for k, name in enumerate(names):
                got = pred.mask(k)
                ref = truth[:, SUBTYPES.index(name)] >= 0.5
                slices = got.any(axis=(1, 2)) | ref.any(axis=(1, 2))
                inter[k] += float((got[slices] & ref[slices]).sum())
                sums[k] += float(got[slices].sum() + ref[slices].sum())
                true_ml = float(truth[:, SUBTYPES.index(name)].sum()) * voxel
                pairs.append({"study": i, "class": name, "true_ml": true_ml, "pred_ml": volumes[name]})
    dice = {n: (None if sums[k] == 0 else round(2 * inter[k] / sums[k], 4)) for k, n in enumerate(names)}
    errors = [abs(p["pred_ml"] - p["true_ml"]) / p["true_ml"] for p in pairs if p["true_ml"] >= 1.0]
    return {
        "studies": studies,
        "seed": seed,
        "dice": dice,
        "mean_dice": round(float(np.mean([d for d in dice.values() if d is not None])), 4),
        "volume_pairs_ge_1ml": len(errors),
        "volume_median_abs_pct_error": round(100 * float(np.median(errors)), 2) if errors else None,
        "volume_abs_pct_error_q75": round(100 * float(np.percentile(errors, 75)), 2) if errors else None,
        "volumes": pairs,
        "predict_s_median": round(float(np.median(times)), 3),
    }
