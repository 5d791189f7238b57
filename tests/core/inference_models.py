"""Tiny contract-following ONNX models built with onnx.helper (no torch), for the inference tests.

The "mean" model: per slice, the mean of each input channel -> Linear(C -> K) -> sigmoid, so a slice
full of blood-density pixels (brain window bright) scores high; study_probs = max over slices.
The test heads (``blood_hu``) have a skull ring so that the applicability check takes them; the
model's bias subtracts the ring's constant share of the channel means, so the ring changes no
probability.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from viewer.core.constants import RSNA_CLASSES
from viewer.core.dicom.model import SliceInfo, SliceSource, Stack

K = len(RSNA_CLASSES)
THRESHOLDS = {
    "any": 0.5,
    "epidural": 0.6,
    "intraparenchymal": 0.5,
    "intraventricular": 0.7,
    "subarachnoid": 0.5,
    "subdural": 0.4,
}


def default_metadata(input_size: int = 32) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "model_name": "tiny-test",
        "model_version": "0.0.1",
        "class_names": list(RSNA_CLASSES),
        "modality": "CT",
        "input_layout": "BSCHW",
        "input_size": input_size,
        "windows": [{"width": 80, "level": 40}, {"width": 200, "level": 80}, {"width": 380, "level": 40}],
        "normalization": "(clip(HU,L-W/2,L+W/2)-(L-W/2))/W",
        "slice_order": "ascending_position",
        "thresholds": dict(THRESHOLDS),
        "threshold_policy": "test",
        "metrics": {},
        "train_data": "none",
        "intended_use": "Research use only. Test model.",
        "exporter": {"tool": "onnx.helper"},
        "min_slices": 3,
    }


def build_model(
    path: Path,
    *,
    metadata: Mapping[str, Any] | None = None,
    drop_keys: tuple[str, ...] = (),
    raw_metadata: Mapping[str, str] | None = None,
    input_name: str = "slices",
    input_rank: int = 5,
    input_dtype: int = TensorProto.FLOAT,
    input_size: int = 32,
    slow_matmuls: int = 0,
    external_location: str | None = None,
    fail_on_odd_slices: bool = False,
    maps_factor: int | None = None,
    maps_classes: int = 5,
) -> Path:
    """Write a tiny model to ``path`` and return it. Parameters break the contract on purpose.

    ``maps_factor``: a contract-2 model with localisation maps, ``slice_maps`` [B, S, maps_classes,
    input_size / maps_factor, ...]: the blood-density mask (:func:`_blood_graph`) for the subtypes of
    :data:`SEG_CLASS_GAIN`, area-averaged by ``maps_factor`` (the model grid's own convention), with
    metadata ``maps`` for the five subtypes (a ``maps_classes`` other than 5 declares a wrong shape)."""
    meta = default_metadata(input_size)
    if maps_factor:
        meta.update(
            contract_version=2,
            maps={
                "output": "slice_maps",
                "classes": list(SEG_CLASSES),
                "size": input_size // maps_factor,
                "thresholds": {c: 0.5 for c in SEG_CLASSES},
            },
        )
    if metadata:
        meta.update(metadata)
    for key in drop_keys:
        meta.pop(key, None)
    props = {k: json.dumps(v) for k, v in meta.items()}
    if raw_metadata:
        props.update(raw_metadata)

    rng = np.random.default_rng(0)
    # brain-window mean drives "any" and the subtypes with different gains
    weight = np.zeros((3, K), dtype=np.float32)
    weight[0] = np.array([12.0, 6.0, 10.0, 4.0, 9.0, 11.0], dtype=np.float32)
    weight[1] = rng.normal(0, 0.5, K).astype(np.float32)
    bias = np.array([-4.0, -4.5, -4.0, -4.2, -3.8, -4.0], dtype=np.float32) - ring_share(input_size) @ weight
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")]
    nodes = []
    in_shape: list[Any] = ["batch", "num_slices", 3, input_size, input_size][:input_rank]
    if input_rank == 5:
        if input_dtype != TensorProto.FLOAT:
            nodes.append(helper.make_node("Cast", [input_name], ["xf"], to=TensorProto.FLOAT))
            src = "xf"
        else:
            src = input_name
        nodes.append(helper.make_node("ReduceMean", [src], ["feat"], axes=[3, 4], keepdims=0))
    else:  # rank 4 [batch, num_slices, C, H*W] for the wrong-rank case
        in_shape = ["batch", "num_slices", 3, input_size * input_size]
        nodes.append(helper.make_node("ReduceMean", [input_name], ["feat"], axes=[3], keepdims=0))
    nodes += [
        helper.make_node("MatMul", ["feat", "W"], ["logits0"]),
        helper.make_node("Add", ["logits0", "b"], ["logits"]),
    ]
    last = "logits"
    if fail_on_odd_slices:  # a real runtime failure: Reshape (B, S, 3) -> (B, -1, 2, 3) needs an even S
        inits.append(numpy_helper.from_array(np.array([0, -1, 2, 3], dtype=np.int64), "pairs"))
        inits.append(numpy_helper.from_array(np.zeros((), dtype=np.float32), "zero2"))
        nodes.append(helper.make_node("Reshape", ["feat", "pairs"], ["paired"]))
        nodes.append(helper.make_node("ReduceSum", ["paired"], ["psum"], keepdims=0))
        nodes.append(helper.make_node("Mul", ["psum", "zero2"], ["pzero"]))
        nodes.append(helper.make_node("Add", [last, "pzero"], ["logits_pairs"]))
        last = "logits_pairs"
    if slow_matmuls:
        n = 1024
        inits.append(numpy_helper.from_array((np.eye(n, dtype=np.float32) * 0.999), "M"))
        inits.append(numpy_helper.from_array(np.ones((n, n), dtype=np.float32), "ones"))
        nodes.append(helper.make_node("ReduceMean", ["feat"], ["m"], keepdims=0))  # input-dependent scalar
        nodes.append(helper.make_node("Mul", ["ones", "m"], ["h0"]))
        prev = "h0"
        for i in range(slow_matmuls):
            nodes.append(helper.make_node("MatMul", [prev, "M"], [f"mm{i}"]))
            nodes.append(helper.make_node("Tanh", [f"mm{i}"], [f"h{i + 1}"]))
            prev = f"h{i + 1}"
        nodes.append(helper.make_node("ReduceSum", [prev], ["hs"], keepdims=0))
        inits.append(numpy_helper.from_array(np.zeros((), dtype=np.float32), "zero"))
        nodes.append(helper.make_node("Mul", ["hs", "zero"], ["hz"]))
        nodes.append(helper.make_node("Add", [last, "hz"], ["logits_slow"]))
        last = "logits_slow"
    nodes += [
        helper.make_node("Sigmoid", [last], ["slice_probs"]),
        helper.make_node("ReduceMax", ["slice_probs"], ["study_probs"], axes=[1], keepdims=0),
    ]
    outputs = [
        helper.make_tensor_value_info("slice_probs", TensorProto.FLOAT, ["batch", "num_slices", K]),
        helper.make_tensor_value_info("study_probs", TensorProto.FLOAT, ["batch", K]),
    ]
    if maps_factor:
        gain = np.array((SEG_CLASS_GAIN + (1.0,) * maps_classes)[:maps_classes], dtype=np.float32)
        blood_inits, blood_nodes = _blood_graph(gain)
        inits += blood_inits
        f = maps_factor
        nodes += [
            *blood_nodes,
            helper.make_node("Mul", ["blood", "gain"], ["maps_full"]),
            helper.make_node(
                "AveragePool", ["maps_full"], ["slice_maps"], kernel_shape=[1, f, f], strides=[1, f, f]
            ),
        ]
        size = input_size // f
        outputs.append(
            helper.make_tensor_value_info(
                "slice_maps", TensorProto.FLOAT, ["batch", "num_slices", maps_classes, size, size]
            )
        )
    inputs = [helper.make_tensor_value_info(input_name, input_dtype, in_shape)]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_location is not None:
        tensor = model.graph.initializer[0]
        tensor.data_location = TensorProto.EXTERNAL
        del tensor.external_data[:]
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", external_location
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
    onnx.save_model(model, str(path))
    return path


PIXEL_MM = 3.0  # test heads: 64 px x 3 mm = 192 mm field of view, a 170 mm skull
SKULL_HU = 1000.0


def _head(size: int, skull: bool = True) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    r2 = (yy - size / 2) ** 2 + (xx - size / 2) ** 2
    hu = np.where(r2 < (size * 0.45) ** 2, 30.0, -1000.0).astype(np.float32)
    if skull:
        hu[(r2 >= (size * 0.45) ** 2) & (r2 < (size * 0.49) ** 2)] = SKULL_HU
    return hu


def ring_share(input_size: int, size: int = 64) -> np.ndarray:
    """The skull ring's share of each channel mean of the tiny model (the same on every slice)."""
    from viewer.core.constants import MODEL_WINDOWS
    from viewer.core.preprocess import preprocess_stack

    with_ring = preprocess_stack(_head(size)[None], MODEL_WINDOWS, input_size)
    without = preprocess_stack(_head(size, skull=False)[None], MODEL_WINDOWS, input_size)
    return (with_ring.mean(axis=(0, 2, 3)) - without.mean(axis=(0, 2, 3))).astype(np.float32)


def blood_hu(n_slices: int, bleed: tuple[int, ...], size: int = 64) -> np.ndarray:
    """(S, size, size) HU: a skull ring around a brain disc (30 HU) in air; slices in ``bleed`` carry
    a bright blob."""
    yy, xx = np.mgrid[0:size, 0:size]
    blob = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size * 0.35) ** 2
    hu = _head(size)
    out = np.repeat(hu[None], n_slices, axis=0)
    for i in bleed:
        out[i][blob] = 75.0
    return out


