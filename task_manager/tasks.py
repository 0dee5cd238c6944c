"""A task offer as the task manager sees it, and the ``task.json`` it becomes.

:class:`Offer` is the domain form of the selector's ``TaskOffer`` (built by
:mod:`task_manager.serde`); the policy and the executors only see this.
:func:`task_document` maps an accepted offer onto the local facts that the
job must never choose itself: the task entry's script, mode and working
directory come from this host's config, dataset names become this host's
paths and sample counts.  The shape is the one of docs/contracts.md ("Task
manager <-> task executor").

Why a task's timeout is ``min(offer, cap)``: the job asks for what a round
needs, the data owner caps what any job may take from the host; an offer
without a timeout gets the cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from task_manager.settings import DatasetConfig, TaskEntryConfig

KINDS = ("train", "evaluate", "init")


class TaskKey(NamedTuple):
    """What makes two offers the same piece of work, whatever their task ids and attempts."""

    job_id: str
    round: int
    kind: str


@dataclass(frozen=True)
class Offer:
    task_id: str
    job_id: str
    namespace: str
    round: int
    attempt: int
    kind: str
    runtime: str
    coordinator_endpoint: str
    model_sha256: str
    task_token: str
    entry: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    datasets: tuple[str, ...] = ()
    timeout_seconds: float = 0.0  # 0: none asked, the configured cap applies
    deadline_unix: float = 0.0  # 0: none
    scripts_sha256: str = ""  # a script bundle shipped with the job (not served by this task manager)
    evaluate_first: bool = False  # a train task that first evaluates the model it is given
    secure_aggregation: bool | None = None  # the coordinator's plan; None: the executor asks for it
    model: bytes = field(default=b"", repr=False)  # the global model, when it came with the offer
    model_follows: bool = False  # offered ahead: the executor asks the coordinator's AwaitModel

    @property
    def key(self) -> TaskKey:
        return TaskKey(self.job_id, self.round, self.kind)


def effective_timeout(offer_timeout: float, cap: float) -> float:
    return min(offer_timeout, cap) if offer_timeout > 0 else cap


def task_document(
    offer: Offer,
    *,
    client_id: str,
    entry: TaskEntryConfig,
    datasets: Mapping[str, DatasetConfig],
    timeout_seconds: float,
    state_dir: Path | None = None,
    model_file: str | None = None,
) -> dict[str, Any]:
    """The ``task.json`` of an accepted offer (the policy has checked the entry and datasets exist).

    ``model_file``: the file in the task folder holding the model that came with the offer, which
    the executor then reads (and checks against ``model_sha256``) instead of downloading it.
    """
    document: dict[str, Any] = {
        "task_id": offer.task_id,
        "job_id": offer.job_id,
        "namespace": offer.namespace or offer.job_id.partition("/")[0],
        "round": offer.round,
        "attempt": offer.attempt,
        "kind": offer.kind,
        "runtime": offer.runtime,
        "client_id": client_id,
        "coordinator_endpoint": offer.coordinator_endpoint,
        "model_sha256": offer.model_sha256,
        "task_token": offer.task_token,
        "entry": {
            "script": str(entry.script),
            "mode": entry.mode,
            "working_dir": str(entry.working_dir or entry.script.parent),
        },
        "parameters": dict(offer.parameters),
        "datasets": {name: str(datasets[name].path) for name in offer.datasets},
        "dataset_samples": {name: datasets[name].samples for name in offer.datasets},
        "timeout_seconds": timeout_seconds,
        "deadline_unix": offer.deadline_unix or None,
    }
    if offer.evaluate_first:  # evaluation of the previous round's model rides on this train task
        document["evaluate_first"] = True
    if offer.secure_aggregation is not None:  # saves the executor a GetTaskPlan per round
        document["secure_aggregation"] = offer.secure_aggregation
    if state_dir is not None:  # kept per (job, client) across rounds, e.g. SCAFFOLD's control variate
        document["state_dir"] = str(state_dir)
    if model_file is not None:
        document["model_file"] = model_file
    if offer.model_follows:  # offered ahead: the model comes from AwaitModel once the round starts
        document["model_follows"] = True
    return document
