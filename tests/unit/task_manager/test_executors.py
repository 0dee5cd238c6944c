"""Running accepted tasks: task.json, timeouts, failure reports to the coordinator, duplicates, cancels."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from libs.protos import common_pb2
from libs.wire import Wire
from task_manager.executors import Executors
from task_manager.launcher import Launcher
from task_manager.policy import Accept, Refuse
from task_manager.process_groups import PidFile
from task_manager.reporting import CoordinatorReporter
from task_manager.settings import TaskManagerSettings
from task_manager.tasks import Offer
from task_manager.workspace import Workspace, task_dir_name
from tests.unit.task_manager.conftest import MakeSettings
from tests.unit.task_manager.fakes import FakeCoordinator, eventually, offer

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


@contextlib.asynccontextmanager
async def running_executors(settings: TaskManagerSettings, **options: Any) -> AsyncIterator[Executors]:
    workspace = Workspace(settings.workspace)
    workspace.open()
    launcher = Launcher(
        entry=settings.executor_entry,
        runtimes=settings.served_runtimes,
        preload=settings.preload,
        warm=settings.warm_runtimes,
        log_path=workspace.worker_log,
    )
    await launcher.start()
    executors = Executors(
        settings,
        launcher=launcher,
        reporter=CoordinatorReporter("c1", Wire.from_settings(settings, role="client"), retry_delay=0.05),
        workspace=workspace,
        pid_file=PidFile(workspace.pid_file),
        **options,
    )
    try:
        yield executors
    finally:
        await executors.shutdown()
        await launcher.stop()
        workspace.close()


def start(executors: Executors, o: Offer) -> None:
    assert executors.consider(o) == Accept()
    executors.confirmed(o.task_id)


async def next_report(coordinator: FakeCoordinator) -> common_pb2.TaskStatus:
    return await asyncio.wait_for(coordinator.reports.get(), 15.0)


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def test_an_executor_past_its_timeout_is_killed_and_reported_with_its_log_tail(
    make_settings: MakeSettings, coordinator: FakeCoordinator
) -> None:
    settings = make_settings("sleep_forever")
    async with running_executors(settings) as executors:
        task = offer(timeout=1.0, endpoint=coordinator.endpoint)
        start(executors, task)
        task_dir = executors.task_dir(task.task_id)
        await eventually(lambda: (task_dir / "entered").exists())
        pid = int((task_dir / "pid").read_text())
        assert [r["pid"] for r in json.loads(settings.workspace.joinpath("executors.json").read_text())] == [
            pid
        ]

        report = await next_report(coordinator)

        assert (report.state, report.task_id, report.client_id) == (
            common_pb2.TASK_FAILED,
            task.task_id,
            "c1",
        )
        assert (report.job_id, report.round, report.task_token) == (task.job_id, 0, task.task_token)
        assert report.reason.startswith("the executor ran past its timeout of 1s and was killed")
        assert "last lines of executor.log:\nsleeping forever" in report.reason
        assert gone(pid)
        await eventually(lambda: executors.running_tasks() == 0)
        assert json.loads(settings.workspace.joinpath("executors.json").read_text()) == []


async def test_a_model_that_came_with_the_offer_is_a_file_beside_task_json_until_the_task_ends(
    make_settings: MakeSettings, coordinator: FakeCoordinator
) -> None:
    async with running_executors(make_settings("keep_model")) as executors:
        task = dataclasses.replace(
            offer(endpoint=coordinator.endpoint), model=b"safetensors bytes", secure_aggregation=False
        )
        start(executors, task)
        task_dir = executors.task_dir(task.task_id)
        await eventually(lambda: (task_dir / "seen-model").exists() and executors.running_tasks() == 0)
        document = json.loads((task_dir / "task.json").read_text())
        assert (task_dir / "seen-model").read_bytes() == b"safetensors bytes"
        assert document["model_file"] == "model.safetensors" and document["secure_aggregation"] is False
        await eventually(lambda: not (task_dir / "model.safetensors").exists())
        assert coordinator.reports.empty()


async def test_a_failing_executor_is_reported_with_its_exit_code_and_the_end_of_its_log(
    make_settings: MakeSettings, coordinator: FakeCoordinator
) -> None:
    async with running_executors(make_settings("fail")) as executors:
        start(executors, offer(endpoint=coordinator.endpoint))
        report = await next_report(coordinator)
    assert report.reason.startswith("the executor failed (exit code 3)")
    assert "log line 30\nthe script failed: ValueError: bad learning rate" in report.reason
    assert "log line 12\n" in report.reason and "log line 5\n" not in report.reason  # the last 20 lines


async def test_a_successful_task_gets_its_task_json_and_is_not_reported(
    make_settings: MakeSettings, coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    settings = make_settings("succeed")
    async with running_executors(settings) as executors:
        task = offer(timeout=90.0, endpoint=coordinator.endpoint, deadline=4_000_000_000.0)
        start(executors, task)
        task_dir = executors.task_dir(task.task_id)
        await eventually(lambda: (task_dir / "facts.json").exists() and executors.running_tasks() == 0)
        document = json.loads((task_dir / "task.json").read_text())
        again = executors.consider(offer(attempt=1, endpoint=coordinator.endpoint))
    assert document == {
        "task_id": task.task_id,
        "job_id": "ns/digits",
        "namespace": "ns",
        "round": 0,
        "attempt": 0,
        "kind": "train",
        "runtime": "pytorch",
        "client_id": "c1",
        "coordinator_endpoint": coordinator.endpoint,
        "model_sha256": task.model_sha256,
        "task_token": task.task_token,
        "entry": {
            "script": str(tmp_path / "scripts" / "train.py"),
            "mode": "script",
            "working_dir": str(tmp_path / "scripts"),
        },
        "parameters": {"epochs": 1},
        "datasets": {"digits": str(tmp_path / "data")},
        "dataset_samples": {"digits": 600},
        "timeout_seconds": 90.0,
        "deadline_unix": 4_000_000_000.0,
        "state_dir": str(settings.workspace / "jobs" / task_dir_name("ns/digits") / "state"),
    }
    assert await asyncio.to_thread(Path(document["state_dir"]).is_dir)  # the job's own folder
    assert "hello from the executor" in (task_dir / "executor.log").read_text()
    assert again == Accept()  # a retried round needs the clients that succeeded, too
    assert coordinator.reports.empty()


async def test_a_duplicate_round_is_refused_and_a_cancel_kills_without_reporting(
    make_settings: MakeSettings, coordinator: FakeCoordinator
) -> None:
    async with running_executors(make_settings("sleep_forever", max_parallel_tasks=3)) as executors:
        first = offer(endpoint=coordinator.endpoint)
        start(executors, first)
        retry = offer(attempt=1, endpoint=coordinator.endpoint)
        for duplicate in (retry, first):
            decision = executors.consider(duplicate)
            assert isinstance(decision, Refuse) and decision.reason.startswith("duplicate")
        task_dir = executors.task_dir(first.task_id)
        await eventually(lambda: (task_dir / "entered").exists())
        pid = int((task_dir / "pid").read_text())

        assert executors.cancel("ns/digits", "", "the job was stopped") == 1
        await eventually(lambda: executors.running_tasks() == 0 and gone(pid))
        assert executors.consider(retry) == Accept()  # the cancelled attempt has ended: a retry may run
        executors.unconfirmed(retry.task_id)
        await asyncio.sleep(0.2)
        assert coordinator.reports.empty()


async def test_shutdown_kills_running_executors_and_reports_them(
    make_settings: MakeSettings, coordinator: FakeCoordinator
) -> None:
    async with running_executors(make_settings("sleep_forever")) as executors:
        task = offer(endpoint=coordinator.endpoint)
        start(executors, task)
        task_dir = executors.task_dir(task.task_id)
        await eventually(lambda: (task_dir / "entered").exists())
        await executors.shutdown()
        assert isinstance(executors.consider(offer(round=1)), Refuse)
    report = await next_report(coordinator)
    assert report.reason.startswith("the task manager on this client was stopped; the executor was killed")
    assert gone(int((task_dir / "pid").read_text()))


async def test_tasks_run_cold_when_warm_runtimes_are_off_and_old_task_folders_go_over_quota(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings("succeed", warm_runtimes=False, workspace_quota_mb=1)
    old = settings.workspace / "tasks" / "an-old-job" / "an-old-task"
    old.mkdir(parents=True)
    (old / "model.bin").write_bytes(b"\0" * 2 * 1024 * 1024)
    async with running_executors(settings) as executors:
        assert executors.launcher.workers == {}
        task = offer()
        start(executors, task)
        task_dir = executors.task_dir(task.task_id)
        await eventually(lambda: (task_dir / "facts.json").exists() and executors.running_tasks() == 0)
        await eventually(lambda: not old.exists())
    assert "hello from the executor" in (task_dir / "executor.log").read_text()
