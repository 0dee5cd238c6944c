"""A task offer as the task manager sees it, and the task it becomes.

:class:`Offer` is the domain form of the selector's ``TaskOffer`` (built by
:mod:`task_manager.serde`); the policy and the executors only see this.
:func:`task_spec` maps an accepted offer onto the one task type both the task
manager and the executor know (:class:`libs.tasks.TaskSpec`, written as
``task.json`` by :func:`libs.tasks.task_json`), with the local facts that the
job must never choose itself: the task entry's script, mode and working
directory come from this host's config, dataset names become this host's
paths and sample counts.  docs/contracts.md ("Task manager <-> task executor")
shows the file.

Why a task's timeout is ``min(offer, cap)``: the job asks for what a round
needs, the data owner caps what any job may take from the host; an offer
without a timeout gets the cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

from libs.tasks import AlgorithmSettings, Entry, Kind, TaskSpec
from libs.tasks.spec import EntryMode
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
    parameters: Mapping[str, Any] = field(default_factory=dict)  # the job's, for the user's code
    algorithm: AlgorithmSettings = AlgorithmSettings()  # what the client must know of the job's algorithm
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


def task_spec(
    offer: Offer,
    *,
    client_id: str,
    entry: TaskEntryConfig,
    datasets: Mapping[str, DatasetConfig],
    timeout_seconds: float,
    state_dir: Path | None = None,
    model_file: str | None = None,
) -> TaskSpec:
    """The task of an accepted offer (the policy has checked the entry and datasets exist).

    ``model_file``: the file in the task folder holding the model that came with the offer, which
    the executor then reads (and checks against ``model_sha256``) instead of downloading it.
    """
    return TaskSpec(
        task_id=offer.task_id,
        job_id=offer.job_id,
        namespace=offer.namespace or offer.job_id.partition("/")[0],
        round=offer.round,
        attempt=offer.attempt,
        kind=cast(Kind, offer.kind),  # the executor checks it when it reads task.json
        runtime=offer.runtime,
        client_id=client_id,
        coordinator_endpoint=offer.coordinator_endpoint,
        model_sha256=offer.model_sha256,
        task_token=offer.task_token,
        entry=Entry(
            script=entry.script,
            mode=cast(EntryMode, entry.mode),  # one of MODES: the settings check it
            working_dir=entry.working_dir or entry.script.parent,
        ),
        parameters=offer.parameters,
        algorithm=offer.algorithm,
        datasets={name: str(datasets[name].path) for name in offer.datasets},
        dataset_samples={name: datasets[name].samples for name in offer.datasets},
        timeout_seconds=timeout_seconds,
        deadline_unix=offer.deadline_unix or None,
        state_dir=state_dir,  # kept per (job, client) across rounds, e.g. SCAFFOLD's control variate
        evaluate_first=offer.evaluate_first,
        secure_aggregation=offer.secure_aggregation,
        model_file=model_file,
        model_follows=offer.model_follows,
    )
