"""What coordinator exits and reports mean for the job, and the job document's pure changes."""

from __future__ import annotations

import pytest

from job_scheduler.documents import (
    MAX_LISTED_CHECKPOINTS,
    new_job,
    storable,
    with_checkpoint,
    with_checkpoints,
    with_round,
    with_transition,
)
from job_scheduler.outcomes import ExitDecision, Step, decide_exit, decide_report, describe_exit
from job_scheduler.reports import parse_report
from job_scheduler.states import JobEvent, JobState, next_state
from libs.errors import ValidationFailed
from libs.jobspec import JobSpec

R, SG, SP = JobState.RUNNING, JobState.STARTING, JobState.STOPPING


def exit_of(state: JobState, code: int | None, restarts: int = 0, retries: int = 2) -> ExitDecision:
    return decide_exit(state, code, status_reason="why", restarts=restarts, max_retries=retries,
                       log_tail="a\nTraceback: boom")


def events(decision: ExitDecision) -> list[JobEvent]:
    return [step.event for step in decision.steps]


@pytest.mark.parametrize(
    ("state", "code", "expected"),
    [
        (R, 0, [JobEvent.FINISH]),
        (SG, 0, [JobEvent.LAUNCHED, JobEvent.FINISH]),
        (R, 1, [JobEvent.FAIL]),
        (R, 3, [JobEvent.STOP, JobEvent.STOPPED]),
        (SP, 3, [JobEvent.STOPPED]),
        (SP, 0, [JobEvent.FINISH]),
        (SP, 1, [JobEvent.FAIL]),
        (SP, -9, [JobEvent.FAIL]),
        (SP, None, [JobEvent.FAIL]),
        (JobState.FINISHED, 0, []),
    ],
)
def test_exit_codes_follow_the_coordinator_contract(state: JobState, code: int, expected: list[JobEvent]) -> None:
    decision = exit_of(state, code)
    assert events(decision) == expected and not decision.relaunch


def test_every_exit_decision_is_allowed_by_the_state_machine() -> None:
    for state in (SG, R, SP):
        for code in (0, 1, 2, 3, -9, -15, None):
            current = state
            for step in exit_of(state, code).steps:
                current = next_state(current, step.event, reason=step.reason, now=0).to
            assert current in (JobState.FINISHED, JobState.FAILED, JobState.STOPPED, JobState.STARTING)


def test_a_crash_is_relaunched_while_retries_are_left() -> None:
    decision = exit_of(R, -9, restarts=1, retries=2)
    assert decision.relaunch and events(decision) == [JobEvent.RELAUNCH]
    assert decision.steps[0].reason == "the coordinator was killed by SIGKILL; relaunch 2 of 2"


def test_a_crash_fails_the_job_with_the_log_tail_when_retries_are_used_up() -> None:
    decision = exit_of(R, 7, restarts=2, retries=2)
    assert not decision.relaunch and events(decision) == [JobEvent.FAIL]
    assert decision.steps[0].reason.startswith("the coordinator exited with code 7 after 2 relaunches")
    assert decision.steps[0].reason.endswith("Traceback: boom")


def test_a_failed_coordinator_gives_its_own_reason() -> None:
    assert exit_of(R, 1).steps == (Step(JobEvent.FAIL, "why"),)


def test_exits_are_described_for_people() -> None:
    assert describe_exit(None) == "ended without a final status"
    assert describe_exit(-15) == "was killed by SIGTERM"
    assert describe_exit(2) == "exited with code 2"


