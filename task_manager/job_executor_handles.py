"""The task manager's handles on its job executors (:mod:`task_manager.job_executors` runs them).

A :class:`JobExecutor` is one long-lived process and the channel to it, with the task it runs and
the one queued behind it; a :class:`Run` is one task handed to it, until the process says
``finished`` or dies; a :class:`JobTask` is how the task's runner (:mod:`task_manager.executors`)
sees a task run that way: like any executor process, whose end is the task's end.

The pool decides when an executor starts, takes a task or is retired; a handle keeps its own
bookkeeping: which task a ``finished`` ends, what its tasks become when its process ends, and
how long a retired one is given to go.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from task_manager.executor_processes import ExecutorProcess, ExitStatus
from task_manager.process_groups import ProcessRecord, kill_group
from task_manager.tasks import Offer
from task_manager.worker.job_channel import Finished, ForExecutor

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 3.0
KILL_WAIT_SECONDS = 10.0

# What one job executor can serve: a task with another runtime, entry or coordinator needs a new one.
# A task another of its job's executor cannot take: the datasets are in its confinement.
Signature = tuple[str, str, str, tuple[str, ...]]


def signature_of(offer: Offer) -> Signature:
    return (offer.runtime, offer.entry, offer.coordinator_endpoint, tuple(sorted(offer.datasets)))


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

    def finished(self, message: Finished, now: float) -> None:
        """The process says a task ended: the running one, if it names it; the queued one runs next."""
        run = self.running
        if run is None or run.task_dir != message.task_dir:
            return
        self.running, self.queued = self.queued, None  # it reads the queued one now
        if self.running is None:
            self.idle_since = now
            self.free.set()
        if not run.ended.done():
            run.ended.set_result(ExitStatus(exit_code=message.code))

    def end_runs(self, status: ExitStatus) -> bool:
        """End the tasks handed to a process that ended with ``status``; whether one was running.

        The queued one never began: its runner launches it anew (``unstarted``).  Every task handed
        to a job executor ends here, once, whether its process ends or is given up on.
        """
        run, self.running = self.running, None
        queued, self.queued = self.queued, None
        if queued is not None and not queued.ended.done():
            queued.ended.set_result(
                ExitStatus(note=f"its job executor ended first ({status.describe()})", unstarted=True)
            )
        if run is not None and not run.ended.done():
            run.ended.set_result(status)
            return True
        return False

    async def reap(self) -> None:
        """Wait for a retired executor to end: a grace period to stop, then SIGKILL."""
        watcher = self.tasks[0] if self.tasks else None
        try:
            if watcher is not None:
                await self._wait_end(watcher)
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            # Its end was never seen (the watcher was given up on above): its tasks end all the same.
            self.end_runs(ExitStatus(note="its job executor was killed and its end never seen"))

    async def _wait_end(self, watcher: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(watcher), STOP_GRACE_SECONDS)
            return
        except TimeoutError:
            kill_group(self.record())
        try:
            await asyncio.wait_for(asyncio.shield(watcher), KILL_WAIT_SECONDS)
        except TimeoutError:
            log.error(
                "the executor of job %s did not die within %gs of SIGKILL", self.job_id, KILL_WAIT_SECONDS
            )


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
