"""The scheduler's service and supervisor against a real SQLite store, with a fake platform and selector."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from job_scheduler.job_store import JobStore
from job_scheduler.reports import parse_report
from job_scheduler.states import JobEvent
from libs.errors import (
    AlreadyExists,
    InvalidState,
    NotFound,
    PermissionDenied,
    ValidationFailed,
    VersionConflict,
)
from libs.objects import checkpoint_key, output_key, round_key
from libs.records import ROUNDS
from libs.store import open_document_store
from tests.unit.job_scheduler.fakes import Stack, spec, stack

A1, A2, A3, B1 = "team-a/one", "team-a/two", "team-a/three", "team-b/one"


async def running(s: Stack, name: str, namespace: str = "team-a", **changes: object) -> str:
    """Submit a job, admit it, and have its coordinator report that it started."""
    await s.submit(name, namespace, **changes)
    await s.supervisor.admit_once()
    key = f"{namespace}/{name}"
    assert await s.report(key) == (True, "")
    assert await s.state(key) == "RUNNING"
    return key


async def test_submit_stores_a_queued_job_with_defaults_written_in(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        document = await s.submit("one")
        job = document.data
        assert document.key == A1 and document.version == 1
        assert job["state"] == "QUEUED" and job["spec"]["maxRetries"] == 2 and job["spec"]["minClients"] == 2
        assert job["status"]["rounds"] == 4 and job["coordinator"]["launches"] == 0
        with pytest.raises(AlreadyExists, match="job team-a/one already exists"):
            await s.submit("one")


async def test_submit_rejects_an_invalid_spec_or_a_namespace_mismatch(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        with pytest.raises(ValidationFailed, match="spec.rounds"):
            await s.service.submit("team-a", json.dumps(spec("x", rounds=0)))
        with pytest.raises(ValidationFailed, match="differs from the request"):
            await s.service.submit("team-b", json.dumps(spec("x", "team-a")))
        without = {k: v for k, v in spec("y").items() if k != "namespace"}
        assert (await s.service.submit("team-c", json.dumps(without))).key == "team-c/y"


async def test_admission_launches_a_coordinator_and_reports_move_the_job_along(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await s.submit("one")
        await s.supervisor.admit_once()
        job = await s.job(A1)
        assert job["state"] == "STARTING" and job["coordinator"]["launches"] == 1
        [request] = s.platform.launches
        assert request.launch == 1 and request.scheduler_address == "127.0.0.1:50052"
        assert request.token not in json.dumps(job), "only the token's hash is stored"
        record = {"round": 1, "accepted": ["c1", "c2"], "trainMetrics": {"loss": 0.4},
                  "evaluation": {"accuracy": 0.8}}
        assert await s.report(A1, round_number=1, record=record) == (True, "")
        job = await s.job(A1)
        assert job["state"] == "RUNNING"
        assert job["status"] == {
            "round": 1, "rounds": 4, "progress": 25.0, "participants": ["c1", "c2"],
            "lastMetrics": {"accuracy": 0.8}, "trainMetrics": {"loss": 0.4}, "checkpoints": [],
            "checkpointCount": 0, "finalModel": None}
        stored = await s.documents.get(ROUNDS, "team-a/one#000001")
        assert stored.data == {**record, "namespace": "team-a", "job": "one", "round": 1}


async def test_one_report_stores_the_round_and_the_earlier_round_revised_with_its_evaluation(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path) as s:
        await running(s, "one")
        first = {"round": 1, "accepted": ["c1"], "trainMetrics": {"loss": 0.4}}
        assert await s.report(A1, round_number=1, record=first) == (True, "")
        second = {"round": 2, "accepted": ["c1"], "trainMetrics": {"loss": 0.3}}
        revised = {**first, "evaluation": {"accuracy": 0.9}}
        assert await s.report(A1, round_number=2, record=second, revised=(revised,)) == (True, "")
        job = await s.job(A1)
        assert job["status"]["round"] == 2 and job["status"]["lastMetrics"] == {"accuracy": 0.9}
        stored = await s.documents.get(ROUNDS, "team-a/one#000001")
        assert stored.data["evaluation"] == {"accuracy": 0.9}
        assert (await s.documents.get(ROUNDS, "team-a/one#000002")).data["trainMetrics"] == {"loss": 0.3}


async def test_a_report_folding_several_rounds_lists_every_checkpoint_it_carries(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await running(s, "one")
        report = parse_report(A1, s.platform.token(A1), "RUNNING", "", 3, 4, json.dumps({"round": 3}),
                              json.dumps({"round": 3, "key": "c3"}), [json.dumps({"round": 2})],
                              [json.dumps({"round": 1, "key": "c1"}), json.dumps({"round": 2, "key": "c2"})])
        assert await s.service.report_progress(report) == (True, "")
        status = (await s.job(A1))["status"]
        assert status["round"] == 3 and status["checkpointCount"] == 3
        assert [c["round"] for c in status["checkpoints"]] == [1, 2, 3]
        assert (await s.documents.get(ROUNDS, "team-a/one#000002")).data["round"] == 2
    with pytest.raises(ValidationFailed, match="needs checkpoint_json"):
        parse_report(A1, "t", "RUNNING", "", 3, 4, "", "", [], [json.dumps({"round": 1})])


async def test_a_report_with_a_wrong_token_is_refused(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await s.submit("one")
        await s.supervisor.admit_once()
        with pytest.raises(PermissionDenied):
            await s.report(A1, token="forged")
        with pytest.raises(NotFound):
            await s.report("team-a/ghost", token="x")


async def test_a_late_report_is_dropped_not_applied(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await running(s, "one")
        s.platform.end(A1, 1, "FAILED", "round 1 failed")
        await s.supervisor.watch_once()
        ok, message = await s.report(A1, round_number=2, record={"round": 2})
        assert not ok and "FAILED" in message
        assert await s.documents.try_get(ROUNDS, "team-a/one#000002") is None


async def test_limits_hold_globally_and_per_namespace(tmp_path: Path) -> None:
    async with stack(tmp_path, max_running=3, per_namespace=2) as s:
        for name in ("one", "two", "three"):
            await s.submit(name)
            s.clock.advance(1)
        await s.submit("one", "team-b")
        await s.submit("two", "team-b")
        await s.supervisor.admit_once()
        states = {k: await s.state(k) for k in (A1, A2, A3, B1, "team-b/two")}
        assert states == {A1: "STARTING", A2: "STARTING", A3: "QUEUED", B1: "STARTING", "team-b/two": "QUEUED"}
        s.platform.end(A1, 0, "FINISHED", "completed 4 rounds")
        await s.supervisor.watch_once()
        await s.supervisor.admit_once()
        assert await s.state(A1) == "FINISHED"
        # One job running in each namespace, and team-a was served last: team-b's turn.
        assert (await s.state(A3), await s.state("team-b/two")) == ("QUEUED", "STARTING")


async def test_a_job_short_of_clients_waits_in_pending_then_fails_while_others_run(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        s.availability.per_job[A1] = 1
        await s.submit("one", clientsPerRound=3, pendingTimeoutSeconds=30)
        s.clock.advance(1)
        await s.submit("two")
        await s.supervisor.admit_once()
        job = await s.job(A1)
        assert job["state"] == "PENDING" and job["pendingDeadline"] == s.clock.now + 30
        assert job["reason"] == "InsufficientClients 1/3: no client has dataset x"
        assert await s.state(A2) == "STARTING", "a pending job never blocks the next one"
        s.clock.advance(29)
        await s.supervisor.admit_once()
        assert await s.state(A1) == "PENDING"
        s.clock.advance(1)
        await s.supervisor.admit_once()
        job = await s.job(A1)
        assert job["state"] == "FAILED" and job["reason"] == "InsufficientClients 1/3: no client has dataset x"
        assert job["pendingDeadline"] is None and job["endedAt"] == s.clock.now


async def test_a_pending_job_starts_when_clients_arrive(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        s.availability.per_job[A1] = 0
        await s.submit("one")
        await s.supervisor.admit_once()
        assert await s.state(A1) == "PENDING"
        s.availability.per_job[A1] = 5
        await s.supervisor.admit_once()
        job = await s.job(A1)
        assert job["state"] == "STARTING"
        assert [t["event"] for t in job["transitions"]] == ["SUBMIT", "ADMIT", "CLIENTS_READY"]


async def test_a_pending_job_waiting_for_capacity_does_not_fail_at_its_deadline(tmp_path: Path) -> None:
    async with stack(tmp_path, max_running=1) as s:
        s.availability.per_job[A2] = 0
        await running(s, "one")
        await s.submit("two", pendingTimeoutSeconds=10)
        await s.supervisor.admit_once()
        assert await s.state(A2) == "QUEUED", "no slot: not even asked about clients"
        s.platform.end(A1, 0, "FINISHED", "done")
        await s.supervisor.watch_once()
        await s.supervisor.admit_once()
        assert await s.state(A2) == "PENDING"


async def test_coordinator_exits_end_the_job_as_the_contract_says(tmp_path: Path) -> None:
    async with stack(tmp_path, per_namespace=3) as s:
        await s.objects.put(output_key("team-a", "one", "model.safetensors"), b"final weights")
        for name in ("one", "two", "three"):
            await running(s, name)
        s.platform.end(A1, 0, "FINISHED", "completed 4 rounds")
        s.platform.end(A2, 1, "FAILED", "round 2 failed: 0/2 updates")
        s.platform.end(A3, 3, "STOPPED", "stopped after round 1")
        await s.supervisor.watch_once()
        one, two, three = [await s.job(k) for k in (A1, A2, A3)]
        assert (one["state"], one["reason"]) == ("FINISHED", "completed 4 rounds")
        assert one["status"]["finalModel"]["key"] == "team-a/outputs/one/model.safetensors"
        assert one["status"]["progress"] == 100.0 and one["coordinator"]["lastExit"]["code"] == 0
        assert (two["state"], two["reason"]) == ("FAILED", "round 2 failed: 0/2 updates")
        assert (three["state"], three["reason"]) == ("STOPPED", "stopped after round 1")
        assert [t["event"] for t in three["transitions"]][-2:] == ["STOP", "STOPPED"]


async def test_a_crashed_coordinator_is_relaunched_then_the_job_fails_after_max_retries(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await running(s, "one", maxRetries=2)
        for expected_launch in (2, 3):
            s.platform.end(A1, -9)
            await s.supervisor.watch_once()
            job = await s.job(A1)
            assert job["state"] == "STARTING" and job["coordinator"]["launches"] == expected_launch
            assert s.platform.launches[-1].launch == expected_launch
        s.platform.end(A1, 2)
        await s.supervisor.watch_once()
        job = await s.job(A1)
        assert job["state"] == "FAILED" and s.platform.launches_of(A1) == 3
        assert job["reason"].startswith("the coordinator exited with code 2 after 2 relaunches; last log lines:")
        assert job["reason"].endswith("Traceback: boom")


async def test_stop_of_a_waiting_job_is_immediate_and_of_a_running_one_goes_through_stopping(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path) as s:
        await s.submit("queued")
        stopped = await s.service.stop("team-a", "queued")
        assert stopped.data["state"] == "STOPPED" and s.platform.stops == []
        await running(s, "one")
        assert (await s.service.stop("team-a", "one")).data["state"] == "STOPPING"
        assert s.platform.stops == [A1]
        assert (await s.service.stop("team-a", "one")).data["state"] == "STOPPING", "a second stop is a no-op"
        await s.report(A1, round_number=2, record={"round": 2})
        assert await s.state(A1) == "STOPPING"
        s.platform.end(A1, 3, "STOPPED", "stopped after round 2")
        await s.supervisor.watch_once()
        job = await s.job(A1)
        assert (job["state"], job["reason"]) == ("STOPPED", "stopped after round 2")
        assert (await s.service.stop("team-a", "one")).data["state"] == "STOPPED", "stopping again is a no-op"
        s.platform.end(A1, 0, "FINISHED")
        await s.service.start("team-a", "one", from_scratch=False)
        await s.supervisor.admit_once()
        s.platform.end(A1, 0, "FINISHED", "done")
        await s.supervisor.watch_once()
        with pytest.raises(InvalidState, match="cannot stop job in state FINISHED"):
            await s.service.stop("team-a", "one")


async def test_a_coordinator_that_does_not_stop_in_time_is_killed(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await running(s, "one")
        await s.service.stop("team-a", "one")
        await s.supervisor.watch_once()
        assert s.platform.kills == []
        s.clock.advance(61)
        await s.supervisor.watch_once()
        assert s.platform.kills == [A1]
        await s.supervisor.watch_once()
        job = await s.job(A1)
        assert job["state"] == "STOPPED" and "killed by SIGKILL" in job["reason"]


async def write_progress(s: Stack, namespace: str, name: str) -> None:
    await s.objects.put(checkpoint_key(namespace, name, 1), b"checkpoint")
    await s.objects.put(round_key(namespace, name, 1, "global.safetensors"), b"global")
    record = {"jobId": f"{namespace}/{name}", "namespace": namespace, "job": name, "round": 1,
              "key": checkpoint_key(namespace, name, 1), "sha256": "0" * 64, "size": 10, "createdAt": 1.0}
    await s.documents.upsert("checkpoints", f"{namespace}/{name}#000001", record)
    await s.report(f"{namespace}/{name}", round_number=1, record={"round": 1}, checkpoint=record)


async def test_delete_removes_the_job_its_records_and_its_objects(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await running(s, "one")
        await running(s, "other")
        await write_progress(s, "team-a", "one")
        await write_progress(s, "team-a", "other")
        assert (await s.job(A1))["status"]["checkpoints"] == [
            {"round": 1, "key": checkpoint_key("team-a", "one", 1), "sha256": "0" * 64}]
        with pytest.raises(InvalidState):
            await s.service.update("team-a", "one", json.dumps(spec("one")), 0)
        deleting = await s.service.delete("team-a", "one")
        assert deleting.data["state"] == "STOPPING" and deleting.data["deleteRequested"]
        s.platform.end(A1, 3, "STOPPED", "stopped")
        await s.supervisor.watch_once()
        with pytest.raises(NotFound):
            await s.service.get("team-a", "one")
        assert await s.documents.count(ROUNDS, {"job": "one"}) == 0
        assert await s.documents.count("checkpoints", {"job": "one"}) == 0
        assert [o.key for o in await s.objects.list("team-a/")] == [
            checkpoint_key("team-a", "other", 1), round_key("team-a", "other", 1, "global.safetensors")]
        assert s.platform.removed == [A1]
        with pytest.raises(NotFound):
            await s.service.delete("team-a", "one")


async def test_delete_of_a_queued_or_ended_job_is_immediate(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await s.submit("one")
        assert (await s.service.delete("team-a", "one")).data["state"] == "DELETING"
        assert await s.jobs.try_get(A1) is None


async def test_start_resumes_from_the_checkpoint_or_from_scratch(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await running(s, "one")
        await write_progress(s, "team-a", "one")
        with pytest.raises(InvalidState, match="cannot start job in state RUNNING"):
            await s.service.start("team-a", "one", from_scratch=False)
        s.platform.end(A1, 1, "FAILED", "boom")
        await s.supervisor.watch_once()
        resumed = await s.service.start("team-a", "one", from_scratch=False)
        assert resumed.data["state"] == "QUEUED" and resumed.data["status"]["round"] == 1
        assert await s.documents.count("checkpoints", {"job": "one"}) == 1
        await s.supervisor.admit_once()
        assert s.platform.launches[-1].launch == 2
        await s.report(A1)
        s.platform.end(A1, 1, "FAILED", "boom again")
        await s.supervisor.watch_once()
        fresh = await s.service.start("team-a", "one", from_scratch=True)
        assert fresh.data["status"]["round"] == 0 and fresh.data["status"]["checkpoints"] == []
        assert fresh.data["startFromScratch"] is False
        assert await s.documents.count("checkpoints", {"job": "one"}) == 0
        assert await s.documents.count(ROUNDS, {"job": "one"}) == 0
        assert await s.objects.list("team-a/") == []


async def test_update_changes_the_spec_only_where_allowed_and_with_compare_and_set(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        document = await s.submit("one")
        updated = await s.service.update("team-a", "one", json.dumps(spec("one", rounds=9, priority=5)),
                                         document.version)
        assert updated.data["spec"]["rounds"] == 9 and updated.data["priority"] == 5
        assert updated.data["status"]["rounds"] == 9 and updated.data["state"] == "QUEUED"
        with pytest.raises(VersionConflict):
            await s.service.update("team-a", "one", json.dumps(spec("one")), document.version)
        with pytest.raises(ValidationFailed, match="cannot be renamed"):
            await s.service.update("team-a", "one", json.dumps(spec("other")), 0)


async def test_list_filters_and_pages(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        for i in range(5):
            await s.submit(f"job{i}")
            s.clock.advance(1)
        await s.submit("other", "team-b")
        await s.service.stop("team-a", "job0")
        page, token = await s.service.list("team-a", [], 2, "")
        assert [d.key for d in page] == ["team-a/job0", "team-a/job1"] and token
        page, token = await s.service.list("team-a", [], 2, token)
        assert [d.key for d in page] == ["team-a/job2", "team-a/job3"]
        page, token = await s.service.list("team-a", [], 2, token)
        assert [d.key for d in page] == ["team-a/job4"] and token == ""
        stopped, _ = await s.service.list("", ["stopped"], 0, "")
        assert [d.key for d in stopped] == ["team-a/job0"]
        with pytest.raises(ValidationFailed, match="unknown job state"):
            await s.service.list("", ["SLEEPING"], 0, "")
        with pytest.raises(ValidationFailed, match="page token"):
            await s.service.list("", [], 0, "garbage!")


async def test_recovery_launches_a_persisted_launch_that_never_happened_and_adopts_live_ones(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path) as s:
        await running(s, "live")
        await s.submit("lost")
        await s.supervisor.admit_once()
        s.platform.coordinators.pop("team-a/lost")  # as if the scheduler died between persisting and launching
        s.platform.launches.clear()
        await s.supervisor.recover()
        assert [r.name for r in s.platform.launches] == ["lost"] and s.platform.launches[0].launch == 1
        assert await s.state("team-a/live") == "RUNNING"
        assert await s.report("team-a/lost") == (True, "")


async def test_a_finished_report_while_starting_records_the_launch_first(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await s.submit("one")
        await s.supervisor.admit_once()
        assert await s.report(A1, "FINISHED", round_number=4, reason="completed 4 rounds") == (True, "")
        job = await s.job(A1)
        assert job["state"] == "FINISHED" and [t["to"] for t in job["transitions"]][-2:] == ["RUNNING", "FINISHED"]
        s.platform.end(A1, 0, "FINISHED")
        await s.supervisor.watch_once()
        assert (await s.job(A1))["transitions"] == job["transitions"], "the exit after the report is a no-op"


async def test_a_restarted_job_waits_while_its_previous_coordinator_is_still_exiting(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await running(s, "one")
        old_token = s.platform.token(A1)
        assert await s.report(A1, "FAILED", reason="boom") == (True, "")
        await s.service.start("team-a", "one", from_scratch=False)
        with pytest.raises(PermissionDenied):
            await s.report(A1, "STOPPED", token=old_token)
        await s.supervisor.admit_once()
        assert await s.state(A1) == "QUEUED" and len(s.platform.launches) == 1
        s.clock.advance(121)
        await s.supervisor.admit_once()
        assert s.platform.kills == [A1], "a coordinator that lingers after its end is killed"
        await s.supervisor.admit_once()
        assert await s.state(A1) == "STARTING" and len(s.platform.launches) == 2


async def test_logs_come_from_the_platform(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await s.submit("one")
        assert await s.service.logs("team-a", "one", 1) == "Traceback: boom"
        with pytest.raises(NotFound):
            await s.service.logs("team-a", "ghost", 1)


async def test_a_coordinator_stuck_starting_is_killed_and_counts_as_a_crash(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await s.submit("one", maxRetries=0)
        await s.supervisor.admit_once()
        assert (await s.job(A1))["coordinator"]["launchedAt"] == s.clock.now
        s.clock.advance(300)
        await s.supervisor.watch_once()
        assert s.platform.kills == []
        s.clock.advance(1)
        await s.supervisor.watch_once()
        assert s.platform.kills == [A1]
        await s.supervisor.watch_once()
        job = await s.job(A1)
        assert job["state"] == "FAILED" and "was killed by SIGKILL after 0 relaunches" in job["reason"]


async def test_concurrent_calls_on_one_job_leave_it_consistent(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        key = await running(s, "one")
        reports = [s.report(key, round_number=i, record={"round": i}) for i in range(1, 11)]
        results = await asyncio.gather(*reports, s.service.stop("team-a", "one"), s.supervisor.watch_once(),
                                       return_exceptions=True)
        assert not [r for r in results if isinstance(r, BaseException)]
        job = await s.job(key)
        assert job["state"] == "STOPPING" and s.platform.stops == [key]
        assert await s.documents.count(ROUNDS, {"job": "one"}) == 10


async def test_a_lost_compare_and_set_is_decided_again_from_a_fresh_read(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        key = await running(s, "one")
        other = await open_document_store(f"sqlite://{tmp_path / 'nsfl.db'}")
        try:
            elsewhere = JobStore(other, s.clock)
            first = asyncio.gather(*(s.jobs.apply(key, JobEvent.ROUND_DONE, f"round {i}") for i in range(5)))
            second = elsewhere.apply(key, JobEvent.STOP, "stopped elsewhere")
            await asyncio.gather(first, second)
        finally:
            await other.close()
        job = await s.job(key)
        assert job["state"] == "STOPPING" and job["transitions"][-1]["reason"] == "stopped elsewhere"
