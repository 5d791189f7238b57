"""Read and validate a Slicewise ONNX model against the contract (HELPER_COMMON.md, MODEL.md section 6).

Nothing here imports onnxruntime at module level: the viewer's start-up never pays for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from viewer.core.applicability.codes import TrainedRange, parse_trained_range
from viewer.core.constants import (
    MODEL_CONTRACT_VERSION,
    MODEL_INPUT_NAME,
    MODEL_MAPS_OUTPUT,
    ONNX_SCHEMA_VERSION,
    Window,
)
from viewer.core.errors import ModelContractError, ModelError
from viewer.core.inference.volume import MASK_VOLUME, VolumeEstimator, parse_volume
from viewer.core.preprocess import PreprocessSpec, spec_for

log = logging.getLogger(__name__)

REQUIRED_METADATA: tuple[str, ...] = (
    "schema_version",
    "model_name",
    "model_version",
    "class_names",
    "modality",
    "input_layout",
    "input_size",
    "windows",
    "slice_order",
    "thresholds",
    "intended_use",
    "min_slices",
)
MAX_MODEL_BYTES = 2 * 1024**3  # protobuf's own limit; bigger models need external data, which we refuse


@dataclass(frozen=True)
class MapsSpec:
    """Metadata ``maps`` (contract version 2): the optional localisation output ``slice_maps``
    [batch, slices, len(class_names), size, size] of a slice classification model, post-sigmoid, on the
    model's input grid at ``size`` px; a pixel belongs to class k at probability >= ``thresholds[k]``."""

    output: str
    class_names: tuple[str, ...]
    size: int
    thresholds: tuple[float, ...]
    volume: VolumeEstimator = MASK_VOLUME  # metadata 'maps' -> 'volume' (absent: the masks' voxels)