def test_reports_map_to_events() -> None:
    assert decide_report(R, "RUNNING", has_round=True, reason="", round_number=3) == (
        Step(JobEvent.ROUND_DONE, "round 3 done"),)
    assert [s.event for s in decide_report(SG, "RUNNING", has_round=False, reason="", round_number=0)] == [
        JobEvent.LAUNCHED]
    assert [s.event for s in decide_report(SG, "FINISHED", has_round=False, reason="", round_number=4)] == [
        JobEvent.LAUNCHED, JobEvent.FINISH]
    assert [s.event for s in decide_report(R, "STOPPED", has_round=False, reason="", round_number=1)] == [
        JobEvent.STOP, JobEvent.STOPPED]
    assert [s.event for s in decide_report(SP, "STOPPED", has_round=False, reason="", round_number=1)] == [
        JobEvent.STOPPED]
    assert decide_report(SG, "STARTING", has_round=False, reason="", round_number=0) == ()
    with pytest.raises(ValidationFailed, match="STARTING, RUNNING, FINISHED, FAILED or STOPPED"):
        decide_report(R, "DANCING", has_round=False, reason="", round_number=0)


def spec() -> JobSpec:
    return JobSpec.parse({"name": "j", "namespace": "ns", "runtime": "pytorch", "taskEntry": "train", "rounds": 4,
                          "priority": 3})


def test_a_new_job_is_queued_with_the_documented_shape() -> None:
    job = new_job(spec(), 5.0)
    assert job["state"] == "QUEUED" and job["priority"] == 3 and job["coordinator"]["name"] == "coord-ns-j"
    assert job["status"] == {"round": 0, "rounds": 4, "progress": 0.0, "participants": [], "lastMetrics": {},
                             "trainMetrics": {}, "checkpoints": [], "checkpointCount": 0, "finalModel": None}
    assert job["transitions"] == [{"from": None, "to": "QUEUED", "event": "SUBMIT", "reason": "submitted",
                                   "at": 5.0}]


def test_transitions_record_history_and_times() -> None:
    job = new_job(spec(), 0.0)
    job = with_transition(job, next_state(JobState.QUEUED, JobEvent.ADMIT, reason="admitted", now=1.0))
    job = with_transition(job, next_state(SG, JobEvent.LAUNCHED, reason="up", now=2.0))
    job = with_transition(job, next_state(R, JobEvent.FINISH, reason="done", now=3.0))
    assert (job["state"], job["reason"], job["startedAt"], job["endedAt"]) == ("FINISHED", "done", 1.0, 3.0)
    assert [t["to"] for t in job["transitions"]] == ["QUEUED", "STARTING", "RUNNING", "FINISHED"]
    job = with_transition(job, next_state(JobState.FINISHED, JobEvent.START, reason="again", now=4.0))
    assert (job["startedAt"], job["endedAt"], job["queuedAt"]) == (None, None, 4.0)


def test_rounds_do_not_push_real_history_out_and_only_the_last_100_transitions_are_kept() -> None:
    job = with_transition(new_job(spec(), 0.0), next_state(JobState.QUEUED, JobEvent.ADMIT, reason="a", now=1))
    job = with_transition(job, next_state(SG, JobEvent.LAUNCHED, reason="started", now=1))
    for i in range(150):
        job = with_transition(job, next_state(R, JobEvent.ROUND_DONE, reason=f"round {i}", now=2 + i))
    assert len(job["transitions"]) == 3 and job["reason"] == "started" and job["updatedAt"] == 151
    for i in range(150):
        job = with_transition(job, next_state(SG, JobEvent.RELAUNCH, reason=f"crash {i}", now=200 + i))
    assert len(job["transitions"]) == 100 and job["transitions"][-1]["reason"] == "crash 149"


def test_round_status_and_storable_records() -> None:
    record = {"round": 2, "accepted": ["c1", "c.2"], "dropped": {"c.3": "late"}, "trainMetrics": {"loss": 0.5},
              "evaluation": {"accuracy": 0.9, "nan": float("nan")}}
    job = with_round(new_job(spec(), 0.0), 2, 4, record)
    assert job["status"]["round"] == 2 and job["status"]["progress"] == 50.0
    assert job["status"]["participants"] == ["c1", "c.2"]
    assert job["status"]["lastMetrics"] == {"accuracy": 0.9, "nan": None}
    assert storable(record)["dropped"] == {"c_3": "late"}
    assert storable({"$x": 1, "": 2}) == {"_$x": 1, "_": 2}
    assert "privacy" not in job["status"]