def make_stack(n_slices: int, *, modality: str = "CT", color: bool = False, uid: str = "1.2.3.4") -> Stack:
    """A Stack value object with synthetic UIDs (no files behind it), for predict_hu tests."""
    slices = tuple(
        SliceInfo(
            source=SliceSource(Path(f"/nonexistent/{i}.dcm")),
            sop_instance_uid=f"{uid}.{i + 1}",
            instance_number=i + 1,
            rows=64,
            columns=64,
            samples_per_pixel=3 if color else 1,
            photometric="RGB" if color else "MONOCHROME2",
            bits_allocated=8 if color else 16,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            position=(0.0, 0.0, 5.0 * i),
            orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
            pixel_spacing=(PIXEL_MM, PIXEL_MM),
            slice_thickness=5.0,
        )
        for i in range(n_slices)
    )
    return Stack(
        uid=uid,
        series_instance_uid=uid,
        study_instance_uid="1.2.3",
        modality=modality,
        series_description="test",
        series_number=1,
        slices=slices,
        sort_method="position",
    )


def write_bleed_series(folder: Path, n_slices: int, bleed: tuple[int, ...], size: int = 64) -> list[Path]:
    """A CT series (canary patient) whose ``bleed`` slices make the tiny model flag them."""
    from pydicom.uid import generate_uid

    from tests.factories import make_ct_slice

    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for i, hu in enumerate(blood_hu(n_slices, bleed, size)):
        ds = make_ct_slice(
            hu.round().astype(np.int16),
            position=(0.0, 0.0, 5.0 * i),
            instance_number=i + 1,
            study_uid=study,
            series_uid=series,
            frame_of_reference_uid=frame,
            spacing=(PIXEL_MM, PIXEL_MM),
        )
        path = folder / f"{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


