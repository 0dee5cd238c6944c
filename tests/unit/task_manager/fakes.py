"""In-process fakes for the task manager's tests: a ClientSelector and a Coordinator on 127.0.0.1:0.

The fake selector speaks the Connect protocol of docs/contracts.md from the
selector's side: it takes ``Register``, answers ``Registered`` with a short
heartbeat interval, records heartbeats and task statuses, and lets a test
push offers and cancels down the open stream.  It can be stopped and started
again on the same port, to test reconnection.  Both serve mutual TLS with
certificates from the test PKI (the selector's, and the coordinator of the
job they are told), through the same :class:`~libs.wire.Wire` as the real
servers, and record who called.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from libs.pki.identity import Identity
from libs.protos import common_pb2, coordinator_pb2, coordinator_pb2_grpc, selector_pb2, selector_pb2_grpc
from libs.tasks.serde import algorithm_to_proto, parameters_to_proto
from libs.wire import Wire, current_caller
from task_manager.tasks import Offer
from tests.fixtures.pki import TestPki

ROOT = Path(__file__).resolve().parents[3]
ENTRIES = "tests.unit.task_manager.entries"
JOB = "ns/digits"
SHA = "ab" * 32


def offer(
    task_id: str = "",
    *,
    job_id: str = JOB,
    round: int = 0,
    kind: str = "train",
    attempt: int = 0,
    entry: str = "digits-train",
    runtime: str = "pytorch",
    datasets: tuple[str, ...] = ("digits",),
    timeout: float = 30.0,
    endpoint: str = "127.0.0.1:1",
    deadline: float = 0.0,
    model_follows: bool = False,
) -> Offer:
    return Offer(
        task_id=task_id or f"{job_id}:{round}:{kind}:c1:{attempt}",
        job_id=job_id,
        namespace=job_id.partition("/")[0],
        round=round,
        attempt=attempt,
        kind=kind,
        runtime=runtime,
        coordinator_endpoint=endpoint,
        model_sha256="" if model_follows else SHA,
        task_token="token-" + task_id,
        entry=entry,
        parameters={"epochs": 1},
        datasets=datasets,
        timeout_seconds=timeout,
        deadline_unix=deadline,
        model_follows=model_follows,
    )


def offer_message(o: Offer) -> selector_pb2.TaskOffer:
    return selector_pb2.TaskOffer(
        task_id=o.task_id,
        job_id=o.job_id,
        namespace=o.namespace,
        round=o.round,
        attempt=o.attempt,
        kind=o.kind,
        runtime=o.runtime,
        coordinator_endpoint=o.coordinator_endpoint,
        model_sha256=o.model_sha256,
        task_token=o.task_token,
        deadline_unix=o.deadline_unix,
        spec=selector_pb2.TaskSpec(
            entry=o.entry,
            parameters=parameters_to_proto(o.parameters),
            algorithm=algorithm_to_proto(o.algorithm),
            datasets=list(o.datasets),
            timeout_seconds=o.timeout_seconds,
        ),
    )


async def eventually(check: Callable[[], Any], within: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the last value after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s (last value {value!r})")
        await asyncio.sleep(interval)


class FakeCoordinator(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self) -> None:
        self.reports: asyncio.Queue[common_pb2.TaskStatus] = asyncio.Queue()
        self.callers: list[str] = []
        self.endpoint = ""

    async def ReportTaskStatus(self, request: common_pb2.TaskStatus, context: Any) -> common_pb2.Ack:
        caller = current_caller()
        self.callers.append(caller.uri if caller else "anonymous")
        self.reports.put_nowait(request)
        return common_pb2.Ack(ok=True)

    async def _unimplemented(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the task manager's fake")

    async def DownloadModel(self, request: Any, context: Any) -> AsyncIterator[common_pb2.TransferFrame]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the task manager's fake")
        yield common_pb2.TransferFrame()

    async def UploadUpdate(self, request_iterator: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the task manager's fake")

    GetUploadOffset = GetStatus = Stop = AwaitModel = GetTaskPlan = SubmitUpdate = _unimplemented

    async def SecureAggregate(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[coordinator_pb2.SecAggServerFrame]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the task manager's fake")
        yield coordinator_pb2.SecAggServerFrame()


@contextlib.asynccontextmanager
async def running_coordinator(
    pki: TestPki, identity: Identity | None = None
) -> AsyncIterator[FakeCoordinator]:
    """A fake coordinator serving as ``identity`` (the coordinator of :data:`JOB` by default)."""
    wire = pki.wire(identity or pki.identity("coordinator", *JOB.split("/")))
    server = wire.server()
    fake = FakeCoordinator()
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(fake, server)
    fake.endpoint = f"127.0.0.1:{wire.add_port(server, '127.0.0.1:0')}"
    await server.start()
    try:
        yield fake
    finally:
        await server.stop(None)


class FakeSelector(selector_pb2_grpc.ClientSelectorServicer):
    def __init__(self, pki: TestPki, heartbeat_interval: float = 0.05) -> None:
        self.wire: Wire = pki.wire(pki.identity("selector"))
        self.heartbeat_interval = heartbeat_interval
        self.callers: list[str] = []  # the identity of each Connect's caller
        self.registrations: list[selector_pb2.Register] = []
        self.heartbeats: list[selector_pb2.Heartbeat] = []
        self.statuses: list[common_pb2.TaskStatus] = []
        self.connected = asyncio.Event()
        self._outbound: asyncio.Queue[selector_pb2.SelectorMessage] | None = None
        self._server: grpc.aio.Server | None = None
        self._helpers: set[asyncio.Task[Any]] = set()  # ended by stop(), whatever grpc does with the handler
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = self.wire.server()
        selector_pb2_grpc.add_ClientSelectorServicer_to_server(self, server)
        self.port = self.wire.add_port(server, f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        self.connected.clear()
        self._outbound = None
        for helper in self._helpers:
            helper.cancel()
        if self._server is not None:
            await self._server.stop(None)
            self._server = None

    async def Connect(
        self, request_iterator: AsyncIterator[selector_pb2.ClientMessage], context: Any
    ) -> AsyncIterator[selector_pb2.SelectorMessage]:
        incoming = aiter(request_iterator)
        first = await anext(incoming, None)
        if first is None or first.WhichOneof("msg") != "register":
            return
        caller = current_caller()
        self.callers.append(caller.uri if caller else "anonymous")
        self.registrations.append(first.register)
        yield selector_pb2.SelectorMessage(
            registered=selector_pb2.Registered(
                client_id=first.register.client_id,
                heartbeat_interval_seconds=self.heartbeat_interval,
                heartbeat_timeout_seconds=self.heartbeat_interval * 10,
            )
        )
        outbound: asyncio.Queue[selector_pb2.SelectorMessage] = asyncio.Queue()
        self._outbound = outbound
        self.connected.set()
        reader = asyncio.create_task(self._read(incoming))
        self._helpers.add(reader)
        reader.add_done_callback(self._helpers.discard)
        getter: asyncio.Task[selector_pb2.SelectorMessage] | None = None
        try:
            while not reader.done():
                getter = asyncio.create_task(outbound.get())
                self._helpers.add(getter)
                getter.add_done_callback(self._helpers.discard)
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    break
                yield getter.result()
        finally:
            for task in (reader, getter):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                        await task

    async def _read(self, incoming: AsyncIterator[selector_pb2.ClientMessage]) -> None:
        async for message in incoming:
            if message.WhichOneof("msg") == "heartbeat":
                self.heartbeats.append(message.heartbeat)
            elif message.WhichOneof("msg") == "task_status":
                self.statuses.append(message.task_status)

    async def _unimplemented(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the task manager's fake")

    SelectClients = ReleaseClients = OfferTask = OfferTasks = CancelTasks = ListClients = _unimplemented

    def push(self, message: selector_pb2.SelectorMessage) -> None:
        assert self._outbound is not None, "no task manager is connected"
        self._outbound.put_nowait(message)

    async def offer(self, o: Offer, within: float = 10.0) -> common_pb2.TaskStatus:
        """Push an offer and wait for the task manager's answer."""
        self.push(selector_pb2.SelectorMessage(task_offer=offer_message(o)))
        answers = await eventually(lambda: [s for s in self.statuses if s.task_id == o.task_id], within)
        return answers[0]  # type: ignore[no-any-return]
