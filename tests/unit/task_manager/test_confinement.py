"""An executor's confinement: what it is given is built from the host's config and the task's facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from task_manager.confinement import executor_environment
from task_manager.launcher import WarmWorker, launch_cold
from tests.unit.task_manager.fakes import ENTRIES

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
