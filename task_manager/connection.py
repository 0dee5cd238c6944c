"""The task manager's one outbound stream to the client selector (``ClientSelector.Connect``).

A session: open the stream, send ``Register``, wait for ``Registered`` (it
says how often to heartbeat), then three tasks share the stream until it
ends: a reader (offers and cancels), a heartbeat ticker, and the one writer
(gRPC allows one writer per stream, so heartbeats and answers queue for it).
When the stream breaks or the selector is down, the next session starts
after an exponential backoff with jitter (``reconnect_initial_seconds`` up to
``reconnect_max_seconds``), so a restarted selector is not hit by every
client at once.  An outage is logged once when it starts and once when it
ends, not at every attempt.

Offers are answered at once, from the reader, before anything is launched:
the policy decides on in-memory state, the answer is queued for the writer,
and the task is started (``TaskHandler.confirmed``) while the writer puts the
acceptance on the wire, not after: waiting for the write would add a round
trip through gRPC's own thread to every round.  An acceptance that never left
(the stream broke first) cancels the task and gives its slot back
(``unconfirmed``), because the selector has then answered "not accepted" for
us.  Launching never blocks the stream: it runs in its own task.

The stream runs over mutual TLS (:class:`~libs.wire.Wire`): this host's
client certificate identifies it, and TLS checks that the server is the
selector of the configured CA, whatever ``selector_address`` resolves to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
import grpc.aio

from libs.errors import ValidationFailed
from libs.protos import common_pb2, selector_pb2, selector_pb2_grpc
from libs.wire import Wire
from task_manager import serde
from task_manager.policy import Accept, Decision
from task_manager.settings import TaskManagerSettings
from task_manager.tasks import Offer

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_SECONDS = 2.0
REGISTER_TIMEOUT_SECONDS = 10.0


class TaskHandler(Protocol):
    """What the connection needs from whoever runs the tasks (:class:`~task_manager.executors.Executors`)."""

    def consider(self, offer: Offer) -> Decision: ...

    def confirmed(self, task_id: str) -> None: ...

    def unconfirmed(self, task_id: str) -> None: ...

    def cancel(self, job_id: str, task_id: str, reason: str) -> int: ...

    def running_tasks(self) -> int: ...


class Backoff:
    """Exponential delays with jitter: each in [d/2, d] for d = initial x 2^n, capped at ``maximum``."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._failures = 0

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * 2.0 ** min(self._failures, 30))
        self._failures += 1
        return ceiling * (0.5 + self._rng.random() / 2)

    def reset(self) -> None:
        self._failures = 0


class SessionFailed(Exception):
    """A session ended for a reason worth naming in the outage log."""


@dataclass
class Outgoing:
    message: selector_pb2.ClientMessage
    sent: asyncio.Future[bool] | None = None  # resolved once written (True) or dropped (False)


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


