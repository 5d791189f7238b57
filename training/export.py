"""Checkpoint -> one ONNX file following the Slicewise model contract, then a parity check.

Legacy TorchScript exporter (``dynamo=False``), opset 17, dynamic ``batch`` and ``num_slices``
axes, no h0 input (see MODEL.md: the dynamo path has baked-in sequence lengths and an old
``linear_before_reset=0`` GRU bug). Every metadata_props value is a JSON string.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from training.errors import ExportParityError
from training.metrics import threshold_policy_text
from training.model import ExportWrapper, ICHNet
from training.thresholds import checkpoint_policy
from training.train import load_checkpoint, model_from_checkpoint
from viewer.core.constants import (
    MIN_SLICES_FOR_MODEL,
    MODEL_INPUT_NAME,
    MODEL_SLICE_OUTPUT,
    MODEL_STUDY_OUTPUT,
    MODEL_WINDOWS,
    ONNX_SCHEMA_VERSION,
    RSNA_CLASSES,
)

log = logging.getLogger(__name__)

MODEL_NAME = "slicewise-ich"
MODEL_VERSION = "0.2.0"  # 0.1.x: 128 px, preprocessing v1; 0.2.0: 256 px, head-centred mm grid, calibrated
PARITY_SLICES: tuple[int, ...] = (1, 2, 7, 40, 128)
PARITY_BATCHES: tuple[int, ...] = (1, 2)
PARITY_ATOL = 1e-4
NORMALIZATION_V1 = (
    "HU -> pad to square with air (-1024) -> area resize to input_size -> per window "
    "(clip(HU, level - width/2, level + width/2) - (level - width/2)) / width, in [0, 1] "
    "(viewer.core.preprocess.preprocess_stack)"
)
NORMALIZATION_V2 = (
    "HU -> canonical orientation -> resample to input_size px over field_mm, centred on the head "
    "(centroid of voxels above head_threshold_hu) -> slices thinner than slab_mm averaged into slabs -> "
    "per window (clip(HU, level - width/2, level + width/2) - (level - width/2)) / width, in [0, 1] "
    "(viewer.core.preprocess.preprocess, metadata 'preprocessing')"
)
DEFAULT_TRAIN_DATA = "synthetic head CT studies from training.synth (no patient data)"
DEFAULT_INTENDED_USE = "research use only; trained on synthetic data; not for clinical use"


def json_safe(value: Any) -> Any:
    """NaN/inf (an AUC with one class absent) -> None, so the metadata is strict JSON."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _metadata(
    ckpt: dict[str, Any], *, train_data: str, intended_use: str, policy: str, sensitivity: float
) -> dict[str, Any]:
    mcfg = ckpt["model_config"]
    windows = ckpt.get("windows") or [{"width": w.width, "level": w.level} for w in MODEL_WINDOWS]
    thresholds = ckpt.get("thresholds") or {c: 0.5 for c in RSNA_CLASSES}
    study: dict[str, Any] = {}
    if ckpt.get("study_thresholds"):  # chosen at study level on validation (training.study_thresholds)
        study = {
            "study_thresholds": ckpt["study_thresholds"],
            "study_threshold_policy": ckpt.get("study_threshold_policy", ""),
        }
    preprocessing = ckpt.get("preprocessing")
    v2 = bool(preprocessing and int(preprocessing.get("version", 1)) >= 2)
    extra: dict[str, Any] = {}
    if v2:
        extra["preprocessing"] = preprocessing
    for key in ("calibration", "trained_range"):
        if ckpt.get(key):
            extra[key] = ckpt[key]
    return {
        "schema_version": ONNX_SCHEMA_VERSION,
        "model_name": MODEL_NAME if mcfg.get("use_gru", True) else f"{MODEL_NAME}-cnn-only",
        "model_version": MODEL_VERSION if v2 else "0.1.2",
        "class_names": list(RSNA_CLASSES),
        "modality": "CT",
        "input_layout": "BSCHW",
        "input_size": int(mcfg["input_size"]),
        "windows": windows,
        "normalization": NORMALIZATION_V2 if v2 else NORMALIZATION_V1,
        "slice_order": "ascending_position",
        "thresholds": thresholds,
        "threshold_policy": (
            threshold_policy_text(policy, sensitivity)
            if ckpt.get("thresholds")
            else "0.5 (no validation thresholds in checkpoint)"
        ),
        "metrics": {"test": ckpt.get("metrics", {}), "split": ckpt.get("split", {})},
        "train_data": train_data,
        "intended_use": intended_use,
        "exporter": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "opset": 17,
            "dynamo": False,
            "architecture": "CNN + 2-layer BiGRU" if mcfg.get("use_gru", True) else "CNN only",
        },
        "min_slices": MIN_SLICES_FOR_MODEL,
        **study,
        **extra,
    }