def test_a_dp_round_shows_the_privacy_spent_in_the_job_status() -> None:
    privacy = {"mode": "central", "epsilon": 1.5, "delta": 1e-5, "noiseMultiplier": 1.1, "clipNorm": 1.0}
    job = with_round(new_job(spec(), 0.0), 1, 4, {"round": 1, "accepted": ["c1"], "privacy": privacy})
    assert job["status"]["privacy"] == privacy


def checkpoint(number: int) -> dict[str, object]:
    return {"round": number, "key": f"ns/j/checkpoints/{number:06d}", "sha256": f"{number:064d}", "size": 10}


def test_the_job_lists_its_latest_checkpoints_and_counts_them_all_without_growing() -> None:
    job = new_job(spec(), 5.0)
    for number in range(1, 26):
        job = with_checkpoint(job, checkpoint(number))
    status = job["status"]
    assert status["checkpointCount"] == 25
    assert [c["round"] for c in status["checkpoints"]] == list(range(26 - MAX_LISTED_CHECKPOINTS, 26))
    assert status["checkpoints"][-1] == {"round": 25, "key": "ns/j/checkpoints/000025", "sha256": f"{25:064d}"}
    again = with_checkpoint(job, {**checkpoint(25), "sha256": "f" * 64})
    assert again["status"]["checkpointCount"] == 25, "a round checkpointed again is not counted twice"
    assert again["status"]["checkpoints"][-1]["sha256"] == "f" * 64
    assert job["status"]["checkpoints"][-1]["sha256"] == f"{25:064d}", "the input is left alone"
    final = with_checkpoints(job, [checkpoint(n) for n in range(30, 0, -1)])
    assert final["status"]["checkpointCount"] == 30 and final["status"]["checkpoints"][0]["round"] == 21


def test_a_revised_earlier_round_brings_the_jobs_last_metrics() -> None:
    job = new_job(spec(), 5.0)
    job = with_round(job, 3, 4, {"round": 3, "accepted": ["c1"], "trainMetrics": {"loss": 0.3}},
                     [{"round": 2, "evaluation": {"accuracy": 0.91}}])
    assert job["status"]["lastMetrics"] == {"accuracy": 0.91} and job["status"]["round"] == 3
    job = with_round(job, 4, 4, {"round": 4, "evaluation": {"accuracy": 0.95}},
                     [{"round": 3, "evaluation": {"accuracy": 0.93}}])
    assert job["status"]["lastMetrics"] == {"accuracy": 0.95}, "the round's own evaluation is the latest"


@pytest.mark.parametrize(("revised", "problem"), [
    (['{"round": 5}'], "whose round is 1..4"), (['{"round": 0}'], "whose round is 1..4"),
    (['{"evaluation": {}}'], "whose round is 1..4"), (["[1]"], "must be a JSON object"),
    (["{"], "not valid JSON")])
def test_a_report_with_a_bad_revised_round_is_refused(revised: list[str], problem: str) -> None:
    with pytest.raises(ValidationFailed, match=problem):
        parse_report("ns/j", "t", "RUNNING", "", 4, 10, "", "", revised)


def test_a_report_carries_its_revised_rounds() -> None:
    report = parse_report("ns/j", "t", "RUNNING", "", 4, 10, '{"round": 4}', "", ['{"round": 3, "x": 1}'])
    assert report.revised_rounds == ({"round": 3, "x": 1},) and report.round_record == {"round": 4}


def test_a_job_without_rounds_counts_the_schemas_default_not_zero() -> None:
    job = new_job(JobSpec.parse({"name": "j", "namespace": "ns", "runtime": "pytorch", "taskEntry": "train"}), 0.0)
    assert job["status"]["rounds"] == 10
    job["status"]["rounds"] = 0  # a status that lost its count reads it from the spec again
    assert with_round(job, 5, 0, None)["status"]["progress"] == 50.0
