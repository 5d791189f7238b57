"""Localisation maps for the ICH model (issue 11 items 1 and 3): a light decoder on the frozen CNN.

    slices [B, S, 3, 128, 128] -> SliceCNN (frozen) -> stem maps (1/2), stage maps (1/4, 1/8, 1/16)
      -> MapDecoder: 1x1 lateral convs to ``dim`` channels, top-down: upsample x2 + add + 3x3 conv
         (1/16 -> 1/8 -> 1/4 -> 1/2), a 3x3 conv to one logit per subtype at 1/2 resolution
      -> sigmoid -> ``slice_maps`` [B, S, 5, 64, 64]
    the classification path (SliceCNN -> SequenceHead) is untouched: ``slice_probs`` and ``study_probs``
    are those of the base model.

The CNN and the GRU stay frozen (their weights are the base checkpoint's), so only the decoder is
trained: its inputs (the frozen feature maps) are computed once per training slice. Targets are the
generator's per-subtype blood fractions (:func:`training.seg.study_fractions`) moved onto the map grid
with the pixels' own transform: the base model's preprocessing (its ``preprocessing`` metadata), version
1's pad + area resize (:func:`training.seg.masks_to_grid`) or version 2's canonical orientation, head
centre, millimetre resampling and slab weights (:func:`viewer.core.preprocess.head_mm_to_grid` with the
study's own :class:`~viewer.core.preprocess.HeadGrid`), then area-averaged to the map grid; loss and Dice are
:mod:`training.seg`'s. ``slicewise-train maps`` trains and exports; ``slicewise-train maps-eval``
measures the exported model through the viewer's engine on fresh DICOM studies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from training.errors import DecoderMismatchError, ExportParityError
from training.export import json_safe, read_metadata, rewrite_metadata, runtime_parity, write_onnx
from training.model import ICHNet
from training.seg import (
    Best,
    dice_scores,
    end_epoch,
    masks_to_grid,
    seg_loss,
    study_fractions,
    warmup_cosine,
)
from training.synth import SUBTYPES, WIDE, SynthConfig, SynthStudy, render_study
from training.train import load_checkpoint, model_from_checkpoint
from viewer.core.constants import (
    MODEL_CONTRACT_VERSION,
    MODEL_INPUT_NAME,
    MODEL_MAPS_OUTPUT,
    MODEL_SLICE_OUTPUT,
    MODEL_STUDY_OUTPUT,
)
from viewer.core.preprocess import PreprocessSpec, SliceGeometry, head_grid, head_mm_to_grid, preprocess

log = logging.getLogger(__name__)

PARITY_SLICES: tuple[int, ...] = (1, 2, 7, 40)
UNCHANGED_ATOL = 1e-5  # slice/study probabilities of the map model vs the base model
#: the two acquisitions of the base model's (0.1.3's) training data: ``synth`` defaults and
#: ``synth --noise-hu 0,25 --noise-corr-mm 0,1.2``
ACQUISITIONS: dict[str, SynthConfig] = {
    "standard": SynthConfig(),
    "noisy": SynthConfig(noise_hu=(0.0, 25.0), noise_corr_mm=(0.0, 1.2)),
}
#: what ``slicewise-train maps --acquisitions`` may train on: the two above and the version-2 training
#: distribution (:data:`training.synth.WIDE`: 180-400 mm fields, 256/512 matrices, 1-5 mm slices, ...)
TRAIN_ACQUISITIONS: dict[str, SynthConfig] = {**ACQUISITIONS, "wide": WIDE}


class MapDecoder(nn.Module):
    """Feature maps (1/2, 1/4, 1/8, 1/16 of the input) -> map logits [N, K, H, W] (``full``),
    [N, K, H/2, W/2] (``fine``) or [N, K, H/4, W/4].

    1x1 lateral convs to ``dim`` channels at 1/16, 1/8 and 1/4, top-down (nearest x2 upsample, add,
    3x3 conv). Without ``fine`` a 3x3 conv makes the logits at 1/4. With ``fine`` the 1/2 level is added
    (where every operation costs 4x, only ``fine_dim`` channels): the stem's maps and the coarse path
    each projected to ``fine_dim`` (1x1), added, and a 3x3 conv to the logits.

    ``full`` (the model grid itself, for blood a pixel or two thin): the 1/2 level as with ``fine``, then
    a 3x3 conv + batch norm + ReLU there (a nonlinear look at the stem's maps), a 1x1 conv to 4 logits
    per class at 1/2 that a depth-to-space (pixel shuffle) puts on the full grid, plus a 1x1 conv of the
    model's input itself (its windows at full resolution) added to the logits: what the stem's stride
    blurs, where the coarse levels say which blood it is.
    """

    def __init__(
        self,
        widths: Sequence[int],
        num_classes: int = len(SUBTYPES),
        dim: int = 16,
        fine_dim: int = 8,
        fine: bool = True,
        full: bool = False,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if full and not fine:
            raise ValueError("a full-resolution decoder needs the 1/2 level (fine=True)")
        self.fine_level = fine
        self.full = full
        self.lateral = nn.ModuleList(nn.Conv2d(w, dim, 1) for w in widths[1:4])  # 1/4, 1/8, 1/16
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim), nn.ReLU())
            for _ in range(2)
        )
        head_in = dim
        if fine:
            self.fine = nn.Conv2d(widths[0], fine_dim, 1)
            self.coarse = nn.Conv2d(dim, fine_dim, 1)
            head_in = fine_dim
        if full:
            self.refine = nn.Sequential(
                nn.Conv2d(fine_dim, fine_dim, 3, padding=1, bias=False), nn.BatchNorm2d(fine_dim), nn.ReLU()
            )
            self.head = nn.Conv2d(fine_dim, 4 * num_classes, 1)
            self.pixel = nn.Conv2d(in_channels, num_classes, 1, bias=False)
        else:
            self.head = nn.Conv2d(head_in, num_classes, 3, padding=1)
        assert self.head.bias is not None
        nn.init.constant_(self.head.bias, -3.0)  # prior: lesion pixels are rare

    @property
    def stride(self) -> int:
        """Input pixels per map pixel."""
        return 1 if self.full else 2 if self.fine_level else 4

    def forward(self, maps: Sequence[torch.Tensor], image: torch.Tensor | None = None) -> torch.Tensor:
        """``maps``: the CNN's stem and first three stages' maps; ``image``: the model's input [N, C, H, W]
        (only a ``full`` decoder reads it)."""
        top = self.lateral[2](maps[3])
        for level in (2, 1):  # 1/8, then 1/4
            top = self.lateral[level - 1](maps[level]) + F.interpolate(top, scale_factor=2.0, mode="nearest")
            top = self.smooth[level - 1](top)
        if not self.fine_level:
            return self.head(top)
        fine = self.fine(maps[0]) + F.interpolate(self.coarse(top), scale_factor=2.0, mode="nearest")
        if not self.full:
            return self.head(F.relu(fine))
        if image is None:
            raise ValueError("a full-resolution decoder needs the model's input")
        logits = F.pixel_shuffle(self.head(self.refine(F.relu(fine))), 2)
        return logits + self.pixel(image)


class MapNet(nn.Module):
    """The base ICHNet plus the map decoder: ``forward(slices) -> (slice_logits, study_logits,
    map_logits [B, S, K, h, w])``; the first two are exactly the base model's."""

    def __init__(self, net: ICHNet, decoder: MapDecoder) -> None:
        super().__init__()
        self.net = net
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, s = x.shape[0], x.shape[1]
        flat = x.flatten(0, 1)
        maps = self.net.cnn.feature_maps(flat)
        f = self.net.cnn.pool(maps[-1]).view(b, s, -1)
        slice_logits, study_logits = self.net.head(f)
        logits = self.decoder(maps, flat if self.decoder.full else None)
        return slice_logits, study_logits, logits.reshape(b, s, *logits.shape[1:])


class MapExportWrapper(nn.Module):
    """What goes into the .onnx: the three outputs as probabilities."""

    def __init__(self, net: MapNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, slices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, b, c = self.net(slices)
        return torch.sigmoid(a), torch.sigmoid(b), torch.sigmoid(c)


@dataclass
class MapsConfig:
    checkpoint: Path
    base_model: Path  # the base model's ONNX (its metadata is kept; its outputs must be unchanged)
    out: Path
    studies: int = 100  # per acquisition (standard and noisy)
    val_studies: int = 20  # per acquisition
    seed: int = 7_100_001  # training; validation seed + 1 (never a seed of an earlier run)
    dim: int = 16
    batch: int = 32
    lr: float = 3e-3
    max_minutes: float = 12.0
    max_epochs: int = 60
    negative_share: float = 0.25
    threads: int = 2
    model_version: str = "0.2.0"
    workers: int = 2
    # input pixels per map pixel: 1 (the model grid: the 1/2 level shuffled to full resolution plus the
    # input itself), 2 (with the stem's 1/2 maps) or 4 (1/4 and coarser)
    map_stride: int = 2
    fine_dim: int = 8  # channels at 1/2 resolution (map stride 1 or 2)
    # the loss (training.seg.seg_loss): Tversky weights of false positives / negatives (0.5 / 0.5: soft
    # Dice) and per-class BCE weights of positive targets in SUBTYPES order (empty: 1 for every class)
    tversky_alpha: float = 0.5
    tversky_beta: float = 0.5
    pos_weight: tuple[float, ...] = ()
    # a maps.pt whose decoder weights to start from (a continued run; of a different decoder, the
    # weights whose names and shapes match, e.g. the coarse levels of a stride-2 decoder for stride 1)
    init: Path | None = None
    synth_size: int = 0  # 0: the acquisitions' own matrix (256); smaller for quick tests
    max_slices: int = 0  # 0: the acquisitions' own slice counts (24-40); fewer for quick tests
    acquisitions: tuple[str, ...] = tuple(ACQUISITIONS)  # names in TRAIN_ACQUISITIONS, each ``studies``


def acquisition_config(name: str, synth_size: int = 0, max_slices: int = 0) -> SynthConfig:
    """The acquisition ``name`` of :data:`TRAIN_ACQUISITIONS`, optionally smaller (tests)."""
    if name not in TRAIN_ACQUISITIONS:
        raise ValueError(f"unknown acquisition {name!r}; known: {', '.join(TRAIN_ACQUISITIONS)}")
    cfg = TRAIN_ACQUISITIONS[name]
    if synth_size:
        cfg = replace(cfg, size=synth_size, sizes=())
    if max_slices:
        cfg = replace(cfg, min_slices=min(cfg.min_slices, max_slices), max_slices=max_slices)
    return cfg


def study_geometry(study: SynthStudy) -> SliceGeometry:
    """The geometry of a synthetic study as :func:`training.synth.write_study` writes it (axial, rows
    towards posterior, columns towards the left, ascending z)."""
    return SliceGeometry(
        pixel_spacing=(study.pixel_spacing, study.pixel_spacing),
        positions=tuple(float(z) for z in study.z_mm),
        thickness=study.thickness,
    )


def model_inputs_and_targets(
    study: SynthStudy, input_spec: PreprocessSpec, map_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """A study's model input (S, C, size, size) with the base model's preprocessing and its blood
    fractions (S, K, map, map) moved onto the map grid by the pixels' own transform."""
    fractions = study_fractions(study)
    if input_spec.version == 1:
        return preprocess(study.hu, input_spec), masks_to_grid(fractions, map_size)
    geometry = study_geometry(study)
    grid = head_grid(study.hu, geometry, input_spec)
    x = preprocess(study.hu, input_spec, geometry, grid=grid)
    return x, head_mm_to_grid(fractions, geometry, grid, map_size)


def _render(
    child: np.random.SeedSequence,
    cfg: SynthConfig,
    input_spec: PreprocessSpec,
    map_size: int,
    negative_share: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One study drawn exactly as ``generate_dataset`` draws it; its lesion slices and a share of the
    others: (inputs (N, C, size, size) float16, targets (N, K, map, map) uint8 = fraction x 255)."""
    rng = np.random.default_rng(child)
    study = render_study(rng, int(rng.integers(cfg.min_slices, cfg.max_slices + 1)), cfg)
    x, target = model_inputs_and_targets(study, input_spec, map_size)
    lesion = target.reshape(len(target), -1).max(axis=1) > 0.05
    keep = lesion | (rng.random(len(target)) < negative_share)
    return x[keep].astype(np.float16), np.rint(np.clip(target[keep], 0.0, 1.0) * 255.0).astype(np.uint8)


def render_slices(
    seed: int, per_acquisition: int, cfg: MapsConfig, input_spec: PreprocessSpec, map_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``per_acquisition`` studies of each of ``cfg.acquisitions`` (seed ``seed``: the first
    acquisition's, then the next one's spawned children after them, ...) in ``cfg.workers`` processes
    (0: in this one)."""
    names = cfg.acquisitions
    children = np.random.SeedSequence(seed).spawn(per_acquisition * len(names))
    jobs = [
        (child, acquisition_config(name, cfg.synth_size, cfg.max_slices))
        for a, name in enumerate(names)
        for child in children[a * per_acquisition : (a + 1) * per_acquisition]
    ]
    if cfg.workers < 1:
        parts = [_render(child, acq, input_spec, map_size, cfg.negative_share) for child, acq in jobs]
    else:
        with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
            futures = [
                pool.submit(_render, child, acq, input_spec, map_size, cfg.negative_share)
                for child, acq in jobs
            ]
            parts = [f.result(timeout=600) for f in futures]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def frozen_features(net: ICHNet, x: np.ndarray, batch: int = 64) -> list[np.ndarray]:
    """The frozen CNN's feature maps (stem and the first three stages) of (N, C, H, W) inputs, float16."""
    out: list[list[np.ndarray]] = [[], [], [], []]
    net.eval()
    with torch.no_grad():
        for lo in range(0, len(x), batch):
            maps = net.cnn.feature_maps(torch.from_numpy(x[lo : lo + batch].astype(np.float32)))
            for level in range(4):
                out[level].append(maps[level].numpy().astype(np.float16))
    return [np.concatenate(level) for level in out]


def _batch(feats: list[np.ndarray], idx: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(f[idx].astype(np.float32)) for f in feats]


def decode(decoder: MapDecoder, feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """The decoder on a batch of :func:`frozen_features` (and, for a ``full`` decoder, the inputs after
    them)."""
    return decoder(feats[:4], feats[4] if decoder.full else None)


def build_decoder(net: ICHNet, dim: int, fine_dim: int, map_stride: int) -> MapDecoder:
    """The decoder of a run's settings on ``net``'s CNN (its widths and input channels)."""
    if map_stride not in (1, 2, 4):
        raise ValueError(f"map stride must be 1, 2 or 4, got {map_stride}")
    return MapDecoder(
        net.cfg.widths,
        dim=dim,
        fine_dim=fine_dim,
        fine=map_stride <= 2,
        full=map_stride == 1,
        in_channels=int(net.cfg.in_channels),
    )


def load_matching(decoder: MapDecoder, state: dict[str, torch.Tensor]) -> list[str]:
    """Load the weights of ``state`` whose names and shapes match ``decoder``'s; returns their names."""
    own = decoder.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    decoder.load_state_dict(matching, strict=False)
    log.info("init: %d of %d decoder tensors loaded", len(matching), len(own))
    return sorted(matching)


def cnn_fingerprint(net: ICHNet) -> str:
    """SHA-256 of the CNN's weights and buffers (names, dtypes, shapes, bytes): a decoder trained on one
    CNN's maps fits another model only if its CNN has this fingerprint."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.cnn.state_dict().items()):
        arr = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}:{arr.dtype}:{arr.shape};".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def predict_maps(decoder: MapDecoder, feats: list[np.ndarray], batch: int = 128) -> np.ndarray:
    decoder.eval()
    out = []
    with torch.no_grad():
        for lo in range(0, len(feats[0]), batch):
            idx = np.arange(lo, min(lo + batch, len(feats[0])))
            out.append(torch.sigmoid(decode(decoder, _batch(feats, idx))).numpy())
    return np.concatenate(out)


def choose_thresholds(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Per class, the threshold in 0.05-0.8 that maximises the pooled Dice (truth: fraction >= 0.5); 0.5
    for a class no threshold finds. On the map grid: ``slicewise-train maps-thresholds`` re-chooses them
    on the pixel grid, where the viewer applies them."""
    grid = np.round(np.arange(0.05, 0.81, 0.05), 2)
    chosen: dict[str, float] = {}
    for k, name in enumerate(SUBTYPES):
        scores = [dice_scores(pred[:, k : k + 1], truth[:, k : k + 1], float(t))[0] or 0.0 for t in grid]
        chosen[name] = float(grid[int(np.argmax(scores))]) if max(scores) > 0 else 0.5
    return chosen


def train_maps(cfg: MapsConfig) -> tuple[Path, dict[str, Any]]:
    """Train the decoder on the frozen base checkpoint, export ``cfg.out / slicewise_ich.onnx``."""
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    net = model_from_checkpoint(load_checkpoint(cfg.checkpoint))
    for p in net.parameters():
        p.requires_grad_(False)
    decoder = build_decoder(net, cfg.dim, cfg.fine_dim, cfg.map_stride)
    if cfg.pos_weight and len(cfg.pos_weight) != len(SUBTYPES):
        raise ValueError(f"--pos-weight needs {len(SUBTYPES)} values ({', '.join(SUBTYPES)})")
    input_size = int(net.cfg.input_size)
    input_spec = base_preprocessing(cfg.base_model, input_size)
    map_size = input_size // cfg.map_stride
    t0 = time.perf_counter()
    x_tr, y_tr = render_slices(cfg.seed, cfg.studies, cfg, input_spec, map_size)
    x_va, y_va = render_slices(cfg.seed + 1, cfg.val_studies, cfg, input_spec, map_size)
    t_render = time.perf_counter() - t0
    f_tr, f_va = frozen_features(net, x_tr), frozen_features(net, x_va)
    if decoder.full:  # the input itself is the full decoder's finest level
        f_tr, f_va = [*f_tr, x_tr], [*f_va, x_va]
    del x_tr, x_va
    t_data = time.perf_counter() - t0
    log.info("data: %d train / %d val slices, %.0f s (render %.0f s)", len(y_tr), len(y_va), t_data, t_render)
    if cfg.init is not None:
        load_matching(decoder, torch.load(cfg.init, map_location="cpu", weights_only=True)["decoder"])
    pos_weight = torch.tensor(cfg.pos_weight, dtype=torch.float32) if cfg.pos_weight else None
    opt = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, weight_decay=1e-4)
    rng = np.random.default_rng(cfg.seed)
    truth_va = y_va.astype(np.float32) / 255.0
    steps = max(1, len(y_tr) // cfg.batch)
    best: Best | None = None
    history: list[dict[str, Any]] = []
    t_train = time.perf_counter()
    deadline = t_train + cfg.max_minutes * 60.0
    total_steps = steps * cfg.max_epochs
    step = 0
    for epoch in range(cfg.max_epochs):
        decoder.train()
        order = rng.permutation(len(y_tr))
        losses = []
        for i in range(steps):
            idx = np.sort(order[i * cfg.batch : (i + 1) * cfg.batch])
            frac = max(step / total_steps, (time.perf_counter() - t_train) / (deadline - t_train))
            for group in opt.param_groups:
                group["lr"] = cfg.lr * warmup_cosine(frac)
            target = torch.from_numpy(y_tr[idx].astype(np.float32) / 255.0)
            logits = decode(decoder, _batch(f_tr, idx))
            loss = seg_loss(
                logits, target, alpha=cfg.tversky_alpha, beta=cfg.tversky_beta, pos_weight=pos_weight
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        dice = dice_scores(predict_maps(decoder, f_va), truth_va)
        best = end_epoch(decoder, epoch, losses, dice, history, best)
        if time.perf_counter() > deadline:
            break
    assert best is not None
    decoder.load_state_dict(best[1])
    pred_va = predict_maps(decoder, f_va)
    thresholds = choose_thresholds(pred_va, truth_va)
    val_dice = dict(zip(SUBTYPES, dice_scores(pred_va, truth_va)))
    val_dice_chosen = {
        n: dice_scores(pred_va[:, k : k + 1], truth_va[:, k : k + 1], thresholds[n])[0]
        for k, n in enumerate(SUBTYPES)
    }
    metrics: dict[str, Any] = {
        "train_slices": len(y_tr),
        "val_slices": len(y_va),
        "data_s": round(t_data, 1),
        "train_s": round(time.perf_counter() - t_train, 1),
        "epochs": len(history),
        "best_val_mean_dice_at_0.5": round(best[0], 4),
        "val_dice_at_0.5": val_dice,
        "val_dice_at_thresholds": val_dice_chosen,
        "decoder_parameters": sum(p.numel() for p in decoder.parameters()),
        "train_studies": f"{cfg.studies} fresh studies of each of {', '.join(cfg.acquisitions)} "
        f"(noisy: 0-25 HU, 0-1.2 mm; wide: training.synth.WIDE), seed {cfg.seed}; validation "
        f"{cfg.val_studies} of each, seed {cfg.seed + 1}",
        "preprocessing_version": input_spec.version,
        "cnn_sha256": cnn_fingerprint(net),
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"decoder": decoder.state_dict(), "config": _cfg_dict(cfg), "metrics": metrics, "history": history},
        cfg.out / "maps.pt",
    )
    model = MapNet(net, decoder).eval()
    path = cfg.out / "slicewise_ich.onnx"
    meta = maps_metadata(cfg.base_model, map_size, thresholds, metrics, cfg.model_version)
    metrics["parity_max_abs_diff"] = export_map_model(model, path, meta)
    metrics["unchanged_vs_base_max_abs_diff"] = compare_with_base(path, cfg.base_model)
    meta["metrics"]["maps"] = metrics  # the checks' figures too (metadata only, the graph is kept)
    rewrite_metadata(path, {"metrics": meta["metrics"]})
    (cfg.out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2))
    return path, metrics


def base_preprocessing(base_model: Path, input_size: int) -> PreprocessSpec:
    """The base model's preprocessing (its ``preprocessing`` metadata, version 1 when absent, and its
    ``windows``)."""
    return PreprocessSpec.from_record(read_metadata(base_model), size=input_size)


def _cfg_dict(cfg: MapsConfig) -> dict[str, Any]:
    d = asdict(cfg)
    for key in ("checkpoint", "base_model", "out", "init"):
        d[key] = None if d[key] is None else str(d[key])
    return d


def maps_metadata(
    base_model: Path, size: int, thresholds: dict[str, float], metrics: dict[str, Any], version: str
) -> dict[str, Any]:
    """The base model's metadata plus the maps' entry and contract version 2."""
    meta = read_metadata(base_model)
    meta["model_version"] = version
    meta["contract_version"] = MODEL_CONTRACT_VERSION
    meta["maps"] = {
        "output": MODEL_MAPS_OUTPUT,
        "classes": list(SUBTYPES),
        "size": size,
        "kind": "probability",
        "thresholds": thresholds,
        "grid": f"the model's input grid (preprocessing version {version_of(meta)}) at "
        + (f"1/{int(meta['input_size']) // size}" if size < int(meta["input_size"]) else "full resolution"),
    }
    meta.setdefault("metrics", {})["maps"] = metrics
    exporter = dict(meta.get("exporter") or {})
    exporter.update(torch=torch.__version__, onnx=onnx.__version__, opset=17, dynamo=False)
    exporter["architecture"] = "CNN + 2-layer BiGRU + map decoder (frozen CNN features 1/2-1/16" + (
        ", the input at full resolution)" if size == int(meta["input_size"]) else ")"
    )
    meta["exporter"] = exporter
    return meta


def version_of(meta: dict[str, Any]) -> int:
    """The preprocessing version recorded in a model's metadata (1 when absent)."""
    raw = meta.get("preprocessing")
    return int(raw.get("version", 1)) if isinstance(raw, dict) else 1


def export_map_model(
    model: MapNet, out_path: Path, metadata: dict[str, Any], *, slice_counts: Sequence[int] = PARITY_SLICES
) -> float:
    """Legacy exporter, opset 17, dynamic batch and slices; ORT vs PyTorch on all three outputs."""
    wrapper = MapExportWrapper(model.eval().cpu()).eval()
    size = int(metadata["input_size"])
    channels = len(metadata["windows"])
    names = [MODEL_SLICE_OUTPUT, MODEL_STUDY_OUTPUT, MODEL_MAPS_OUTPUT]
    write_onnx(
        wrapper,
        torch.rand(1, 4, channels, size, size),
        out_path,
        {MODEL_SLICE_OUTPUT: (0, 1), MODEL_STUDY_OUTPUT: (0,), MODEL_MAPS_OUTPUT: (0, 1)},
        metadata,
        "Slicewise CNN-GRU intracranial haemorrhage model with localisation maps.",
    )
    return runtime_parity(out_path, wrapper, names, channels, size, slice_counts=slice_counts)


def _max_output_diff(
    model_path: Path, other: Path, names: Sequence[str], inputs: Sequence[np.ndarray], error: type[Exception]
) -> float:
    """Max abs diff of the outputs ``names`` of two ONNX models on ``inputs`` ([1, S, C, H, W] arrays);
    ``error`` when an output's shapes differ."""
    import onnxruntime as ort

    a = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(other), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        feed = {MODEL_INPUT_NAME: x}
        for name, ra, rb in zip(names, a.run(names, feed), b.run(names, feed)):
            if ra.shape != rb.shape:
                raise error(f"{name} {ra.shape} vs {rb.shape} of {other.name}")
            worst = max(worst, float(np.max(np.abs(ra - rb))))
    return worst


def _random_inputs(model_path: Path, slices: Sequence[int], seed: int) -> list[np.ndarray]:
    """Random model inputs [1, S, C, H, W] of ``slices`` slices, in the model's input size and windows."""
    meta = read_metadata(model_path)
    size, c = int(meta["input_size"]), len(meta["windows"])
    rng = np.random.default_rng(seed)
    return [rng.random((1, s, c, size, size), dtype=np.float32) for s in slices]


def compare_with_base(
    model_path: Path, base_model: Path, inputs: Sequence[np.ndarray] = (), *, atol: float = UNCHANGED_ATOL
) -> float:
    """Max abs diff of ``slice_probs`` / ``study_probs`` between the two ONNX models on ``inputs``
    ([1, S, C, H, W] arrays; default: random inputs of 1, 7 and 40 slices); raises beyond ``atol``."""
    cases = list(inputs) or _random_inputs(base_model, (1, 7, 40), seed=0)
    names = [MODEL_SLICE_OUTPUT, MODEL_STUDY_OUTPUT]
    worst = _max_output_diff(model_path, base_model, names, cases, ExportParityError)
    if worst > atol:
        raise ExportParityError(f"slice/study probabilities differ from the base model by {worst:.2e}")
    log.info("outputs unchanged vs the base model: max abs diff %.2e", worst)
    return worst


MAPS_ATOL = 1e-5  # slice_maps of an attached decoder vs the model it was trained in


def attach_decoder(
    decoder_run: Path,
    maps_model: Path,
    checkpoint: Path,
    base_model: Path,
    out: Path,
    *,
    model_version: str,
) -> dict[str, Any]:
    """Put a trained map decoder (``decoder_run``: a ``slicewise-train maps`` run's maps.pt; ``maps_model``:
    the ONNX it was exported in, whose ``maps`` metadata - thresholds, volume estimator - it keeps) on
    another base model with the same CNN (``checkpoint`` and its ONNX ``base_model``, e.g. a retrained
    GRU), without training: ``out`` gets the base model's metadata, slice and study outputs and the
    decoder's maps.

    Refused (:class:`~training.errors.DecoderMismatchError`) when the checkpoint's CNN is not the one the
    decoder was trained on (the fingerprint recorded in maps.pt, when there is one) or when the new
    model's maps differ from ``maps_model``'s on random inputs; the usual export checks follow (ONNX
    Runtime vs PyTorch, slice/study probabilities equal to ``base_model``'s)."""
    run = torch.load(decoder_run, map_location="cpu", weights_only=True)
    config, run_metrics = dict(run.get("config") or {}), dict(run.get("metrics") or {})
    net = model_from_checkpoint(load_checkpoint(checkpoint)).eval()
    fingerprint = cnn_fingerprint(net)
    trained_on = run_metrics.get("cnn_sha256")
    if trained_on is not None and trained_on != fingerprint:
        raise DecoderMismatchError(
            f"{decoder_run.name} was trained on CNN {str(trained_on)[:12]}..., {checkpoint.name} has "
            f"{fingerprint[:12]}...: the decoder fits only the CNN it was trained on"
        )
    decoder = build_decoder(
        net, int(config.get("dim", 16)), int(config.get("fine_dim", 8)), int(config.get("map_stride", 2))
    )
    decoder.load_state_dict(run["decoder"])
    source = read_metadata(maps_model)
    if "maps" not in source:
        raise DecoderMismatchError(f"{maps_model.name} has no localisation maps (metadata 'maps')")
    maps_entry = dict(source["maps"])
    metrics = dict((source.get("metrics") or {}).get("maps") or run_metrics)
    size, thresholds = int(maps_entry["size"]), maps_entry["thresholds"]
    meta = maps_metadata(base_model, size, thresholds, metrics, model_version)
    meta["maps"] = maps_entry
    metrics["attached"] = {"cnn_sha256": fingerprint, "decoder_from": source.get("model_version")}
    model = MapNet(net, decoder).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"parity_max_abs_diff": export_map_model(model, out, meta)}
    report["unchanged_vs_base_max_abs_diff"] = compare_with_base(out, base_model)
    report["maps_vs_decoder_model_max_abs_diff"] = compare_maps(out, maps_model)
    report["cnn_sha256"] = fingerprint
    report["fingerprint_checked"] = trained_on is not None
    metrics["attached"].update(report)
    meta["metrics"]["maps"] = metrics
    rewrite_metadata(out, {"metrics": meta["metrics"]})
    return report


def compare_maps(model_path: Path, other: Path, *, atol: float = MAPS_ATOL) -> float:
    """Max abs diff of ``slice_maps`` between two ONNX models on random inputs of 1 and 7 slices; raises
    :class:`~training.errors.DecoderMismatchError` beyond ``atol``."""
    cases = _random_inputs(model_path, (1, 7), seed=1)
    worst = _max_output_diff(model_path, other, [MODEL_MAPS_OUTPUT], cases, DecoderMismatchError)
    if worst > atol:
        raise DecoderMismatchError(
            f"the attached decoder's maps differ from {other.name}'s by {worst:.2e}: another CNN"
        )
    return worst