def write_onnx(
    wrapper: torch.nn.Module,
    example: torch.Tensor,
    out_path: Path,
    outputs: Mapping[str, Sequence[int]],
    metadata: dict[str, Any],
    description: str,
) -> onnx.ModelProto:
    """Export ``wrapper`` (one input ``slices``, dynamic batch and slices) with the legacy exporter at opset
    17: ``outputs`` maps each output name to its dynamic axes (0 = batch, 1 = slices); the metadata as
    JSON strings, ``description`` + the intended use as the doc string; checked (and every GRU node's
    ``linear_before_reset``) and saved. Returns the saved model."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    axis_names = {0: "batch", 1: "num_slices"}
    tmp = out_path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and GRU batch-size notices
        torch.onnx.export(
            wrapper,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=17,
            input_names=[MODEL_INPUT_NAME],
            output_names=list(outputs),
            dynamic_axes={
                MODEL_INPUT_NAME: {0: "batch", 1: "num_slices"},
                **{name: {a: axis_names[a] for a in axes} for name, axes in outputs.items()},
            },
        )
    model = onnx.load(str(tmp))
    onnx.helper.set_model_props(
        model, {k: json.dumps(json_safe(v), allow_nan=False) for k, v in metadata.items()}
    )
    model.doc_string = f"{description} " + str(metadata.get("intended_use", ""))
    onnx.checker.check_model(model)
    check_gru_nodes(model)
    onnx.save(model, str(out_path))
    tmp.unlink(missing_ok=True)
    return model


def export_model(
    net: ICHNet,
    out_path: Path,
    metadata: dict[str, Any],
    *,
    parity: bool = True,
    slice_counts: Sequence[int] = PARITY_SLICES,
    batch_sizes: Sequence[int] = PARITY_BATCHES,
) -> float:
    """Export ``net`` to ``out_path`` with metadata; returns the parity max abs diff (0.0 if skipped)."""
    net = net.eval().cpu()
    size = int(net.cfg.input_size)
    write_onnx(
        ExportWrapper(net).eval(),
        torch.rand(1, 4, net.cfg.in_channels, size, size),
        out_path,
        {MODEL_SLICE_OUTPUT: (0, 1), MODEL_STUDY_OUTPUT: (0,)},
        metadata,
        "Slicewise CNN-GRU intracranial haemorrhage model.",
    )
    if not parity:
        return 0.0
    return parity_check(out_path, net, slice_counts=slice_counts, batch_sizes=batch_sizes)


def check_gru_nodes(model: onnx.ModelProto) -> int:
    """Every GRU node must have ``linear_before_reset == 1`` (PyTorch's GRU formula)."""
    count = 0
    for node in model.graph.node:
        if node.op_type != "GRU":
            continue
        count += 1
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("linear_before_reset") != 1:
            raise ExportParityError(
                f"GRU node {node.name!r} has linear_before_reset={attrs.get('linear_before_reset')}"
            )
    return count


def runtime_parity(
    onnx_path: Path,
    wrapper: torch.nn.Module,
    outputs: Sequence[str],
    channels: int,
    size: int,
    *,
    slice_counts: Sequence[int] = PARITY_SLICES,
    batch_sizes: Sequence[int] = PARITY_BATCHES,
    atol: float = PARITY_ATOL,
    seed: int = 0,
) -> float:
    """ONNX Runtime (CPU) vs the PyTorch ``wrapper`` (the module that was exported) on random inputs
    [batch, slices, channels, size, size], every output in ``outputs`` (the wrapper's order); the worst
    max abs diff, raising :class:`ExportParityError` (naming the output, batch and slice count) beyond
    ``atol``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batch_sizes:
        for s in slice_counts:
            x = torch.rand(b, s, channels, size, size, generator=gen)
            with torch.no_grad():
                out = wrapper(x)
            ref = [out.numpy()] if isinstance(out, torch.Tensor) else [t.numpy() for t in out]
            got = sess.run(list(outputs), {MODEL_INPUT_NAME: x.numpy()})
            for name, r, g in zip(outputs, ref, got):
                if r.shape != g.shape:
                    raise ExportParityError(
                        f"{name}: shape mismatch at batch={b}, slices={s}: {r.shape} vs {g.shape}"
                    )
                diff = float(np.max(np.abs(r - g)))
                worst = max(worst, diff)
                if diff > atol:
                    raise ExportParityError(
                        f"{name}: ONNX Runtime differs from PyTorch by {diff:.2e} at batch={b}, slices={s}"
                    )
    log.info("parity ok: max abs diff %.2e over batches %s x slices %s", worst, batch_sizes, slice_counts)
    return worst


def parity_check(
    onnx_path: Path,
    net: ICHNet,
    *,
    slice_counts: Sequence[int] = PARITY_SLICES,
    batch_sizes: Sequence[int] = PARITY_BATCHES,
    atol: float = PARITY_ATOL,
    seed: int = 0,
) -> float:
    """The classifier's two outputs through :func:`runtime_parity`."""
    wrapper = ExportWrapper(net.eval().cpu()).eval()
    return runtime_parity(
        onnx_path, wrapper, (MODEL_SLICE_OUTPUT, MODEL_STUDY_OUTPUT), int(net.cfg.in_channels),
        int(net.cfg.input_size), slice_counts=slice_counts, batch_sizes=batch_sizes, atol=atol, seed=seed,
    )


def export_checkpoint(
    ckpt_path: Path,
    out_path: Path,
    *,
    train_data: str = DEFAULT_TRAIN_DATA,
    intended_use: str = DEFAULT_INTENDED_USE,
    parity: bool = True,
    slice_counts: Sequence[int] = PARITY_SLICES,
    batch_sizes: Sequence[int] = PARITY_BATCHES,
    model_version: str | None = None,
) -> float:
    """Export ``ckpt_path`` to ``out_path`` (parity-checked unless ``parity`` is False); ``model_version``
    overrides the default version of the checkpoint's preprocessing (v1 "0.1.2", v2 MODEL_VERSION)."""
    ckpt = load_checkpoint(ckpt_path)
    net = model_from_checkpoint(ckpt)
    policy, sensitivity = checkpoint_policy(ckpt)
    meta = _metadata(
        ckpt, train_data=train_data, intended_use=intended_use, policy=policy, sensitivity=sensitivity
    )
    if model_version:
        meta["model_version"] = model_version
    return export_model(
        net, out_path, meta, parity=parity, slice_counts=slice_counts, batch_sizes=batch_sizes
    )


def rewrite_metadata(model_path: Path, updates: Mapping[str, Any], *, out: Path | None = None) -> Path:
    """Set metadata_props ``updates`` (each value stored as JSON) of an ONNX model, keeping the others;
    the graph and weights are kept byte for byte. Writes ``out`` (default: the model in place)."""
    model = onnx.load(str(model_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    props.update({key: json.dumps(json_safe(value), allow_nan=False) for key, value in updates.items()})
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    target = Path(out) if out is not None else Path(model_path)
    onnx.save(model, str(target))
    return target


def read_metadata(onnx_path: Path) -> dict[str, Any]:
    """metadata_props decoded from JSON."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: json.loads(p.value) for p in model.metadata_props}
