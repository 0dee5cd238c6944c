"""The tasks this host has accepted: one executor process each, from acceptance to cleanup.

The connection asks :meth:`Executors.consider` about each offer (the policy
decides on a snapshot of this object's state, and an accepted task takes
its slot at once, so two offers read back to back cannot both take the last
slot).  Once the answer is on the wire, :meth:`Executors.confirmed` starts
the task's runner; if the answer never left, :meth:`Executors.unconfirmed`
gives the slot back, since the selector has then told the coordinator the
task was not accepted.

A runner writes ``task.json``, launches the executor (warm or cold), records
its process group in ``executors.json``, and waits for it with the task's
timeout, ``min(offer, configured cap)``.  Then:

* exit 0: done, nothing to report (the executor's upload was the report);
* non-zero exit, a signal, a timeout (the group is SIGKILLed), a launch
  failure, or a kill because the daemon stops: ``ReportTaskStatus(TASK_FAILED)``
  to the job's coordinator, the reason holding what happened, the executor's
  own reason from ``result.json`` and the last lines of ``executor.log``;
* a ``CancelTask`` from the selector: the group is killed and nothing is
  reported (the coordinator, or the selector on its behalf, asked for it).

A killed executor's end is awaited ``KILL_WAIT_SECONDS`` at most: every
accepted task ends, once, whatever its executor does, because a task that
has not ended still holds its (job, round, kind) here and the policy refuses
every later attempt of that round as a duplicate.

Whatever the outcome, what is left of the process group is killed (a script's
stray children must not outlive its task), the record leaves
``executors.json``, and the workspace is trimmed to its quota in a thread.

With ``long_lived_executors`` (the default) the executor is the job's
long-lived one (:mod:`task_manager.job_executors`) whenever it can take the
task: everything above holds per task, except that a task that succeeds leaves
its process running for the job's next round, and the process's record in
``executors.json`` and its final group kill belong to the job executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from libs.structured_logging import log_context
from libs.tasks import task_json
from task_manager.confinement import confinement_for, limit_exceeded
from task_manager.errors import LaunchFailed
from task_manager.executor_processes import ExecutorProcess, ExitStatus
from task_manager.job_executors import JobExecutors
from task_manager.launcher import Launcher
from task_manager.policy import Accept, Decision, PolicyState, Refuse, decide
from task_manager.process_groups import PidFile, kill_group
from task_manager.reporting import CoordinatorReporter, failure_reason
from task_manager.settings import TaskManagerSettings
from task_manager.tasks import Offer, effective_timeout, task_spec
from task_manager.worker.confinement_rules import Confinement
from task_manager.worker.launch_channel import LOG_FILE
from task_manager.workspace import (
    MODEL_FILE,
    TASK_FILE,
    Workspace,
    read_log_tail,
    read_result_reason,
    task_dir_name,
)
from task_manager.workspace_trimming import WorkspaceTrimmer

log = logging.getLogger(__name__)

KILL_WAIT_SECONDS = 10.0
# A task queued in a job executor that died before it began is launched again, this many times at most.
MAX_RELAUNCHES = 2
SHUTDOWN_WAIT_SECONDS = 15.0
LOG_TAIL_LINES = 20


@dataclass
class Task:
    offer: Offer
    timeout: float
    dir_name: str
    process: ExecutorProcess | None = None
    exit_signal: int | None = None  # what ended a failed executor, if a signal did
    runner: asyncio.Task[None] | None = None
    cancel_reason: str | None = None  # asked for by the selector: killed, not reported
    stop_reason: str | None = None  # the daemon stops: killed and reported
    killed: asyncio.Event = field(default_factory=asyncio.Event)  # its executor was sent SIGKILL


class Executors:
    def __init__(
        self,
        settings: TaskManagerSettings,
        *,
        launcher: Launcher,
        reporter: CoordinatorReporter,
        workspace: Workspace,
        pid_file: PidFile,
        clock: Callable[[], float] = time.time,
        kill_wait: float = KILL_WAIT_SECONDS,
    ) -> None:
        self.settings = settings
        self.kill_wait = kill_wait
        self.launcher = launcher
        self.reporter = reporter
        self.workspace = workspace
        self.pid_file = pid_file
        self.clock = clock
        self._active: dict[str, Task] = {}
        self._trimmer = WorkspaceTrimmer(workspace, settings.workspace_quota_bytes)
        self._closed = False
        # One executor process per job kept across its rounds (None: every task gets its own process).
        self.job_executors: JobExecutors | None = None
        if settings.long_lived_executors and settings.warm_runtimes:
            self.job_executors = JobExecutors(
                launcher=launcher,
                workspace=workspace,
                pid_file=pid_file,
                idle_seconds=settings.job_executor_idle_seconds,
                max_executors=settings.max_job_executors,
                confinement=self._job_confinement,
            )

    def _job_confinement(self, offer: Offer, home: Path) -> Confinement | None:
        """A job executor's: its home, its job's state and task folders; the job's entry and datasets."""
        return confinement_for(
            self.settings,
            writable=[
                home,
                self.workspace.job_state_dir(offer.job_id),
                self.workspace.job_tasks(offer.job_id),
            ],
            entry=self.settings.task_entries[offer.entry],
            datasets=offer.datasets,
            coordinator=offer.coordinator_endpoint,
        )

    # --- what the connection calls ---------------------------------------------------------

    def running_tasks(self) -> int:
        return len(self._active)

    def policy_state(self) -> PolicyState:
        settings = self.settings
        return PolicyState(
            entries={name: entry.runtime for name, entry in settings.task_entries.items()},
            runtimes=frozenset(settings.served_runtimes),
            datasets=frozenset(settings.datasets),
            max_parallel_tasks=settings.max_parallel_tasks,
            now=self.clock(),
            active={task_id: task.offer.key for task_id, task in self._active.items()},
            can_queue=self.job_executors is not None,
        )

    def consider(self, offer: Offer) -> Decision:
        """Decide on ``offer``; an accepted one holds its slot until it ends or is unconfirmed."""
        if self._closed:
            return Refuse("the task manager is stopping")
        decision = decide(offer, self.policy_state())
        if isinstance(decision, Accept):
            timeout = effective_timeout(offer.timeout_seconds, self.settings.task_timeout_seconds)
            name = f"{task_dir_name(offer.job_id)}/{task_dir_name(offer.task_id)}"
            self._active[offer.task_id] = Task(offer, timeout, name)
            self._trimmer.protected.add(name)
        return decision

    def confirmed(self, task_id: str) -> None:
        """The acceptance reached the selector: run the task."""
        task = self._active.get(task_id)
        if task is not None and task.runner is None:
            task.runner = asyncio.create_task(self._run(task), name=f"task {task_id}")

    def unconfirmed(self, task_id: str) -> None:
        """The acceptance never left: the selector told the coordinator no, so drop the task (killed,
        not reported, if it was already started) and free its slot."""
        task = self._active.get(task_id)
        if task is None:
            return
        log.info("the acceptance of task %s was not delivered; dropping it", task_id)
        if task.runner is None:
            self._forget(task)
        else:
            task.cancel_reason = "its acceptance was not delivered"
            self._kill(task)

    def cancel(self, job_id: str, task_id: str, reason: str) -> int:
        """Kill the job's task ``task_id`` (every task of the job if empty); how many were cancelled."""
        matched = [
            t
            for t in self._active.values()
            if t.offer.job_id == job_id and (not task_id or t.offer.task_id == task_id)
        ]
        for task in matched:
            task.cancel_reason = reason or "cancelled"
            log.info("cancelling task %s: %s", task.offer.task_id, task.cancel_reason)
            if task.runner is None:
                self._forget(task)
            else:
                self._kill(task)
        if not task_id and self.job_executors is not None:
            # A cancel of the whole job (it ended, was stopped, or closed a round without us): its
            # executor on this host goes too; a later task of the job would start a fresh one.
            self.job_executors.retire(job_id, reason or "the job was cancelled")
        return len(matched)

    async def shutdown(self, reason: str = "the task manager on this client was stopped") -> None:
        """Refuse new offers, kill every executor, let the runners report, stop cleaning."""
        self._closed = True
        self._trimmer.closing = True
        runners = []
        for task in list(self._active.values()):
            if task.runner is None:
                self._forget(task)
                continue
            task.stop_reason = reason
            self._kill(task)
            runners.append(task.runner)
        if runners:
            _, late = await asyncio.wait(runners, timeout=SHUTDOWN_WAIT_SECONDS)
            for runner in late:
                runner.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self.job_executors is not None:
            await self.job_executors.shutdown()
        await self._trimmer.close()

    # --- one task ----------------------------------------------------------------------------

    async def _run(self, task: Task) -> None:
        offer = task.offer
        with log_context(job=offer.job_id, round=offer.round, task=offer.task_id, attempt=offer.attempt):
            try:
                headline = await self._execute(task)
                await self._conclude(task, headline)
            except Exception:
                log.exception("running task %s failed", offer.task_id)
            finally:
                self._release(task)

    async def _execute(self, task: Task) -> str | None:
        """Run the executor; None when it succeeded, else the headline of why it did not."""
        offer = task.offer
        if task.cancel_reason or task.stop_reason:
            return task.stop_reason or f"cancelled before it started: {task.cancel_reason}"
        try:
            task_dir = self.workspace.create_task_dir(offer.task_id, offer.job_id)
            if offer.model:  # the model came with the offer: the executor reads it instead of downloading
                (task_dir / MODEL_FILE).write_bytes(offer.model)
            spec = task_spec(
                offer,
                client_id=self.settings.client_id,
                entry=self.settings.task_entries[offer.entry],
                datasets=self.settings.datasets,
                timeout_seconds=task.timeout,
                state_dir=self.workspace.job_state_dir(offer.job_id),
                model_file=MODEL_FILE if offer.model else None,
            )
            (task_dir / TASK_FILE).write_text(json.dumps(task_json(spec), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            return f"the task manager could not prepare the task folder: {exc}"
        try:
            async with asyncio.timeout(task.timeout):
                task.process = await self._launch(offer, task_dir)
                if task.process.per_task:
                    self.pid_file.add(task.process.record(offer.task_id))
                log.info(
                    "launched the executor of task %s (pid %d, %s, timeout %gs)",
                    offer.task_id,
                    task.process.pid,
                    task.process.how,
                    task.timeout,
                )
                if task.cancel_reason or task.stop_reason:
                    self._kill(task)
                status = await self._wait(task)
                for _ in range(MAX_RELAUNCHES):
                    if not status.unstarted or task.cancel_reason or task.stop_reason:
                        break
                    log.info("task %s never began (%s); launching it again", offer.task_id, status.note)
                    task.process = await self._launch(offer, task_dir)
                    status = await self._wait(task)
        except LaunchFailed as exc:
            return f"the task manager could not start an executor: {exc.message}"
        except TimeoutError:
            self._kill(task)
            await self._wait_killed(task)
            return f"the executor ran past its timeout of {task.timeout:g}s and was killed"
        if status.succeeded:
            return None
        if task.stop_reason:
            return f"{task.stop_reason}; the executor was killed"
        task.exit_signal = status.signal
        return f"the executor failed ({status.describe()})"

    async def _wait(self, task: Task) -> ExitStatus:
        """The executor's end; once it is killed, no longer than ``kill_wait`` for it (see the docstring)."""
        assert task.process is not None
        ended = asyncio.ensure_future(task.process.wait())
        killed = asyncio.ensure_future(task.killed.wait())
        try:
            await asyncio.wait((ended, killed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            killed.cancel()
            if not ended.done():
                ended.cancel()
            await asyncio.gather(ended, killed, return_exceptions=True)
        if not ended.cancelled():
            return ended.result()
        status = await self._wait_killed(task)
        return status or ExitStatus(note=f"killed; its end was not seen within {self.kill_wait:g}s")

    async def _wait_killed(self, task: Task) -> ExitStatus | None:
        if task.process is None:
            return None
        try:
            return await asyncio.wait_for(task.process.wait(), self.kill_wait)
        except TimeoutError:
            log.error(
                "the executor of task %s (pid %d) did not die within %gs of SIGKILL",
                task.offer.task_id,
                task.process.pid,
                self.kill_wait,
            )
            return None

    async def _conclude(self, task: Task, headline: str | None) -> None:
        offer = task.offer
        if headline is None:
            log.info("task %s succeeded", offer.task_id)
            return
        if task.cancel_reason and not task.stop_reason:
            log.info("task %s was cancelled: %s", offer.task_id, task.cancel_reason)
            return
        task_dir = self.workspace.tasks / task.dir_name
        tail = await asyncio.to_thread(read_log_tail, task_dir / LOG_FILE, LOG_TAIL_LINES)
        result_reason = read_result_reason(task_dir)
        exceeded = limit_exceeded(self.settings.executor_limits, task.exit_signal, f"{result_reason}\n{tail}")
        if exceeded:
            headline = f"{exceeded}: {headline}"
        reason = failure_reason(headline, result_reason, tail)
        log.warning("task %s failed: %s", offer.task_id, headline)
        await self.reporter.report_failed(offer, reason, attempts=1 if task.stop_reason else None)

    def _kill(self, task: Task) -> None:
        if task.process is not None:
            kill_group(task.process.record(task.offer.task_id))
            task.killed.set()

    async def _launch(self, offer: Offer, task_dir: Path) -> ExecutorProcess:
        """The job's long-lived executor if it can take the task, else a process for this task alone."""
        if self.job_executors is not None:
            process = await self.job_executors.run(offer, task_dir)
            if process is not None:
                return process
        confine = confinement_for(
            self.settings,
            writable=[task_dir, self.workspace.job_state_dir(offer.job_id)],
            entry=self.settings.task_entries[offer.entry],
            datasets=offer.datasets,
            coordinator=offer.coordinator_endpoint,
        )
        return await self.launcher.launch(offer.runtime, task_dir, confine)

    def _release(self, task: Task) -> None:
        if task.offer.model:  # read by now; the folder is kept for its log and result, not the model
            with contextlib.suppress(OSError):
                (self.workspace.tasks / task.dir_name / MODEL_FILE).unlink()
        if task.process is not None and task.process.per_task:
            kill_group(task.process.record(task.offer.task_id))  # what the script left running
            self.pid_file.remove(task.offer.task_id)
        self._forget(task)
        self.schedule_cleanup()

    def _forget(self, task: Task) -> None:
        if self._active.get(task.offer.task_id) is task:
            del self._active[task.offer.task_id]
            self._trimmer.protected.discard(task.dir_name)

    # --- workspace ---------------------------------------------------------------------------

    def schedule_cleanup(self) -> None:
        """Trim the workspace to its quota in a thread (task_manager.workspace_trimming)."""
        self._trimmer.schedule()

    def task_dir(self, task_id: str) -> Path:
        """The folder of ``task_id`` (an accepted task's, even before it is made)."""
        task = self._active.get(task_id)
        if task is not None:
            return self.workspace.task_dir(task_id, task.offer.job_id)
        found = self.workspace.find_task_dir(task_id)
        return found if found is not None else self.workspace.tasks / task_dir_name(task_id)
