"""The bookkeeping of one round: who was asked, who answered, when it closes.

Pure logic: no I/O, no clock reads (``now`` is passed in).  The driver owns a
:class:`RoundBook` per round and the gRPC servicer feeds it; every decision
(accept or reject an update, is the round closed, did it succeed) is made
here so it can be unit-tested without sockets.

Closing rule (DESIGN §5.4): the round closes as soon as ``target`` updates
are accepted (``clientsPerRound``; with redundancy more clients are asked but
the first ``target`` replies win and later ones are *late*), or when every
asked client has answered or dropped, or at the deadline.  It succeeded when
at least ``minimum`` updates were accepted by then.
"""

from __future__ import annotations

import enum
import math
import secrets
from dataclasses import dataclass, field
from typing import Any

from libs.errors import UpdateRejected

# The executor reports the time spent in the user's code under this metric name.
SCRIPT_SECONDS = "nsfl.script_seconds"


class TaskOutcome(enum.Enum):
    OFFERED = "offered"
    RUNNING = "running"
    ACCEPTED = "accepted"
    DROPPED = "dropped"
    REJECTED = "rejected"


@dataclass
class Ticket:
    """One task offered to one client in one round."""

    task_id: str
    token: str
    client_id: str
    round: int
    kind: str
    attempt: int
    outcome: TaskOutcome = TaskOutcome.OFFERED
    reason: str = ""
    num_samples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    script_seconds: float | None = None


def make_task_id(job_id: str, round_number: int, kind: str, client_id: str, attempt: int) -> str:
    return f"{job_id}:{round_number}:{kind}:{client_id}:{attempt}"


class RoundBook:
    """Offers and replies of one round (train, evaluate or init)."""

    def __init__(self, *, job_id: str, round_number: int, kind: str, target: int, minimum: int,
                 deadline: float) -> None:
        if not 1 <= minimum <= target:
            raise ValueError(f"need 1 <= minimum ({minimum}) <= target ({target})")
        self.job_id = job_id
        self.round = round_number
        self.kind = kind
        self.target = target
        self.minimum = minimum
        self.deadline = deadline
        self.tickets: dict[str, Ticket] = {}
        self.closed = False
        self.close_reason = ""
        self.rejections: list[tuple[str, str]] = []

    # -- offers -------------------------------------------------------------
    def issue(self, client_id: str, attempt: int = 0) -> Ticket:
        task_id = make_task_id(self.job_id, self.round, self.kind, client_id, attempt)
        if task_id in self.tickets:
            raise ValueError(f"task {task_id} already issued")
        ticket = Ticket(task_id=task_id, token=secrets.token_urlsafe(32), client_id=client_id,
                        round=self.round, kind=self.kind, attempt=attempt)
        self.tickets[task_id] = ticket
        return ticket

    def drop(self, task_id: str, reason: str) -> None:
        """The client refused, failed, was lost, or its task manager reported a failure."""
        ticket = self.tickets.get(task_id)
        if ticket is None or ticket.outcome in (TaskOutcome.ACCEPTED, TaskOutcome.DROPPED):
            return
        ticket.outcome = TaskOutcome.DROPPED
        ticket.reason = reason

    # -- replies ------------------------------------------------------------
    def check_upload(self, task_id: str, token: str, client_id: str, round_number: int) -> Ticket:
        """Why an upload must be refused, as a ``ValueError``; the ticket when it may proceed."""
        ticket = self.tickets.get(task_id)
        if ticket is None or not secrets.compare_digest(ticket.token, token):
            raise ValueError(f"unknown task or bad token for task {task_id!r}")
        if ticket.client_id != client_id or ticket.round != round_number:
            raise ValueError(f"task {task_id!r} belongs to client {ticket.client_id} round {ticket.round}")
        if ticket.outcome is TaskOutcome.ACCEPTED:
            raise ValueError(f"duplicate update for task {task_id!r}")
        if self.closed:
            raise ValueError(f"late update: round {self.round} is closed ({self.close_reason})")
        if ticket.outcome is TaskOutcome.DROPPED:
            raise ValueError(f"task {task_id!r} was already counted as dropped ({ticket.reason})")
        return ticket

    def accept(self, ticket: Ticket, num_samples: int, metrics: dict[str, float]) -> None:
        ticket.outcome = TaskOutcome.ACCEPTED
        ticket.num_samples = num_samples
        ticket.metrics = {k: v for k, v in metrics.items() if k != SCRIPT_SECONDS}
        ticket.script_seconds = metrics.get(SCRIPT_SECONDS)

    def reject(self, task_id: str, reason: str) -> None:
        self.rejections.append((task_id, reason))
        ticket = self.tickets.get(task_id)
        if ticket is not None and ticket.outcome is not TaskOutcome.ACCEPTED:
            ticket.outcome = TaskOutcome.REJECTED
            ticket.reason = reason

    # -- closing ------------------------------------------------------------
    @property
    def accepted(self) -> list[Ticket]:
        return [t for t in self.tickets.values() if t.outcome is TaskOutcome.ACCEPTED]

    @property
    def outstanding(self) -> list[Ticket]:
        return [t for t in self.tickets.values() if t.outcome in (TaskOutcome.OFFERED, TaskOutcome.RUNNING)]

    def should_close(self, now: float) -> str | None:
        """The reason to close now, or ``None`` to keep waiting."""
        if self.closed:
            return self.close_reason
        if len(self.accepted) >= self.target:
            return f"{len(self.accepted)}/{self.target} updates"
        if self.tickets and not self.outstanding:
            return f"every asked client answered or dropped ({len(self.accepted)} accepted)"
        if now >= self.deadline:
            return f"deadline reached with {len(self.accepted)}/{self.target} updates"
        return None

    def close(self, reason: str) -> None:
        self.closed = True
        self.close_reason = reason

    @property
    def succeeded(self) -> bool:
        return len(self.accepted) >= self.minimum

    def summary(self) -> dict[str, object]:
        return {
            "round": self.round,
            "kind": self.kind,
            "accepted": sorted(t.client_id for t in self.accepted),
            "dropped": {t.client_id: t.reason for t in self.tickets.values() if t.outcome is TaskOutcome.DROPPED},
            "rejected": [{"task": task, "reason": reason} for task, reason in self.rejections],
            "closeReason": self.close_reason,
            "clientSeconds": {t.client_id: t.script_seconds for t in self.accepted if t.script_seconds is not None},
        }


def weighted_metrics(tickets: list[Ticket]) -> dict[str, float]:
    """Sample-weighted mean of each metric over the tickets that reported it."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for ticket in tickets:
        weight = float(max(ticket.num_samples, 1))
        for name, value in ticket.metrics.items():
            sums[name] = sums.get(name, 0.0) + weight * value
            weights[name] = weights.get(name, 0.0) + weight
    return {name: sums[name] / weights[name] for name in sorted(sums)}


def finite_metrics(metrics: Any) -> dict[str, float]:
    """A client's metrics as floats; ``UpdateRejected`` naming any that is not finite."""
    values = {str(k): float(v) for k, v in dict(metrics).items()}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise UpdateRejected(f"metrics {bad} are not finite numbers")
    return values
