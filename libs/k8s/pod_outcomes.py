"""What a coordinator Pod's status says about its coordinator: still going, or ended how.

Pure: the Kubernetes platform reads a Pod (from a watch or a get) and asks
:func:`pod_phase_outcome`; the scheduler's own rules
(``job_scheduler.outcomes``) then decide what the job does.  The mapping
follows the coordinator's exit contract (docs/contracts.md): 0 FINISHED,
1 FAILED, 3 STOPPED.

States, and why there are more than Kubernetes' five phases:

- ``PENDING``: not running yet (unscheduled, pulling its image, creating the
  container).  A pull that keeps failing stays PENDING with the kubelet's
  reason (``ImagePullBackOff``): a registry hiccup heals, and the platform
  applies its own start deadline.
- ``RUNNING``: the container runs (also while the Pod terminates: the
  coordinator is still checkpointing).
- ``FINISHED`` / ``FAILED`` / ``STOPPED``: the container exited 0 / 1 / 3.
- ``CRASHED``: any other exit (2 is a settings error at start, 137 a kill,
  OOMKilled ...): the coordinator died without reaching a verdict, so the
  scheduler may relaunch it from its last checkpoint.
- ``LOST``: the Pod ended for reasons outside the coordinator: evicted,
  preempted, its node shut down or vanished, deleted.  Relaunching is safe.
  This outranks every exit code but 0: an evicted coordinator gets SIGTERM,
  checkpoints and exits 3 exactly as a stopped one does, and only the Pod's
  reason tells that nobody asked it to stop.
- ``UNKNOWN``: the node stopped reporting (phase ``Unknown``); the
  coordinator may well still run, so the platform must *not* launch another
  (two coordinators would aggregate the same job) until the Pod resolves.
- A Pod that can never start (``InvalidImageName``,
  ``CreateContainerConfigError`` for a missing Secret key, ...) is
  ``FAILED`` with no exit code: a relaunch would fail the same way.

``exit_code`` is the container's real exit code when it terminated, else
``None``; ``message`` is the kubelet's or the container's termination
message (the coordinator's last log lines on an error), cut to
:data:`MAX_MESSAGE` characters: logs carry no secrets (DESIGN §9), but a
status field must stay small.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, NamedTuple

from libs.k8s.objects import CONTAINER_NAME

MAX_MESSAGE = 1024
EXIT_STATES = {0: "FINISHED", 1: "FAILED", 3: "STOPPED"}
# Waiting reasons after which the container cannot start without someone changing something.
FATAL_WAITING = frozenset({"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"})
# Pod-level reasons (status.reason) of a Pod that ended through no fault of its coordinator.
LOST_REASONS = frozenset(
    {"Evicted", "Preempting", "NodeLost", "NodeShutdown", "Shutdown", "Terminated", "UnexpectedAdmissionError",
     "OutOfcpu", "OutOfmemory", "OutOfpods", "NodeAffinity"}
)  # fmt: skip


class CoordinatorPodState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    CRASHED = "CRASHED"
    LOST = "LOST"
    UNKNOWN = "UNKNOWN"


ALIVE = frozenset({CoordinatorPodState.PENDING, CoordinatorPodState.RUNNING, CoordinatorPodState.UNKNOWN})
CONTRACT_CODES = {
    CoordinatorPodState.FINISHED: 0,
    CoordinatorPodState.FAILED: 1,
    CoordinatorPodState.STOPPED: 3,
}


class PodOutcome(NamedTuple):
    """``(state, reason)`` first, so ``state, reason, *_ = pod_phase_outcome(pod)`` reads naturally."""

    state: CoordinatorPodState
    reason: str
    exit_code: int | None = None
    message: str = ""

    @property
    def alive(self) -> bool:
        """Whether a coordinator may still be running: never launch another while this holds."""
        return self.state in ALIVE

    @property
    def contract_exit_code(self) -> int | None:
        """The exit code as the scheduler's ``Platform`` reports it: 0/1/3 for a verdict, else a crash.

        A Pod that can never start is FAILED (1), so it is not relaunched into
        the same error; a LOST or still-alive coordinator has no code
        (``None``: a crash once it has ended, which the scheduler may relaunch).
        """
        if self.state in ALIVE or self.state is CoordinatorPodState.LOST:
            return None
        if self.state is CoordinatorPodState.CRASHED:
            return self.exit_code
        return CONTRACT_CODES[self.state]


def pod_phase_outcome(pod: Mapping[str, Any] | None) -> PodOutcome:
    """The coordinator's state as its Pod shows it; ``None`` (no Pod) is ``LOST``."""
    if pod is None:
        return PodOutcome(CoordinatorPodState.LOST, "PodNotFound")
    status = _mapping(pod.get("status"))
    phase = str(status.get("phase") or "Pending")
    container = _container_status(status)
    terminated = _mapping(_mapping(container.get("state")).get("terminated"))
    lost = _lost_reason(status)
    if terminated:
        return _from_termination(terminated, lost)
    if phase == "Succeeded":
        return PodOutcome(CoordinatorPodState.FINISHED, "Completed", 0)
    if phase == "Failed":
        if lost:
            return PodOutcome(CoordinatorPodState.LOST, lost, None, _message(status))
        return PodOutcome(
            CoordinatorPodState.CRASHED, str(status.get("reason") or "PodFailed"), None, _message(status)
        )
    if phase == "Unknown":
        return PodOutcome(CoordinatorPodState.UNKNOWN, "NodeUnreachable", None, _message(status))
    if phase == "Running":
        deleting = _mapping(pod.get("metadata")).get("deletionTimestamp")
        return PodOutcome(CoordinatorPodState.RUNNING, "Terminating" if deleting else "Running")
    return _pending(status, container)


