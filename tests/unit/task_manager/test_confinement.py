"""An executor's confinement: what it is given is built from the host's config and the task's facts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from libs.errors import InvalidSetting
from task_manager.confinement import (
    SYSTEM_READ_ONLY,
    confinement_for,
    executor_environment,
    host_protections,
    limit_exceeded,
    python_paths,
)
from task_manager.executor_processes import ExitStatus
from task_manager.launcher import WarmWorker, launch_cold
from task_manager.serde import registration
from task_manager.settings import ExecutorLimits, TaskManagerSettings
from task_manager.worker.confinement_rules import MIB, Confinement, Limits, landlock_abi, pids_cgroup_root
from tests.unit.task_manager.conftest import MakeSettings
from tests.unit.task_manager.fakes import ENTRIES, FakeCoordinator, eventually, offer
from tests.unit.task_manager.test_executors import next_report, running_executors, start

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

SECRET = "NSFL_DAEMON_SECRET"


def test_the_executor_environment_keeps_only_allowed_names_and_what_the_task_manager_gives() -> None:
    inherited = {
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": "/repo",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "NSFL_TASK_MANAGER_TLS_KEY": "/etc/nsfl/key.pem",
        "NSFL_EXECUTOR_TLS_CA": "/etc/nsfl/ca.pem",
    }
    given = {"NSFL_LOG_LEVEL": "DEBUG", "OMP_NUM_THREADS": "1"}

    assert executor_environment(inherited, given) == {
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": "/repo",
        "NSFL_EXECUTOR_TLS_CA": "/etc/nsfl/ca.pem",
        "NSFL_LOG_LEVEL": "DEBUG",
        "OMP_NUM_THREADS": "1",
    }


def _environment_task(root: Path) -> Path:
    task_dir = root / "task"
    task_dir.mkdir()
    (task_dir / "entry").write_text("environment")
    return task_dir


def _seen(task_dir: Path) -> tuple[dict[str, str], list[str]]:
    facts = json.loads((task_dir / "environment.json").read_text())
    return facts["environ"], facts["initial"]


async def test_a_variable_set_on_the_daemon_is_not_visible_to_a_forked_task_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET, "the daemon's own")
    worker = WarmWorker("pytorch", preload=[], entry=f"{ENTRIES}:dispatch", log_path=tmp_path / "worker.log")
    await worker.start()
    try:
        task_dir = _environment_task(tmp_path)
        assert (await (await worker.launch(task_dir)).wait()).succeeded
    finally:
        await worker.stop()
    environ, initial = _seen(task_dir)
    assert SECRET not in environ and not any(SECRET in item for item in initial)
    assert environ["HOME"] == environ["TMPDIR"] == str(task_dir)
    assert "PATH" in environ


async def test_a_variable_set_on_the_daemon_is_not_visible_to_a_cold_task_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET, "the daemon's own")
    task_dir = _environment_task(tmp_path)
    assert (await (await launch_cold(f"{ENTRIES}:dispatch", task_dir)).wait()).succeeded
    environ, initial = _seen(task_dir)
    assert SECRET not in environ and not any(SECRET in item for item in initial)
    assert environ["HOME"] == str(task_dir)


def test_a_limit_exceeded_is_named_from_the_signal_or_the_memory_error() -> None:
    limits = ExecutorLimits(memory_mb=2048, cpu_seconds=30, file_size_mb=100)

    assert limit_exceeded(limits, signal.SIGXCPU, "") == "CPU time limit 30 s exceeded"
    assert (
        limit_exceeded(limits, None, "OSError: [Errno 27] File too large")
        == "file size limit 100 MiB exceeded"
    )
    assert limit_exceeded(limits, None, "Traceback...\nMemoryError") == "memory limit 2048 MiB exceeded"
    assert limit_exceeded(limits, signal.SIGKILL, "") == ""
    assert limit_exceeded(ExecutorLimits(), None, "MemoryError") == "", "no limit, nothing exceeded"


def test_limits_are_built_from_the_configured_ones_in_bytes_and_seconds(make_settings: MakeSettings) -> None:
    settings = make_settings(executor_limits={"memory_mb": 512, "cpu_seconds": 9, "file_size_mb": 2})

    confinement = confinement_for(settings, writable=[], entry=None, datasets=())

    assert confinement == Confinement(
        limits=Limits(memory_bytes=512 * MIB, cpu_seconds=9, file_size_bytes=2 * MIB)
    ), "isolation: none gives the limits alone"
    assert confinement_for(make_settings(), writable=[], entry=None, datasets=()) is None


@pytest.mark.parametrize(
    ("entry", "limits", "ended"),
    [
        ("allocate", Limits(memory_bytes=512 * MIB), ExitStatus(exit_code=1)),
        ("burn_cpu", Limits(cpu_seconds=1), ExitStatus(signal=signal.SIGXCPU)),
        ("write_big_file", Limits(file_size_bytes=4 * MIB), ExitStatus(exit_code=1)),
    ],
)
async def test_an_executor_past_a_limit_ends_and_the_worker_goes_on(
    tmp_path: Path, entry: str, limits: Limits, ended: ExitStatus
) -> None:
    worker = WarmWorker("pytorch", preload=[], entry=f"{ENTRIES}:dispatch", log_path=tmp_path / "worker.log")
    await worker.start()
    try:
        task_dir = tmp_path / entry
        task_dir.mkdir()
        (task_dir / "entry").write_text(entry)
        (task_dir / "megabytes").write_text("2048")
        status = await asyncio.wait_for(
            (await worker.launch(task_dir, confine=Confinement(limits))).wait(), 30
        )
        assert status == ended
        said = {"allocate": "MemoryError", "write_big_file": "File too large", "burn_cpu": ""}[entry]
        assert said in (task_dir / "executor.log").read_text()
        assert worker.alive
        assert (await (await worker.launch(_environment_task(tmp_path))).wait()).succeeded
    finally:
        await worker.stop()


async def test_an_executor_past_its_memory_limit_is_reported_to_the_coordinator_with_that_reason(
    make_settings: MakeSettings, coordinator: FakeCoordinator
) -> None:
    settings = make_settings("allocate_4_gib", executor_limits={"memory_mb": 1024})
    async with running_executors(settings) as executors:
        start(executors, offer(endpoint=coordinator.endpoint))
        report = await next_report(coordinator)
    assert report.reason.startswith("memory limit 1024 MiB exceeded: the executor failed (exit code 1)")
    assert "MemoryError" in report.reason


needs_landlock = pytest.mark.skipif(landlock_abi() < 1, reason="this kernel has no Landlock")


@needs_landlock
@pytest.mark.parametrize("long_lived", [True, False], ids=["job-executors", "one-task-executors"])
async def test_a_hostile_job_is_refused_every_attack_while_another_job_on_the_host_finishes(
    make_settings: MakeSettings,
    coordinator: FakeCoordinator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    long_lived: bool,
) -> None:
    monkeypatch.setenv(SECRET, "the daemon's own")
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "records.csv").write_text("name,diagnosis\n")
    config = tmp_path / "task-manager.yaml"
    config.write_text("client_id: c1\n")
    settings = make_settings(
        "hostile_or_victim",
        isolation="strict",
        long_lived_executors=long_lived,
        max_parallel_tasks=2,
        executor_limits={"memory_mb": 1024, "processes": 64},
        datasets={
            "digits": {"path": str(tmp_path / "data"), "samples": 600},
            "private": {"path": str(tmp_path / "private"), "samples": 1},
        },
    )
    forks = 10_000 if pids_cgroup_root() is not None else 100
    listener = socket.create_server(("127.0.0.1", 0))  # a loopback service of the host
    async with running_executors(settings) as executors:
        victim = dataclasses.replace(
            offer(job_id="ns/victim", endpoint=coordinator.endpoint), parameters={"role": "victim"}
        )
        start(executors, victim)
        victim_dir = executors.task_dir(victim.task_id)
        await eventually(lambda: (victim_dir / "entered").exists())
        victim_state = executors.workspace.job_state_dir("ns/victim") / "control.bin"
        victim_state.write_bytes(b"the victim's control variate")
        parameters = {
            "role": "hostile",
            "read": {
                "another job's task.json": str(victim_dir / "task.json"),
                "another job's state": str(victim_state),
                "a dataset it did not name": str(tmp_path / "private" / "records.csv"),
                "the daemon's config": str(config),
                "the daemon's TLS key": str(settings.tls_key),
                "the daemon's environment in /proc": f"/proc/{os.getpid()}/environ",
            },
            "outside": str(tmp_path / "data" / "planted.txt"),
            "variable": SECRET,
            "forks": forks,
            "other_port": listener.getsockname()[1],
            "allocate_mb": 4 * 1024,
        }
        hostile = dataclasses.replace(
            offer(job_id="ns/hostile", endpoint=coordinator.endpoint), parameters=parameters
        )
        start(executors, hostile)
        hostile_dir = executors.task_dir(hostile.task_id)
        await eventually(
            lambda: (hostile_dir / "attempts.json").exists() or executors.running_tasks() == 1, within=30
        )
        (victim_dir / "go").write_text("")
        await eventually(lambda: executors.running_tasks() == 0, within=30)
        attempts = json.loads((hostile_dir / "attempts.json").read_text())
        assert (victim_dir / "executor.log").exists()
    listener.close()
    succeeded = [name for name, outcome in attempts.items() if not outcome.startswith("refused")]
    if landlock_abi() < 4:
        succeeded.remove("connect to another local port")  # no network rules in this kernel's Landlock
    if pids_cgroup_root() is None and os.getuid() == 0:
        succeeded.remove("fork many processes")  # no pids cgroup, and root is exempt from RLIMIT_NPROC
    assert succeeded == [], attempts
    assert not (tmp_path / "data" / "planted.txt").exists()
    assert coordinator.reports.empty(), "both tasks succeeded: nothing was reported failed"


def test_the_capability_report_says_what_this_host_gives_its_executors(make_settings: MakeSettings) -> None:
    strict = make_settings(isolation="strict", executor_limits={"processes": 64})
    abi = landlock_abi()

    assert host_protections(strict, pids_cgroup=True) == (
        "environment-allowlist",
        "rlimits",
        "pids-cgroup",
        "no-new-privs",
        f"landlock-abi-{abi}" if abi else "landlock:unavailable",
        "tcp-connect:coordinator-port" if abi >= 4 else "network:unrestricted",
    )
    assert host_protections(strict, pids_cgroup=False)[2] == "processes:rlimit-only"
    assert host_protections(make_settings(), pids_cgroup=True) == ("environment-allowlist", "isolation:none")
    assert list(registration(strict).register.protections) == list(
        host_protections(strict, pids_cgroup_root() is not None)
    )


def test_isolation_is_strict_unless_the_config_says_none(make_settings: MakeSettings) -> None:
    assert TaskManagerSettings().isolation == "strict"
    with pytest.raises(InvalidSetting, match="setting 'isolation' must be one of strict, none"):
        make_settings(isolation="lax")


@needs_landlock
async def test_a_cold_executor_is_confined_as_a_forked_one(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the daemon's")
    task_dir = _environment_task(tmp_path)
    (task_dir / "entry").write_text("hostile_or_victim")
    (task_dir / "task.json").write_text(
        json.dumps(
            {
                "parameters": {
                    "role": "hostile",
                    "read": {"a file outside": str(secret)},
                    "outside": str(tmp_path / "planted.txt"),
                    "variable": SECRET,
                    "other_port": 1,
                    "forks": 1,
                    "allocate_mb": 1,
                }
            }
        )
    )
    confine = Confinement(
        no_new_privs=True,
        landlock=True,
        read_write=(str(task_dir),),
        read_only=SYSTEM_READ_ONLY + python_paths(),
    )

    assert (await (await launch_cold(f"{ENTRIES}:dispatch", task_dir, confine=confine)).wait()).succeeded
    attempts = json.loads((task_dir / "attempts.json").read_text())
    assert attempts["a file outside"].startswith("refused: PermissionError")
    assert attempts["write outside its folder"].startswith("refused: PermissionError")


def test_a_strict_confinement_gives_its_folders_the_named_datasets_and_the_python_environment_only(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(
        isolation="strict",
        datasets={
            "digits": {"path": str(tmp_path / "data"), "samples": 600},
            "private": {"path": str(tmp_path / "private"), "samples": 1},
        },
    )
    task_dir, state_dir = tmp_path / "ws" / "tasks" / "j" / "t", tmp_path / "ws" / "jobs" / "j" / "state"
    entry = settings.task_entries["digits-train"]

    confinement = confinement_for(
        settings,
        writable=[task_dir, state_dir],
        entry=entry,
        datasets=("digits",),
        coordinator="127.0.0.1:50123",
    )

    assert (
        confinement is not None and confinement.landlock == (landlock_abi() > 0) and confinement.no_new_privs
    )
    assert confinement.read_write[:2] == (str(task_dir), str(state_dir))
    assert str(tmp_path / "data") in confinement.read_only
    assert str(tmp_path / "private") not in confinement.read_only, "a dataset the job did not name"
    assert str(entry.script) in confinement.read_only and sys.prefix in confinement.read_only
    reachable = (*confinement.read_only, *confinement.read_write)
    assert settings.tls_key is not None
    for secret in (settings.tls_key, settings.workspace, tmp_path, Path("/etc")):
        assert str(secret) not in reachable
        assert not any(secret.is_relative_to(p) for p in map(Path, reachable) if p != Path("/")), secret
    assert confinement.tcp_connect == ((50123,) if landlock_abi() >= 4 else None)
