"""Whether this host takes a task: a pure decision on the offer and a snapshot of local state.

:func:`decide` returns :class:`Accept` or :class:`Refuse` with a reason the
coordinator's log shows the job's owner, so each reason says what is wrong
and what this host has instead.  The checks run from the most fundamental to
the most transient (a late offer, a task this host cannot run, a duplicate,
then a busy host), so a refusal names the cause that would still hold if the
host were idle.

Why duplicates are refused by (job, round, kind) and not by task id alone:
a selector that relays an offer twice, or a coordinator that offers a new
attempt while this host still runs the old one, must not make one host
train the same round twice in parallel.  Only tasks accepted or running
count: once a task has ended, the same (job, round, kind) is welcome again,
because that is how a coordinator retries a round that failed (a new attempt
needs the clients that did succeed too) and how a restarted coordinator
re-runs the round it was in (possibly with the very same task id).  The
coordinator itself rejects a second upload for one task.

A train task offered ahead (``model_follows``: its job's coordinator offers
round N+1 while round N still runs, coordinator.lookahead) takes no slot of
its own when its job already runs a task here: it queues behind that task,
in the job's long-lived executor, and waits there for its model.  One such
task per job; a host without job executors cannot queue one, so it needs a
free slot like any task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from task_manager.tasks import KINDS, Offer, TaskKey


@dataclass(frozen=True)
class Accept:
    pass


@dataclass(frozen=True)
class Refuse:
    reason: str


Decision = Accept | Refuse


@dataclass(frozen=True)
class PolicyState:
    """What the decision needs: the host's fixed capabilities and its tasks right now."""

    entries: Mapping[str, str]  # task entry name -> runtime
    runtimes: frozenset[str]
    datasets: frozenset[str]
    max_parallel_tasks: int
    now: float
    active: Mapping[str, TaskKey] = field(default_factory=dict)  # accepted or running, by task id
    can_queue: bool = False  # job executors run here: a task offered ahead can wait for one


def _listing(names: frozenset[str] | Mapping[str, str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _cannot_run(offer: Offer, state: PolicyState) -> str | None:
    if not offer.entry:
        if offer.scripts_sha256:
            return "this client runs only its installed task entries, not script bundles shipped with a job"
        return "the offer names no task entry"
    runtime = state.entries.get(offer.entry)
    if runtime is None:
        return f"unknown task entry {offer.entry!r} (this client has: {_listing(state.entries)})"
    if offer.runtime not in state.runtimes:
        return (
            f"runtime {offer.runtime!r} is not served here (this client serves: {_listing(state.runtimes)})"
        )
    if runtime != offer.runtime:
        return f"task entry {offer.entry!r} runs {runtime!r}, the offer asks for {offer.runtime!r}"
    if offer.kind not in KINDS:
        return f"unknown task kind {offer.kind!r} (known: {', '.join(KINDS)})"
    missing = sorted(set(offer.datasets) - state.datasets)
    if missing:
        return (
            f"dataset{'s' if len(missing) > 1 else ''} {', '.join(missing)} not configured on this client "
            f"(it has: {_listing(state.datasets)})"
        )
    return None


def _duplicate(offer: Offer, state: PolicyState) -> str | None:
    if offer.task_id in state.active:
        return f"duplicate: task {offer.task_id} is already accepted by this client"
    key = offer.key
    for task_id, active_key in state.active.items():
        if active_key == key:
            return (
                f"duplicate: {key.kind} of job {key.job_id} round {key.round} is already accepted here "
                f"as task {task_id}"
            )
    return None


def _queues_behind(offer: Offer, state: PolicyState) -> bool:
    """Whether ``offer`` (offered ahead) may wait behind its job's running task instead of a slot."""
    if not (offer.model_follows and state.can_queue):
        return False
    # Exactly one: the job's running task, with nothing queued behind it yet.
    return sum(1 for key in state.active.values() if key.job_id == offer.job_id) == 1


def decide(offer: Offer, state: PolicyState) -> Decision:
    if offer.deadline_unix and offer.deadline_unix <= state.now:
        return Refuse(
            f"the deadline of task {offer.task_id} passed {state.now - offer.deadline_unix:.1f}s ago"
        )
    reason = _cannot_run(offer, state) or _duplicate(offer, state)
    if reason is not None:
        return Refuse(reason)
    if len(state.active) >= state.max_parallel_tasks and not _queues_behind(offer, state):
        return Refuse(
            f"no free task slot ({len(state.active)} of {state.max_parallel_tasks} tasks accepted or running)"
        )
    return Accept()
