"""One task, typed end to end: the shape every hop after the coordinator shares.

:mod:`libs.tasks.spec` holds the types (:class:`TaskSpec`, :class:`AlgorithmSettings`),
:mod:`libs.tasks.document` their ``task.json`` form (task manager writes, executor
reads), :mod:`libs.tasks.serde` their protobuf form (coordinator writes, task
manager and executor read).  docs/contracts.md draws the task's path.
"""

from libs.tasks.document import is_sha256, parse_task, task_json
from libs.tasks.spec import AlgorithmSettings, Entry, InvalidTask, Kind, LocalDp, TaskSpec

__all__ = [
    "AlgorithmSettings", "Entry", "InvalidTask", "Kind", "LocalDp", "TaskSpec", "is_sha256", "parse_task",
    "task_json",
]
