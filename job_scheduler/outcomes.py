"""What a coordinator's report or exit means for its job, as events for the state machine.

Pure: the supervisor and the ``ReportProgress`` handler find out *what
happened* (an exit code, a reported state) and ask here *which events* to
apply; :func:`~job_scheduler.states.next_state` then says what each event
may do.  Tested in ``tests/unit/job_scheduler/test_outcomes.py``.

Exit codes follow the coordinator's contract: 0 FINISHED, 1 FAILED (the
reason is in its ``status.json``), 3 STOPPED.  Anything else, a signal, or
an exit without a final status, is a crash: the job is relaunched (the new
coordinator resumes from its latest checkpoint) while ``restarts`` is below
the spec's ``maxRetries``, then FAILS with the exit and the log's last
lines in the reason.

Decisions worth knowing:

- A coordinator that stopped (exit 3, or a STOPPED report) although nobody
  asked (someone sent it SIGTERM directly) ends STOPPED through STOP then
  STOPPED, so the history shows both and the user can start it again from
  the checkpoint it saved.
- While STOPPING, the stop wins over a crash: the job ends STOPPED and is not
  relaunched (the state machine turns FAIL into STOPPED there).
- A FINISHED exit or report while STARTING first records the launch
  (LAUNCHED), because FINISH is only allowed from RUNNING: a coordinator that
  resumed with every round already done may finish before the scheduler
  saw it start.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from job_scheduler.states import JobEvent, JobState
from libs.errors import ValidationFailed
from libs.records import EXIT_FAILED, EXIT_FINISHED, EXIT_STOPPED

MAX_TAIL_CHARS = 1200


@dataclass(frozen=True)
class Step:
    """One event to apply, with the reason the user will read."""

    event: JobEvent
    reason: str


@dataclass(frozen=True)
class ExitDecision:
    steps: tuple[Step, ...]
    relaunch: bool = False


def describe_exit(code: int | None) -> str:
    if code is None:
        return "ended without a final status"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def decide_exit(
    state: JobState,
    code: int | None,
    *,
    status_reason: str,
    restarts: int,
    max_retries: int,
    log_tail: str = "",
    platform_reason: str = "",
) -> ExitDecision:
    """The events that the end of the job's coordinator (``code``) causes in ``state``.

    ``platform_reason`` (a Pod's ``Evicted``, ``OOMKilled`` ...) is added to
    what the exit says, so a job that fails after its retries shows why.
    """
    what = describe_exit(code) + (f" ({platform_reason})" if platform_reason else "")
    if state is JobState.STOPPING:
        if code == EXIT_FINISHED:
            return ExitDecision((Step(JobEvent.FINISH, status_reason or "completed before it could stop"),))
        if code == EXIT_STOPPED:
            return ExitDecision((Step(JobEvent.STOPPED, status_reason or "stopped"),))
        return ExitDecision(
            (
                Step(
                    JobEvent.FAIL,
                    f"stopped: the coordinator {what}" + (f" ({status_reason})" if status_reason else ""),
                ),
            )
        )
    if state not in (JobState.STARTING, JobState.RUNNING):
        return ExitDecision(())
    launched = (Step(JobEvent.LAUNCHED, "the coordinator started"),) if state is JobState.STARTING else ()
    if code == EXIT_FINISHED:
        return ExitDecision((*launched, Step(JobEvent.FINISH, status_reason or "completed")))
    if code == EXIT_FAILED:
        return ExitDecision((Step(JobEvent.FAIL, status_reason or f"the coordinator {what}"),))
    if code == EXIT_STOPPED:
        return ExitDecision(
            (
                Step(JobEvent.STOP, "the coordinator was stopped outside the scheduler"),
                Step(JobEvent.STOPPED, status_reason or "stopped"),
            )
        )
    if restarts < max_retries:
        reason = f"the coordinator {what}; relaunch {restarts + 1} of {max_retries}"
        return ExitDecision((Step(JobEvent.RELAUNCH, reason),), relaunch=True)
    reason = f"the coordinator {what} after {restarts} relaunches"
    tail = log_tail.strip()
    if tail:
        reason += f"; last log lines:\n{tail[-MAX_TAIL_CHARS:]}"
    return ExitDecision((Step(JobEvent.FAIL, reason),))


def decide_report(
    state: JobState, reported: str, *, has_round: bool, reason: str, round_number: int
) -> tuple[Step, ...]:
    """The events a ``ReportProgress`` with state ``reported`` causes in ``state``."""
    if reported == JobState.STARTING:  # the coordinator is up but has not begun: nothing to record yet
        return ()
    if reported == JobState.RUNNING:
        if has_round:
            return (Step(JobEvent.ROUND_DONE, reason or f"round {round_number} done"),)
        return (Step(JobEvent.LAUNCHED, reason or "the coordinator started"),)
    if reported == JobState.FINISHED:
        launched = (Step(JobEvent.LAUNCHED, "the coordinator started"),) if state is JobState.STARTING else ()
        return (*launched, Step(JobEvent.FINISH, reason or "completed"))
    if reported == JobState.FAILED:
        return (Step(JobEvent.FAIL, reason or "the coordinator failed"),)
    if reported == JobState.STOPPED:
        stopped = Step(JobEvent.STOPPED, reason or "stopped")
        if state in (JobState.STARTING, JobState.RUNNING):
            return (Step(JobEvent.STOP, "the coordinator was stopped outside the scheduler"), stopped)
        return (stopped,)
    raise ValidationFailed(
        f"a progress report's state must be STARTING, RUNNING, FINISHED, FAILED or STOPPED, got {reported[:40]!r}"
    )
