"""The whole task manager: in-process against fakes, and as a daemon process that gets SIGKILLed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
import yaml

from libs.protos import common_pb2
from task_manager.app import TaskManagerApp, serve
from task_manager.errors import WorkspaceInUse
from task_manager.settings import TaskManagerSettings
from tests.fixtures.pki import TestPki
from tests.unit.task_manager.conftest import MakeSettings
from tests.unit.task_manager.fakes import ENTRIES, FakeCoordinator, FakeSelector, eventually, offer

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


@pytest.fixture
async def selector(test_pki: TestPki) -> AsyncIterator[FakeSelector]:
    fake = FakeSelector(test_pki)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@contextlib.asynccontextmanager
async def serving(settings: TaskManagerSettings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop=stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(server, 20)


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def test_a_duplicate_round_is_refused_and_a_runaway_executor_is_reported(
    make_settings: MakeSettings, selector: FakeSelector, coordinator: FakeCoordinator
) -> None:
    settings = make_settings("sleep_forever", selector_address=selector.address, max_parallel_tasks=2)
    async with serving(settings):
        await asyncio.wait_for(selector.connected.wait(), 10)
        first = await selector.offer(offer(timeout=1.0, endpoint=coordinator.endpoint))
        duplicate = await selector.offer(offer(attempt=1, endpoint=coordinator.endpoint))
        assert first.state == common_pb2.TASK_ACCEPTED
        assert duplicate.state == common_pb2.TASK_REFUSED
        assert duplicate.reason.startswith(
            "duplicate: train of job ns/digits round 0 is already accepted here"
        )

        report = await asyncio.wait_for(coordinator.reports.get(), 15)
        assert report.state == common_pb2.TASK_FAILED
        assert "ran past its timeout of 1s" in report.reason and "sleeping forever" in report.reason
        with pytest.raises(WorkspaceInUse):
            await TaskManagerApp(settings).start()


def autogroup_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/autogroup").read_text().strip()
    except OSError:
        return ""  # no autogroup scheduling on this kernel


def executor_pids() -> list[int]:
    return [
        child.pid
        for child in psutil.Process().children(recursive=True)
        if child.name() in ("nsfl-executor", "nsfl-job-exec") and child.status() != psutil.STATUS_ZOMBIE
    ]


async def test_executors_run_executor_nice_levels_below_the_task_manager(
    make_settings: MakeSettings, selector: FakeSelector, coordinator: FakeCoordinator
) -> None:
    settings = make_settings("sleep_forever", selector_address=selector.address, executor_nice=7)
    async with serving(settings):
        await asyncio.wait_for(selector.connected.wait(), 10)
        answer = await selector.offer(offer(timeout=1.0, endpoint=coordinator.endpoint))
        assert answer.state == common_pb2.TASK_ACCEPTED
        [pid] = await eventually(executor_pids)
        assert psutil.Process(pid).nice() == psutil.Process().nice() + 7
        autogroup = autogroup_of(pid)
        if autogroup:  # autogroup scheduling: the executor's own session ranks at nice 7
            assert autogroup.endswith("nice 7"), autogroup
        await asyncio.wait_for(coordinator.reports.get(), 15)  # killed at its timeout


def write_config(tmp_path: Path, selector: FakeSelector, pki: TestPki, *, warm: bool) -> Path:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "train.py").write_text("")
    config = tmp_path / "client.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                **{key: str(value) for key, value in pki.settings(pki.identity("client", "c1")).items()},
                "client_id": "c1",
                "selector_address": selector.address,
                "workspace": "ws",
                "datasets": {"digits": {"path": "data", "samples": 10}},
                "task_entries": {"digits-train": {"script": "scripts/train.py", "runtime": "pytorch"}},
                "allowed_script_roots": ["scripts"],
                "preload": {"pytorch": []},
                "executor_entry": f"{ENTRIES}:spawn_grandchild_and_sleep",
                "reconnect_initial_seconds": 0.05,
                "reconnect_max_seconds": 0.2,
                "warm_runtimes": warm,
            }
        )
    )
    return config


async def start_daemon(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as output:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "task_manager",
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
async def test_a_restarted_daemon_kills_what_its_sigkilled_predecessor_left_running(
    tmp_path: Path, selector: FakeSelector, warm: bool, test_pki: TestPki
) -> None:
    config = write_config(tmp_path, selector, test_pki, warm=warm)
    log = tmp_path / "daemon.log"
    daemons: list[asyncio.subprocess.Process] = []
    pids: dict[str, int] = {}
    try:
        daemons.append(await start_daemon(config, log))
        await eventually(lambda: selector.connected.is_set(), within=20)
        assert (await selector.offer(offer())).state == common_pb2.TASK_ACCEPTED
        pid_files = await eventually(lambda: list((tmp_path / "ws" / "tasks").glob("*/*/pids.json")), within=10)
        await eventually(lambda: (pid_files[0].parent / "entered").exists())
        pids = json.loads(pid_files[0].read_text())
        worker = [
            c.pid for c in psutil.Process(daemons[0].pid).children() if "warm_worker" in " ".join(c.cmdline())
        ]

        daemons[0].kill()
        await daemons[0].wait()
        # The warm worker and the executor die with the daemon (PR_SET_PDEATHSIG).  The script's own child
        # usually survives them (only the pid file can find it), unless the worker saw its stdin close and
        # killed the group in the moment before its own SIGKILL arrived.
        await eventually(lambda: not alive(pids["executor"]) and not any(alive(p) for p in worker), within=10)
        orphaned = alive(pids["grandchild"])
        assert orphaned or warm  # a cold executor has no worker that could have killed its group

        daemons.append(await start_daemon(config, log))
        await eventually(lambda: not alive(pids["grandchild"]), within=20)
        await eventually(lambda: len(selector.registrations) == 2, within=20)
        assert json.loads((tmp_path / "ws" / "executors.json").read_text()) == []

        daemons[1].send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemons[1].wait(), 20) == 0, log.read_text()
        if orphaned:
            # A warm task runs in its job's long-lived executor, recorded under the job, not the task.
            recorded = "job-executor:ns/digits" if warm else "ns/digits:0:train:c1:0"
            assert f"killed 1 leftover process(es) of task {recorded}" in log.read_text()
    finally:
        for daemon in daemons:
            if daemon.returncode is None:
                daemon.kill()
                await daemon.wait()
        for pid in pids.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
