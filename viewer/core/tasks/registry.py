"""The task registry (issue 11 item 6): what a model *does* decides how its outputs are read and which
DICOM objects record them. In the spirit of timm's ``register_model``: a task module builds a
:class:`Task` and calls :func:`register_task`; the model's metadata names its task (``task``, default
``slice_classification``) and :func:`task_named` hands out the entry.

A task says: its output tensors (name and rank, checked against the session before the first run),
which preprocessing versions it can undo, how the raw outputs become the result's arrays (shape and
finiteness checks included), how those arrays and the run's context (:class:`ResultContext`) become
the result (:data:`BuildResult`, any object satisfying :class:`TaskResult`), the result's summary in
``slicewise predict``'s JSON, whether ``predict`` can write it as CSV rows, whether the prediction
cache keeps it, and the writer of its DICOM objects. The engine and ``predict`` hold no task-specific
code. Overlays are still the viewer's own (it shows slice classification results only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np

from viewer.core.errors import ModelContractError

if TYPE_CHECKING:
    from viewer.core.airesults.identity import SourceSeries
    from viewer.core.applicability.codes import Applicability
    from viewer.core.dicom.model import Stack
    from viewer.core.inference.model import ModelInfo
    from viewer.core.preprocess import HeadGrid

TASK_METADATA_KEY: Final = "task"
DEFAULT_TASK: Final = "slice_classification"  # models without a ``task`` key (schema 1)


class TaskResult(Protocol):
    """What every task's result offers the engine, ``predict`` and the DICOM writers."""

    @property
    def stack_uid(self) -> str: ...

    @property
    def slice_uids(self) -> tuple[str, ...]: ...

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def elapsed_s(self) -> float: ...

    @property
    def from_cache(self) -> bool: ...

    @property
    def bad_slices(self) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class ResultContext:
    """The run a result comes from: the stack, the model and how it ran."""

    stack: Stack
    info: ModelInfo
    slice_order: np.ndarray  # stack index of each model input slice (outputs are in model order)
    provider: str
    provider_note: str
    elapsed_s: float
    bad_slices: tuple[int, ...] = ()
    applicability: Applicability | None = None
    # where a version-2 model's input grid lies on the stack's pixels (to move its maps back onto them);
    # None: preprocessing version 1 (square pad + area resize, undone from the matrix alone)
    head_grid: HeadGrid | None = None


ParseOutputs = Callable[[Sequence[np.ndarray], int, int], tuple[np.ndarray, ...]]
BuildResult = Callable[[ResultContext, tuple[np.ndarray, ...]], TaskResult]
Summary = Callable[[TaskResult], dict[str, object]]
DicomOutputs = Callable[[TaskResult, "SourceSeries", Path, bool], list[Path]]
# (slice_probs, study_probs) and the model-grid maps when the result has them (else None)
CacheArrays = Callable[[TaskResult], tuple[np.ndarray, np.ndarray, np.ndarray | None]]
# the outputs a model's metadata adds to the task's own (e.g. the localisation maps of contract version 2)
OptionalOutputs = Callable[["ModelInfo"], tuple["OutputSpec", ...]]


@dataclass(frozen=True)
class OutputSpec:
    """One output tensor of the model: its name and rank; ``class_axis`` holds the classes (``classes``
    of them; None: as many as the model's class names) and ``size_axes`` (if any) are ``size`` long
    (None: the model's input size)."""

    name: str
    rank: int
    class_axis: int = -1
    size_axes: tuple[int, ...] = ()
    classes: int | None = None
    size: int | None = None


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    outputs: tuple[OutputSpec, ...]
    # raw session outputs (in ``outputs`` order), number of slices, number of classes -> the arrays of
    # the result; raises ModelContractError / ModelError on a wrong shape or non-finite values
    parse_outputs: ParseOutputs
    result_type: type
    # (result, source series, folder, include identity) -> the DICOM files written
    dicom_outputs: DicomOutputs
    # (run context, parsed arrays in model slice order) -> the result
    build_result: BuildResult
    # the result's fields in ``slicewise predict``'s JSON record of a stack (no identifiers)
    summary: Summary
    preprocessing_versions: tuple[int, ...] = (1, 2)  # the versions whose geometry the task can undo
    tabular: bool = False  # ``predict --out x.csv``: the summary has per-slice ``probs`` rows
    # (slice_probs, study_probs) the prediction cache stores; None: results are never cached
    cache_arrays: CacheArrays | None = None
    # outputs the model's metadata declares beyond ``outputs`` (requested and parsed after them)
    optional_outputs: OptionalOutputs | None = None

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def outputs_for(self, info: ModelInfo) -> tuple[OutputSpec, ...]:
        """The outputs a run of this model requests: the task's, then those its metadata adds."""
        extra = self.optional_outputs(info) if self.optional_outputs is not None else ()
        return self.outputs + extra

    def caches(self, info: ModelInfo) -> bool:
        """Whether the prediction cache keeps this model's results."""
        return self.cache_arrays is not None


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` to the registry (a name can be registered once)."""
    if task.name in _TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove a task (tests and plug-ins that register temporary tasks)."""
    _TASKS.pop(name, None)


def registered_tasks() -> tuple[str, ...]:
    return tuple(sorted(_TASKS))


def task_named(name: str) -> Task:
    """The registered task ``name``; a ModelContractError naming the known tasks otherwise."""
    task = _TASKS.get(name)
    if task is None:
        raise ModelContractError(
            f"metadata '{TASK_METADATA_KEY}' is {name!r}; this Slicewise knows the task(s) "
            f"{', '.join(registered_tasks()) or 'none'}"
        )
    return task


def task_name_from_metadata(meta: Mapping[str, str]) -> str:
    """The ``task`` metadata (a JSON string or plain text); the default task when absent."""
    import json

    raw = meta.get(TASK_METADATA_KEY)
    if raw is None or raw == "":
        return DEFAULT_TASK
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if not isinstance(value, str) or not value:
        raise ModelContractError(f"metadata '{TASK_METADATA_KEY}' must be a task name, got {raw[:60]!r}")
    return value
