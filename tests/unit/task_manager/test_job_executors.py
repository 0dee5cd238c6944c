"""Long-lived job executors: one process per job across its tasks, replaced, retired and never shared."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from libs.protos import common_pb2
from task_manager.executors import Executors
from task_manager.launcher import THREAD_VARIABLES, thread_environment
from task_manager.policy import Accept
from task_manager.tasks import Offer
from tests.unit.task_manager.conftest import MakeSettings
from tests.unit.task_manager.fakes import FakeCoordinator, eventually, offer
from tests.unit.task_manager.test_executors import gone, next_report, running_executors, start

# A stream writer of the executor channel can be collected after its test's loop closed
# (seen once in CI as "loop is closed"); the leak is tracked in the session note.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.usefixtures("no_leaked_tasks"),
]


def task(
    log: Path,
    *,
    job_id: str = "ns/digits",
    round: int = 0,
    actions: dict[str, str] | None = None,
    **changes: Any,
) -> Offer:
    made = offer(job_id=job_id, round=round, **changes)
    return dataclasses.replace(made, parameters={"log": str(log), "actions": actions or {}})


def runs(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def run_to_end(executors: Executors, o: Offer) -> None:
    start(executors, o)
    await eventually(lambda: executors.running_tasks() == 0)


def alive(pid: int) -> bool:
    return not gone(pid)


async def test_a_jobs_tasks_run_one_after_another_in_one_process(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings("by_round")
    log = tmp_path / "runs.jsonl"
    async with running_executors(settings) as executors:
        for round_number in range(3):
            await run_to_end(executors, task(log, round=round_number))
        pids = {r["pid"] for r in runs(log)}
        assert len(pids) == 1 and len(runs(log)) == 3
        [pid] = pids
        assert alive(pid), "the executor waits for the job's next round"
        assert psutil.Process(pid).name() == "nsfl-job-exec"
        recorded = json.loads(settings.workspace.joinpath("executors.json").read_text())
        assert [(r["task_id"], r["pid"]) for r in recorded] == [("job-executor:ns/digits", pid)]
        task_dir = executors.task_dir(task(log, round=2).task_id)
        assert "hello from the executor" in (task_dir / "executor.log").read_text(), "each task keeps its log"
        assert json.loads((task_dir / "facts.json").read_text())["cwd"] == str(task_dir)
    assert gone(pid), "the task manager's shutdown ends it"


async def test_two_jobs_never_share_a_process(make_settings: MakeSettings, tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    async with running_executors(make_settings("by_round", max_parallel_tasks=2)) as executors:
        start(executors, task(log, job_id="ns/first"))
        start(executors, task(log, job_id="ns/second"))
        await eventually(lambda: len(runs(log)) == 2 and executors.running_tasks() == 0)
        await run_to_end(executors, task(log, job_id="ns/first", round=1))
        by_job: dict[str, set[int]] = {}
        for record in runs(log):
            by_job.setdefault(record["job"], set()).add(record["pid"])
    assert len(by_job["ns/first"]) == 1 and len(by_job["ns/second"]) == 1
    assert not by_job["ns/first"] & by_job["ns/second"]


async def test_an_executor_that_crashes_fails_its_task_and_the_jobs_next_task_gets_a_new_one(
    make_settings: MakeSettings, coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    actions = {"1": "crash"}
    async with running_executors(make_settings("by_round")) as executors:
        await run_to_end(executors, task(log, round=0, actions=actions, endpoint=coordinator.endpoint))
        start(executors, task(log, round=1, actions=actions, endpoint=coordinator.endpoint))
        report = await next_report(coordinator)
        assert report.state == common_pb2.TASK_FAILED and report.round == 1
        assert report.reason.startswith("the executor failed (killed by signal SIGSEGV)")
        assert "about to crash" in report.reason
        await eventually(lambda: executors.running_tasks() == 0)
        await run_to_end(executors, task(log, round=2, actions=actions, endpoint=coordinator.endpoint))
    first, crashed, replaced = (r["pid"] for r in runs(log))
    assert first == crashed and replaced != crashed


async def test_a_task_past_its_timeout_kills_the_executor_and_the_next_task_gets_a_new_one(
    make_settings: MakeSettings, coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    actions = {"0": "sleep"}
    async with running_executors(make_settings("by_round")) as executors:
        start(executors, task(log, round=0, actions=actions, timeout=1.0, endpoint=coordinator.endpoint))
        report = await next_report(coordinator)
        assert report.reason.startswith("the executor ran past its timeout of 1s and was killed")
        await eventually(lambda: executors.running_tasks() == 0)
        await run_to_end(executors, task(log, round=1, actions=actions, endpoint=coordinator.endpoint))
    stuck, fresh = (r["pid"] for r in runs(log))
    assert stuck != fresh and gone(stuck)


async def test_cancelling_a_whole_job_stops_its_executor_even_when_idle(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    async with running_executors(make_settings("by_round")) as executors:
        await run_to_end(executors, task(log))
        [pid] = {r["pid"] for r in runs(log)}
        assert executors.cancel("ns/other", "", "another job ended") == 0
        await asyncio.sleep(0.2)
        assert alive(pid), "another job's end does not touch this one"
        assert executors.cancel("ns/digits", "", "the job ended FINISHED") == 0
        await eventually(lambda: gone(pid))
        await eventually(lambda: json.loads(executors.pid_file.path.read_text()) == [])
        await run_to_end(executors, task(log, round=1))
    assert runs(log)[-1]["pid"] != pid, "a later task of the job starts a new executor"


async def test_an_idle_executor_is_stopped_after_the_idle_timeout(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    async with running_executors(make_settings("by_round", job_executor_idle_seconds=0.3)) as executors:
        await run_to_end(executors, task(log))
        [pid] = {r["pid"] for r in runs(log)}
        await eventually(lambda: gone(pid), within=5.0)


async def test_a_busy_executor_leaves_the_jobs_other_task_to_a_process_of_its_own(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    async with running_executors(make_settings("by_round", max_parallel_tasks=2)) as executors:
        start(executors, task(log, round=0, actions={"0": "sleep"}))
        await eventually(lambda: len(runs(log)) == 1)
        await run_to_end_of(executors, task(log, round=1, kind="evaluate"))
        long_lived, own = (r["pid"] for r in runs(log))
        assert long_lived != own and gone(own), "a one-task executor ends with its task"
        assert psutil.Process(long_lived).name() == "nsfl-job-exec"
        assert executors.cancel("ns/digits", "", "done") == 1


async def test_a_task_arriving_while_the_previous_one_ends_waits_for_the_jobs_executor(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    async with running_executors(make_settings("by_round", max_parallel_tasks=2)) as executors:
        start(executors, task(log, round=0, actions={"0": "pause"}))
        await eventually(lambda: len(runs(log)) == 1)
        await run_to_end_of(executors, task(log, round=1))
    first, second = (r["pid"] for r in runs(log))
    assert first == second, "the next round ran in the same process, not in one of its own"


async def test_a_task_offered_ahead_queues_in_the_jobs_executor_without_a_slot_and_runs_next(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    async with running_executors(make_settings("by_round", max_parallel_tasks=1)) as executors:
        assert executors.job_executors is not None
        start(executors, task(log, round=0, actions={"0": "pause"}))
        await eventually(lambda: len(runs(log)) == 1)
        ahead = task(log, round=1, model_follows=True)
        start(executors, ahead)  # accepted although the one slot is taken: it queues behind round 0
        await eventually(
            lambda: (
                executors.job_executors is not None
                and executors.job_executors._executors["ns/digits"].queued is not None
            )
        )
        assert len(runs(log)) == 1, "queued in the executor, not run beside round 0"
        refused = executors.consider(task(log, round=2, model_follows=True))
        assert "no free task slot" in getattr(refused, "reason", ""), "one task queues per job"
        await eventually(lambda: ahead.task_id not in executors._active)
    first, second = (r["pid"] for r in runs(log))
    assert first == second and [r["round"] for r in runs(log)] == [0, 1]


async def test_a_task_queued_in_an_executor_that_dies_is_launched_again_in_a_new_one(
    make_settings: MakeSettings, coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    actions = {"0": "sleep"}
    async with running_executors(make_settings("by_round", max_parallel_tasks=1)) as executors:
        start(executors, task(log, round=0, actions=actions, endpoint=coordinator.endpoint, timeout=1.0))
        await eventually(lambda: len(runs(log)) == 1)
        queued = task(log, round=1, model_follows=True, endpoint=coordinator.endpoint, actions=actions)
        start(executors, dataclasses.replace(queued, parameters={**queued.parameters, "actions": {}}))
        report = await next_report(coordinator)  # round 0 ran past its timeout: killed with its executor
        assert (report.round, report.state) == (0, common_pb2.TASK_FAILED)
        await eventually(lambda: executors.running_tasks() == 0)
        assert coordinator.reports.empty(), "the queued task was not failed"
    first, second = runs(log)
    assert (first["round"], second["round"]) == (0, 1) and first["pid"] != second["pid"], (
        "run anew, elsewhere"
    )


async def test_a_task_whose_executor_is_killed_as_the_jobs_next_executor_starts_still_ends(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    """A job stopped mid-round on a loaded host: its executor is killed, and before the warm worker reports
    that end the job's next task starts a new executor from the same folder.  The killed one's task must
    still end, or it holds its round here and every later attempt of the round is refused as a duplicate."""
    log = tmp_path / "runs.jsonl"
    async with running_executors(make_settings("by_round", max_parallel_tasks=2)) as executors:
        pool, worker = executors.job_executors, executors.launcher.workers["pytorch"]
        assert pool is not None and worker.pid is not None
        stopped = task(log, round=0, actions={"0": "sleep"})
        start(executors, stopped)
        await eventually(lambda: len(runs(log)) == 1)
        os.kill(worker.pid, signal.SIGSTOP)  # the warm worker reports the kill late
        try:
            assert executors.cancel("ns/digits", "", "round 0 closed") == 1
            start(executors, task(log, round=1))
            await eventually(lambda: "ns/digits" in pool._executors)  # its executor is being forked
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        await eventually(lambda: stopped.task_id not in executors._active, within=5.0)
        await run_to_end(executors, task(log, round=0, attempt=1))
    killed, *later = runs(log)
    assert [r["round"] for r in later] == [1, 0] and len({r["pid"] for r in later}) == 1
    assert killed["pid"] != later[0]["pid"], "the job's next executor served the later tasks"


async def test_a_cancelled_task_ends_even_when_the_end_of_its_killed_executor_is_never_seen(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    settings = make_settings("by_round", max_parallel_tasks=2)
    async with running_executors(settings, kill_wait=0.5) as executors:
        worker = executors.launcher.workers["pytorch"]
        assert worker.pid is not None
        running = task(log, round=0, actions={"0": "sleep"})
        start(executors, running)
        await eventually(lambda: len(runs(log)) == 1)
        queued = task(log, round=1, model_follows=True)
        start(executors, queued)
        await eventually(
            lambda: (
                executors.job_executors is not None
                and executors.job_executors._executors["ns/digits"].queued is not None
            )
        )
        os.kill(worker.pid, signal.SIGSTOP)  # from now on no end of any of its processes is reported
        try:
            assert executors.cancel("ns/digits", running.task_id, "round 0 closed") == 1
            assert executors.cancel("ns/digits", "", "the job ended STOPPED") == 2
            await eventually(lambda: executors.running_tasks() == 0, within=5.0)
            assert executors.consider(task(log, round=1, attempt=1)) == Accept(), "round 1 is free again"
        finally:
            os.kill(worker.pid, signal.SIGCONT)


async def run_to_end_of(executors: Executors, o: Offer) -> None:
    start(executors, o)
    await eventually(lambda: o.task_id not in executors._active)


async def test_a_task_from_a_restarted_coordinator_gets_a_new_executor(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    async with running_executors(make_settings("by_round")) as executors:
        await run_to_end(executors, task(log, round=0, endpoint="127.0.0.1:1"))
        await run_to_end(executors, task(log, round=1, endpoint="127.0.0.1:2"))
        first, second = (r["pid"] for r in runs(log))
        assert first != second
        await eventually(lambda: gone(first))


async def test_without_long_lived_executors_every_task_has_its_own_process(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    async with running_executors(make_settings("by_round", long_lived_executors=False)) as executors:
        assert executors.job_executors is None
        for round_number in range(2):
            await run_to_end(executors, task(log, round=round_number))
    first, second = (r["pid"] for r in runs(log))
    assert first != second


def test_executors_share_the_hosts_cpus_unless_the_operator_says_otherwise(
    make_settings: MakeSettings,
) -> None:
    assert make_settings(max_parallel_tasks=2, resources={"cpus": 4}).threads_per_executor == 2
    assert make_settings(max_parallel_tasks=3, resources={"cpus": 2}).threads_per_executor == 1
    assert make_settings(executor_threads=3).threads_per_executor == 3
    shared = thread_environment(1, {"OMP_NUM_THREADS": "4"}, explicit=False)
    assert "OMP_NUM_THREADS" not in shared and shared["TF_NUM_INTRAOP_THREADS"] == "1"
    assert thread_environment(2, {"OMP_NUM_THREADS": "4"}, explicit=True) == dict.fromkeys(
        THREAD_VARIABLES, "2"
    )
    assert os.cpu_count()  # the default takes every cpu of the host
