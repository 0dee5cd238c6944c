"""What the task manager holds on a running executor process: its pid, its start time and its end.

An :class:`ExecutorProcess` is what a task's runner (:mod:`task_manager.executors`) waits on,
however the process was started: forked by a warm worker (:class:`WarmExecutor`, whose end is
the worker's ``exited`` answer), started cold (:class:`ColdExecutor`, a child of the daemon), or
a job executor running the task among its job's others
(:class:`task_manager.job_executor_handles.JobTask`).  Each ends with an :class:`ExitStatus`.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass

from task_manager.process_groups import ProcessRecord, start_time


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int | None = None
    signal: int | None = None
    note: str = ""
    # The task never began: it was queued in a job executor that ended first, and may be launched again.
    unstarted: bool = False

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by signal {name}"
        if self.exit_code is not None:
            return f"exit code {self.exit_code}"
        return self.note or "ended for an unknown reason"


class ExecutorProcess:
    """One running executor, warm or cold: its group leader's pid and start time, and its end."""

    how = ""
    # True: the process lives and dies with its task, so the task's runner records it in
    # executors.json and kills what is left of its group at the end.  A task run by a job
    # executor (task_manager.job_executors) leaves that to the job executor's pool.
    per_task = True

    def __init__(self, pid: int, started: float) -> None:
        self.pid = pid
        self.start_time = started

    async def wait(self) -> ExitStatus:
        raise NotImplementedError

    def record(self, task_id: str) -> ProcessRecord:
        return ProcessRecord(task_id=task_id, pid=self.pid, start_time=self.start_time)


class WarmExecutor(ExecutorProcess):
    """A child of a warm worker: its end arrives as the worker's ``exited`` line."""

    how = "warm"

    def __init__(self, pid: int, started: float, ended: asyncio.Future[ExitStatus]) -> None:
        super().__init__(pid, started)
        self._ended = ended

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._ended)


class ColdExecutor(ExecutorProcess):
    """A child of the task manager itself."""

    how = "cold"

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        super().__init__(process.pid, start_time(process.pid) or 0.0)
        self._process = process

    async def wait(self) -> ExitStatus:
        code = await self._process.wait()
        return ExitStatus(signal=-code) if code < 0 else ExitStatus(exit_code=code)
