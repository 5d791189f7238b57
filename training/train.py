"""Two-stage training of the CNN-GRU, top to bottom (nanoGPT style).

Stage ``cnn``: the trunk and the per-slice head (``use_gru=False``, the ablation model) on random
slice-window crops with random reversal and left-right flips. Stage ``gru``: the trunk is frozen,
its embeddings are computed once, and the GRU sequence head is trained on longer embedding crops
(again reversed at random). Both variants are evaluated on the same validation and test split;
thresholds are chosen on validation (``threshold_policy``, see ``training.metrics``), metrics are
reported on test. ``build_split`` and ``evaluate_head`` are reused by ``training.thresholds``, which
re-chooses the thresholds of a finished checkpoint without retraining.

Runs as one process or under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU).
Checkpoints are plain dicts (config + tensors) loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from training.calibration import calibrate_head
from training.consistency import (
    ConsistencyMode,
    noise_energy,
    pick_partners,
    rendering_partners,
    study_consistency,
)
from training.dataset import StudyItem, build_items, split_items
from training.errors import CheckpointError
from training.metrics import (
    DEFAULT_THRESHOLD_POLICY,
    canonical_policy,
    choose_thresholds,
    evaluate_predictions,
)
from training.model import ICHNet, ModelConfig
from training.study_thresholds import STUDY_POLICY_TEXT, validation_study_thresholds
from training.trained_range import acquisition_range
from viewer.core.constants import MODEL_WINDOWS, RSNA_CLASS_WEIGHTS, RSNA_CLASSES
from viewer.core.preprocess import PreprocessSpec

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str = ""
    labels: str = ""
    out: str = "runs/ich"
    cache: str = ""  # default: <out>/cache
    size: int = 256
    preprocess_version: int = 2  # 2: head-centred mm grid (viewer.core.preprocess); 1: pad + resize
    field_mm: float = 230.0  # version 2: field of view of the input grid
    slab_mm: float = 5.0  # version 2: thinner slices are averaged into slabs this thick
    # CNN widths, comma-separated: the stem, then one stride-2 stage each; "" = ModelConfig's default (sized
    # for 256 px). The bundled 128 px models (0.1.x) use "24,32,48,64,96".
    widths: str = ""
    seed: int = 0
    val_frac: float = 0.15
    test_frac: float = 0.15
    stages: str = "cnn,gru"
    cnn_epochs: int = 6
    gru_epochs: int = 40
    batch: int = 4
    cnn_crop: int = 12
    gru_crop: int = 32
    lr: float = 2e-3
    gru_lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_frac: float = 0.05
    study_loss_weight: float = 0.5
    max_steps: int = 0  # cap per stage (smoke tests); 0 = no cap
    threads: int = 2
    # Operating points, chosen on the validation slices (training.metrics.THRESHOLD_POLICIES):
    # "triage-f1" (default; alias "triage"): `any` at the highest threshold with sensitivity >=
    # `sensitivity`, each subtype at the F1 maximum; "triage-youden": subtypes at the Youden-J maximum
    # (model 0.1.1, recorded as "triage" before 0.1.2); "sensitivity": every class at sensitivity >=
    # `sensitivity` (model 0.1.0); "youden": every class at the Youden-J maximum.
    threshold_policy: str = DEFAULT_THRESHOLD_POLICY
    sensitivity: float = 0.95  # target slice sensitivity of the sensitivity rule
    resume: bool = False
    progress: bool = True
    # warm start: a checkpoint (CNN-only or CNN-GRU) whose CNN has this run's architecture; its CNN and
    # per-slice head start stage 1, its sequence head (when it has one of this run's shape) starts stage 2
    # (temperatures reset to 1; the input size and preprocessing may differ: the CNN pools globally)
    init: str = ""
    # with --init: stage cnn is not trained; the init checkpoint's CNN and per-slice head are taken as they
    # are (the CNN bit-identical, e.g. to keep a map decoder trained on its feature maps valid)
    freeze_cnn: bool = False
    # weight of the GRU-stage term pulling together the study logits of two renderings of one synthetic
    # scene at different noise (training.consistency); 0 = off
    noise_consistency: float = 0.0
    # symmetric (both logits pulled together), towards-clean (only the noisier rendering's logit pulled
    # towards the less noisy one's, its gradient stopped) or rise-only (as towards-clean, only a rise)
    noise_consistency_mode: str = ConsistencyMode.SYMMETRIC.value


# ---------------------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")  # noqa: RUF009

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_dist() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return Dist(0, 1, device)
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), device)


# ------------------------------------------------------------------------------------------ loss / lr
_W = torch.tensor(RSNA_CLASS_WEIGHTS)


def weighted_bce(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """BCE weighted like the RSNA metric (any x2); ``mask`` ([...]) drops unlabelled slices."""
    w = _W.to(logits.device)
    per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    per = (per * w).sum(-1) / w.sum()
    if mask is None:
        return per.mean()
    return (per * mask).sum() / mask.sum().clamp(min=1.0)


def sequence_loss(
    slice_logits: torch.Tensor,
    study_logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    study_weight: float,
) -> torch.Tensor:
    """Masked slice loss + ``study_weight`` x study loss (study target: any labelled positive slice)."""
    study_target = (target * mask[..., None]).amax(1)
    return weighted_bce(slice_logits, target, mask) + study_weight * weighted_bce(study_logits, study_target)


def lr_lambda(total: int, warmup_frac: float) -> Callable[[int], float]:
    warm = max(1, int(total * warmup_frac))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t))

    return f


# ------------------------------------------------------------------------------------------- batching
def epoch_batches(
    lengths: Sequence[int], crop: int, batch: int, *, seed: int, epoch: int, d: Dist
) -> list[list[tuple[int, int, int, bool, bool]]]:
    """(study index, start, length, reversed, flipped) crops for this rank; equal count on every rank."""
    rng = np.random.default_rng([seed, epoch])
    entries = [i for i, n in enumerate(lengths) for _ in range(max(1, math.ceil(n / crop)))]
    order = [entries[j] for j in rng.permutation(len(entries))]
    per_rank = len(order) // d.world
    mine = order[d.rank * per_rank : (d.rank + 1) * per_rank] if d.world > 1 else order
    rng_r = np.random.default_rng([seed, epoch, d.rank, 1])
    batches = []
    for b in range(0, len(mine) - batch + 1 if len(mine) >= batch else 1, batch):
        idx = mine[b : b + batch]
        if not idx:
            continue
        length = min(crop, *(lengths[i] for i in idx))
        batches.append(
            [
                (
                    i,
                    int(rng_r.integers(0, lengths[i] - length + 1)),
                    length,
                    bool(rng_r.random() < 0.5),
                    bool(rng_r.random() < 0.5),
                )
                for i in idx
            ]
        )
    return batches


def _crop(arr: Any, start: int, length: int, rev: bool) -> Any:
    """Slices ``start:start+length`` of a numpy array or tensor, reversed when ``rev``."""
    out = arr[start : start + length]
    if not rev:
        return out
    return out[::-1] if isinstance(out, np.ndarray) else out.flip(0)


# ----------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (never falls back to full unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path.name}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path.name}: {type(exc).__name__}") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise CheckpointError(f"{path.name} is not a Slicewise checkpoint (no model/model_config)")
    return ckpt


TEMPERATURE_BUFFERS = ("head.slice_temperature", "head.study_temperature")


def model_from_checkpoint(ckpt: dict[str, Any]) -> ICHNet:
    """The network of a checkpoint; one written before calibration existed gets temperatures 1."""
    model = ICHNet(ModelConfig.from_dict(ckpt["model_config"]))
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if unexpected or any(k not in TEMPERATURE_BUFFERS for k in missing):
        raise CheckpointError(
            f"checkpoint weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()


def preprocess_spec(cfg: TrainConfig) -> PreprocessSpec:
    """The input preprocessing a training run uses (and its exported model records)."""
    return PreprocessSpec(
        version=cfg.preprocess_version,
        size=cfg.size,
        windows=MODEL_WINDOWS,
        field_mm=cfg.field_mm,
        slab_mm=cfg.slab_mm,
    )


def model_widths(cfg: TrainConfig) -> tuple[int, ...]:
    """The CNN widths of ``cfg.widths`` ("24,32,48,64,96"), or the model's default when empty."""
    text = cfg.widths.strip()
    if not text:
        return ModelConfig().widths
    try:
        widths = tuple(int(v) for v in text.split(","))
    except ValueError:
        widths = ()
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths must be at least two positive integers, e.g. 24,32,48,64,96; got {text!r}")
    return widths


