"""The task registry: the model's metadata names its task; the task says how outputs are read and
which DICOM objects record them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.core.inference_models import build_model
from viewer.core.errors import ModelContractError
from viewer.core.inference.engine import InferenceEngine, load_model_info
from viewer.core.inference.results import StackPrediction
from viewer.core.tasks import (
    DEFAULT_TASK,
    OutputSpec,
    Task,
    register_task,
    registered_tasks,
    task_named,
    unregister_task,
)
from viewer.core.tasks.slice_classification import build_result, parse_outputs, summary


def test_a_model_without_a_task_is_a_slice_classifier(tmp_path: Path) -> None:
    info = load_model_info(build_model(tmp_path / "m.onnx"))
    assert info.task == DEFAULT_TASK == "slice_classification" and DEFAULT_TASK in registered_tasks()
    task = task_named(info.task)
    assert task.output_names == ["slice_probs", "study_probs"] and task.result_type is StackPrediction


def test_an_unknown_task_refuses_the_model_naming_it(tmp_path: Path) -> None:
    path = build_model(tmp_path / "m.onnx", metadata={"task": "segmentation-v9"})
    with pytest.raises(ModelContractError, match=r"'task' is 'segmentation-v9'.*slice_classification"):
        load_model_info(path)
    bad = build_model(tmp_path / "b.onnx", raw_metadata={"task": "[1, 2]"})
    with pytest.raises(ModelContractError, match="must be a task name"):
        load_model_info(bad)


def _echo_parse(outputs: Sequence[np.ndarray], n: int, k: int) -> tuple[np.ndarray, ...]:
    return parse_outputs(outputs, n, k)


@pytest.fixture
def custom_task() -> Iterator[Task]:
    written: list[Path] = []

    def dicom(pred: object, source: object, folder: Path, identity: bool) -> list[Path]:
        written.append(folder)
        return []

    task = register_task(
        Task("test_only_study_probs", "test", (OutputSpec("study_probs", 2), OutputSpec("slice_probs", 3)),
             _echo_parse, StackPrediction, dicom, build_result, summary)
    )
    yield task
    unregister_task(task.name)


def test_a_registered_task_is_used_for_io_checks(tmp_path: Path, custom_task: Task) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_task(custom_task)
    info = load_model_info(build_model(tmp_path / "m.onnx", metadata={"task": custom_task.name}))
    assert info.task == custom_task.name and task_named(info.task) is custom_task
    engine = InferenceEngine(tmp_path / "m.onnx", provider="cpu", cache=None)
    # the task asks for the outputs in its own order: study first, so the shape check names them
    x = np.zeros((1, 4, 3, 32, 32), dtype=np.float32)
    with pytest.raises(ModelContractError, match=r"expected \(1, 4, 6\)"):
        engine.run(x)


def test_slice_classification_parse_checks_shapes_and_values() -> None:
    good = [np.full((1, 3, 2), 1.5, np.float32), np.zeros((1, 2), np.float32)]
    slices, study = parse_outputs(good, 3, 2)
    assert slices.shape == (3, 2) and float(slices.max()) == 1.0 and study.shape == (2,)
    with pytest.raises(ModelContractError, match="expected"):
        parse_outputs(good, 4, 2)
    with pytest.raises(Exception, match="NaN"):
        parse_outputs([np.full((1, 3, 2), np.nan, np.float32), good[1]], 3, 2)
