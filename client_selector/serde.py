"""Protobuf ⇄ domain for the selector, with the checks on everything a peer sends.

Wire types stop here: the servicer calls ``*_from_proto`` on each request
and ``*_to_proto`` on each answer; the rest of the package only sees frozen
dataclasses.  Parsing is where input is checked and bounded (ids, counts,
sizes), so a bad request is an ``INVALID_ARGUMENT`` that names the field and
the rule, and nothing unbounded is ever kept in the registry.

proto3 cannot tell an unset number from zero, so zero means "the default"
where a default exists: ``redundancy`` 0 is 1.0, ``max_parallel_tasks`` 0 is
1, ``reservation_seconds`` and ``answer_timeout_seconds`` 0 are the
configured defaults.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

from client_selector.registry import ClientId, DatasetInfo, JobId, Registration, Resources
from client_selector.selection import MAX_REDUNDANCY, MIN_REDUNDANCY, Requirement, Selection
from client_selector.selector import ClientView, SelectionRequest
from client_selector.sessions import OfferAnswer
from libs.errors import ValidationFailed
from libs.protos import common_pb2, selector_pb2

CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
JOB_ID = re.compile(f"{_DNS_LABEL}/{_DNS_LABEL}")
MAX_NAME = 128
MAX_RUNTIMES = 8
MAX_DATASETS = 256
MAX_TAGS = 32
MAX_LABELS = 64
MAX_PARALLEL_TASKS = 1024
MAX_COUNT = 10_000
MAX_TASK_ID = 512
MAX_PROTECTIONS = 32  # the capability report's entries kept (Register.protections)


def client_id(value: str, field: str = "client_id") -> ClientId:
    if not CLIENT_ID.fullmatch(value):
        raise ValidationFailed(
            f"{field} {value[:80]!r} is not a valid client id: it must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,62}}$",
            details={"field": field},
        )
    return ClientId(value)


def job_id(value: str) -> JobId:
    if not value:
        raise ValidationFailed('job_id is required ("<namespace>/<name>")', details={"field": "job_id"})
    if not JOB_ID.fullmatch(value):
        raise ValidationFailed(
            f'job_id {value[:140]!r} must be "<namespace>/<name>", both DNS-1123 labels',
            details={"field": "job_id"},
        )
    return JobId(value)


def task_id(value: str, field: str = "task_id") -> str:
    if not value or len(value) > MAX_TASK_ID:
        raise ValidationFailed(
            f"{field} is required and at most {MAX_TASK_ID} characters", details={"field": field}
        )
    return value


def seconds(value: float, field: str, default: float) -> float:
    """A non-negative finite duration; 0 means ``default``."""
    if not math.isfinite(value) or value < 0:
        raise ValidationFailed(
            f"{field} must be a non-negative number of seconds, got {value!r}", details={"field": field}
        )
    return value or default


def _name(value: str, field: str) -> str:
    if not value or len(value) > MAX_NAME or any(ord(c) < 32 for c in value):
        raise ValidationFailed(
            f"{field} entries must be 1-{MAX_NAME} printable characters, got {value[:40]!r}",
            details={"field": field},
        )
    return value


def _bounded(items: Sequence[object] | Mapping[str, str], limit: int, field: str) -> None:
    if len(items) > limit:
        raise ValidationFailed(
            f"{field} has {len(items)} entries; at most {limit} are allowed", details={"field": field}
        )


def _unique(names: Iterable[str], field: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for name in names:
        if name in seen:
            raise ValidationFailed(f"{field} names {name[:40]!r} twice", details={"field": field})
        seen[name] = None
    return tuple(seen)


def resources_from_proto(msg: common_pb2.Resources, field: str = "resources") -> Resources:
    values = (msg.cpus, msg.memory_mb, msg.gpus, msg.disk_mb)
    if not math.isfinite(msg.cpus) or any(v < 0 for v in values):
        raise ValidationFailed(f"{field} must be non-negative numbers", details={"field": field})
    return Resources(cpus=msg.cpus, memory_mb=msg.memory_mb, gpus=msg.gpus, disk_mb=msg.disk_mb)


def resources_to_proto(resources: Resources) -> common_pb2.Resources:
    return common_pb2.Resources(
        cpus=resources.cpus, memory_mb=resources.memory_mb, gpus=resources.gpus, disk_mb=resources.disk_mb
    )


def labels_from_proto(labels: Mapping[str, str], field: str = "labels") -> dict[str, str]:
    _bounded(labels, MAX_LABELS, field)
    for key, value in labels.items():
        _name(key, f"{field} key")
        if len(value) > MAX_NAME:
            raise ValidationFailed(
                f"{field} value of {key!r} is longer than {MAX_NAME} characters", details={"field": field}
            )
    return dict(labels)


def registration_from_proto(msg: selector_pb2.Register) -> Registration:
    _bounded(msg.runtimes, MAX_RUNTIMES, "runtimes")
    _bounded(msg.datasets, MAX_DATASETS, "datasets")
    runtimes = _unique((_name(r, "runtimes") for r in msg.runtimes), "runtimes")
    datasets = []
    for d in msg.datasets:
        _bounded(d.tags, MAX_TAGS, f"datasets[{d.name[:40]}].tags")
        if d.samples < 0:
            raise ValidationFailed(
                f"dataset {d.name[:40]!r} has a negative sample count", details={"field": "datasets"}
            )
        datasets.append(
            DatasetInfo(
                name=_name(d.name, "datasets"),
                samples=d.samples,
                tags=tuple(_name(t, "datasets tags") for t in d.tags),
            )
        )
    _unique((d.name for d in datasets), "datasets")
    if not 0 <= msg.max_parallel_tasks <= MAX_PARALLEL_TASKS:
        raise ValidationFailed(
            f"max_parallel_tasks must be within 0-{MAX_PARALLEL_TASKS} (0 means 1), "
            f"got {msg.max_parallel_tasks}",
            details={"field": "max_parallel_tasks"},
        )
    return Registration(
        client_id=client_id(msg.client_id),
        runtimes=runtimes,
        datasets=tuple(datasets),
        labels=labels_from_proto(msg.labels),
        resources=resources_from_proto(msg.resources),
        max_parallel_tasks=msg.max_parallel_tasks or 1,
        version=msg.version[:MAX_NAME],
        protections=tuple(p[:MAX_NAME] for p in msg.protections[:MAX_PROTECTIONS]),
    )


def requirement_from_proto(msg: selector_pb2.ClientRequirement) -> Requirement:
    _bounded(msg.datasets, MAX_DATASETS, "requirement.datasets")
    _bounded(msg.clients, MAX_COUNT, "requirement.clients")
    return Requirement(
        runtime=_name(msg.runtime, "requirement.runtime") if msg.runtime else "",
        datasets=_unique((_name(d, "requirement.datasets") for d in msg.datasets), "requirement.datasets"),
        labels=labels_from_proto(msg.labels, "requirement.labels"),
        resources=resources_from_proto(msg.resources, "requirement.resources"),
        clients=tuple(dict.fromkeys(client_id(c, "requirement.clients") for c in msg.clients)),
    )


def selection_request_from_proto(msg: selector_pb2.SelectRequest) -> SelectionRequest:
    job = job_id(msg.job_id)
    if not 1 <= msg.count <= MAX_COUNT:
        raise ValidationFailed(
            f"count must be within 1-{MAX_COUNT}, got {msg.count}", details={"field": "count"}
        )
    redundancy = msg.redundancy or MIN_REDUNDANCY
    if not MIN_REDUNDANCY <= redundancy <= MAX_REDUNDANCY:  # also refuses NaN
        raise ValidationFailed(
            f"redundancy must be within [{MIN_REDUNDANCY:g}, {MAX_REDUNDANCY:g}] "
            f"(0 means 1), got {msg.redundancy!r}",
            details={"field": "redundancy"},
        )
    if msg.round < 0:
        raise ValidationFailed(f"round must not be negative, got {msg.round}", details={"field": "round"})
    return SelectionRequest(
        job_id=job,
        round=msg.round,
        count=msg.count,
        redundancy=redundancy,
        requirement=requirement_from_proto(msg.requirement),
        random=msg.random,
        untrained_first=msg.untrained_first,
        reservation_seconds=seconds(msg.reservation_seconds, "reservation_seconds", 0.0),
        seed=msg.seed,
        dry_run=msg.dry_run,
    )


def selection_to_proto(selection: Selection) -> selector_pb2.SelectResponse:
    return selector_pb2.SelectResponse(
        clients=[selector_pb2.SelectedClient(client_id=c, why=why) for c, why in selection.chosen],
        matched=selection.matched,
        wanted=selection.wanted,
        satisfied=selection.satisfied,
        reason=selection.reason,
    )


def client_info_to_proto(view: ClientView) -> selector_pb2.ClientInfo:
    record = view.record
    return selector_pb2.ClientInfo(
        client_id=record.client_id,
        runtimes=list(record.runtimes),
        datasets=[
            common_pb2.Dataset(name=d.name, samples=d.samples, tags=list(d.tags)) for d in record.datasets
        ],
        labels=dict(record.labels),
        resources=resources_to_proto(record.resources),
        liveness=view.liveness,
        last_heartbeat_unix=record.last_seen,
        running_tasks=record.running_tasks,
        reserved_by=",".join(view.reserved_by),
        source=record.source,
        expires_at_unix=view.expires_at,
        protections=list(record.protections),
    )


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string (``ipv4:10.0.0.7:5123`` -> ``10.0.0.7``, ``ipv6:[::1]:5123`` -> ``::1``).

    What the per-source cap counts by: every connection from one host is one source, whatever its port.
    """
    scheme, sep, rest = peer.partition(":")
    if not sep:
        return peer[:256]
    if scheme in ("ipv4", "ipv6"):
        host = rest.rsplit(":", 1)[0] if rest.count(":") == 1 or rest.startswith("[") else rest
        return host.strip("[]")[:256]
    return peer[:256]  # unix sockets and the like: the whole peer names the source


def answer_from_status(status: common_pb2.TaskStatus) -> OfferAnswer | None:
    """The answer to an offer that a TaskStatus carries, or None if it is not one."""
    if status.state == common_pb2.TASK_ACCEPTED:
        return OfferAnswer(True, status.reason[:1000] or "accepted")
    if status.state == common_pb2.TASK_REFUSED:
        return OfferAnswer(False, status.reason[:1000] or "refused by the client")
    return None
