"""The ``Platform`` protocol: where a job's coordinator runs.

The scheduler decides *when* a coordinator runs; a platform knows *how*:
``local`` starts ``python -m coordinator`` as a subprocess
(:mod:`job_scheduler.local_platform`), ``kubernetes`` creates a Pod and a
Service (:mod:`job_scheduler.k8s_platform`).  Everything the scheduler needs from either is here, so the
supervisor never knows which one it drives.

Promises every platform keeps:

- **Deterministic names.**  A job's coordinator is always called
  :func:`coordinator_name` ``(ns, name)``, so a scheduler that restarts finds
  the one it launched before instead of starting a second.
- **Launch is idempotent.**  Launching while a coordinator of the job is
  alive adopts it (``Launched.adopted``): "already exists" counts as
  success, never as an error and never as a second process.
- **Launches are numbered.**  The scheduler persists launch ``n`` before it
  calls :meth:`Platform.launch`; :meth:`Platform.find` reports which launch
  it sees, so after a crash the scheduler can tell "launch n ran and ended"
  from "launch n never happened".
- **Exit codes follow the coordinator's contract** (docs/contracts.md):
  0 FINISHED, 1 FAILED, 3 STOPPED.  When the platform cannot know the code
  (the process was not its child), it derives it from the coordinator's last
  status; ``None`` means the coordinator died without saying how (a crash).
- :meth:`stop` asks for a stop at a safe point (the coordinator saves a
  checkpoint and exits 3); :meth:`kill` ends it at once.  Both are harmless
  when nothing runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from libs.jobspec import JobSpec
from libs.records import CoordinatorStatus

# Kubernetes object names must be DNS-1123 labels of at most 63 characters.
MAX_NAME_LENGTH = 63


def coordinator_name(namespace: str, name: str) -> str:
    """``coord-<ns>-<name>``; names over 63 characters keep a prefix and a hash of the whole."""
    full = f"coord-{namespace}-{name}"
    if len(full) <= MAX_NAME_LENGTH:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{full[: MAX_NAME_LENGTH - 11].rstrip('-')}-{digest}"


@dataclass(frozen=True)
class LaunchRequest:
    """Everything a platform needs to start one coordinator of one job.

    ``token`` is the secret the coordinator presents on ``ReportProgress``;
    platforms pass it out of sight (an environment variable, a Secret), never
    on a command line that ``ps`` shows.
    """

    namespace: str
    name: str
    spec: JobSpec
    launch: int
    token: str
    scheduler_address: str
    selector_address: str
    store_url: str
    object_store_url: str


@dataclass(frozen=True)
class Launched:
    name: str
    adopted: bool


@dataclass(frozen=True)
class CoordinatorInfo:
    """What a platform sees of a job's coordinator.

    ``status`` is the coordinator's last ``status.json`` (may be empty), or
    what the platform knows of it (a Pod: ``state`` and ``reason``).
    ``exit_code`` is meaningful only when ``running`` is false;
    ``platform_reason`` says why the platform ended it when the coordinator
    could not say (a Pod ``Evicted`` or ``OOMKilled``), for the job's reason.
    """

    name: str
    launch: int
    running: bool
    exit_code: int | None = None
    endpoint: str = ""
    status: CoordinatorStatus = field(default_factory=lambda: CoordinatorStatus())
    platform_reason: str = ""


@runtime_checkable
class Platform(Protocol):
    """Runs, finds, stops and removes the coordinators of jobs."""

    async def launch(self, request: LaunchRequest) -> Launched:
        """Start launch ``request.launch`` of the job's coordinator, or adopt the live one."""
        ...

    async def find(self, namespace: str, name: str) -> CoordinatorInfo | None:
        """The job's latest coordinator, running or ended; ``None`` if it never launched one."""
        ...

    async def stop(self, namespace: str, name: str) -> bool:
        """Ask the live coordinator to stop at a safe point; ``False`` if none runs."""
        ...

    async def kill(self, namespace: str, name: str) -> bool:
        """End the live coordinator at once; ``False`` if none runs."""
        ...

    async def remove(self, namespace: str, name: str) -> None:
        """Forget the job: kill what still runs and remove its work files and logs."""
        ...

    async def logs(self, namespace: str, name: str, tail_lines: int) -> str:
        """The last ``tail_lines`` lines of the coordinator's log (every launch); empty if none."""
        ...

    async def close(self) -> None:
        """Release the platform's own resources; coordinators keep running for the next scheduler."""
        ...
