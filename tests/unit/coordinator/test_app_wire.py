"""A whole coordinator process (``coordinator.app.run``) on the wire, in-process, with mutual TLS.

The selector and the scheduler are fakes served with their own control
identities from ``test_pki``; the coordinator runs with the certificate of its
job, as the scheduler launches it.  No client is connected, so the job waits
for one to initialise its model until the scheduler stops it: every link is
used once (the selector asked and told to release, progress reported, ``Stop``
served) and each side sees the identity it should.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc.aio

from coordinator.app import run
from coordinator.settings import CoordinatorSettings
from libs.pki.identity import Identity
from libs.protos import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
    selector_pb2,
    selector_pb2_grpc,
)
from libs.wire import current_caller
from tests.fixtures.pki import TestPki

JOB = "ns/job"


class Selector(selector_pb2_grpc.ClientSelectorServicer):
    """No client matches; remembers who asked what."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Identity | None]] = []

    async def SelectClients(self, request: selector_pb2.SelectRequest, context: Any) -> Any:
        self.calls.append(("SelectClients", current_caller()))
        return selector_pb2.SelectResponse(matched=0, wanted=request.count, satisfied=False,
                                           reason="InsufficientClients 0/1")

    async def ReleaseClients(self, request: selector_pb2.ReleaseRequest, context: Any) -> Any:
        self.calls.append(("ReleaseClients", current_caller()))
        return common_pb2.Ack(ok=True)


class Scheduler(scheduler_pb2_grpc.JobControlServicer):
    def __init__(self) -> None:
        self.reports: list[tuple[str, Identity | None]] = []

    async def ReportProgress(self, request: scheduler_pb2.ProgressReport, context: Any) -> common_pb2.Ack:
        self.reports.append((request.state, current_caller()))
        return common_pb2.Ack(ok=True)


async def serve(pki: TestPki, who: str, servicer: Any, add: Any) -> tuple[grpc.aio.Server, str]:
    wire = pki.wire(pki.identity(who))
    server = wire.server()
    add(servicer, server)
    port = wire.add_port(server, "127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def endpoint_of(workdir: Path) -> str:
    """The coordinator's address, once its status file has it."""
    async with asyncio.timeout(20):
        while True:
            try:
                endpoint = json.loads((workdir / "status.json").read_text()).get("endpoint", "")
            except (OSError, ValueError):
                endpoint = ""
            if endpoint:
                return str(endpoint)
            await asyncio.sleep(0.05)


async def test_a_coordinator_speaks_to_its_selector_and_scheduler_as_its_job_and_the_scheduler_stops_it(
    test_pki: TestPki, tmp_path: Path,
) -> None:
    selector, scheduler = Selector(), Scheduler()
    selector_server, selector_address = await serve(
        test_pki, "selector", selector, selector_pb2_grpc.add_ClientSelectorServicer_to_server)
    scheduler_server, scheduler_address = await serve(
        test_pki, "scheduler", scheduler, scheduler_pb2_grpc.add_JobControlServicer_to_server)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"name": "job", "namespace": "ns", "runtime": "pytorch", "taskEntry": "train",
                               "datasets": ["digits"], "rounds": 1, "clientsPerRound": 1}))
    identity = test_pki.identity("coordinator", "ns", "job")
    settings = CoordinatorSettings(
        job=job, workdir=tmp_path / "work", selector=selector_address, scheduler=scheduler_address,
        document_store=f"sqlite:///{tmp_path / 'nsfl.db'}", object_store=f"file://{tmp_path / 'objects'}",
        **test_pki.settings(identity))  # fmt: skip
    coordinator = asyncio.create_task(run(settings))
    try:
        endpoint = await endpoint_of(tmp_path / "work")
        wire = test_pki.wire(test_pki.identity("scheduler"))
        async with wire.channel(endpoint, wire.coordinator_of(JOB)) as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)
            await stub.Stop(coordinator_pb2.StopRequest(reason="the user stopped it"), timeout=5)
        assert await asyncio.wait_for(coordinator, 30) == 3, "STOPPED"
    finally:
        coordinator.cancel()
        await selector_server.stop(None)
        await scheduler_server.stop(None)
    assert {name for name, _ in selector.calls} == {"SelectClients", "ReleaseClients"}
    assert {caller for _, caller in selector.calls} == {identity}
    assert {caller for _, caller in scheduler.reports} == {identity}
    assert scheduler.reports[-1][0] == "STOPPED"