def trained_range(items: Sequence[StudyItem]) -> dict[str, list[float]]:
    """[min, max] of each acquisition fact over the training stacks (the ``trained_range`` metadata)."""
    return acquisition_range(i.acquisition for i in items)


# ------------------------------------------------------------------------------------------ warm start
_CNN_KEYS = ("in_channels", "widths", "embed_dim", "num_classes")
_SEQ_KEYS = ("seq_dim", "gru_hidden", "gru_layers")
_SEQ_PREFIXES = ("head.mix.", "head.gru.", "head.seq_head.", "head.study_head.")


def _config_mismatch(init: ModelConfig, run: ModelConfig, keys: Sequence[str]) -> list[str]:
    pairs = ((k, getattr(init, k), getattr(run, k)) for k in keys)
    return [f"{k} {a!r} != {b!r}" for k, a, b in pairs if a != b]


def load_init(path: Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The weights of ``path`` that start a run of architecture ``cfg`` (``train --init``).

    The CNN (``in_channels``, ``widths``, ``embed_dim``) and the class count must match ``cfg``, else a
    :class:`CheckpointError` names the differences. Returned: the CNN and the per-slice head
    (``cnn.*``, ``head.cnn_head.*``), plus the sequence head (``head.mix/gru/seq_head/study_head``) when
    the checkpoint is a CNN-GRU with ``cfg``'s sequence sizes. Temperatures are never taken (a run
    trains at temperature 1 and fits its own on validation).
    """
    ckpt = load_checkpoint(path)
    try:
        init_cfg = ModelConfig.from_dict(ckpt["model_config"])
    except (TypeError, KeyError) as exc:
        raise CheckpointError(f"init checkpoint {path.name}: unreadable model_config ({exc})") from exc
    diff = _config_mismatch(init_cfg, cfg, _CNN_KEYS)
    if diff:
        raise CheckpointError(
            f"init checkpoint {path.name} does not fit this run's CNN: " + "; ".join(diff)
            + " (use --widths to match it)"
        )
    state: dict[str, torch.Tensor] = ckpt["model"]
    keep = {k: v for k, v in state.items() if k.startswith(("cnn.", "head.cnn_head."))}
    expected = {k for k in ICHNet(cfg).state_dict() if k.startswith(("cnn.", "head.cnn_head."))}
    if set(keep) != expected:
        missing, extra = sorted(expected - set(keep)), sorted(set(keep) - expected)
        raise CheckpointError(
            f"init checkpoint {path.name}: CNN weights do not fit (missing {missing[:3]}, "
            f"unexpected {extra[:3]})"
        )
    if init_cfg.use_gru and cfg.use_gru and not _config_mismatch(init_cfg, cfg, _SEQ_KEYS):
        keep.update({k: v for k, v in state.items() if k.startswith(_SEQ_PREFIXES)})
    return keep


def apply_init(model: ICHNet, weights: dict[str, torch.Tensor], *, what: str) -> list[str]:
    """Load ``weights`` (from :func:`load_init`) into ``model`` where names and shapes fit; returns the
    names loaded. The CNN must load completely (``load_init`` checked it); the rest is optional."""
    own = model.state_dict()
    fit = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    cnn_missing = [k for k in own if k.startswith("cnn.") and k not in fit]
    if cnn_missing:
        raise CheckpointError(f"init weights do not fit the {what} model's CNN (e.g. {cnn_missing[:3]})")
    own.update(fit)
    model.load_state_dict(own)
    log.info("%s: %d of %d tensors from the init checkpoint", what, len(fit), len(own))
    return sorted(fit)


# -------------------------------------------------------------------------------------------- stages
def _bar(it: Sequence[Any], d: Dist, cfg: TrainConfig, desc: str) -> Iterator[Any]:
    if cfg.progress and d.main:
        return iter(tqdm(it, desc=desc, leave=False, dynamic_ncols=True))
    return iter(it)


def _run_stage(
    *,
    name: str,
    module: nn.Module,
    params: list[nn.Parameter],
    step_fn: Callable[[nn.Module, list[tuple[int, int, int, bool, bool]]], torch.Tensor],
    lengths: Sequence[int],
    crop: int,
    epochs: int,
    lr: float,
    cfg: TrainConfig,
    d: Dist,
    out: Path,
    extra: dict[str, Any],
    state_module: nn.Module,
    on_epoch_end: Callable[[int], dict[str, Any]],
) -> None:
    """Generic loop: AdamW + warmup/cosine, resumable from ``out/last.pt``."""
    wrapped: nn.Module = module
    if d.world > 1:
        wrapped = DDP(module, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    steps_per_epoch = len(epoch_batches(lengths, crop, cfg.batch, seed=cfg.seed, epoch=0, d=d))
    total = steps_per_epoch * epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, cfg.warmup_frac))
    start_epoch, step = 0, 0
    best_wll, best_state = float("inf"), None  # the epoch with the lowest validation log loss is kept
    last = out / "last.pt"
    if cfg.resume and last.is_file():
        ck = load_checkpoint(last)
        if ck.get("stage") == name:
            state_module.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            start_epoch, step = int(ck["epoch"]) + 1, int(ck["step"])
            best_wll, best_state = float(ck.get("best_wll", best_wll)), ck.get("best_model")
            log.info("resumed stage %s at epoch %d", name, start_epoch)
    for epoch in range(start_epoch, epochs):
        if cfg.max_steps and step >= total:
            break
        wrapped.train()
        batches = epoch_batches(lengths, crop, cfg.batch, seed=cfg.seed, epoch=epoch, d=d)
        t0, losses = time.perf_counter(), []
        bar = _bar(batches, d, cfg, f"{name} {epoch + 1}/{epochs}")
        for b in bar:
            if cfg.max_steps and step >= total:
                break
            loss = step_fn(wrapped, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        metrics = on_epoch_end(epoch)
        if d.main and metrics.get("wll", float("inf")) < best_wll:
            best_wll = float(metrics["wll"])
            best_state = {k: v.detach().clone() for k, v in state_module.state_dict().items()}
        if d.main:
            log.info(
                "%s epoch %d: loss %.4f, %.0f s, val %s",
                name,
                epoch + 1,
                float(np.mean(losses)) if losses else float("nan"),
                time.perf_counter() - t0,
                json.dumps(metrics),
            )
            save_checkpoint(
                last,
                {
                    **extra,
                    "stage": name,
                    "epoch": epoch,
                    "step": step,
                    "model": state_module.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "best_wll": best_wll,
                    "best_model": best_state,
                },
            )
        d.barrier()
    if d.main and best_state is not None:
        state_module.load_state_dict(best_state)
        log.info("%s: keeping the epoch with validation weighted log loss %.5f", name, best_wll)


@torch.no_grad()
def embed_all(
    model: ICHNet, arrays: Sequence[np.ndarray], d: Dist, chunk: int = 64, *, flip: bool = False
) -> list[torch.Tensor]:
    """Per-study CNN embeddings [S, F]; ``flip`` mirrors the slices left-right first (augmentation)."""
    model.eval()
    out = []
    for x in arrays:
        parts = []
        for i in range(0, len(x), chunk):
            part = x[i : i + chunk, ..., ::-1] if flip else x[i : i + chunk]
            xt = torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32)).to(d.device)
            parts.append(model.cnn(xt))
        out.append(torch.cat(parts))
    return out


@torch.no_grad()
def predict_from_embeddings(
    head: nn.Module, embeds: Sequence[torch.Tensor]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    head.eval()
    sp, st = [], []
    for e in embeds:
        a, b = head(e[None])
        sp.append(torch.sigmoid(a[0]).cpu().numpy())
        st.append(torch.sigmoid(b[0]).cpu().numpy())
    return sp, st


def build_split(
    cfg: TrainConfig, *, progress: bool = False
) -> tuple[list[StudyItem], list[StudyItem], list[StudyItem], list[StudyItem]]:
    """(all items, train, val, test) exactly as training splits them (by patient, ``cfg.seed``)."""
    cache = Path(cfg.cache) if cfg.cache else Path(cfg.out) / "cache"
    items = build_items(Path(cfg.data), Path(cfg.labels), cache, spec=preprocess_spec(cfg), progress=progress)
    train_items, val_items, test_items = split_items(
        items, seed=cfg.seed, val_frac=cfg.val_frac, test_frac=cfg.test_frac
    )
    if not train_items:
        raise ValueError("no training studies after the split (need more studies)")
    if not val_items:
        log.warning(
            "only %d patient(s): no validation split; validating (and choosing thresholds) on the training "
            "studies, so the metrics are optimistic",
            len({i.patient_key for i in items}),
        )
        val_items = train_items
    if not test_items:
        log.warning("no test split: test metrics are computed on the validation studies")
        test_items = val_items
    return items, train_items, val_items, test_items


def labelled_only(
    items: Sequence[StudyItem], probs: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-study labels and slice probabilities restricted to the labelled slices (``mask``), so that a
    slice without labels is never scored as a negative (as ``training.evaluate`` does for ONNX)."""
    keep = [i.mask > 0.5 for i in items]
    return [i.labels[k] for i, k in zip(items, keep)], [p[k] for p, k in zip(probs, keep)]


