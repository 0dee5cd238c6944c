"""The ``local`` platform: each coordinator is a subprocess of this machine.

Layout, one work directory per job (``<state_dir>/jobs/<ns>/<name>/``)::

    job.json            the spec the coordinator runs
    coordinator.log     its stdout and stderr, appended across launches
    coordinator.lock    held (flock) by the live coordinator, and only by it
    coordinator.pid     {"pid", "startTime", "launch", "launchedAt", "name"}
    coordinator.exit    {"launch", "code", "at"} once this scheduler reaped it
    status.json         written by the coordinator (docs/contracts.md)
    tls/                (0700) cert.pem and key.pem (0600): this launch's certificate

Why a lock file *and* a pid file.  Coordinators must outlive the scheduler
(a restarted scheduler adopts them), so they run in their own session and
the scheduler cannot rely on being their parent.  The lock is the truth
about liveness: the scheduler takes an exclusive ``flock`` on
``coordinator.lock`` *before* spawning and hands that open file to the
child, then closes its own copy, so from then on the lock is held exactly
as long as the coordinator lives, across a scheduler crash at any instant,
and a second launch finds it held and adopts instead of starting a twin.
The pid file (with the process start time, which guards against pid reuse)
is how the scheduler signals the process; if a crash came between spawn and
writing it, the process is found by its ``--workdir`` argument instead.

Exit codes: a child this scheduler spawned is reaped with ``waitpid`` (and
the code written to ``coordinator.exit``, which survives a restart); a
coordinator inherited from an earlier scheduler is not our child, so its
code is read from its last ``status.json`` (FINISHED 0, FAILED 1, STOPPED 3)
and is ``None``, a crash, when it died without saying.

Fast start: with a ``standby_module``, one coordinator process is kept started
and imported ahead of need, and a launch hands it the job instead of starting
Python and its imports then (:mod:`job_scheduler.coordinator_standby`); it is
our child like a cold one.  Without a usable standby the launch is cold.
The next standby is started ``standby_delay_seconds`` after a handoff, not at
once: its imports take a core for a second or two, and at once would be while
the job just handed over runs its first rounds, which would pay for it.

Certificates: each launch that starts a process (cold or by the standby) gets a
fresh one in ``tls/``, named by ``NSFL_COORDINATOR_TLS_*`` variables
(:mod:`job_scheduler.coordinator_certificates`); an adopted coordinator keeps its own.

Processes are started by :func:`libs.spawning.spawn_detached`: their own
session, output appended to ``coordinator.log``, the lock passed open.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from job_scheduler.coordinator_certificates import (
    WIRE_VARIABLES,
    CoordinatorIssuer,
    insecure_environment,
    write_certificate,
)
from job_scheduler.coordinator_processes import (
    EXIT_FILE,
    LOCK_FILE,
    alive,
    exit_code,
    find_by_workdir,
    lock_held,
    pid_file,
    read_json,
    read_pid_file,
    tail,
    write_exit_file,
    write_json,
    write_pid_file,
)
from job_scheduler.coordinator_standby import Standby
from job_scheduler.platform import (
    CoordinatorInfo,
    Launched,
    LaunchRequest,
    coordinator_name,
)
from libs.records import as_coordinator_status
from libs.spawning import appended_log, spawn_detached, utc_stamp

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "NSFL_COORDINATOR_TOKEN"
LOG_FILE = "coordinator.log"
STATUS_FILE = "status.json"
JOB_FILE = "job.json"
TLS_DIR = "tls"
STANDBY_DELAY_SECONDS = 5.0


class LocalPlatform:
    """Coordinators as subprocesses in their own sessions, under ``jobs_dir``."""

    def __init__(
        self,
        jobs_dir: Path,
        *,
        certificates: CoordinatorIssuer | None,
        python: str,
        module: str = "coordinator",
        listen_host: str = "127.0.0.1",
        advertise_host: str = "127.0.0.1",
        environment: Mapping[str, str] | None = None,
        standby_module: str | None = None,
        standby_delay_seconds: float = STANDBY_DELAY_SECONDS,
    ) -> None:
        self.jobs_dir = jobs_dir
        # Signs each launch's certificate; None only for an insecure scheduler (plaintext coordinators).
        self._certificates = certificates
        # "python -m <standby_module>" is kept started ahead of need (job_scheduler.coordinator_standby).
        self._standby_module = standby_module
        self._standby: Standby | None = None
        self._standby_delay = standby_delay_seconds
        self._standby_timer: asyncio.TimerHandle | None = None  # the next standby, started later
        self._python = python
        self._module = module
        self._listen_host = listen_host
        self._advertise_host = advertise_host
        self._environment = environment
        # Children spawned by this process and not reaped yet: name -> (pid, launch, workdir).
        self._children: dict[str, tuple[int, int, Path]] = {}

    def workdir(self, namespace: str, name: str) -> Path:
        return self.jobs_dir / namespace / name

    # --- Platform -----------------------------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> Launched:
        name = coordinator_name(request.namespace, request.name)
        workdir = self.workdir(request.namespace, request.name)
        workdir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._adopt(workdir, name, request.launch)
                log.info("coordinator %s is already running: adopted it", name)
                return Launched(name, adopted=True)
            pid = self._spawn(request, workdir, name, lock_fd)
        finally:
            os.close(lock_fd)
        self._children[name] = (pid, request.launch, workdir)
        log.info("launched coordinator %s (launch %d, pid %d)", name, request.launch, pid)
        return Launched(name, adopted=False)

    async def find(self, namespace: str, name: str) -> CoordinatorInfo | None:
        workdir = self.workdir(namespace, name)
        record = read_pid_file(workdir)
        if not record:
            return None
        cname = coordinator_name(namespace, name)
        launch = int(record.get("launch", 0))
        status = as_coordinator_status(read_json(workdir / STATUS_FILE))
        endpoint = str(status.get("endpoint", ""))
        if lock_held(workdir / LOCK_FILE):
            return CoordinatorInfo(cname, launch, running=True, endpoint=endpoint, status=status)
        reaped = self._reap(cname)
        if reaped is False:  # our child closed its files but is not a zombie yet: still ending
            return CoordinatorInfo(cname, launch, running=True, endpoint=endpoint, status=status)
        return CoordinatorInfo(
            cname,
            launch,
            running=False,
            exit_code=exit_code(workdir, launch, status),
            endpoint=endpoint,
            status=status,
        )

    async def stop(self, namespace: str, name: str) -> bool:
        return self._signal(namespace, name, signal.SIGTERM, group=False)

    async def kill(self, namespace: str, name: str) -> bool:
        return self._signal(namespace, name, signal.SIGKILL, group=True)

    async def remove(self, namespace: str, name: str) -> None:
        workdir = self.workdir(namespace, name)
        if not workdir.exists():
            return
        cname = coordinator_name(namespace, name)
        if self._signal(namespace, name, signal.SIGKILL, group=True):
            for _ in range(100):  # up to 2 s for the kill to take effect
                if not lock_held(workdir / LOCK_FILE) and self._reap(cname) is not False:
                    break
                await asyncio.sleep(0.02)
        self._reap(cname)
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.jobs_dir / namespace).rmdir()  # only if it was the namespace's last job

    async def logs(self, namespace: str, name: str, tail_lines: int) -> str:
        return tail(self.workdir(namespace, name) / LOG_FILE, tail_lines)

    async def close(self) -> None:
        """Reap children that already ended; live coordinators keep running for the next scheduler."""
        if self._standby_timer is not None:
            self._standby_timer.cancel()
            self._standby_timer = None
        if self._standby is not None:
            self._standby.stop()
            self._standby = None
        for name in list(self._children):
            self._reap(name)

    def start_standby(self) -> None:
        """Have a standby coordinator started and imported before the next launch needs it."""
        if self._standby_timer is not None:
            self._standby_timer.cancel()
            self._standby_timer = None
        if self._standby_module is None or (self._standby is not None and self._standby.alive()):
            return
        base = os.environ if self._environment is None else self._environment
        try:
            self._standby = Standby.spawn(
                self._python, self._standby_module, self.jobs_dir, base, coordinator=self._module
            )
        except OSError as exc:
            log.warning("could not start a standby coordinator: %s", exc)
            self._standby = None

    # --- helpers ------------------------------------------------------------------------------

    def _spawn(self, request: LaunchRequest, workdir: Path, name: str, lock_fd: int) -> int:
        write_json(workdir / JOB_FILE, request.spec.to_document())
        for stale in (STATUS_FILE, EXIT_FILE):
            with contextlib.suppress(FileNotFoundError):
                (workdir / stale).unlink()
        argv = [
            self._python, "-m", self._module,
            "--job", str(workdir / JOB_FILE), "--workdir", str(workdir),
            "--selector", request.selector_address, "--scheduler", request.scheduler_address,
            "--document-store", request.store_url, "--object-store", request.object_store_url,
            "--listen", f"{self._listen_host}:0", "--advertise-host", self._advertise_host,
        ]  # fmt: skip
        base = os.environ if self._environment is None else self._environment
        inherited = {k: v for k, v in base.items() if k not in WIRE_VARIABLES}
        env = {**inherited, TOKEN_VARIABLE: request.token, **self._wire_environment(request, workdir)}
        heading = f"launch {request.launch} of {name} at {utc_stamp()}"
        with appended_log(workdir / LOG_FILE, heading) as log_fd:
            pid = self._hand_to_standby(request, workdir, name, argv[3:], env, (log_fd, lock_fd))
            if pid is not None:
                return pid
            pid = spawn_detached(argv, env, output=log_fd, pass_fds=(lock_fd,))
        return self._launched(request, workdir, name, pid)

    def _wire_environment(self, request: LaunchRequest, workdir: Path) -> dict[str, str]:
        """This launch's certificate written under ``tls/`` and named, or plaintext if insecure."""
        if self._certificates is None:
            return insecure_environment()
        hosts = (self._advertise_host, self._listen_host)
        return write_certificate(self._certificates, request, workdir / TLS_DIR, hosts)

    def _launched(self, request: LaunchRequest, workdir: Path, name: str, pid: int) -> int:
        write_pid_file(workdir, pid_file(pid, request.launch, time.time(), name))
        return pid

    def _hand_to_standby(
        self,
        request: LaunchRequest,
        workdir: Path,
        name: str,
        args: list[str],
        env: Mapping[str, str],
        files: tuple[int, int],
    ) -> int | None:
        """The standby coordinator's pid once it took the job (and a new standby started), else None.

        The pid file names the standby before the handoff: its command line does not name the job's
        work directory, so a scheduler that crashed mid-handoff could not find it otherwise.
        """
        standby, self._standby = self._standby, None
        if standby is None or not standby.alive():
            self.start_standby()
            return None
        self._launched(request, workdir, name, standby.pid)
        pid = standby.hand_over(args, env, *files)
        self._start_standby_later()
        return pid

    def _start_standby_later(self) -> None:
        """The next standby, ``standby_delay_seconds`` from now (see the module docstring)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.start_standby()
            return
        if self._standby_timer is None:
            self._standby_timer = loop.call_later(self._standby_delay, self.start_standby)

    def _adopt(self, workdir: Path, name: str, launch: int) -> None:
        """Make sure the pid file names the live coordinator (it may predate a crash mid-launch)."""
        record = read_pid_file(workdir)
        if record and alive(record):
            return
        pid = find_by_workdir(workdir)
        if pid is not None:
            write_pid_file(workdir, pid_file(pid, launch, time.time(), name))

    def _live_pid(self, workdir: Path) -> int | None:
        if not lock_held(workdir / LOCK_FILE):
            return None
        record = read_pid_file(workdir)
        if record and alive(record):
            return int(record["pid"])
        return find_by_workdir(workdir)

    def _signal(self, namespace: str, name: str, sig: signal.Signals, *, group: bool) -> bool:
        pid = self._live_pid(self.workdir(namespace, name))
        if pid is None:
            return False
        try:
            if group:
                os.killpg(pid, sig)  # the coordinator leads its session, so its pid is its group
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return False
        log.info("sent %s to coordinator %s (pid %d)", sig.name, coordinator_name(namespace, name), pid)
        return True

    def _reap(self, name: str) -> bool | None:
        """Reap our child: ``True`` reaped now, ``False`` still running, ``None`` not our child."""
        child = self._children.get(name)
        if child is None:
            return None
        pid, launch, workdir = child
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            del self._children[name]
            return None
        if done == 0:
            return False
        del self._children[name]
        code = os.waitstatus_to_exitcode(status)
        write_exit_file(workdir, {"launch": launch, "code": code, "at": time.time()})
        log.info("coordinator %s (launch %d, pid %d) exited with %d", name, launch, pid, code)
        return True
