"""A fake task manager, the control plane's callers and an in-process selector, for the service tests.

The fake speaks the real protocol over a real mutual-TLS channel: it opens
Connect with its own client certificate, registers, heartbeats on its own
task, and answers offers by a fixed policy, so the tests exercise the same
path a real task manager takes.  :class:`Callers` makes each coordinator-side
call as the identity the authorisation table expects (the coordinator of the
request's job, the scheduler for admission probes, the API server for
ListClients).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import grpc
import grpc.aio

from client_selector.app import SelectorApp
from client_selector.settings import SelectorSettings
from libs.pki.identity import Identity
from libs.protos import common_pb2, selector_pb2, selector_pb2_grpc
from libs.wire import Wire
from tests.fixtures.pki import TestPki

HEARTBEAT = 0.1
TIMEOUT = 0.5

Policy = Literal["accept", "refuse", "ignore"]


def selector_stub(channel: grpc.aio.Channel) -> selector_pb2_grpc.ClientSelectorStub:
    """A typed stub (the generated constructor carries no annotations)."""
    make: Callable[[grpc.aio.Channel], selector_pb2_grpc.ClientSelectorStub] = (
        selector_pb2_grpc.ClientSelectorStub
    )
    return make(channel)


def settings_for(db: Path, pki: TestPki, **changes: Any) -> SelectorSettings:
    values: dict[str, Any] = {
        **pki.settings(pki.identity("selector")),
        "listen": "127.0.0.1:0",
        "store_url": f"sqlite://{db}",
        "heartbeat_interval_seconds": HEARTBEAT,
        "heartbeat_timeout_seconds": TIMEOUT,
        "reservation_seconds": 30.0,
        "offer_answer_timeout_seconds": 1.0,
        **changes,
    }
    return SelectorSettings(**values)


@contextlib.asynccontextmanager
async def running_selector(settings: SelectorSettings) -> AsyncIterator[SelectorApp]:
    app = SelectorApp(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


class FakeTaskManager:
    """One task manager's side of Connect."""

    def __init__(
        self,
        target: str,
        client_id: str,
        *,
        policy: Policy = "accept",
        runtimes: tuple[str, ...] = ("pytorch",),
        datasets: tuple[str, ...] = ("digits",),
        labels: dict[str, str] | None = None,
        max_parallel_tasks: int = 1,
        wire: Wire,
    ) -> None:
        self.client_id = client_id
        self.policy: Policy = policy
        self.register = selector_pb2.Register(
            client_id=client_id,
            runtimes=list(runtimes),
            datasets=[common_pb2.Dataset(name=d, samples=600, tags=["test"]) for d in datasets],
            labels=labels or {},
            resources=common_pb2.Resources(cpus=2, memory_mb=4096),
            max_parallel_tasks=max_parallel_tasks,
            version="test",
            protections=["environment-allowlist", "landlock-abi-7"],
        )
        self.offers: list[selector_pb2.TaskOffer] = []
        self.cancels: list[selector_pb2.CancelTask] = []
        self.ended = asyncio.Event()
        self.end_code: grpc.StatusCode | None = None
        self.end_details = ""
        self._channel = wire.channel(target, wire.control("selector"))
        self._stub = selector_stub(self._channel)
        self._call: Any = None
        self._write_lock = asyncio.Lock()
        self._heartbeats: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None

    async def connect(self, first: selector_pb2.ClientMessage | None = None) -> selector_pb2.Registered:
        """Open the stream, register (or send ``first``) and start heartbeating."""
        self._call = self._stub.Connect()
        await self._write(first or selector_pb2.ClientMessage(register=self.register))
        reply = await self._call.read()
        assert reply.WhichOneof("msg") == "registered", reply
        self._heartbeats = asyncio.create_task(self._heartbeat_forever())
        self._receiver = asyncio.create_task(self._receive_forever())
        registered: selector_pb2.Registered = reply.registered
        return registered

    async def open_and_fail(self, first: selector_pb2.ClientMessage) -> grpc.aio.AioRpcError:
        """Send ``first`` and return the error the selector ends the stream with."""
        self._call = self._stub.Connect()
        try:
            await self._write(first)  # fails at once if the TLS handshake did
            reply = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            return exc
        raise AssertionError(f"the stream did not fail: {reply}")

    async def send(self, message: selector_pb2.ClientMessage) -> None:
        """Send one more message on the open stream."""
        await self._write(message)

    def stop_heartbeats(self) -> None:
        """Go silent while keeping the stream open, like a hung task manager."""
        if self._heartbeats is not None:
            self._heartbeats.cancel()

    async def close(self) -> None:
        for task in (self._heartbeats, self._receiver):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._call is not None:
            self._call.cancel()
        await self._channel.close()

    async def _write(self, message: selector_pb2.ClientMessage) -> None:
        async with self._write_lock:
            await self._call.write(message)

    async def _heartbeat_forever(self) -> None:
        while not self._call.done():
            try:
                await self._write(
                    selector_pb2.ClientMessage(heartbeat=selector_pb2.Heartbeat(running_tasks=0))
                )
            except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
                return  # the selector ended the stream; _receive_forever records why
            await asyncio.sleep(HEARTBEAT)

    async def _receive_forever(self) -> None:
        try:
            while (message := await self._call.read()) is not grpc.aio.EOF:
                kind = message.WhichOneof("msg")
                if kind == "task_offer":
                    self.offers.append(message.task_offer)
                    await self._answer(message.task_offer)
                elif kind == "cancel":
                    self.cancels.append(message.cancel)
            self.end_code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            self.end_code, self.end_details = exc.code(), exc.details() or ""
        finally:
            self.ended.set()

    async def _answer(self, offer: selector_pb2.TaskOffer) -> None:
        if self.policy == "ignore":
            return
        state = common_pb2.TASK_ACCEPTED if self.policy == "accept" else common_pb2.TASK_REFUSED
        reason = "" if self.policy == "accept" else "no free GPU"
        await self._write(
            selector_pb2.ClientMessage(
                task_status=common_pb2.TaskStatus(
                    task_id=offer.task_id,
                    job_id=offer.job_id,
                    state=state,
                    reason=reason,
                    client_id=self.client_id,
                )
            )
        )


