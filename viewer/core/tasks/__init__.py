"""Model tasks: the registry and the built-in tasks (importing this package registers them)."""

from viewer.core.tasks import slice_classification as _slice_classification  # noqa: F401  (registers)
from viewer.core.tasks import slice_segmentation as _slice_segmentation  # noqa: F401  (registers)
from viewer.core.tasks.registry import (
    DEFAULT_TASK,
    TASK_METADATA_KEY,
    OutputSpec,
    ResultContext,
    Task,
    TaskResult,
    register_task,
    registered_tasks,
    task_name_from_metadata,
    task_named,
    unregister_task,
)

__all__ = [
    "DEFAULT_TASK",
    "TASK_METADATA_KEY",
    "OutputSpec",
    "ResultContext",
    "Task",
    "TaskResult",
    "register_task",
    "registered_tasks",
    "task_name_from_metadata",
    "task_named",
    "unregister_task",
]
