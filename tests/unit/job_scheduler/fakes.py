"""Fakes for the scheduler's tests: a platform in memory, a selector answer, a clock, and the wiring.

:class:`Stack` builds the real service and supervisor over a real SQLite
store and a real file object store in ``tmp_path``; only the platform and
the client selector are fakes, and the test turns the supervisor's crank
(``admit_once``, ``watch_once``) itself, so nothing depends on timing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job_scheduler.admission import Limits
from job_scheduler.cleanup import JobCleanup
from job_scheduler.coordinator_certificates import CoordinatorIssuer
from job_scheduler.coordinators import Coordinators, LaunchConfig, Report
from job_scheduler.job_store import JobLocks, JobStore
from job_scheduler.platform import CoordinatorInfo, Launched, LaunchRequest, coordinator_name
from job_scheduler.selector_client import Availability
from job_scheduler.service import JobService
from job_scheduler.supervisor import Supervisor
from libs.jobspec import JobSpec
from libs.objects import open_object_store
from libs.objects.protocol import ObjectStore
from libs.store import Document, DocumentStore, open_document_store
from tests.fixtures.pki import TestPki


def issuer_of(pki: TestPki) -> CoordinatorIssuer:
    """The coordinators' issuing CA of ``pki``, as a scheduler with that PKI's settings loads it."""
    directory = pki.directory
    return CoordinatorIssuer.load(directory.issuer, directory.issuer_key, trust_domain=pki.trust_domain,
                                  ca=directory.ca, crl=directory.crl)


def scheduler_wire(pki: TestPki) -> dict[str, Any]:
    """The settings of a scheduler of ``pki``: its certificate, and the CA it signs coordinators with."""
    return {**pki.settings(pki.identity("scheduler")), "coordinator_issuer_cert": pki.directory.issuer,
            "coordinator_issuer_key": pki.directory.issuer_key}


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeCoordinator:
    request: LaunchRequest
    running: bool = True
    exit_code: int | None = None
    status: dict[str, Any] = field(default_factory=dict)


class FakePlatform:
    """Coordinators that run until the test ends them; every call is recorded."""

    def __init__(self) -> None:
        self.coordinators: dict[str, FakeCoordinator] = {}
        self.launches: list[LaunchRequest] = []
        self.adoptions: list[str] = []
        self.stops: list[str] = []
        self.kills: list[str] = []
        self.removed: list[str] = []
        self.log_text = "line 1\nTraceback: boom"

    async def launch(self, request: LaunchRequest) -> Launched:
        key = f"{request.namespace}/{request.name}"
        name = coordinator_name(request.namespace, request.name)
        current = self.coordinators.get(key)
        if current is not None and current.running:
            self.adoptions.append(key)
            return Launched(name, adopted=True)
        self.launches.append(request)
        self.coordinators[key] = FakeCoordinator(request, status={"state": "STARTING"})
        return Launched(name, adopted=False)

    async def find(self, namespace: str, name: str) -> CoordinatorInfo | None:
        current = self.coordinators.get(f"{namespace}/{name}")
        if current is None:
            return None
        return CoordinatorInfo(coordinator_name(namespace, name), current.request.launch, current.running,
                               current.exit_code, "127.0.0.1:7000", dict(current.status))

    async def stop(self, namespace: str, name: str) -> bool:
        key = f"{namespace}/{name}"
        self.stops.append(key)
        return key in self.coordinators and self.coordinators[key].running

    async def kill(self, namespace: str, name: str) -> bool:
        key = f"{namespace}/{name}"
        self.kills.append(key)
        current = self.coordinators.get(key)
        if current is None or not current.running:
            return False
        self.end(key, -9)
        return True

    async def remove(self, namespace: str, name: str) -> None:
        self.removed.append(f"{namespace}/{name}")
        self.coordinators.pop(f"{namespace}/{name}", None)

    async def logs(self, namespace: str, name: str, tail_lines: int) -> str:
        return "\n".join(self.log_text.splitlines()[-tail_lines:])

    async def close(self) -> None:
        pass

    # --- test controls -----------------------------------------------------------------------

    def token(self, key: str) -> str:
        return self.coordinators[key].request.token

    def end(self, key: str, code: int | None, state: str = "", reason: str = "") -> None:
        current = self.coordinators[key]
        current.running = False
        current.exit_code = code
        current.status = {"state": state or "RUNNING", "reason": reason}

    def launches_of(self, key: str) -> int:
        return sum(1 for r in self.launches if f"{r.namespace}/{r.name}" == key)


class FakeAvailability:
    """The selector's dry-run answer: ``clients`` match every job unless ``per_job`` says otherwise."""

    def __init__(self, clients: int = 10) -> None:
        self.clients = clients
        self.per_job: dict[str, int] = {}
        self.asked: list[str] = []

    async def check(self, job_id: str, spec: JobSpec) -> Availability:
        self.asked.append(job_id)
        matched = self.per_job.get(job_id, self.clients)
        needed = spec.min_clients
        detail = "" if matched >= needed else f"InsufficientClients {matched}/{needed}: no client has dataset x"
        return Availability(matched >= needed, matched, needed, detail)


