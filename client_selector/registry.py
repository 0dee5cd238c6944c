"""The registry's domain model: client records, liveness, reservations and task slots.

Everything here is pure: functions take a :class:`ClientRecord` and the
current time and return a value or a new record, so the rules can be tested
without a clock, a store or a network.  The I/O around it (streams, the
document store, the sweeper) lives in :mod:`client_selector.selector`.

Rules, and why:

* **Liveness** is a function of ``(record, now, timeout)``: a client is alive
  only while it has an open stream *and* sent something within ``timeout``
  seconds.  It is never stored as a flag that could go stale: after a
  selector restart every loaded record has ``connected=False`` and so is
  lost until its task manager registers again.
* **Reservations** carry an absolute expiry (Unix seconds, because they are
  persisted and must mean the same thing after a restart).  Expired ones are
  ignored everywhere at once, whether or not the sweeper has pruned them yet,
  so an expiry is exact and does not depend on the sweep interval.  A client
  holds at most one reservation per job; selecting it again for the same job
  (the next round) renews it instead of taking a second slot.
* **Task slots**: a client runs at most ``max_parallel_tasks`` tasks.  The
  slots free *for a job* are that number minus the live reservations of
  *other* jobs.  Running tasks reported by heartbeats are not subtracted as
  well: they belong to jobs that hold reservations, and counting both would
  count every task twice.
* **Retention**: a client that is not connected and sent nothing for
  ``retention`` seconds is expired (removed from the registry and its store),
  so ids that stopped coming do not stay forever.  :func:`expires_at` is what
  ListClients shows; an alive client keeps pushing it forward.
* **Sources**: each record remembers the peer host it last registered from;
  the selector counts the distinct client ids of a source
  (:func:`clients_from`) to cap what one host can register.
* **Picks** remember how many times a client was chosen for each job (the
  most recent :data:`MAX_REMEMBERED_JOBS` jobs), which ``untrainedFirst``
  uses to prefer clients a job has not used yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import NewType

ClientId = NewType("ClientId", str)
JobId = NewType("JobId", str)

ALIVE = "alive"
LOST = "lost"
MAX_REMEMBERED_JOBS = 256


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset a client declares: only its name, size and tags ever leave the client."""

    name: str
    samples: int = 0
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resources:
    """Resources a client offers, or (in a requirement) the minimum a job needs; 0 = unspecified."""

    cpus: float = 0.0
    memory_mb: int = 0
    gpus: int = 0
    disk_mb: int = 0

    def shortfalls(self, need: Resources) -> list[str]:
        """What ``self`` lacks to cover ``need``, e.g. ``["gpus>=1"]``; empty when it covers it."""
        missing = []
        for name in ("cpus", "memory_mb", "gpus", "disk_mb"):
            wanted = getattr(need, name)
            if wanted > 0 and getattr(self, name) < wanted:
                missing.append(f"{name}>={wanted:g}")
        return missing

    def describe(self) -> str:
        parts = [
            f"{name}>={getattr(self, name):g}"
            for name in ("cpus", "memory_mb", "gpus", "disk_mb")
            if getattr(self, name) > 0
        ]
        return ",".join(parts)


