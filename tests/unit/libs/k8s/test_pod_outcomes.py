"""What a coordinator Pod's status says: running, or ended how (exit contract 0/1/3)."""

from __future__ import annotations

from typing import Any

import pytest

from libs.k8s.pod_outcomes import CoordinatorPodState as S
from libs.k8s.pod_outcomes import pod_phase_outcome


def pod(
    phase: str,
    *,
    state: dict[str, Any] | None = None,
    reason: str | None = None,
    conditions: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if state is not None:
        status["containerStatuses"] = [
            {"name": "istio-proxy", "state": {"running": {}}},
            {"name": "coordinator", "state": state},
        ]
    if reason:
        status["reason"] = reason
        status["message"] = f"because {reason}"
    if conditions:
        status["conditions"] = conditions
    metadata = {"name": "nsfl-coord-digits-r1"}
    if deleting:
        metadata["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    return {"metadata": metadata, "status": status}  # fmt: skip


def terminated(code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": reason, "message": message}}


@pytest.mark.parametrize(
    ("code", "state", "reason"),
    [(0, S.FINISHED, "Completed"), (1, S.FAILED, "ExitCode1"), (3, S.STOPPED, "ExitCode3"),
     (2, S.CRASHED, "ExitCode2"), (139, S.CRASHED, "ExitCode139")],
)  # fmt: skip
def test_exit_codes_follow_the_coordinator_contract(code: int, state: S, reason: str) -> None:
    outcome = pod_phase_outcome(pod("Failed" if code else "Succeeded", state=terminated(code)))
    assert (outcome.state, outcome.reason, outcome.exit_code) == (state, reason, code)
    assert not outcome.alive


def test_the_coordinator_container_is_found_by_name_among_sidecars() -> None:
    state, reason, *_ = pod_phase_outcome(pod("Failed", state=terminated(3)))
    assert (state, reason) == (S.STOPPED, "ExitCode3")


def test_oom_killed_is_a_crash_worth_relaunching() -> None:
    outcome = pod_phase_outcome(pod("Failed", state=terminated(137, "OOMKilled")))
    assert (outcome.state, outcome.reason, outcome.exit_code) == (S.CRASHED, "OOMKilled", 137)


def test_an_evicted_coordinator_is_lost_even_though_it_exited_3_on_sigterm() -> None:
    outcome = pod_phase_outcome(pod("Failed", state=terminated(3), reason="Evicted"))
    assert (outcome.state, outcome.reason) == (S.LOST, "Evicted")


def test_a_finished_coordinator_stays_finished_even_if_its_node_then_went_away() -> None:
    outcome = pod_phase_outcome(pod("Failed", state=terminated(0, "Completed"), reason="NodeShutdown"))
    assert outcome.state is S.FINISHED


def test_a_disruption_condition_marks_a_killed_coordinator_lost() -> None:
    condition = {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}
    outcome = pod_phase_outcome(pod("Failed", state=terminated(137), conditions=[condition]))
    assert (outcome.state, outcome.reason) == (S.LOST, "PreemptionByScheduler")


def test_a_pod_failed_before_any_container_ran_is_lost_or_crashed_by_its_reason() -> None:
    assert pod_phase_outcome(pod("Failed", reason="OutOfmemory")).state is S.LOST
    assert pod_phase_outcome(pod("Failed", reason="Evicted")).message == "because Evicted"
    assert pod_phase_outcome(pod("Failed")) == (S.CRASHED, "PodFailed", None, "")


def test_a_pod_that_no_longer_exists_is_lost() -> None:
    assert pod_phase_outcome(None).state is S.LOST


def test_succeeded_without_container_statuses_is_finished() -> None:
    assert pod_phase_outcome(pod("Succeeded")).state is S.FINISHED


def test_a_running_coordinator_is_alive_also_while_it_terminates() -> None:
    assert pod_phase_outcome(pod("Running", state={"running": {}})) == (S.RUNNING, "Running", None, "")
    terminating = pod_phase_outcome(pod("Running", state={"running": {}}, deleting=True))
    assert (terminating.state, terminating.reason, terminating.alive) == (S.RUNNING, "Terminating", True)


def test_an_unreachable_node_is_unknown_and_blocks_a_second_launch() -> None:
    outcome = pod_phase_outcome(pod("Unknown"))
    assert outcome.state is S.UNKNOWN and outcome.alive


@pytest.mark.parametrize(
    "reason", ["ContainerCreating", "ErrImagePull", "ImagePullBackOff", "CreateContainerError"]
)
def test_a_pod_that_may_still_start_is_pending_with_the_kubelets_reason(reason: str) -> None:
    outcome = pod_phase_outcome(pod("Pending", state={"waiting": {"reason": reason, "message": "m"}}))
    assert (outcome.state, outcome.reason, outcome.message, outcome.alive) == (S.PENDING, reason, "m", True)


@pytest.mark.parametrize("reason", ["InvalidImageName", "CreateContainerConfigError", "ErrImageNeverPull"])
def test_a_pod_that_can_never_start_has_failed(reason: str) -> None:
    message = 'secret "nsfl-mongodb" not found'
    outcome = pod_phase_outcome(pod("Pending", state={"waiting": {"reason": reason, "message": message}}))
    assert (outcome.state, outcome.reason, outcome.exit_code, outcome.message) == (
        S.FAILED,
        reason,
        None,
        message,
    )
    assert not outcome.alive


def test_an_unschedulable_pod_is_pending_and_says_why() -> None:
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient memory."}  # fmt: skip
    outcome = pod_phase_outcome(pod("Pending", conditions=[condition]))
    assert (outcome.state, outcome.reason) == (S.PENDING, "Unschedulable")
    assert "Insufficient memory" in outcome.message


def test_a_pod_just_created_without_status_is_pending() -> None:
    assert pod_phase_outcome({"metadata": {"name": "x"}}) == (S.PENDING, "Pending", None, "")


def test_long_termination_messages_keep_their_end() -> None:
    message = "x" * 5000 + "Traceback: the end"
    outcome = pod_phase_outcome(pod("Failed", state=terminated(1, message=message)))
    assert len(outcome.message) == 1024 and outcome.message.endswith("the end")


@pytest.mark.parametrize(
    ("status", "code"),
    [(pod("Succeeded", state=terminated(0)), 0), (pod("Failed", state=terminated(1)), 1),
     (pod("Failed", state=terminated(3)), 3), (pod("Failed", state=terminated(137, "OOMKilled")), 137),
     (pod("Failed", state=terminated(3), reason="Evicted"), None), (pod("Running"), None),
     (pod("Pending", state={"waiting": {"reason": "CreateContainerConfigError"}}), 1), (pod("Unknown"), None)],
)  # fmt: skip
def test_the_contract_exit_code_is_what_the_scheduler_expects_from_a_platform(
    status: dict[str, Any], code: int | None
) -> None:
    assert pod_phase_outcome(status).contract_exit_code == code
