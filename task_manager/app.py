"""Building and running the task manager: the only place that opens resources.

:class:`TaskManagerApp` takes the workspace lock, kills what a crashed
predecessor left running (``executors.json``), starts the warm workers (so
the first task does not pay the framework import), and opens the selector
connection; :meth:`TaskManagerApp.stop` undoes it in reverse.  One
:class:`~libs.wire.Wire` (this host's client certificate) serves the
selector stream and the failure reports to coordinators, and the executors
get the same TLS files through ``NSFL_EXECUTOR_*`` variables
(:func:`executor_wire_environment`), so they too present the client's
certificate and accept only the offered job's coordinator.  :func:`serve`
runs it until an event is set or a signal comes
(:func:`libs.service.serve_until_stopped`): what ``python -m task_manager``
and ``nsfl-ctl client up`` call.

Shutdown order matters: the stream closes first, so no offer is accepted
while executors are being killed; then every executor is killed and
reported failed to its coordinator (the round need not wait for its
deadline); then the warm workers stop; the workspace lock goes last, so a
successor cannot start while anything of ours still runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from libs.service import serve_until_stopped
from libs.structured_logging import log_context
from libs.wire import Wire, WireSettings
from task_manager.confinement import host_protections
from task_manager.connection import SelectorConnection
from task_manager.executors import Executors
from task_manager.launcher import Launcher, thread_environment
from task_manager.process_groups import PidFile, sweep_orphans
from task_manager.reporting import CoordinatorReporter
from task_manager.settings import TaskManagerSettings
from task_manager.worker.confinement_rules import pids_cgroup_root
from task_manager.worker.launch_channel import NICE_VARIABLE
from task_manager.workspace import Workspace

log = logging.getLogger(__name__)


EXECUTOR_PREFIX = "NSFL_EXECUTOR_"


def executor_wire_environment(settings: WireSettings) -> Mapping[str, str]:
    """The ``NSFL_EXECUTOR_*`` wire variables that give executors this host's TLS files and trust domain."""
    env = {
        f"{EXECUTOR_PREFIX}TRUST_DOMAIN": settings.trust_domain,
        f"{EXECUTOR_PREFIX}INSECURE": "true" if settings.insecure else "false",
    }
    for name in ("tls_ca", "tls_cert", "tls_key", "tls_crl"):
        value = getattr(settings, name)
        if value is not None:
            env[f"{EXECUTOR_PREFIX}{name.upper()}"] = str(value)
    return env


class TaskManagerApp:
    """One running task manager: workspace, warm workers, executors and the selector stream."""

    def __init__(self, settings: TaskManagerSettings) -> None:
        self.settings = settings
        self.wire = Wire.from_settings(settings, role="client")
        self.workspace = Workspace(settings.workspace)
        self.launcher: Launcher | None = None
        self.executors: Executors | None = None
        self.connection: SelectorConnection | None = None
        self._stop_connection = asyncio.Event()
        self._connection_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        settings.check_paths()
        self.workspace.open()
        try:
            pid_file = PidFile(self.workspace.pid_file)
            sweep_orphans(pid_file)
            self.launcher = Launcher(
                entry=settings.executor_entry,
                runtimes=settings.served_runtimes,
                preload=settings.preload,
                warm=settings.warm_runtimes,
                warm_up=settings.warm_up_entry,
                log_path=self.workspace.worker_log,
                # Executors log like their task manager (read by the executor's logging setup).
                env={
                    "NSFL_LOG_LEVEL": settings.log_level,
                    "NSFL_LOG_JSON": "1" if settings.log_json else "0",
                    NICE_VARIABLE: str(settings.executor_nice),
                    **executor_wire_environment(settings),
                    **thread_environment(
                        settings.threads_per_executor, os.environ, explicit=bool(settings.executor_threads)
                    ),
                },
            )
            await self.launcher.start()
            self.executors = Executors(
                settings,
                launcher=self.launcher,
                reporter=CoordinatorReporter(settings.client_id, self.wire),
                workspace=self.workspace,
                pid_file=pid_file,
            )
            self.executors.schedule_cleanup()
            self.connection = SelectorConnection(settings, self.executors, wire=self.wire)
            self._connection_task = asyncio.create_task(self.connection.run(self._stop_connection))
        except BaseException:
            await self.stop()
            raise
        log.info(
            "task manager %s protects its executors with: %s (docs/security.md)",
            settings.client_id,
            ", ".join(host_protections(settings, pids_cgroup_root() is not None)),
        )
        log.info(
            "task manager %s started (runtimes %s, %s executors, workspace %s)",
            settings.client_id,
            ", ".join(settings.served_runtimes),
            "warm" if settings.warm_runtimes else "cold",
            settings.workspace,
        )

    async def stop(self) -> None:
        """Close the stream, kill and report running tasks, stop the workers, release the workspace."""
        self._stop_connection.set()
        if self._connection_task is not None:
            await self._connection_task
            self._connection_task = None
        if self.executors is not None:
            await self.executors.shutdown()
        if self.launcher is not None:
            await self.launcher.stop()
        self.workspace.close()


async def serve(settings: TaskManagerSettings, *, stop: asyncio.Event | None = None) -> None:
    """Run the task manager until ``stop`` is set (without one: until SIGTERM or SIGINT), then stop it.

    Run it on a thread that lives as long as the task manager (the main thread, as ``asyncio.run`` does):
    its children are set to die with the thread that started them (``PR_SET_PDEATHSIG``).
    """
    with log_context(client=settings.client_id):
        app = TaskManagerApp(settings)
        await serve_until_stopped(app, name="task manager", stop=stop, signals=stop is None)