SEG_CLASSES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
SEG_CLASS_GAIN = (1.0, 0.0, 0.0, 0.0, 1.0)  # the blood-density mask goes to epidural and subdural


def _blood_graph(gain: np.ndarray) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto]]:
    """Initializers and nodes computing ``blood`` [B, S, 1, H, W] from ``slices``: per pixel, blood
    density (brain window >= 60 HU and the wide window below bone); ``gain`` [K] per class."""
    inits = [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "c0"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "c2"),
        numpy_helper.from_array(np.array(0.75, dtype=np.float32), "blood_lo"),  # brain window: 60 HU
        numpy_helper.from_array(np.array(0.7, dtype=np.float32), "bone_hi"),  # wide window: 116 HU
        numpy_helper.from_array(np.array(60.0, dtype=np.float32), "steep"),
        numpy_helper.from_array(gain.reshape(1, 1, -1, 1, 1).astype(np.float32), "gain"),
    ]
    nodes = [
        helper.make_node("Gather", ["slices", "c0"], ["brain"], axis=2),  # [B, S, 1, H, W]
        helper.make_node("Gather", ["slices", "c2"], ["wide"], axis=2),
        helper.make_node("Sub", ["brain", "blood_lo"], ["d0"]),
        helper.make_node("Sub", ["bone_hi", "wide"], ["d2"]),
        helper.make_node("Mul", ["d0", "steep"], ["z0"]),
        helper.make_node("Mul", ["d2", "steep"], ["z2"]),
        helper.make_node("Sigmoid", ["z0"], ["p0"]),
        helper.make_node("Sigmoid", ["z2"], ["p2"]),
        helper.make_node("Mul", ["p0", "p2"], ["blood"]),
    ]
    return inits, nodes