@dataclass(frozen=True)
class Registration:
    """What a task manager declares when it registers."""

    client_id: ClientId
    runtimes: tuple[str, ...] = ()
    datasets: tuple[DatasetInfo, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = Resources()
    max_parallel_tasks: int = 1
    version: str = ""
    protections: tuple[str, ...] = ()  # what confines its executors (Register.protections)


@dataclass(frozen=True)
class Reservation:
    """A client held for a job until ``expires_at`` (Unix seconds) or until released."""

    job_id: JobId
    round: int
    expires_at: float


@dataclass(frozen=True)
class ClientRecord:
    """One registered client as the selector knows it."""

    client_id: ClientId
    runtimes: tuple[str, ...] = ()
    datasets: tuple[DatasetInfo, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = Resources()
    max_parallel_tasks: int = 1
    version: str = ""
    protections: tuple[str, ...] = ()  # what confines its executors (Register.protections)
    registered_at: float = 0.0
    # Last message of any kind on its stream (Unix seconds).
    last_seen: float = 0.0
    # Whether a Connect stream is open now; session state, never persisted.
    connected: bool = False
    running_tasks: int = 0
    reservations: tuple[Reservation, ...] = ()
    # job id -> times picked, oldest job first; bounded by MAX_REMEMBERED_JOBS.
    picks: Mapping[str, int] = field(default_factory=dict)
    # When it was last chosen by any selection (0: never); drives least-recently-used order.
    last_selected_at: float = 0.0
    # The peer host it last registered from ("" for records from before sources were kept).
    source: str = ""

    @property
    def dataset_names(self) -> frozenset[str]:
        return frozenset(d.name for d in self.datasets)


def register(
    existing: ClientRecord | None, registration: Registration, now: float, source: str | None = None
) -> ClientRecord:
    """The record after a (re-)registration: new declarations, kept reservations and history.

    ``source`` is the peer host it registered from (None: keep the one it had).
    """
    base = existing if existing is not None else ClientRecord(client_id=registration.client_id)
    return replace(
        base,
        source=base.source if source is None else source,
        runtimes=registration.runtimes,
        datasets=registration.datasets,
        labels=dict(registration.labels),
        resources=registration.resources,
        max_parallel_tasks=registration.max_parallel_tasks,
        version=registration.version,
        protections=registration.protections,
        registered_at=now,
        last_seen=now,
        connected=True,
        running_tasks=0,
    )


def seen(record: ClientRecord, now: float, running_tasks: int | None = None) -> ClientRecord:
    """The record after a message on its stream (a heartbeat carries the running task count)."""
    running = record.running_tasks if running_tasks is None else running_tasks
    return replace(record, last_seen=max(record.last_seen, now), running_tasks=running)


def disconnected(record: ClientRecord) -> ClientRecord:
    return replace(record, connected=False, running_tasks=0)


def is_alive(record: ClientRecord, now: float, timeout: float) -> bool:
    return record.connected and now - record.last_seen <= timeout


def liveness(record: ClientRecord, now: float, timeout: float) -> str:
    """``"alive"`` or ``"lost"``, as ListClients shows it."""
    return ALIVE if is_alive(record, now, timeout) else LOST


def expires_at(record: ClientRecord, retention: float) -> float:
    """When the record is expired if its client stays away from now on (Unix seconds)."""
    return max(record.last_seen, record.registered_at) + retention


def is_expired(record: ClientRecord, now: float, retention: float) -> bool:
    """A client with no open stream whose last message is older than ``retention`` seconds."""
    return not record.connected and now >= expires_at(record, retention)


def clients_from(records: Iterable[ClientRecord], source: str) -> set[ClientId]:
    """The distinct client ids whose last registration came from ``source``."""
    return {r.client_id for r in records if r.source == source}


def over_source_cap(
    records: Iterable[ClientRecord], client_id: ClientId, source: str, cap: int
) -> str | None:
    """Why ``client_id`` may not register from ``source`` (it would be one id too many), or None."""
    known = clients_from(records, source)
    if client_id in known or len(known) < cap:
        return None
    return (
        f"{source or 'this source'} already registered {len(known)} client ids, the most one host may "
        "(max_clients_per_source); ids not seen for the retention period are expired, "
        "or the selector's operator can raise the limit"
    )


def active_reservations(record: ClientRecord, now: float) -> tuple[Reservation, ...]:
    return tuple(r for r in record.reservations if r.expires_at > now)


def reserved_by(record: ClientRecord, now: float) -> tuple[JobId, ...]:
    return tuple(r.job_id for r in active_reservations(record, now))


def free_slots(record: ClientRecord, job_id: JobId, now: float) -> int:
    """Task slots this client has for ``job_id``: its maximum minus other jobs' live reservations."""
    others = sum(1 for r in active_reservations(record, now) if r.job_id != job_id)
    return max(0, record.max_parallel_tasks - others)


def times_picked(record: ClientRecord, job_id: JobId) -> int:
    return record.picks.get(job_id, 0)


def reserve(record: ClientRecord, job_id: JobId, round_: int, now: float, seconds: float) -> ClientRecord:
    """The record after it was chosen for ``job_id``: one renewed reservation, one more pick."""
    kept = tuple(r for r in active_reservations(record, now) if r.job_id != job_id)
    picks = {job: n for job, n in record.picks.items() if job != job_id}
    picks[job_id] = record.picks.get(job_id, 0) + 1  # re-inserted last: the most recent job
    while len(picks) > MAX_REMEMBERED_JOBS:
        del picks[next(iter(picks))]
    return replace(
        record,
        reservations=(*kept, Reservation(job_id=job_id, round=round_, expires_at=now + seconds)),
        picks=picks,
        last_selected_at=now,
    )


def release(record: ClientRecord, job_id: JobId) -> ClientRecord:
    return replace(record, reservations=tuple(r for r in record.reservations if r.job_id != job_id))


def prune_expired(record: ClientRecord, now: float) -> ClientRecord:
    """Drop expired reservations (returns ``record`` itself when nothing expired)."""
    active = active_reservations(record, now)
    return record if len(active) == len(record.reservations) else replace(record, reservations=active)