class SelectorConnection:
    def __init__(
        self,
        settings: TaskManagerSettings,
        handler: TaskHandler,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        register_timeout: float = REGISTER_TIMEOUT_SECONDS,
        wire: Wire | None = None,
    ) -> None:
        self.settings = settings
        self.wire = wire or Wire.from_settings(settings, role="client")
        self.handler = handler
        self.clock = clock
        self.register_timeout = register_timeout
        self.registered = asyncio.Event()  # set while a session is registered
        self.registrations = 0
        self._backoff = Backoff(settings.reconnect_initial_seconds, settings.reconnect_max_seconds, rng)
        self._outage_since: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a session open until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self._session(stop)
                problem = "the selector ended the stream"
            except (grpc.RpcError, SessionFailed, TimeoutError, OSError) as exc:
                problem = describe(exc)
            if stop.is_set():
                break
            self._note_outage(problem)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._backoff.next())

    def _note_outage(self, problem: str) -> None:
        address = self.settings.selector_address
        if self._outage_since is not None:
            log.debug("still no session with the selector at %s: %s", address, problem)
            return
        self._outage_since = self.clock()
        if self.registrations:
            log.warning(
                "lost the stream to the selector at %s (%s); reconnecting with backoff", address, problem
            )
        else:
            log.warning(
                "cannot register with the selector at %s (%s); retrying with backoff up to %gs",
                address,
                problem,
                self.settings.reconnect_max_seconds,
            )

    def _on_registered(self, registered: selector_pb2.Registered) -> None:
        address = self.settings.selector_address
        if self._outage_since is not None and self.registrations:
            log.info(
                "reconnected to the selector at %s after %.1fs", address, self.clock() - self._outage_since
            )
        else:
            log.info(
                "registered with the selector at %s as %s (heartbeat every %gs)",
                address,
                self.settings.client_id,
                registered.heartbeat_interval_seconds or DEFAULT_HEARTBEAT_SECONDS,
            )
        self._outage_since = None
        self._backoff.reset()
        self.registrations += 1
        self.registered.set()

    async def _session(self, stop: asyncio.Event) -> None:
        channel = self.wire.channel(self.settings.selector_address, self.wire.control("selector"))
        outbound: asyncio.Queue[Outgoing] = asyncio.Queue()
        tasks: list[asyncio.Task[None]] = []
        call = None
        try:
            call = selector_pb2_grpc.ClientSelectorStub(channel).Connect()
            await call.write(serde.registration(self.settings))
            reply = await asyncio.wait_for(call.read(), self.register_timeout)
            if reply is grpc.aio.EOF:
                raise SessionFailed("the selector ended the stream without answering Register")
            if reply.WhichOneof("msg") != "registered":
                raise SessionFailed(f"the selector answered Register with {reply.WhichOneof('msg')}")
            self._on_registered(reply.registered)
            interval = reply.registered.heartbeat_interval_seconds or DEFAULT_HEARTBEAT_SECONDS
            tasks = [
                asyncio.create_task(self._write(call, outbound)),
                asyncio.create_task(self._heartbeat(outbound, interval)),
                asyncio.create_task(self._read(call, outbound)),
                asyncio.create_task(self._until(stop)),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if (error := task.exception()) is not None:
                    raise error
            if stop.is_set():
                with contextlib.suppress(grpc.RpcError, TimeoutError):
                    await asyncio.wait_for(call.done_writing(), 1.0)
        finally:
            self.registered.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            while not outbound.empty():
                sent = outbound.get_nowait().sent
                if sent is not None and not sent.done():
                    sent.set_result(False)
            if call is not None:
                call.cancel()
            await channel.close()

    @staticmethod
    async def _until(stop: asyncio.Event) -> None:
        await stop.wait()

    async def _write(self, call: grpc.aio.StreamStreamCall, outbound: asyncio.Queue[Outgoing]) -> None:
        while True:
            item = await outbound.get()
            try:
                await call.write(item.message)
            except BaseException:
                if item.sent is not None and not item.sent.done():
                    item.sent.set_result(False)
                raise
            if item.sent is not None and not item.sent.done():
                item.sent.set_result(True)

    async def _heartbeat(self, outbound: asyncio.Queue[Outgoing], interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            outbound.put_nowait(Outgoing(serde.heartbeat(self.handler.running_tasks())))

    async def _read(self, call: grpc.aio.StreamStreamCall, outbound: asyncio.Queue[Outgoing]) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("msg")
            if kind == "task_offer":
                self._answer(message.task_offer, outbound)
            elif kind == "cancel":
                cancel = message.cancel
                count = self.handler.cancel(cancel.job_id, cancel.task_id, cancel.reason)
                log.info(
                    "cancel of job %s (task %s): %d task(s) stopped",
                    cancel.job_id,
                    cancel.task_id or "all",
                    count,
                )

    def _answer(self, message: selector_pb2.TaskOffer, outbound: asyncio.Queue[Outgoing]) -> None:
        client_id = self.settings.client_id
        try:
            offer = serde.offer_from_proto(message)
        except ValidationFailed as exc:
            log.warning("refused a malformed offer %s: %s", message.task_id[:200], exc.message)
            refusal = serde.task_status(
                task_id=message.task_id,
                job_id=message.job_id,
                round=message.round,
                attempt=message.attempt,
                state=common_pb2.TASK_REFUSED,
                reason=f"invalid offer: {exc.message}",
                client_id=client_id,
            )
            outbound.put_nowait(Outgoing(serde.answer_message(refusal)))
            return
        decision = self.handler.consider(offer)
        if not isinstance(decision, Accept):
            log.info("refused task %s: %s", offer.task_id, decision.reason)
            refusal = serde.offer_status(offer, common_pb2.TASK_REFUSED, decision.reason, client_id)
            outbound.put_nowait(Outgoing(serde.answer_message(refusal)))
            return
        log.info("accepted task %s", offer.task_id)
        sent: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        sent.add_done_callback(lambda done: self._delivered(offer.task_id, done))
        acceptance = serde.offer_status(offer, common_pb2.TASK_ACCEPTED, "accepted", client_id)
        outbound.put_nowait(Outgoing(serde.answer_message(acceptance), sent))
        self.handler.confirmed(offer.task_id)

    def _delivered(self, task_id: str, sent: asyncio.Future[bool]) -> None:
        if sent.cancelled() or not sent.result():
            self.handler.unconfirmed(task_id)
