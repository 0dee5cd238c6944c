"""Job executors: one long-lived executor process per job on this host, fed a task each round.

Why: a federated job sends this host a task every round, often every few
hundred milliseconds.  Forking an executor per task costs the fork, a new
gRPC channel, the user's imports and data loading, every round.  So for each
job the task manager keeps one executor alive across the job's rounds: it is
forked once from the runtime's warm worker (framework already imported),
connects back over a local Unix socket, and then runs each task it is handed
(:mod:`task_manager.worker.job_executor_loop` is its side).

Process model.  One process per job, never shared between jobs (a job's code,
data and memory stay in its own process).  A task still has its own folder,
``task.json``, ``executor.log`` and exit code; only the process is reused.
:meth:`JobExecutors.run` hands a task to the job's executor and returns a
:class:`JobTask`, which the task's runner in :mod:`task_manager.executors`
waits on like on any executor: the task's timeout, its kill, its failure
report all stay per task.  Killing a task kills its job executor (the only
way to stop user code), and the job's next task gets a new one.

The channel.  The task manager listens on one abstract-namespace Unix socket
(no file, no path-length limit; Linux only, like the rest of the daemon).  A
job executor is launched with the socket's address and a random token, and
its first line presents the token, which is how the task manager knows which
process connected (a token is good for one connection).  Then the lines of
:mod:`task_manager.worker.job_channel`: ``run`` down, ``finished`` up,
``stop`` down to end it.  The global model does not travel here:
the executor downloads it straight from the coordinator into its own memory
(once per round, decoded without a copy) and uploads its update straight
back, over a gRPC channel it keeps open across rounds.

When a job executor is busy (another task of the same job still runs: the
previous round's, about to say ``finished``, or a straggler around cancels
and retries), the task waits for it up to ``BUSY_WAIT_SECONDS``; when it stays
busy, or no warm worker is up, the task runs in a one-task executor as
before: :meth:`JobExecutors.run` returns None.  A task offered ahead
(``model_follows``, coordinator.lookahead) was accepted to queue behind the
job's running task, and it does, in the executor itself: its ``run`` is sent
at once, while the running task still runs, and the executor reads it the
moment it has said ``finished`` (no round trip through the task manager
between the two, which is on the way of the round's last client).  One task
queues so at a time; if the process dies first (the running task crashed or
was killed), the queued task, which never began, is launched again in a new
executor (``ExitStatus.unstarted``).  Otherwise
such a task waits for the job's executor as long as its timeout allows, and
never takes a process of its own for that.

Teardown.  A job executor ends when:

* the job's coordinator cancels the job on this host (``CancelTask`` without a
  task id: the job ended, was stopped, or gave this client's work away):
  :meth:`JobExecutors.retire`;
* a task it runs is killed (timeout, cancel of that task, daemon stopping);
* it crashes (the task it was running fails with the exit status);
* a task of the job arrives for another coordinator endpoint, runtime or
  entry (a restarted coordinator): the old one is retired, a new one starts;
* it was idle for ``job_executor_idle_seconds`` (a job that ended without
  telling this host, e.g. a coordinator that was killed);
* ``max_job_executors`` are running and another job needs one: the one idle
  longest makes room;
* the task manager stops (:meth:`JobExecutors.shutdown`).

Each live job executor is listed in ``executors.json`` (as
``job-executor:<job id>``) so a crashed daemon's successor kills it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from task_manager.errors import LaunchFailed
from task_manager.executor_processes import ExecutorProcess
from task_manager.job_executor_handles import JobExecutor, JobTask, Run, signature_of
from task_manager.launcher import Launcher
from task_manager.process_groups import PidFile, kill_group
from task_manager.tasks import Offer
from task_manager.worker.confinement_rules import Confinement
from task_manager.worker.job_channel import (
    ChannelAddress,
    Finished,
    Hello,
    MalformedMessage,
    RunTask,
    Stop,
    decode_for_manager,
)
from task_manager.workspace import Workspace, task_dir_name

log = logging.getLogger(__name__)

HELLO_TIMEOUT_SECONDS = 30.0
BUSY_WAIT_SECONDS = 5.0


class JobExecutors:
    """This host's job executors, by job id (see the module docstring)."""

    def __init__(
        self,
        *,
        launcher: Launcher,
        workspace: Workspace,
        pid_file: PidFile,
        idle_seconds: float,
        max_executors: int,
        confinement: Callable[[Offer, Path], Confinement | None] = lambda offer, home: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.confinement = confinement  # what a job's executor (its home given) is confined to
        self.launcher = launcher
        self.workspace = workspace
        self.pid_file = pid_file
        self.idle_seconds = idle_seconds
        self.max_executors = max_executors
        self.clock = clock
        self.address = f"\0nsfl-tm-{os.getpid()}-{secrets.token_hex(8)}"
        self._executors: dict[str, JobExecutor] = {}
        self._by_token: dict[str, JobExecutor] = {}
        self._server: asyncio.Server | None = None
        self._listen_lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._watchers: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.StreamWriter] = set()  # every accepted channel, closed by shutdown
        self._closed = False

    # --- what Executors calls ----------------------------------------------------------------

    def executor_pid(self, job_id: str) -> int | None:
        executor = self._executors.get(job_id)
        return None if executor is None or executor.process is None else executor.process.pid

    async def run(self, offer: Offer, task_dir: Path) -> ExecutorProcess | None:
        """Hand the task to its job's executor (started if needed); None if it must run on its own."""
        if self._closed:
            return None
        if offer.model_follows and (queued := self._queue(offer, task_dir)) is not None:
            return queued
        executor = await self._free_executor(offer, math.inf if offer.model_follows else BUSY_WAIT_SECONDS)
        if executor is None:
            return None
        run = Run(str(task_dir), asyncio.get_running_loop().create_future())
        if not executor.send(RunTask(run.task_dir)):
            self.retire(offer.job_id, "its channel closed", kill=True)
            return None
        executor.running = run
        executor.free.clear()
        return JobTask(executor, run)

    def _queue(self, offer: Offer, task_dir: Path) -> JobTask | None:
        """Send a task offered ahead to its job's executor while that runs the job's current task."""
        executor = self._executors.get(offer.job_id)
        if (
            executor is None
            or executor.gone
            or executor.starting
            or executor.running is None
            or executor.queued is not None
            or executor.signature != signature_of(offer)
        ):
            return None
        run = Run(str(task_dir), asyncio.get_running_loop().create_future())
        if not executor.send(RunTask(run.task_dir)):
            return None
        executor.queued = run
        return JobTask(executor, run)

    async def _free_executor(self, offer: Offer, busy_wait: float) -> JobExecutor | None:
        """The job's executor once it is free (started if there is none); None if it stays busy.

        Why wait: the previous round's task has usually uploaded already, and its executor is only
        about to say ``finished`` when the next round's offer arrives (on a busy host the coordinator
        can be that quick); a process of its own for the new task would pay everything a long-lived
        executor saves.  A task that is really still running (a straggler) keeps it busy past
        ``busy_wait``, or is killed by the cancel that closed its round.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + busy_wait
        while True:
            executor = self._executors.get(offer.job_id)
            if executor is not None and (executor.gone or executor.signature != signature_of(offer)):
                self.retire(offer.job_id, "the job's tasks now come from another coordinator or entry")
                executor = None
            if executor is None:
                executor = await self._start(offer)
                if executor is None:
                    return None
            if not executor.busy:
                return executor
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.info(
                    "the executor of job %s is still busy; task %s runs in an executor of its own",
                    offer.job_id,
                    offer.task_id,
                )
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(executor.free.wait(), None if math.isinf(remaining) else remaining)

    def retire(self, job_id: str, reason: str, *, kill: bool = False) -> bool:
        """End the job's executor: asked to stop when idle, killed when busy or ``kill``."""
        executor = self._executors.pop(job_id, None)
        if executor is None:
            return False
        self._by_token.pop(executor.token, None)
        executor.gone = True  # a _start still waiting for it sees this and gives it up
        executor.free.set()  # and so does a task waiting for it to be free
        log.info("stopping the executor of job %s: %s", job_id, reason)
        if executor.process is None:
            return True
        if kill or executor.busy or not executor.send(Stop()):
            kill_group(executor.record())
        task = asyncio.create_task(executor.reap())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return True

    async def shutdown(self) -> None:
        """Kill every job executor and wait for them; stop listening."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for job_id in list(self._executors):
            self.retire(job_id, "the task manager is stopping", kill=True)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._watchers:  # executors that ended on their own, still closing their channel
            await asyncio.gather(*self._watchers, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in self._connections:
            writer.close()
        for writer in self._connections:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        self._connections.clear()
        if self._sweeper is not None:
            await asyncio.gather(self._sweeper, return_exceptions=True)

    # --- starting ------------------------------------------------------------------------------

    async def _listen(self) -> None:
        async with self._listen_lock:  # two jobs' first tasks may arrive together
            if self._server is None:
                self._server = await asyncio.start_unix_server(self._on_connection, path=self.address)
                self._sweeper = asyncio.create_task(self._sweep_idle(), name="job-executor-sweeper")

    async def _start(self, offer: Offer) -> JobExecutor | None:
        await self._listen()
        self._make_room()
        if len(self._executors) >= self.max_executors:
            return None  # every job executor is busy: this task runs on its own
        home = self.workspace.root / "jobs" / task_dir_name(offer.job_id) / "executor"
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        executor = JobExecutor(
            job_id=offer.job_id,
            signature=signature_of(offer),
            home=home,
            token=secrets.token_urlsafe(32),
            connected=asyncio.get_running_loop().create_future(),
        )
        self._executors[offer.job_id] = executor
        self._by_token[executor.token] = executor
        try:
            executor.process = await self.launcher.launch_job(
                offer.runtime,
                home,
                ChannelAddress(self.address, executor.token),
                self.confinement(offer, home),
            )
            self.pid_file.add(executor.record())
            watcher = asyncio.create_task(self._watch(executor))
            executor.tasks.append(watcher)
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
            reader, writer = await asyncio.wait_for(asyncio.shield(executor.connected), HELLO_TIMEOUT_SECONDS)
        except (LaunchFailed, TimeoutError, ConnectionError) as exc:
            log.warning("could not start an executor for job %s: %s", offer.job_id, exc)
            self._abandon(executor)
            return None
        except BaseException:
            self._abandon(executor)
            raise
        if executor.gone:  # retired (a cancel) while it was starting
            self._abandon(executor)
            return None
        executor.starting = False
        executor.idle_since = self.clock()
        executor.free.set()
        executor.tasks.append(asyncio.create_task(self._read(executor, reader)))
        log.info(
            "started the executor of job %s (pid %d); it serves the job's tasks from now on",
            offer.job_id,
            executor.process.pid,
        )
        return executor

    def _abandon(self, executor: JobExecutor) -> None:
        if self._executors.get(executor.job_id) is executor:
            del self._executors[executor.job_id]
        self._by_token.pop(executor.token, None)
        executor.gone = True
        executor.free.set()
        if executor.process is not None:
            kill_group(executor.record())
            task = asyncio.create_task(executor.reap())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def _make_room(self) -> None:
        if len(self._executors) < self.max_executors:
            return
        idle = [e for e in self._executors.values() if not e.busy]
        if idle:
            oldest = min(idle, key=lambda e: e.idle_since)
            self.retire(oldest.job_id, f"making room: {self.max_executors} job executors are running")

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            hello = decode_for_manager(await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT_SECONDS))
        except (TimeoutError, ValueError, ConnectionError, MalformedMessage):
            hello = None
        executor = self._by_token.pop(hello.token, None) if isinstance(hello, Hello) else None
        if executor is None or executor.connected.done():
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._connections.discard(writer)
            return
        executor.writer = writer  # closed by _watch when the process ends, whoever waited for it
        executor.connected.set_result((reader, writer))

    # --- running -------------------------------------------------------------------------------

    async def _read(self, executor: JobExecutor, reader: asyncio.StreamReader) -> None:
        """Take ``finished`` answers until the executor's end of the channel closes."""
        with contextlib.suppress(ConnectionError, ValueError):
            while line := await reader.readline():
                try:
                    finished = decode_for_manager(line)
                except MalformedMessage as exc:
                    log.warning(
                        "the executor of job %s said something unexpected; ignored: %s", executor.job_id, exc
                    )
                    continue
                if not isinstance(finished, Finished):
                    log.warning("the executor of job %s said hello twice; ignored", executor.job_id)
                    continue
                executor.finished(finished, self.clock())

    async def _watch(self, executor: JobExecutor) -> None:
        """The process ended: whatever it was running ends with its status; it leaves the pool."""
        assert executor.process is not None
        status = await executor.process.wait()
        executor.gone = True
        executor.free.set()  # whoever waits for it sees it gone and starts another
        if not executor.connected.done():
            executor.connected.set_exception(ConnectionError(f"the job executor ended ({status.describe()})"))
        if executor.end_runs(status):
            log.warning(
                "the executor of job %s ended while running a task (%s)", executor.job_id, status.describe()
            )
        if self._executors.get(executor.job_id) is executor:
            del self._executors[executor.job_id]
        self._by_token.pop(executor.token, None)
        kill_group(executor.record())  # what the user's code left running in its group
        self.pid_file.discard(executor.record())  # the job's next executor, if any, keeps its own
        if executor.writer is not None:
            executor.writer.close()
            with contextlib.suppress(ConnectionError):
                await executor.writer.wait_closed()
            self._connections.discard(executor.writer)

    async def _sweep_idle(self) -> None:
        interval = min(30.0, max(0.05, self.idle_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            for executor in list(self._executors.values()):
                if not executor.busy and now - executor.idle_since >= self.idle_seconds:
                    self.retire(executor.job_id, f"no task for {self.idle_seconds:g}s")
