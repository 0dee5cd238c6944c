"""Starting executor processes: from a warm worker per runtime, or cold as a fallback.

:class:`WarmWorker` is the task manager's side of one
:mod:`task_manager.worker.warm_worker` process: it starts it, writes launch
requests to its stdin and turns the lines it answers into futures (the pid
once forked, the exit status once the child ends); both ends' messages are
:mod:`task_manager.worker.launch_channel`'s.  :class:`Launcher` keeps one
worker per served runtime, restarts a worker that dies (once it had been
ready; one that keeps dying while importing is given up and logged once),
and falls back to a cold process when no worker can take the launch: the
same child code run by ``python -m task_manager.worker.warm_worker --once`` so the
cold path honours the configured ``executor_entry`` too.

Why every process is spawned from the event loop's thread: ``PR_SET_PDEATHSIG``
fires when the *thread* that forked the child exits, so a worker spawned
from a short-lived helper thread would be killed when that thread ends.

A launch cancelled while waiting for the fork (the task's timeout struck
while the worker was still importing) is remembered: the child it later
reports is killed at once, so no executor runs unaccounted for.

Why each launch has a number of its own, echoed in the worker's answers: one
folder can have two processes at once.  A job executor is forked for its
job's folder, and when the job is stopped mid-round its executor is killed
while the job's next task may already be starting the next one; had the
answers been matched by folder, the old process's end would be taken for the
new one's, and the old one's task would wait for an end that never comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from task_manager.confinement import executor_environment
from task_manager.errors import LaunchFailed
from task_manager.executor_processes import ColdExecutor, ExecutorProcess, ExitStatus, WarmExecutor
from task_manager.process_groups import ProcessRecord, kill_group, start_time
from task_manager.worker.confinement_rules import Confinement
from task_manager.worker.job_channel import ChannelAddress
from task_manager.worker.launch_channel import (
    LOG_FILE,
    Exited,
    ForkFailed,
    LaunchRequest,
    MalformedMessage,
    Ready,
    Started,
    WorkerAnswer,
    WorkerCommand,
    decode_answer,
)
from task_manager.workspace import read_log_tail

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 3.0
RESTART_DELAY_SECONDS = 1.0
MAX_FAILED_STARTS = 2


# What caps the thread pools of torch (OpenMP), numpy's BLAS and TensorFlow, read when they load.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)


def thread_environment(threads: int, environ: Mapping[str, str], *, explicit: bool) -> dict[str, str]:
    """Variables that give each executor ``threads`` threads; an operator's own values win unless
    ``threads`` was configured explicitly.  Set for the warm workers, before they import the framework."""
    return {name: str(threads) for name in THREAD_VARIABLES if explicit or name not in environ}


class WarmWorker:
    """The task manager's handle on one warm worker process."""

    def __init__(
        self,
        runtime: str,
        *,
        preload: Sequence[str],
        entry: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        on_exit: Callable[[WarmWorker], None] | None = None,
        warm_up: str = "",
    ) -> None:
        self.runtime = runtime
        self.warm_up = warm_up
        self.env = dict(env or {})
        self.preload = tuple(preload)
        self.entry = entry
        self.log_path = log_path
        self.ready = asyncio.Event()
        self.preload_seconds: float | None = None
        self._on_exit = on_exit
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        # By launch number (see the module docstring).
        self._launches = itertools.count(1)
        self._started: dict[int, asyncio.Future[int]] = {}
        self._ended: dict[int, asyncio.Future[ExitStatus]] = {}
        self._abandoned: set[int] = set()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def alive(self) -> bool:
        return (
            self._process is not None
            and self._process.returncode is None
            and self._reader is not None
            and not self._reader.done()
        )

    async def start(self) -> None:
        command = WorkerCommand(
            entry=self.entry,
            parent_pid=os.getpid(),
            runtime=self.runtime,
            preload=self.preload,
            warm_up=self.warm_up,
        ).argv()
        with self.log_path.open("ab") as stderr:
            self._process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
                env=executor_environment(os.environ, self.env),
            )
        self._reader = asyncio.create_task(self._read(self._process), name=f"warm-worker-{self.runtime}")
        log.info(
            "started the warm worker for %s (pid %d, preloading %s)",
            self.runtime,
            self._process.pid,
            ", ".join(self.preload) or "nothing",
        )

    async def launch(
        self, task_dir: Path, serve: ChannelAddress | None = None, confine: Confinement | None = None
    ) -> ExecutorProcess:
        """Fork an executor for ``task_dir``; with ``serve``, a job executor that connects there;
        confined as ``confine`` says."""
        process = self._process
        if not self.alive or process is None or process.stdin is None:
            raise LaunchFailed(f"the warm worker for {self.runtime} is not running")
        key = next(self._launches)
        loop = asyncio.get_running_loop()
        started: asyncio.Future[int] = loop.create_future()
        ended: asyncio.Future[ExitStatus] = loop.create_future()
        self._started[key] = started
        self._ended[key] = ended
        try:
            process.stdin.write(LaunchRequest(key, str(task_dir), serve, confine).to_line())
            await process.stdin.drain()
            pid = await started
        except asyncio.CancelledError:
            self._abandoned.add(key)
            self._ended.pop(key, None)
            raise
        except (ConnectionError, LaunchFailed) as exc:
            self._ended.pop(key, None)
            raise LaunchFailed(f"the warm worker for {self.runtime} could not launch: {exc}") from None
        finally:
            self._started.pop(key, None)
        return WarmExecutor(pid, start_time(pid) or 0.0, ended)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            while line := await process.stdout.readline():
                try:
                    answer = decode_answer(line)
                except MalformedMessage as exc:
                    log.warning("warm worker for %s said something unexpected: %s", self.runtime, exc)
                    continue
                self._dispatch(answer)
        except (ValueError, OSError) as exc:  # a line over the reader's limit, a broken pipe
            log.error("lost the protocol with the warm worker for %s (%s); killing it", self.runtime, exc)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        code = await process.wait()
        self._on_death(code)

    def _dispatch(self, answer: WorkerAnswer) -> None:
        if isinstance(answer, Ready):
            self.preload_seconds = answer.preload_seconds
            self.ready.set()
            log.info("warm worker for %s is ready (imports took %.2fs)", self.runtime, self.preload_seconds)
        elif isinstance(answer, Started):
            started = self._started.get(answer.launch)
            if started is not None and not started.done():
                started.set_result(answer.pid)
            elif answer.launch in self._abandoned:
                self._abandoned.discard(answer.launch)
                kill_group(ProcessRecord(answer.task_dir, answer.pid, start_time(answer.pid) or 0.0))
        elif isinstance(answer, ForkFailed):
            self._abandoned.discard(answer.launch)
            started = self._started.get(answer.launch)
            if started is not None and not started.done():
                started.set_exception(LaunchFailed(answer.error))
        elif isinstance(answer, Exited):
            ended = self._ended.pop(answer.launch, None)
            if ended is not None and not ended.done():
                ended.set_result(ExitStatus(exit_code=answer.exit_code, signal=answer.signal))

    def _on_death(self, code: int) -> None:
        gone = LaunchFailed(f"the warm worker for {self.runtime} exited with code {code}")
        for started in self._started.values():
            if not started.done():
                started.set_exception(gone)
        for ended in self._ended.values():
            if not ended.done():
                ended.set_result(ExitStatus(note=f"its warm worker exited (code {code}), taking it down"))
        self._ended.clear()
        if self._on_exit is not None:
            self._on_exit(self)

    async def stop(self) -> None:
        """Close the worker's stdin (it kills its children and exits); kill it if it does not."""
        self._on_exit = None
        process = self._process
        if process is None:
            return
        if process.returncode is None and process.stdin is not None:
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
            except TimeoutError:
                log.warning("warm worker for %s did not stop in time; killing it", self.runtime)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if self._reader is not None:
            await self._reader


