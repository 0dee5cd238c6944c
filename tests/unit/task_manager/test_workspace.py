"""Task folders, the workspace lock, cleanup under the quota, and safe kills of process groups."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from task_manager.errors import WorkspaceInUse
from task_manager.process_groups import PidFile, ProcessRecord, kill_group, start_time, sweep_orphans
from task_manager.workspace import DirUsage, Workspace, plan_cleanup, read_log_tail, task_dir_name

MB = 1024 * 1024


def test_task_folder_names_are_safe_and_distinct() -> None:
    name = task_dir_name("ns/job:3:train:c1:0")
    assert name.startswith("ns_job_3_train_c1_0-")
    assert "/" not in task_dir_name("../../etc/passwd:1") and not task_dir_name("../x").startswith(".")
    assert task_dir_name("a/b:1") != task_dir_name("a_b:1")


def test_cleanup_plans_the_oldest_finished_folders_until_under_quota() -> None:
    dirs = [
        DirUsage("new", 4 * MB, 300.0),
        DirUsage("old", 4 * MB, 100.0),
        DirUsage("running", 4 * MB, 50.0),
        DirUsage("mid", 4 * MB, 200.0),
    ]
    assert plan_cleanup(dirs, 9 * MB, lambda name: name == "running") == ["old", "mid"]
    assert plan_cleanup(dirs, 16 * MB, lambda name: False) == []
    assert plan_cleanup(dirs, 0, lambda name: True) == []


def _fill(path: Path, megabytes: int, age: float) -> None:
    path.mkdir(parents=True)
    (path / "blob").write_bytes(b"\0" * megabytes * MB)
    stamp = time.time() - age
    for item in (path / "blob", path):
        os.utime(item, (stamp, stamp))


def test_cleanup_deletes_oldest_finished_task_folders_and_never_a_running_one(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    workspace.open()
    try:
        _fill(workspace.tasks / "job-a" / "oldest-running", 2, age=400)
        _fill(workspace.tasks / "job-b" / "old", 2, age=300)
        _fill(workspace.tasks / "job-a" / "middle", 2, age=200)
        _fill(workspace.tasks / "job-a" / "newest", 2, age=100)
        deleted = workspace.cleanup(5 * MB, lambda name: name == "job-a/oldest-running")
        assert deleted == ["job-b/old", "job-a/middle"]
        assert sorted(p.name for p in (workspace.tasks / "job-a").iterdir()) == ["newest", "oldest-running"]
        assert not (workspace.tasks / "job-b").exists(), "a job's folder goes with its last task's"
    finally:
        workspace.close()


def test_a_second_task_manager_cannot_take_a_workspace_in_use(tmp_path: Path) -> None:
    first, second = Workspace(tmp_path / "ws"), Workspace(tmp_path / "ws")
    first.open()
    try:
        with pytest.raises(WorkspaceInUse, match=f"pid {os.getpid()}"):
            second.open()
    finally:
        first.close()
    second.open()
    second.close()


def test_the_log_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "executor.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert read_log_tail(log, lines=3) == "line 997\nline 998\nline 999"
    assert read_log_tail(tmp_path / "missing.log") == ""


def test_a_group_is_killed_only_while_its_leader_has_the_recorded_start_time(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        started = start_time(sleeper.pid)
        assert started is not None
        recycled = ProcessRecord("t", sleeper.pid, started - 100.0)  # what a recycled pid looks like
        assert kill_group(recycled) == 0
        assert sleeper.poll() is None
        pid_file = PidFile(tmp_path / "executors.json")
        pid_file.add(ProcessRecord("t", sleeper.pid, started))
        assert sweep_orphans(PidFile(pid_file.path)) == 1
        assert sleeper.wait(timeout=5) == -9
        assert PidFile(pid_file.path).read() == []
    finally:
        sleeper.kill()
        sleeper.wait()
