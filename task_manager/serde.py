"""Protobuf <-> domain for the task manager: the only module besides the adapters that builds messages.

Offers are checked here, at the edge, so a malformed one is refused with a
reason naming the field before the policy or the executors see it (the
selector is trusted to relay, not to be right).  Text that goes back on the
wire is bounded: a reason carries a log tail, and a peer's limits must not
be what cuts it.
"""

from __future__ import annotations

import math
from importlib import metadata

from libs.errors import ValidationFailed
from libs.protos import common_pb2, selector_pb2
from libs.tasks.serde import algorithm_from_proto, parameters_from_proto
from task_manager.confinement import host_protections
from task_manager.settings import TaskManagerSettings
from task_manager.tasks import Offer
from task_manager.worker.confinement_rules import pids_cgroup_root

MAX_REASON = 4000
MAX_TASK_ID = 512


def _version() -> str:
    try:
        return metadata.version("nsfl")
    except metadata.PackageNotFoundError:
        return "unknown"


def registration(settings: TaskManagerSettings) -> selector_pb2.ClientMessage:
    """The Register message: who this host is and what it offers."""
    return selector_pb2.ClientMessage(
        register=selector_pb2.Register(
            client_id=settings.client_id,
            runtimes=list(settings.served_runtimes),
            datasets=[
                common_pb2.Dataset(name=name, samples=d.samples, tags=list(d.tags))
                for name, d in sorted(settings.datasets.items())
            ],
            labels=dict(settings.labels),
            resources=common_pb2.Resources(
                cpus=settings.resources.cpus,
                memory_mb=settings.resources.memory_mb,
                gpus=settings.resources.gpus,
                disk_mb=settings.resources.disk_mb,
            ),
            max_parallel_tasks=settings.max_parallel_tasks,
            version=_version(),
            protections=list(host_protections(settings, pids_cgroup_root() is not None)),
        )
    )


def heartbeat(running_tasks: int) -> selector_pb2.ClientMessage:
    return selector_pb2.ClientMessage(heartbeat=selector_pb2.Heartbeat(running_tasks=running_tasks))


def bounded(reason: str, limit: int = MAX_REASON) -> str:
    """``reason`` cut to ``limit`` characters, keeping its head and its end (where a log tail ends)."""
    if len(reason) <= limit:
        return reason
    keep = limit - 5
    return reason[: keep // 3] + "\n...\n" + reason[-(keep - keep // 3) :]


def offer_from_proto(msg: selector_pb2.TaskOffer) -> Offer:
    """The domain offer; ``ValidationFailed`` naming the field if the offer cannot be a task."""
    if not msg.task_id or len(msg.task_id) > MAX_TASK_ID:
        raise ValidationFailed(f"task_id is required and at most {MAX_TASK_ID} characters")
    if not msg.job_id:
        raise ValidationFailed("job_id is required")
    if msg.round < 0 or msg.attempt < 0:
        raise ValidationFailed("round and attempt must not be negative")
    if not msg.coordinator_endpoint:
        raise ValidationFailed("coordinator_endpoint is required")
    spec = msg.spec
    for name, value in (("spec.timeout_seconds", spec.timeout_seconds), ("deadline_unix", msg.deadline_unix)):
        if not math.isfinite(value) or value < 0:
            raise ValidationFailed(f"{name} must be a non-negative number, got {value!r}")
    try:
        algorithm = algorithm_from_proto(spec.algorithm)
    except ValidationFailed as exc:
        raise ValidationFailed(f"spec.algorithm: {exc.message}") from None
    return Offer(
        task_id=msg.task_id,
        job_id=msg.job_id,
        namespace=msg.namespace,
        round=msg.round,
        attempt=msg.attempt,
        kind=msg.kind,
        runtime=msg.runtime,
        coordinator_endpoint=msg.coordinator_endpoint,
        model_sha256=msg.model_sha256,
        task_token=msg.task_token,
        entry=spec.entry,
        parameters=parameters_from_proto(spec.parameters),
        algorithm=algorithm,
        datasets=tuple(dict.fromkeys(spec.datasets)),
        timeout_seconds=spec.timeout_seconds,
        deadline_unix=msg.deadline_unix,
        scripts_sha256=spec.scripts_sha256,
        evaluate_first=msg.evaluate_first and msg.kind == "train",
        secure_aggregation=msg.secure_aggregation if msg.HasField("secure_aggregation") else None,
        model=msg.model if msg.kind != "init" and not msg.model_follows else b"",
        model_follows=msg.model_follows and msg.kind == "train",
    )


def task_status(
    *,
    task_id: str,
    job_id: str,
    round: int,
    attempt: int,
    state: common_pb2.TaskState.ValueType,
    reason: str,
    client_id: str,
    task_token: str = "",
) -> common_pb2.TaskStatus:
    return common_pb2.TaskStatus(
        task_id=task_id[:MAX_TASK_ID],
        job_id=job_id,
        round=round,
        attempt=attempt,
        state=state,
        reason=bounded(reason),
        client_id=client_id,
        task_token=task_token,
    )


def offer_status(
    offer: Offer,
    state: common_pb2.TaskState.ValueType,
    reason: str,
    client_id: str,
    *,
    with_token: bool = False,
) -> common_pb2.TaskStatus:
    """A status about ``offer``: its answer for the selector, or (``with_token``) a report for the coordinator."""
    return task_status(
        task_id=offer.task_id,
        job_id=offer.job_id,
        round=offer.round,
        attempt=offer.attempt,
        state=state,
        reason=reason,
        client_id=client_id,
        task_token=offer.task_token if with_token else "",
    )


def answer_message(status: common_pb2.TaskStatus) -> selector_pb2.ClientMessage:
    return selector_pb2.ClientMessage(task_status=status)
