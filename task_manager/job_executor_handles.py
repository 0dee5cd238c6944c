"""The task manager's handles on its job executors (:mod:`task_manager.job_executors` runs them).

A :class:`JobExecutor` is one long-lived process and the channel to it, with the task it runs and
the one queued behind it; a :class:`Run` is one task handed to it, until the process says
``finished`` or dies; a :class:`JobTask` is how the task's runner (:mod:`task_manager.executors`)
sees a task run that way: like any executor process, whose end is the task's end.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from task_manager.launcher import ExecutorProcess, ExitStatus
from task_manager.process_groups import ProcessRecord
from task_manager.tasks import Offer
from task_manager.worker.job_channel import ForExecutor

# What one job executor can serve: a task with another runtime, entry or coordinator needs a new one.
Signature = tuple[str, str, str]


def signature_of(offer: Offer) -> Signature:
    return (offer.runtime, offer.entry, offer.coordinator_endpoint)


def record_id(job_id: str) -> str:
    return f"job-executor:{job_id}"


@dataclass
class Run:
    """One task handed to a job executor, until it says ``finished`` or dies."""

    task_dir: str
    ended: asyncio.Future[ExitStatus]


@dataclass
class JobExecutor:
    job_id: str
    signature: Signature
    home: Path
    token: str
    connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    process: ExecutorProcess | None = None
    writer: asyncio.StreamWriter | None = None
    running: Run | None = None
    queued: Run | None = None  # sent while ``running`` runs: the executor reads it next
    starting: bool = True
    gone: bool = False
    idle_since: float = 0.0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    free: asyncio.Event = field(default_factory=asyncio.Event)  # set while it can take a task (or is gone)

    @property
    def busy(self) -> bool:
        return self.starting or self.running is not None

    def record(self) -> ProcessRecord:
        assert self.process is not None
        return self.process.record(record_id(self.job_id))

    def send(self, message: ForExecutor) -> bool:
        if self.writer is None or self.writer.is_closing():
            return False
        self.writer.write(message.to_line())
        return True


class JobTask(ExecutorProcess):
    """A task running in a job executor, as the task's runner sees it (see the module docstring)."""

    how = "long-lived"
    per_task = False

    def __init__(self, executor: JobExecutor, run: Run) -> None:
        assert executor.process is not None
        super().__init__(executor.process.pid, executor.process.start_time)
        self._run = run

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._run.ended)