async def launch_cold(
    entry: str, task_dir: Path, env: Mapping[str, str] | None = None, confine: Confinement | None = None
) -> ExecutorProcess:
    """A fresh interpreter for one task (pays the framework import: the fallback, not the norm)."""
    command = WorkerCommand(entry=entry, parent_pid=os.getpid(), once=task_dir, confine=confine).argv()
    with (task_dir / LOG_FILE).open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            cwd=task_dir,
            env=executor_environment(os.environ, env or {}),
        )
    return ColdExecutor(process)


class Launcher:
    """One warm worker per runtime, restarted when it dies, and the cold path behind them."""

    def __init__(
        self,
        *,
        entry: str,
        runtimes: Sequence[str],
        preload: Mapping[str, Sequence[str]],
        warm: bool,
        log_path: Callable[[str], Path],
        env: Mapping[str, str] | None = None,
        restart_delay: float = RESTART_DELAY_SECONDS,
        warm_up: str = "",
    ) -> None:
        self.entry = entry
        self.warm_up = warm_up  # "module:function" each worker calls with its runtime before forking
        # Added to the allowed part of the daemon's environment (task_manager.confinement) for workers
        # and executors.
        self.env = dict(env or {})
        self.runtimes = tuple(runtimes)
        self.preload = preload
        self.warm = warm
        self.log_path = log_path
        self.restart_delay = restart_delay
        self.workers: dict[str, WarmWorker] = {}
        self.given_up: set[str] = set()  # runtimes whose worker kept failing to start: cold only
        self._failed_starts: dict[str, int] = {}
        self._restarts: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Start the warm workers (their imports continue in the background)."""
        if self.warm:
            for runtime in self.runtimes:
                await self._start_worker(runtime)

    async def _start_worker(self, runtime: str) -> None:
        worker = WarmWorker(
            runtime,
            preload=self.preload.get(runtime, ()),
            entry=self.entry,
            log_path=self.log_path(runtime),
            env=self.env,
            on_exit=self._worker_exited,
            warm_up=self.warm_up,
        )
        self.workers[runtime] = worker
        await worker.start()

    def _worker_exited(self, worker: WarmWorker) -> None:
        if self._stopping or self.workers.get(worker.runtime) is not worker:
            return
        tail = read_log_tail(worker.log_path, lines=10)
        if worker.ready.is_set():
            self._failed_starts[worker.runtime] = 0
        else:
            self._failed_starts[worker.runtime] = self._failed_starts.get(worker.runtime, 0) + 1
        if self._failed_starts[worker.runtime] >= MAX_FAILED_STARTS:
            self.given_up.add(worker.runtime)
            log.error(
                "the warm worker for %s keeps failing to start; launching its tasks cold from now on. "
                "Its log (%s) ends with:\n%s",
                worker.runtime,
                worker.log_path,
                tail,
            )
            return
        log.warning(
            "the warm worker for %s exited; restarting it. Its log ends with:\n%s", worker.runtime, tail
        )
        restart = asyncio.create_task(self._restart(worker.runtime))
        self._restarts.add(restart)
        restart.add_done_callback(self._restarts.discard)

    async def _restart(self, runtime: str) -> None:
        await asyncio.sleep(self.restart_delay)
        if not self._stopping:
            await self._start_worker(runtime)

    async def launch(
        self, runtime: str, task_dir: Path, confine: Confinement | None = None
    ) -> ExecutorProcess:
        worker = self.workers.get(runtime)
        if worker is not None and worker.alive:
            try:
                return await worker.launch(task_dir, confine=confine)
            except LaunchFailed as exc:
                log.warning("%s; launching the task cold", exc.message)
        return await launch_cold(self.entry, task_dir, self.env, confine)

    async def launch_job(
        self, runtime: str, job_dir: Path, serve: ChannelAddress, confine: Confinement | None = None
    ) -> ExecutorProcess:
        """A job executor forked from the runtime's warm worker; :class:`LaunchFailed` if none is up.

        There is no cold path: a job executor is worth having only if it starts warm, and the caller
        runs the task in a one-task executor instead.
        """
        worker = self.workers.get(runtime)
        if worker is None or not worker.alive:
            raise LaunchFailed(f"no warm worker for {runtime} is running")
        return await worker.launch(job_dir, serve, confine)

    async def stop(self) -> None:
        self._stopping = True
        for restart in list(self._restarts):
            restart.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        await asyncio.gather(*(worker.stop() for worker in self.workers.values()))
