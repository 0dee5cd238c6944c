"""The warm worker: one forked process per task, its end reported, nothing left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from task_manager.executor_processes import ExitStatus
from task_manager.launcher import Launcher, WarmWorker, launch_cold
from tests.unit.task_manager.fakes import ENTRIES, eventually

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


def task_dir(root: Path, entry: str) -> Path:
    path = root / entry
    path.mkdir()
    (path / "entry").write_text(entry)
    return path


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[WarmWorker]:
    warm = WarmWorker("pytorch", preload=[], entry=f"{ENTRIES}:dispatch", log_path=tmp_path / "worker.log")
    await warm.start()
    try:
        yield warm
    finally:
        await warm.stop()


async def test_each_task_runs_in_its_own_forked_process_and_its_end_is_reported(
    worker: WarmWorker, tmp_path: Path
) -> None:
    entries = ["succeed", "fail", "raise_error", "crash_with_signal"]
    launched = await asyncio.gather(*(worker.launch(task_dir(tmp_path, e)) for e in entries))
    statuses = dict(zip(entries, await asyncio.gather(*(p.wait() for p in launched)), strict=True))

    assert statuses == {
        "succeed": ExitStatus(exit_code=0),
        "fail": ExitStatus(exit_code=3),
        "raise_error": ExitStatus(exit_code=1),
        "crash_with_signal": ExitStatus(signal=signal.SIGSEGV),
    }
    assert statuses["crash_with_signal"].describe() == "killed by signal SIGSEGV"
    assert len({p.pid for p in launched} | {worker.pid}) == len(entries) + 1
    facts = json.loads((tmp_path / "succeed" / "facts.json").read_text())
    assert facts["sid"] == facts["pgid"] == facts["pid"] == launched[0].pid  # its own session and group
    assert facts["pdeathsig"] == signal.SIGKILL
    assert facts["cwd"] == str(tmp_path / "succeed")
    assert "hello from the executor" in (tmp_path / "succeed" / "executor.log").read_text()
    assert "bad learning rate" in (tmp_path / "fail" / "executor.log").read_text()
    assert "RuntimeError: an executor bug" in (tmp_path / "raise_error" / "executor.log").read_text()


async def test_stopping_the_worker_kills_its_running_children(worker: WarmWorker, tmp_path: Path) -> None:
    sleeper = task_dir(tmp_path, "sleep_forever")
    process = await worker.launch(sleeper)
    await eventually(lambda: (sleeper / "entered").exists())
    await worker.stop()
    assert await process.wait() == ExitStatus(signal=signal.SIGKILL)
    assert gone(process.pid)


async def test_two_processes_launched_for_one_folder_each_get_their_own_end(
    worker: WarmWorker, tmp_path: Path
) -> None:
    """A job's executor being killed while the job's next one starts: both are forked for the job's folder."""
    folder = task_dir(tmp_path, "sleep_forever")
    old = await worker.launch(folder)
    new = await worker.launch(folder)
    new_end = asyncio.ensure_future(new.wait())
    os.kill(old.pid, signal.SIGKILL)
    assert await asyncio.wait_for(old.wait(), 10.0) == ExitStatus(signal=signal.SIGKILL)
    assert not new_end.done() and not gone(new.pid), "the old one's end is not the new one's"
    os.kill(new.pid, signal.SIGKILL)
    assert await new_end == ExitStatus(signal=signal.SIGKILL)


async def test_a_worker_that_dies_takes_its_children_with_it_and_is_restarted(tmp_path: Path) -> None:
    launcher = Launcher(
        entry=f"{ENTRIES}:dispatch",
        runtimes=["pytorch"],
        preload={},
        warm=True,
        log_path=lambda runtime: tmp_path / f"{runtime}.log",
        restart_delay=0.1,
    )
    await launcher.start()
    try:
        first = launcher.workers["pytorch"]
        sleeper = task_dir(tmp_path, "sleep_forever")
        process = await launcher.launch("pytorch", sleeper)
        assert process.how == "warm"
        await eventually(lambda: (sleeper / "entered").exists())
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        status = await process.wait()
        assert "warm worker exited" in status.describe()
        await eventually(lambda: gone(process.pid), within=5)  # PR_SET_PDEATHSIG
        await eventually(
            lambda: launcher.workers["pytorch"] is not first and launcher.workers["pytorch"].alive
        )
        again = await launcher.launch("pytorch", task_dir(tmp_path, "fail"))
        assert (again.how, await again.wait()) == ("warm", ExitStatus(exit_code=3))
    finally:
        await launcher.stop()


async def test_a_worker_that_cannot_import_its_preload_is_given_up_and_tasks_run_cold(tmp_path: Path) -> None:
    launcher = Launcher(
        entry=f"{ENTRIES}:dispatch",
        runtimes=["pytorch"],
        preload={"pytorch": ["no_such_module"]},
        warm=True,
        log_path=lambda runtime: tmp_path / f"{runtime}.log",
        restart_delay=0.05,
    )
    await launcher.start()
    try:
        await eventually(lambda: "pytorch" in launcher.given_up)
        assert "No module named 'no_such_module'" in (tmp_path / "pytorch.log").read_text()
        process = await launcher.launch("pytorch", task_dir(tmp_path, "succeed"))
        assert (process.how, await process.wait()) == ("cold", ExitStatus(exit_code=0))
    finally:
        await launcher.stop()


async def test_the_cold_path_runs_the_configured_entry_in_a_fresh_process(tmp_path: Path) -> None:
    folder = tmp_path / "cold"
    folder.mkdir()
    process = await launch_cold(f"{ENTRIES}:succeed", folder)
    assert await process.wait() == ExitStatus(exit_code=0)
    facts = json.loads((folder / "facts.json").read_text())
    assert facts["sid"] == facts["pid"] == process.pid
    assert facts["pdeathsig"] == signal.SIGKILL
    assert "hello from the executor" in (folder / "executor.log").read_text()


@pytest.mark.parametrize(("increment", "expected"), [("7", 7), ("", 0), ("0", 0), ("x", 0), ("50", 19)])
def test_an_executor_in_its_own_session_lowers_its_priority_as_a_process_and_as_an_autogroup(
    increment: str, expected: int
) -> None:
    probe = (
        "import os\n"
        "from task_manager.worker.child import lower_priority\n"
        "os.setsid()\n"
        f"lower_priority({increment!r})\n"
        "print(os.nice(0))\n"
        "print(open('/proc/self/autogroup').read() if os.path.exists('/proc/self/autogroup') else '')\n"
    )
    nice, autogroup = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()[:2]
    assert int(nice) == expected
    if autogroup:
        assert autogroup.endswith(f"nice {expected}"), autogroup