def spec(name: str, namespace: str = "team-a", **changes: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "runtime": "pytorch", "taskEntry": "train",
            "rounds": 4, "clientsPerRound": 2, **changes}


@dataclass
class Stack:
    documents: DocumentStore
    objects: ObjectStore
    jobs: JobStore
    platform: FakePlatform
    availability: FakeAvailability
    service: JobService
    supervisor: Supervisor
    clock: Clock

    async def submit(self, name: str, namespace: str = "team-a", **changes: Any) -> Document:
        return await self.service.submit(namespace, json.dumps(spec(name, namespace, **changes)))

    async def job(self, key: str) -> dict[str, Any]:
        namespace, name = key.split("/")
        return (await self.jobs.get(namespace, name)).data

    async def state(self, key: str) -> str:
        return str((await self.job(key))["state"])

    async def report(self, key: str, state: str = "RUNNING", *, round_number: int = 0, rounds: int = 4,
                     record: dict[str, Any] | None = None, checkpoint: dict[str, Any] | None = None,
                     token: str | None = None, reason: str = "",
                     revised: tuple[dict[str, Any], ...] = ()) -> tuple[bool, str]:
        report = Report(job_id=key, token=self.platform.token(key) if token is None else token, state=state,
                        reason=reason, round=round_number, rounds=rounds, round_record=record,
                        checkpoint=checkpoint, revised_rounds=revised)
        return await self.service.report_progress(report)


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, *, max_running: int = 4, per_namespace: int = 2,
                clients: int = 10) -> AsyncIterator[Stack]:
    clock = Clock()
    documents = await open_document_store(f"sqlite://{tmp_path / 'nsfl.db'}")
    objects = open_object_store(f"file://{tmp_path / 'objects'}")
    jobs = JobStore(documents, clock)
    platform = FakePlatform()
    availability = FakeAvailability(clients)
    locks = JobLocks()
    config = LaunchConfig(selector_address="127.0.0.1:1", store_url="sqlite:///x.db",
                          object_store_url="file:///x", stop_timeout_seconds=60)
    coordinators = Coordinators(jobs, platform, objects, config, lambda: "127.0.0.1:50052")
    cleanup = JobCleanup(jobs, objects, platform)
    supervisor = Supervisor(jobs, coordinators, cleanup, platform, availability, locks,
                            Limits(max_running, per_namespace))
    service = JobService(jobs, coordinators, cleanup, platform, locks, wake=supervisor.wake)
    try:
        yield Stack(documents, objects, jobs, platform, availability, service, supervisor, clock)
    finally:
        await objects.close()
        await documents.close()