def build_seg_model(
    path: Path,
    *,
    input_size: int = 32,
    metadata: Mapping[str, Any] | None = None,
    out_classes: int = len(SEG_CLASSES),
    out_size: int | None = None,
) -> Path:
    """A tiny ``slice_segmentation`` model (no torch): per pixel, blood density (brain window >= 60 HU
    and the wide window below bone) -> sigmoid mask [B, S, K, h, w] for the classes with gain 1.

    ``out_classes`` / ``out_size`` declare a wrong output shape on purpose."""
    meta = default_metadata(input_size)
    meta.update(
        task="slice_segmentation",
        model_name="tiny-seg-test",
        class_names=list(SEG_CLASSES),
        thresholds={c: 0.5 for c in SEG_CLASSES},
    )
    meta.update(metadata or {})
    gain = np.array(SEG_CLASS_GAIN[:out_classes] + (0.0,) * max(0, out_classes - 5), dtype=np.float32)
    inits, nodes = _blood_graph(gain)
    nodes.append(helper.make_node("Mul", ["blood", "gain"], ["masks_full" if out_size else "slice_masks"]))
    size = out_size or input_size
    if out_size:  # really crop the maps, so that ONNX Runtime's shape inference agrees
        inits += [
            numpy_helper.from_array(np.array([0, 0], dtype=np.int64), "crop_lo"),
            numpy_helper.from_array(np.array([out_size, out_size], dtype=np.int64), "crop_hi"),
            numpy_helper.from_array(np.array([3, 4], dtype=np.int64), "crop_axes"),
        ]
        nodes.append(
            helper.make_node("Slice", ["masks_full", "crop_lo", "crop_hi", "crop_axes"], ["slice_masks"])
        )
    graph = helper.make_graph(
        nodes,
        "tiny-seg",
        [
            helper.make_tensor_value_info(
                "slices", TensorProto.FLOAT, ["batch", "num_slices", 3, input_size, input_size]
            )
        ],
        [
            helper.make_tensor_value_info(
                "slice_masks", TensorProto.FLOAT, ["batch", "num_slices", out_classes, size, size]
            )
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    helper.set_model_props(model, {k: json.dumps(v) for k, v in meta.items()})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path