@dataclass(frozen=True)
class ModelInfo:
    """What the viewer needs to know about a validated model (all from its metadata)."""

    path: Path
    sha256: str
    name: str
    version: str
    class_names: tuple[str, ...]
    modality: str
    input_size: int
    windows: tuple[Window, ...]
    thresholds: tuple[float, ...]  # per class, same order as class_names
    min_slices: int
    intended_use: str
    threshold_policy: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    train_data: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)  # raw metadata_props
    # study-level operating points (metadata ``study_thresholds``), per class; () = not recorded, the
    # study decision then falls back to the slice thresholds (and says so in the About box)
    study_thresholds: tuple[float, ...] = ()
    trained_range: TrainedRange | None = None  # metadata ``trained_range``; None: every result is cautioned
    # how to make the input (metadata 'preprocessing'; absent -> version 1, pad + resize the matrix)
    preprocessing: PreprocessSpec = field(default_factory=PreprocessSpec)
    task: str = "slice_classification"  # metadata 'task': a name in viewer.core.tasks' registry
    contract_version: int = 1  # metadata 'contract_version' (absent: 1)
    maps: MapsSpec | None = None  # metadata 'maps' (contract version 2): the localisation output

    @property
    def decision_thresholds(self) -> tuple[float, ...]:
        """The thresholds the study decision uses: ``study_thresholds``, else the slice thresholds."""
        return self.study_thresholds or self.thresholds

    @property
    def preprocessing_key(self) -> str:
        """The raw ``preprocessing`` metadata (or "v1" when absent): part of the prediction cache key."""
        return self.metadata.get("preprocessing", "v1")

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_model_bytes(path: Path) -> bytes:
    """The model file's bytes (one read: the hash and the session see the same bytes)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Model file not found: {path.name}")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelContractError(f"{path.name}: {size} bytes is larger than a single-file ONNX model can be")
    return path.read_bytes()


def check_external_data(model_bytes: bytes, model_path: Path) -> None:
    """Refuse models that keep tensors in external files (and name the ones leaving the model's folder).

    Uses the ``onnx`` package when it is installed to name the offending locations; the session is
    always created from bytes, so ONNX Runtime itself cannot resolve external data either.
    """
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a dev/training dependency
        return
    try:
        proto = onnx.load_model_from_string(model_bytes)
    except Exception as exc:
        raise ModelContractError(f"{model_path.name}: not a readable ONNX model ({exc})") from exc
    folder = model_path.resolve().parent
    locations: list[str] = []
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        tensors = list(graph.initializer) + [
            a.t for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
        ]
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
        for tensor in tensors:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                entries = {e.key: e.value for e in tensor.external_data}
                locations.append(entries.get("location", ""))
    if not locations:
        return
    escaping = [
        loc
        for loc in locations
        if Path(loc).is_absolute() or not (folder / loc).resolve().is_relative_to(folder)
    ]
    if escaping:
        raise ModelContractError(
            f"{model_path.name}: external-data path {escaping[0]!r} points outside the model's folder; "
            "refused"
        )
    raise ModelContractError(
        f"{model_path.name}: the model keeps {len(locations)} tensor(s) in external data files "
        f"(e.g. {locations[0]!r}); Slicewise only accepts single-file models"
    )


def _json(meta: Mapping[str, str], key: str) -> Any:
    raw = meta[key]
    try:
        return json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise ModelContractError(f"metadata '{key}' is not valid JSON: {raw[:60]!r}") from exc


def _text(meta: Mapping[str, str], key: str) -> str:
    """A text field; accepts both a JSON string and (leniently) plain text."""
    if key not in meta:
        return ""
    try:
        value = json.loads(meta[key])
    except ValueError:
        return meta[key]
    return value if isinstance(value, str) else json.dumps(value)


def _parse_windows(value: Any) -> tuple[Window, ...]:
    if not isinstance(value, list) or not value:
        raise ModelContractError("metadata 'windows' must be a non-empty list of {width, level}")
    windows: list[Window] = []
    for item in value:
        if isinstance(item, dict):
            level = item.get("level", item.get("center"))
            width = item.get("width")
        else:
            raise ModelContractError(f"metadata 'windows' entry {item!r} is not an object {{width, level}}")
        if not (
            isinstance(width, (int, float))
            and isinstance(level, (int, float))
            and math.isfinite(width)
            and math.isfinite(level)
            and width > 0
        ):
            raise ModelContractError(f"metadata 'windows' entry {item!r} needs a positive width and a level")
        windows.append(Window(float(width), float(level)))
    return tuple(windows)


def parse_metadata(meta: Mapping[str, str], path: Path, sha256: str) -> ModelInfo:
    """Validate ``metadata_props`` and turn them into a :class:`ModelInfo`."""
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise ModelContractError(f"metadata key(s) missing: {', '.join(missing)}")
    schema = _json(meta, "schema_version")
    if schema != ONNX_SCHEMA_VERSION:
        raise ModelContractError(
            f"metadata 'schema_version' is {schema!r}; this Slicewise reads schema {ONNX_SCHEMA_VERSION}"
        )
    names = _json(meta, "class_names")
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        raise ModelContractError("metadata 'class_names' must be a non-empty list of unique strings")
    layout = _json(meta, "input_layout")
    if layout != "BSCHW":
        raise ModelContractError(f"metadata 'input_layout' is {layout!r}; only 'BSCHW' is supported")
    order = _json(meta, "slice_order")
    if order != "ascending_position":
        raise ModelContractError(
            f"metadata 'slice_order' is {order!r}; only 'ascending_position' is supported"
        )
    size = _json(meta, "input_size")
    if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= 2048:
        raise ModelContractError(f"metadata 'input_size' must be an integer in 16..2048, got {size!r}")
    windows = _parse_windows(_json(meta, "windows"))
    thresholds = _class_thresholds(meta, "thresholds", names)
    study_thresholds = (
        _class_thresholds(meta, "study_thresholds", names) if "study_thresholds" in meta else ()
    )
    try:
        trained_range = parse_trained_range(meta.get("trained_range"))
    except ValueError as exc:
        raise ModelContractError(str(exc)) from exc
    min_slices = _json(meta, "min_slices")
    if not isinstance(min_slices, int) or isinstance(min_slices, bool) or min_slices < 1:
        raise ModelContractError(f"metadata 'min_slices' must be a positive integer, got {min_slices!r}")
    modality = _text(meta, "modality")
    if not modality:
        raise ModelContractError("metadata 'modality' is empty")
    intended_use = _text(meta, "intended_use").strip()
    if not intended_use:
        raise ModelContractError("metadata 'intended_use' is empty")
    metrics = _json(meta, "metrics") if "metrics" in meta else {}
    from viewer.core.tasks import task_name_from_metadata, task_named

    task_entry = task_named(task_name_from_metadata(meta))
    preprocessing = spec_for(meta, size=size, windows=windows)
    if preprocessing.version not in task_entry.preprocessing_versions:
        versions = ", ".join(map(str, task_entry.preprocessing_versions))
        raise ModelContractError(
            f"metadata 'preprocessing' version {preprocessing.version} cannot be used by task "
            f"{task_entry.name!r} (it takes version(s) {versions})"
        )
    contract = _json(meta, "contract_version") if "contract_version" in meta else 1
    known = range(1, MODEL_CONTRACT_VERSION + 1)
    if not isinstance(contract, int) or isinstance(contract, bool) or contract not in known:
        raise ModelContractError(
            f"metadata 'contract_version' is {contract!r}; this Slicewise reads versions "
            f"1-{MODEL_CONTRACT_VERSION}"
        )
    maps = _parse_maps(meta, names, size) if "maps" in meta else None
    if maps is not None and contract < 2:
        raise ModelContractError("metadata 'maps' needs 'contract_version' 2")
    return ModelInfo(
        path=path,
        sha256=sha256,
        name=_text(meta, "model_name") or path.stem,
        version=_text(meta, "model_version") or "?",
        class_names=tuple(names),
        modality=modality.upper(),
        input_size=size,
        windows=windows,
        thresholds=thresholds,
        min_slices=min_slices,
        intended_use=intended_use,
        threshold_policy=_text(meta, "threshold_policy"),
        metrics=metrics if isinstance(metrics, dict) else {},
        train_data=_text(meta, "train_data"),
        metadata=dict(meta),
        study_thresholds=study_thresholds,
        trained_range=trained_range,
        preprocessing=preprocessing,
        task=task_entry.name,
        contract_version=contract,
        maps=maps,
    )


def _parse_maps(meta: Mapping[str, str], names: Sequence[str], size: int) -> MapsSpec:
    """Metadata ``maps`` -> :class:`MapsSpec`; ModelContractError naming what does not fit."""
    raw = _json(meta, "maps")
    if not isinstance(raw, dict):
        raise ModelContractError("metadata 'maps' must be an object {output, classes, size, thresholds}")
    output = raw.get("output", MODEL_MAPS_OUTPUT)
    if output != MODEL_MAPS_OUTPUT:
        raise ModelContractError(f"metadata 'maps' output is {output!r}; expected {MODEL_MAPS_OUTPUT!r}")
    classes = raw.get("classes")
    if (
        not isinstance(classes, list)
        or not classes
        or len(set(map(str, classes))) != len(classes)
        or any(c not in names for c in classes)
    ):
        raise ModelContractError(
            f"metadata 'maps' classes must be a non-empty list of unique names from 'class_names', got "
            f"{str(classes)[:80]}"
        )
    map_size = raw.get("size")
    if not isinstance(map_size, int) or isinstance(map_size, bool) or not 1 <= map_size <= size:
        raise ModelContractError(f"metadata 'maps' size must be an integer in 1..{size}, got {map_size!r}")
    key = "maps' thresholds"
    thresholds = _class_thresholds({key: json.dumps(raw.get("thresholds"))}, key, classes)
    return MapsSpec(
        output=output,
        class_names=tuple(classes),
        size=map_size,
        thresholds=thresholds,
        volume=parse_volume(raw.get("volume"), classes),
    )


def _class_thresholds(meta: Mapping[str, str], key: str, names: Sequence[str]) -> tuple[float, ...]:
    """``{class name: threshold in [0, 1]}`` metadata -> thresholds in class order."""
    raw = _json(meta, key)
    if not isinstance(raw, dict):
        raise ModelContractError(f"metadata '{key}' must be an object {{class name: threshold}}")
    lacking = [n for n in names if n not in raw]
    if lacking:
        raise ModelContractError(f"metadata '{key}' has no value for class(es): {', '.join(lacking)}")
    out: list[float] = []
    for n in names:
        t = raw[n]
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0.0 <= float(t) <= 1.0:
            raise ModelContractError(f"metadata '{key}' for {n!r} must be a number in [0, 1], got {t!r}")
        out.append(float(t))
    return tuple(out)


def _dims(shape: Sequence[Any]) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def check_io(inputs: Sequence[Any], outputs: Sequence[Any], info: ModelInfo) -> None:
    """Check the session's ``get_inputs()`` / ``get_outputs()`` against the contract and metadata."""
    names = [i.name for i in inputs]
    if names != [MODEL_INPUT_NAME]:
        raise ModelContractError(
            f"model inputs are {names}; expected exactly one input named {MODEL_INPUT_NAME!r}"
        )
    inp = inputs[0]
    if inp.type != "tensor(float)":
        raise ModelContractError(f"input {MODEL_INPUT_NAME!r} has type {inp.type}; expected tensor(float)")
    shape = _dims(inp.shape)
    if len(shape) != 5:
        raise ModelContractError(
            f"input {MODEL_INPUT_NAME!r} has rank {len(shape)}; expected rank 5 [batch, slices, C, H, W]"
        )
    channels, height, width = shape[2:]
    if channels is not None and channels != len(info.windows):
        raise ModelContractError(
            f"input {MODEL_INPUT_NAME!r} takes {channels} channels "
            f"but metadata 'windows' lists {len(info.windows)}"
        )
    for dim, label in ((height, "height"), (width, "width")):
        if dim is not None and dim != info.input_size:
            raise ModelContractError(
                f"input {MODEL_INPUT_NAME!r} {label} is {dim} but metadata 'input_size' is {info.input_size}"
            )
    from viewer.core.tasks import task_named

    by_name = {o.name: o for o in outputs}
    for spec in task_named(info.task).outputs_for(info):
        name, rank = spec.name, spec.rank
        k = len(info.class_names) if spec.classes is None else spec.classes
        size = info.input_size if spec.size is None else spec.size
        out = by_name.get(name)
        if out is None:
            raise ModelContractError(f"model has no output named {name!r} (outputs: {sorted(by_name)})")
        if out.type != "tensor(float)":
            raise ModelContractError(f"output {name!r} has type {out.type}; expected tensor(float)")
        oshape = _dims(out.shape)
        if len(oshape) != rank:
            raise ModelContractError(f"output {name!r} has rank {len(oshape)}; expected rank {rank}")
        classes = oshape[spec.class_axis]
        if classes is not None and classes != k:
            what = "'maps' classes" if spec.classes is not None else "'class_names'"
            raise ModelContractError(f"output {name!r} has {classes} classes but metadata {what} lists {k}")
        for axis in spec.size_axes:
            if oshape[axis] is not None and oshape[axis] != size:
                what = "'maps' size" if spec.size is not None else "'input_size'"
                raise ModelContractError(
                    f"output {name!r} axis {axis} is {oshape[axis]} px but metadata {what} is {size}"
                )