def client_wire(pki: TestPki, client_id: str) -> Wire:
    """The wire of the task manager of ``client_id``, with its own client certificate."""
    return pki.wire(pki.identity("client", client_id))


class Callers:
    """The selector's unary RPCs, each made as the identity allowed to make it (see the module doc)."""

    def __init__(self, pki: TestPki, target: str) -> None:
        self.pki = pki
        self._target = target
        self._channels: dict[Identity, grpc.aio.Channel] = {}

    def stub(self, identity: Identity) -> selector_pb2_grpc.ClientSelectorStub:
        channel = self._channels.get(identity)
        if channel is None:
            wire = self.pki.wire(identity)
            channel = self._channels[identity] = wire.channel(self._target, wire.control("selector"))
        return selector_stub(channel)

    def coordinator(self, job_id: str) -> selector_pb2_grpc.ClientSelectorStub:
        namespace, _, name = job_id.partition("/")
        return self.stub(self.pki.identity("coordinator", namespace, name))

    async def SelectClients(self, request: selector_pb2.SelectRequest) -> selector_pb2.SelectResponse:
        """A job's coordinator selects; an admission probe (dry_run) is the scheduler's."""
        caller = (
            self.stub(self.pki.identity("scheduler")) if request.dry_run else self.coordinator(request.job_id)
        )
        reply: selector_pb2.SelectResponse = await caller.SelectClients(request)
        return reply

    async def ReleaseClients(self, request: selector_pb2.ReleaseRequest) -> common_pb2.Ack:
        reply: common_pb2.Ack = await self.coordinator(request.job_id).ReleaseClients(request)
        return reply

    async def OfferTask(self, request: selector_pb2.OfferTaskRequest) -> selector_pb2.OfferTaskResponse:
        reply: selector_pb2.OfferTaskResponse = await self.coordinator(request.offer.job_id).OfferTask(
            request
        )
        return reply

    async def OfferTasks(self, request: selector_pb2.OfferTasksRequest) -> selector_pb2.OfferTasksResponse:
        reply: selector_pb2.OfferTasksResponse = await self.coordinator(
            request.offers[0].offer.job_id
        ).OfferTasks(request)
        return reply

    async def CancelTasks(self, request: selector_pb2.CancelTasksRequest) -> common_pb2.Ack:
        reply: common_pb2.Ack = await self.coordinator(request.job_id).CancelTasks(request)
        return reply

    async def ListClients(self, request: selector_pb2.ListClientsRequest) -> selector_pb2.ListClientsResponse:
        reply: selector_pb2.ListClientsResponse = await self.stub(
            self.pki.identity("api-server")
        ).ListClients(request)
        return reply

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


@contextlib.asynccontextmanager
async def callers(pki: TestPki, port: int | None) -> AsyncIterator[Callers]:
    made = Callers(pki, f"127.0.0.1:{port}")
    try:
        yield made
    finally:
        await made.close()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 3.0, every: float = 0.05) -> None:
    """Wait until ``check()`` holds; fail after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(every)
