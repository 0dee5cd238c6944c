"""Evaluation that rides on a train task: one exchange per round instead of two.

A job that evaluates every round used to run, after each round's training, a
separate evaluation round: select clients, offer, download, evaluate, upload
metrics, close.  That second exchange costs as much platform time as the
training one.  Instead, the coordinator marks the next round's train tasks
``evaluate_first``: before training, the executor runs the task's user code
as an *evaluation* of the model it was given (the previous round's result),
exactly as an ``evaluate`` task would (script mode: the script with
``nsfl.is_evaluation()`` true; function mode: ``evaluate(ctx)``), then trains
as usual and uploads both: the update, its own metrics, and the evaluation's
metrics under :data:`EVALUATE_PREFIX` with the number of samples evaluated as
:data:`EVALUATE_SAMPLES`.  The coordinator files them under the previous
round (docs/contracts.md).  The time counts as time in user code.

An evaluation that fails does not fail the training: it is logged and its
metrics are missing, as a failed evaluate task's would be.
"""

from __future__ import annotations

import dataclasses
import logging

from libs.errors import NsflError
from libs.weights.tensors import WeightMap
from task_executor.execution import execute
from task_executor.task import TaskSpec

log = logging.getLogger(__name__)

EVALUATE_PREFIX = "evaluate/"
EVALUATE_SAMPLES = "nsfl.evaluate_samples"


def evaluate_first(spec: TaskSpec, global_weights: WeightMap | None) -> dict[str, float]:
    """The metrics of ``global_weights`` on this client's evaluation data, named for the upload."""
    evaluation = dataclasses.replace(spec, kind="evaluate", evaluate_first=False)
    try:
        outcome = execute(evaluation, global_weights)
    except NsflError as exc:
        log.warning("the evaluation before training failed; training goes on: %s", exc.message)
        return {}
    metrics = {EVALUATE_PREFIX + name: value for name, value in outcome.metrics.items()}
    metrics[EVALUATE_SAMPLES] = float(outcome.num_samples or 0)
    return metrics