def evaluate_head(
    head: nn.Module,
    embeds: dict[str, torch.Tensor],
    val_items: Sequence[StudyItem],
    test_items: Sequence[StudyItem],
    *,
    policy: str,
    sensitivity: float,
) -> dict[str, Any]:
    """Thresholds chosen on validation under ``policy``; validation and test metrics at them."""
    vp, vs = predict_from_embeddings(head, [embeds[i.key] for i in val_items])
    vy, vp = labelled_only(val_items, vp)
    thr = choose_thresholds(vy, vp, sensitivity, policy)
    tp, ts = predict_from_embeddings(head, [embeds[i.key] for i in test_items])
    ty, tp = labelled_only(test_items, tp)
    return {
        "val": evaluate_predictions(vy, vp, vs, thr),
        "test": evaluate_predictions(ty, tp, ts, thr),
        "thresholds": thr,
        "threshold_policy": policy,
    }


def _short(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "wll": m["weighted_log_loss"],
        "auc_any": m["slice_auc"]["any"],
        "study_auc_any": m["study_auc"]["any"],
    }


# ---------------------------------------------------------------------------------------------- main
def train(cfg: TrainConfig) -> Path:
    """Run the configured stages; returns ``<out>/checkpoint.pt`` (the CNN-GRU)."""
    cfg.threshold_policy = canonical_policy(cfg.threshold_policy)  # the checkpoint records the canonical name
    d = setup_dist()
    torch.set_num_threads(max(1, cfg.threads // d.world) if d.device.type == "cpu" else cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.freeze_cnn and not cfg.init:
        raise ValueError("--freeze-cnn needs --init (the checkpoint whose CNN is kept)")
    modes = [m.value for m in ConsistencyMode]
    if cfg.noise_consistency_mode not in modes:
        raise ValueError(
            f"--noise-consistency-mode {cfg.noise_consistency_mode!r}: not one of {', '.join(modes)}"
        )
    mode = ConsistencyMode(cfg.noise_consistency_mode)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # data: rank 0 fills the cache first, the others then read it
    if not d.main:
        d.barrier()
    items, train_items, val_items, test_items = build_split(cfg, progress=cfg.progress and d.main)
    if d.main:
        d.barrier()
    arrays = {i.key: i.load() for i in items}
    split_info = {
        "seed": cfg.seed,
        "train": len(train_items),
        "val": len(val_items),
        "test": len(test_items),
        "train_slices": int(sum(len(i) for i in train_items)),
    }
    if d.main:
        log.info("split %s", split_info)
        if d.world > 1:
            log.info("distributed: world %d, backend %s", d.world, dist.get_backend())
    extra = {"train_config": asdict(cfg), "split": split_info}
    stages = [s.strip() for s in cfg.stages.split(",") if s.strip()]
    tr_arrays = [arrays[i.key] for i in train_items]
    tr_lengths = [len(i) for i in train_items]
    dev = d.device

    # ---- stage 1: CNN per slice (the use_gru=False ablation model)
    cnn_cfg = ModelConfig(use_gru=False, input_size=cfg.size, widths=model_widths(cfg))
    cnn_model = ICHNet(cnn_cfg).to(dev)
    cnn_path = out / "cnn_only.pt"
    init_weights: dict[str, torch.Tensor] = {}
    if cfg.init:  # a resumed run reloads its own weights over these below
        gru_shape = ModelConfig(use_gru=True, input_size=cfg.size, widths=model_widths(cfg))
        init_weights = load_init(Path(cfg.init), gru_shape)
        apply_init(cnn_model, init_weights, what="stage cnn")

    def cnn_step(m: nn.Module, batch: list[tuple[int, int, int, bool, bool]]) -> torch.Tensor:
        xs, ys, ms = [], [], []
        for i, s0, n, rev, flip in batch:
            x = _crop(tr_arrays[i], s0, n, rev)
            if flip:
                x = x[..., ::-1]
            xs.append(np.ascontiguousarray(x, dtype=np.float32))
            ys.append(_crop(train_items[i].labels, s0, n, rev))
            ms.append(_crop(train_items[i].mask, s0, n, rev))
        x_t = torch.from_numpy(np.stack(xs)).to(dev)
        y_t = torch.from_numpy(np.ascontiguousarray(np.stack(ys))).to(dev)
        m_t = torch.from_numpy(np.ascontiguousarray(np.stack(ms))).to(dev)
        sl, st = m(x_t)
        return sequence_loss(sl, st, y_t, m_t, cfg.study_loss_weight)

    def val_cnn(epoch: int) -> dict[str, Any]:
        if not d.main:
            return {}
        emb = embed_all(cnn_model, [arrays[i.key] for i in val_items], d)
        sp, st = predict_from_embeddings(cnn_model.head, emb)
        return _short(evaluate_predictions(*labelled_only(val_items, sp), st))

    if "cnn" in stages and not (cfg.resume and cnn_path.is_file()):
        if cfg.freeze_cnn:
            log.info("stage cnn: not trained (--freeze-cnn), the CNN of the init checkpoint is kept")
        else:
            _run_stage(
                name="cnn",
                module=cnn_model,
                params=list(cnn_model.parameters()),
                step_fn=cnn_step,
                lengths=tr_lengths,
                crop=cfg.cnn_crop,
                epochs=cfg.cnn_epochs,
                lr=cfg.lr,
                cfg=cfg,
                d=d,
                out=out,
                extra={**extra, "model_config": cnn_cfg.to_dict()},
                state_module=cnn_model,
                on_epoch_end=val_cnn,
            )
        if d.main:
            save_checkpoint(
                cnn_path, {**extra, "model_config": cnn_cfg.to_dict(), "model": cnn_model.state_dict()}
            )
        d.barrier()
    cnn_model.load_state_dict(load_checkpoint(cnn_path, dev)["model"])

    # ---- stage 2: frozen trunk, GRU on embeddings
    gru_cfg = ModelConfig(use_gru=True, input_size=cfg.size, widths=model_widths(cfg))
    model = ICHNet(gru_cfg).to(dev)
    if any(k.startswith("head.gru.") for k in init_weights):
        apply_init(model, init_weights, what="stage gru")
    model.cnn.load_state_dict(cnn_model.cnn.state_dict())
    model.head.cnn_head.load_state_dict(cnn_model.head.cnn_head.state_dict())
    for p in model.cnn.parameters():
        p.requires_grad_(False)
    all_items = train_items + val_items + test_items
    embeds = dict(zip([i.key for i in all_items], embed_all(model, [arrays[i.key] for i in all_items], d)))
    tr_emb = [embeds[i.key] for i in train_items]
    tr_emb_flip = embed_all(model, tr_arrays, d, flip=True)  # left-right mirrored: GRU-stage augmentation
    # other renderings of each training stack's scene (noise consistency; none when it is off)
    partners = rendering_partners(train_items) if cfg.noise_consistency > 0 else [[] for _ in train_items]
    pair_rng = np.random.default_rng([cfg.seed, d.rank, 2])
    if cfg.noise_consistency > 0 and d.main:
        log.info(
            "noise consistency %.3g (%s): %d of %d training stacks have another rendering of their scene",
            cfg.noise_consistency,
            mode.value,
            sum(1 for p in partners if p),
            len(partners),
        )
    # directed modes: how noisy each paired stack is (the less noisy rendering of a pair is the target)
    noisiness = np.zeros(len(train_items))
    if mode is not ConsistencyMode.SYMMETRIC:
        for i, others in enumerate(partners):
            if others:
                noisiness[i] = noise_energy(arrays[train_items[i].key])

    def gru_step(m: nn.Module, batch: list[tuple[int, int, int, bool, bool]]) -> torch.Tensor:
        mates = pick_partners([c[0] for c in batch], partners, pair_rng)
        paired = [(j, *c[1:]) for c, j in zip(batch, mates) if j is not None]  # same crop, other rendering
        crops = [*batch, *paired]
        es = torch.stack(
            [_crop((tr_emb_flip if fl else tr_emb)[i], s0, n, rev) for i, s0, n, rev, fl in crops]
        )
        ys = np.stack([_crop(train_items[i].labels, s0, n, rev) for i, s0, n, rev, _ in crops])
        ms = np.stack([_crop(train_items[i].mask, s0, n, rev) for i, s0, n, rev, _ in crops])
        y_t = torch.from_numpy(np.ascontiguousarray(ys)).to(dev)
        m_t = torch.from_numpy(np.ascontiguousarray(ms)).to(dev)
        sl, st = m(es)
        loss = sequence_loss(sl, st, y_t, m_t, cfg.study_loss_weight)
        if paired:
            anchors = [k for k, j in enumerate(mates) if j is not None]
            b_noisier = torch.tensor(
                [bool(noisiness[j] > noisiness[c[0]]) for c, j in zip(batch, mates) if j is not None]
            )
            loss = loss + cfg.noise_consistency * study_consistency(
                st[anchors], st[len(batch) :], mode, b_noisier
            )
        return loss

    def val_gru(epoch: int) -> dict[str, Any]:
        if not d.main:
            return {}
        sp, st = predict_from_embeddings(model.head, [embeds[i.key] for i in val_items])
        return _short(evaluate_predictions(*labelled_only(val_items, sp), st))

    final = out / "checkpoint.pt"
    if "gru" in stages:
        _run_stage(
            name="gru",
            module=model.head,
            params=[p for p in model.head.parameters() if p.requires_grad],
            step_fn=gru_step,
            lengths=tr_lengths,
            crop=cfg.gru_crop,
            epochs=cfg.gru_epochs,
            lr=cfg.gru_lr,
            cfg=cfg,
            d=d,
            out=out,
            extra={**extra, "model_config": gru_cfg.to_dict()},
            state_module=model.head,
            on_epoch_end=val_gru,
        )

    # ---- evaluation of both variants on the same split: temperatures and thresholds on val, metrics on
    # test (the temperatures live in the head, so thresholds are chosen on calibrated probabilities)
    if d.main:
        report: dict[str, Any] = {
            "split": split_info,
            "train_wall_s": round(time.perf_counter() - t_start, 1),
        }
        spec = preprocess_spec(cfg)
        ranges = trained_range(train_items)
        for tag, head, cfg_m in (("cnn_only", cnn_model.head, cnn_cfg), ("cnn_gru", model.head, gru_cfg)):
            calibration = calibrate_head(
                head,
                [embeds[i.key] for i in val_items],
                [i.labels for i in val_items],
                [i.mask for i in val_items],
            )
            log.info("%s temperatures (slice): %s", tag, calibration["slice"])
            report[tag] = evaluate_head(
                head,
                embeds,
                val_items,
                test_items,
                policy=cfg.threshold_policy,
                sensitivity=cfg.sensitivity,
            )
            thr = report[tag]["thresholds"]
            net = model if tag == "cnn_gru" else cnn_model
            payload = {
                **extra,
                "model_config": cfg_m.to_dict(),
                "model": net.state_dict(),
                "windows": [{"width": w.width, "level": w.level} for w in MODEL_WINDOWS],
                "thresholds": thr,
                "metrics": report[tag]["test"],
                "val_metrics": report[tag]["val"],
                "class_names": list(RSNA_CLASSES),
                "preprocessing": spec.to_metadata(),
                "calibration": {
                    "method": "temperature",
                    "temperatures": calibration["slice"],
                    "study_temperatures": calibration["study"],
                    "fitted_on": f"validation split ({len(val_items)} studies, seed {cfg.seed})",
                },
                "trained_range": ranges,
            }
            report[tag]["calibration"] = payload["calibration"]
            # study thresholds at study level on the same validation studies (training.study_thresholds)
            _, val_study = predict_from_embeddings(head, [embeds[i.key] for i in val_items])
            study_thr, study_op = validation_study_thresholds(
                [i.labels[i.mask > 0.5] for i in val_items], val_study
            )
            payload["study_thresholds"] = study_thr
            payload["study_threshold_policy"] = (
                STUDY_POLICY_TEXT.format(sens=0.95) + "; chosen on the validation split"
            )
            report[tag]["study_thresholds"] = study_thr
            report[tag]["val_study_operating_point"] = study_op
            save_checkpoint(final if tag == "cnn_gru" else cnn_path, payload)
        report["cnn_only_test_metrics_same_split"] = True
        (out / "metrics.json").write_text(json.dumps(report, indent=2))
        log.info(
            "test: cnn_only %s | cnn_gru %s",
            _short(report["cnn_only"]["test"]),
            _short(report["cnn_gru"]["test"]),
        )
    d.barrier()
    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
    return final


def config_fields() -> list[str]:
    return [f.name for f in fields(TrainConfig)]
