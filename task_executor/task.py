"""The files an executor shares with its task manager: ``task.json`` in, ``result.json`` out.

Both shapes are fixed by docs/contracts.md ("Task manager <-> task
executor").  ``task.json`` is the one task type of :mod:`libs.tasks`
(:class:`~libs.tasks.spec.TaskSpec`), written by the task manager and read here
through the same module (:func:`~libs.tasks.document.parse_task`), so a malformed
file fails at once with a message naming the field, before any download or
user code runs; the rest of the executor never touches the raw JSON.

``result.json`` is written atomically (temporary file, then rename) because
the task manager may read it the moment the process exits, or after a kill.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, TypedDict

from libs.files import write_json_atomic
from libs.tasks.document import is_sha256, parse_task
from libs.tasks.spec import KINDS, MODES, RUNTIMES, Entry, Kind, TaskSpec
from task_executor.errors import InvalidTask

__all__ = [
    "KINDS", "MODES", "RESULT_FILE", "RUNTIMES", "TASK_FILE", "Entry", "Kind", "ResultJson", "TaskSpec",
    "is_sha256", "parse_task", "read_task", "write_result",
]

TASK_FILE = "task.json"
RESULT_FILE = "result.json"


class ResultJson(TypedDict):
    """The wire shape of ``result.json``."""

    state: Literal["succeeded", "failed", "withdrawn"]
    reason: str
    num_samples: int
    metrics: dict[str, float]


def read_task(task_dir: Path) -> TaskSpec:
    """Read and check ``<task_dir>/task.json``."""
    path = task_dir / TASK_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidTask(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidTask(f"{path} is not UTF-8 text: {exc.reason}") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InvalidTask(f"{path} is not valid JSON: {exc}") from None
    return parse_task(raw)


def write_result(task_dir: Path, result: ResultJson) -> None:
    """Write ``result.json`` atomically, so a reader never sees half of it."""
    write_json_atomic(task_dir / RESULT_FILE, result, durable=False)  # read at once; a power loss ends the round anyway
