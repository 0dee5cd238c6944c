"""The job state machine of DESIGN §4, as one table and one pure function.

::

    QUEUED --ADMIT--> STARTING --LAUNCHED--> RUNNING --FINISH--> FINISHED
       \\--ADMIT (clients not ready)--> PENDING --CLIENTS_READY--> STARTING
    PENDING --PENDING_TIMEOUT--> FAILED       QUEUED/PENDING/STARTING/RUNNING --FAIL--> FAILED
    QUEUED/PENDING --STOP--> STOPPED     STARTING/RUNNING --STOP--> STOPPING --STOPPED--> STOPPED
    FINISHED/FAILED/STOPPED --START--> QUEUED      (restart; from a checkpoint or not)
    STARTING/RUNNING --RELAUNCH--> STARTING        (coordinator crashed, retries left)

:data:`ALLOWED` lists every transition that takes effect; :func:`next_state`
reads it and returns a :class:`Transition` for the scheduler to persist
*before* acting on it (it carries the reason and the time).  The scheduler
decides *which* event happened (are there enough clients, are retries
left); this module only decides what the event may do, so it needs no
clock, store or I/O and is tested over every (state, event) pair.

Decisions worth knowing:

- **ADMIT** has two outcomes.  The table holds the usual one (STARTING); the
  caller passes ``clients_ready=False`` to get PENDING instead.
- **DELETE** is accepted only where no coordinator can be running: QUEUED,
  PENDING (neither has launched anything), FINISHED, FAILED and STOPPED.
  A STARTING, RUNNING or STOPPING job must be stopped first, so DELETING
  never races a live coordinator.  The operator's finalizer and the CLI's
  ``--force`` do STOP, wait for STOPPED, then DELETE.  DELETING has no way
  out: the record is removed when clean-up ends.
- **While STOPPING**, the stop the user asked for wins over a failure (FAIL
  ends in STOPPED, the reason keeps the failure), but a job whose last round
  completed anyway ends FINISHED: its model is complete and registered.
  Reports that still arrive (ROUND_DONE, LAUNCHED) are recorded and the
  stop goes on.
- **UPDATE** (a spec change) leaves the state as it is and is allowed only
  where no coordinator runs with the old spec: QUEUED, PENDING, FINISHED,
  FAILED, STOPPED.

**Idempotence.**  An event that finds the job already where that event
leads returns a no-op ``Transition(changed=False)`` instead of an error, so
a retried request or a duplicated report is harmless.  Exactly these
(:data:`NO_OPS`): ADMIT in PENDING or STARTING; CLIENTS_READY in STARTING;
LAUNCHED in RUNNING; FINISH in FINISHED; FAIL in FAILED or STOPPED;
PENDING_TIMEOUT in FAILED; STOP in STOPPING or STOPPED; STOPPED in STOPPED;
START in QUEUED; DELETE in DELETING.  Every other pair outside the table is
:class:`~libs.errors.InvalidState` (for example STOP on a FINISHED job, or a
late ROUND_DONE after FAILED, which the scheduler logs and drops).

``changed`` says whether the event takes effect, not whether the state
differs: ROUND_DONE (RUNNING -> RUNNING) and UPDATE take effect and have
``changed=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from libs.errors import InvalidState
from libs.records import JobState as JobState  # shared (libs.records); the transitions are the scheduler's


class JobEvent(StrEnum):
    ADMIT = "ADMIT"
    CLIENTS_READY = "CLIENTS_READY"
    PENDING_TIMEOUT = "PENDING_TIMEOUT"
    LAUNCHED = "LAUNCHED"
    ROUND_DONE = "ROUND_DONE"
    FINISH = "FINISH"
    FAIL = "FAIL"
    STOP = "STOP"
    STOPPED = "STOPPED"
    START = "START"
    DELETE = "DELETE"
    UPDATE = "UPDATE"
    RELAUNCH = "RELAUNCH"


ALLOWED: dict[JobState, dict[JobEvent, JobState]] = {
    JobState.QUEUED: {
        JobEvent.ADMIT: JobState.STARTING,
        JobEvent.STOP: JobState.STOPPED,
        JobEvent.FAIL: JobState.FAILED,
        JobEvent.UPDATE: JobState.QUEUED,
        JobEvent.DELETE: JobState.DELETING,
    },
    JobState.PENDING: {
        JobEvent.CLIENTS_READY: JobState.STARTING,
        JobEvent.PENDING_TIMEOUT: JobState.FAILED,
        JobEvent.STOP: JobState.STOPPED,
        JobEvent.FAIL: JobState.FAILED,
        JobEvent.UPDATE: JobState.PENDING,
        JobEvent.DELETE: JobState.DELETING,
    },
    JobState.STARTING: {
        JobEvent.LAUNCHED: JobState.RUNNING,
        JobEvent.ROUND_DONE: JobState.RUNNING,  # the coordinator's first report may beat the platform's
        JobEvent.STOP: JobState.STOPPING,
        JobEvent.FAIL: JobState.FAILED,
        JobEvent.RELAUNCH: JobState.STARTING,
    },
    JobState.RUNNING: {
        JobEvent.ROUND_DONE: JobState.RUNNING,
        JobEvent.FINISH: JobState.FINISHED,
        JobEvent.STOP: JobState.STOPPING,
        JobEvent.FAIL: JobState.FAILED,
        JobEvent.RELAUNCH: JobState.STARTING,
    },
    JobState.STOPPING: {
        JobEvent.STOPPED: JobState.STOPPED,
        JobEvent.FINISH: JobState.FINISHED,
        JobEvent.FAIL: JobState.STOPPED,
        JobEvent.ROUND_DONE: JobState.STOPPING,
        JobEvent.LAUNCHED: JobState.STOPPING,
    },
    JobState.FINISHED: {
        JobEvent.START: JobState.QUEUED,
        JobEvent.UPDATE: JobState.FINISHED,
        JobEvent.DELETE: JobState.DELETING,
    },
    JobState.FAILED: {
        JobEvent.START: JobState.QUEUED,
        JobEvent.UPDATE: JobState.FAILED,
        JobEvent.DELETE: JobState.DELETING,
    },
    JobState.STOPPED: {
        JobEvent.START: JobState.QUEUED,
        JobEvent.UPDATE: JobState.STOPPED,
        JobEvent.DELETE: JobState.DELETING,
    },
    JobState.DELETING: {},
}

# Where ADMIT leads when the job cannot get enough clients yet.
ADMIT_WAITING = JobState.PENDING

NO_OPS: dict[JobState, frozenset[JobEvent]] = {
    JobState.QUEUED: frozenset({JobEvent.START}),
    JobState.PENDING: frozenset({JobEvent.ADMIT}),
    JobState.STARTING: frozenset({JobEvent.ADMIT, JobEvent.CLIENTS_READY}),
    JobState.RUNNING: frozenset({JobEvent.LAUNCHED}),
    JobState.STOPPING: frozenset({JobEvent.STOP}),
    JobState.FINISHED: frozenset({JobEvent.FINISH}),
    JobState.FAILED: frozenset({JobEvent.FAIL, JobEvent.PENDING_TIMEOUT}),
    JobState.STOPPED: frozenset({JobEvent.STOP, JobEvent.STOPPED, JobEvent.FAIL}),
    JobState.DELETING: frozenset({JobEvent.DELETE}),
}

TERMINAL = frozenset({JobState.FINISHED, JobState.FAILED, JobState.STOPPED})
ACTIVE = frozenset({JobState.PENDING, JobState.STARTING, JobState.RUNNING, JobState.STOPPING})

# The operations a user can ask for over REST or the CLI, and the event each one is.
OPERATIONS: dict[str, JobEvent] = {
    "start": JobEvent.START,
    "stop": JobEvent.STOP,
    "update": JobEvent.UPDATE,
    "delete": JobEvent.DELETE,
}

_VERBS: dict[JobEvent, str] = {
    JobEvent.ADMIT: "admit",
    JobEvent.CLIENTS_READY: "mark clients ready for",
    JobEvent.PENDING_TIMEOUT: "end the wait for clients of",
    JobEvent.LAUNCHED: "record the launch of",
    JobEvent.ROUND_DONE: "record a round of",
    JobEvent.FINISH: "finish",
    JobEvent.FAIL: "fail",
    JobEvent.STOP: "stop",
    JobEvent.STOPPED: "record the stop of",
    JobEvent.START: "start",
    JobEvent.DELETE: "delete",
    JobEvent.UPDATE: "update",
    JobEvent.RELAUNCH: "relaunch",
}
_HINTS: dict[JobEvent, str] = {JobEvent.DELETE: "; stop it first"}


@dataclass(frozen=True)
class Transition:
    """What an event does to a job: persisted before it takes effect.

    ``changed`` is ``False`` only for an idempotent repeat (see :data:`NO_OPS`),
    which the scheduler acknowledges without persisting or acting.
    """

    state: JobState
    event: JobEvent
    to: JobState
    reason: str
    at: float
    changed: bool = True


def next_state(
    current: JobState, event: JobEvent, *, reason: str, now: float, clients_ready: bool = True
) -> Transition:
    """The transition ``event`` makes from ``current``, or :class:`InvalidState` if it may not.

    ``reason`` (why, for the user: ``"InsufficientClients 1/3"``) must not be
    empty; ``now`` is the time in seconds since the epoch.  ``clients_ready``
    only matters for ADMIT: ``False`` leads to PENDING rather than STARTING.
    """
    if not reason.strip():
        raise ValueError("a transition needs a reason")
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite time, got {now!r}")
    targets = ALLOWED[current]
    if event in targets:
        to = targets[event]
        if event is JobEvent.ADMIT and not clients_ready:
            to = ADMIT_WAITING
        return Transition(current, event, to, reason, now)
    if event in NO_OPS[current]:
        return Transition(current, event, current, reason, now, changed=False)
    allowed_in = ", ".join(state.value for state in JobState if event in ALLOWED[state])
    raise InvalidState(
        f"cannot {_VERBS[event]} job in state {current.value} (allowed in: {allowed_in}){_HINTS.get(event, '')}",
        details={"state": current.value, "event": event.value},
    )


def allowed_operations(state: JobState) -> set[str]:
    """The user operations (start, stop, update, delete) that take effect in ``state``."""
    return {name for name, event in OPERATIONS.items() if event in ALLOWED[state]}


def is_terminal(state: JobState) -> bool:
    """Whether the job has ended (FINISHED, FAILED, STOPPED); only START or DELETE leave these."""
    return state in TERMINAL


def is_active(state: JobState) -> bool:
    """Whether the job holds an admission slot or a coordinator (PENDING, STARTING, RUNNING, STOPPING)."""
    return state in ACTIVE