def _from_termination(terminated: Mapping[str, Any], lost: str) -> PodOutcome:
    """A finished job stays finished; otherwise an eviction outranks the exit code.

    An evicted coordinator receives SIGTERM, checkpoints and exits 3 like a
    stopped one; the Pod's reason is what tells the two apart.
    """
    code = terminated.get("exitCode")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    message = _message(terminated)
    if code == 0:
        return PodOutcome(CoordinatorPodState.FINISHED, "Completed", 0, message)
    if lost:
        return PodOutcome(CoordinatorPodState.LOST, lost, code, message)
    if code in EXIT_STATES:
        return PodOutcome(CoordinatorPodState(EXIT_STATES[code]), f"ExitCode{code}", code, message)
    if terminated.get("reason") == "OOMKilled":
        return PodOutcome(CoordinatorPodState.CRASHED, "OOMKilled", code, message)
    return PodOutcome(
        CoordinatorPodState.CRASHED, f"ExitCode{code}" if code is not None else "Error", code, message
    )


def _pending(status: Mapping[str, Any], container: Mapping[str, Any]) -> PodOutcome:
    waiting = _mapping(_mapping(container.get("state")).get("waiting"))
    reason = str(waiting.get("reason") or "")
    if reason in FATAL_WAITING:
        return PodOutcome(CoordinatorPodState.FAILED, reason, None, _message(waiting))
    if reason:
        return PodOutcome(CoordinatorPodState.PENDING, reason, None, _message(waiting))
    for condition in status.get("conditions") or ():
        condition = _mapping(condition)
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return PodOutcome(
                CoordinatorPodState.PENDING,
                str(condition.get("reason") or "Unschedulable"),
                None,
                _message(condition),
            )
    return PodOutcome(CoordinatorPodState.PENDING, "Pending")


def _container_status(status: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = [_mapping(s) for s in status.get("containerStatuses") or ()]
    for candidate in statuses:
        if candidate.get("name") == CONTAINER_NAME:
            return candidate
    return statuses[0] if statuses else {}


def _lost_reason(status: Mapping[str, Any]) -> str:
    """Why the cluster, not the coordinator, ended the Pod (eviction, preemption, node loss); or ``""``."""
    reason = str(status.get("reason") or "")
    if reason in LOST_REASONS:
        return reason
    for condition in status.get("conditions") or ():
        condition = _mapping(condition)
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return str(condition.get("reason") or "DisruptionTarget")
    return ""


def _message(source: Mapping[str, Any]) -> str:
    text = str(source.get("message") or "").strip()
    return text if len(text) <= MAX_MESSAGE else "..." + text[-(MAX_MESSAGE - 3) :]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
