"""The ``ClientSelector`` gRPC servicer: parse, call the :class:`Selector`, answer.

The unary methods are one line of work each.  ``Connect`` is the one with
some shape, because a task manager's whole session lives in it:

1. the first message must be ``Register`` (else ``INVALID_ARGUMENT``), and
   only ``client/<id>`` (the caller's certificate, checked by
   :func:`libs.wire.require_caller_is_client`) may register as ``<id>``, on
   the first Register and on any later one (else ``PERMISSION_DENIED``), so
   no other identity can displace a client's stream; a peer host that
   already registered ``max_clients_per_source`` other ids is refused too,
   before anything is stored;
2. the selector answers ``Registered`` with the heartbeat interval and
   timeout it expects;
3. a reader task takes ``Heartbeat`` and ``TaskStatus`` messages (any message
   counts as a sign of life; a TaskStatus that accepts or refuses an offer
   is routed to the waiting ``OfferTask``), while the handler writes what the
   session's outbound queue holds (offers, cancels);
4. the stream ends when the task manager closes it, when it breaks, when its
   heartbeats stop (the sweeper closes it), or when a newer Connect for the
   same id replaces it.  The handler then marks the client lost, unless a
   newer stream already took over, and ends the RPC with the reason.

Errors map through :func:`libs.rpc.handle_errors`; nothing internal reaches
the peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeAlias, cast

import grpc
import grpc.aio

from client_selector import serde
from client_selector.registry import ClientId
from client_selector.selector import Selector
from client_selector.sessions import Session
from libs.errors import CATALOGUE, NsflError, ValidationFailed
from libs.protos import common_pb2, selector_pb2, selector_pb2_grpc
from libs.rpc import handle_errors
from libs.structured_logging import log_context
from libs.wire import require_caller_is_client

log = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext


MAX_OFFERS_PER_CALL = 10_000  # a round's offers; far above any clientsPerRound the job schema allows


@dataclass(frozen=True)
class CheckedOffer:
    """An offer's addressing, checked before anything is pushed."""

    client: ClientId
    task: str
    job: str
    timeout: float


class SelectorServicer(selector_pb2_grpc.ClientSelectorServicer):
    """Thin adapter from the ``ClientSelector`` service to :class:`Selector`."""

    def __init__(
        self,
        selector: Selector,
        *,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        answer_timeout: float,
    ) -> None:
        self._selector = selector
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._answer_timeout = answer_timeout

    # --- task managers -----------------------------------------------------------------------

    # Connect reads and writes through the context (read/write API) instead of yielding,
    # because it must write while a second task reads; the generated stub only knows
    # the iterator style, hence the override ignore.
    @handle_errors
    async def Connect(  # type: ignore[override]
        self, request_iterator: AsyncIterator[selector_pb2.ClientMessage], context: Context
    ) -> None:
        first = await self._read_first(context)
        if first is None:
            return
        kind = first.WhichOneof("msg")
        if kind != "register":
            raise ValidationFailed(
                f"the first message on Connect must be Register, got {kind or 'an empty message'}"
            )
        registration = serde.registration_from_proto(first.register)
        require_caller_is_client(registration.client_id)
        session = await self._selector.connect(registration, serde.peer_host(context.peer()))
        with log_context(client=session.client_id):
            reader: asyncio.Task[None] | None = None
            try:
                await context.write(
                    selector_pb2.SelectorMessage(
                        registered=selector_pb2.Registered(
                            client_id=registration.client_id,
                            heartbeat_interval_seconds=self._heartbeat_interval,
                            heartbeat_timeout_seconds=self._heartbeat_timeout,
                        )
                    )
                )
                reader = asyncio.create_task(self._read_loop(context, session))
                while (item := await session.next_outbound()) is not None:
                    await context.write(item)
            finally:
                if reader is not None:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
                await self._selector.disconnect(session, "its stream ended")
        if session.close_error is not None:
            raise session.close_error

    async def _read_first(self, context: Context) -> selector_pb2.ClientMessage | None:
        """The first message, or None if the stream ended; a silent peer is refused after the timeout."""
        try:
            message = await asyncio.wait_for(context.read(), timeout=self._heartbeat_timeout)
        except TimeoutError:
            raise ValidationFailed(
                f"no Register within {self._heartbeat_timeout:g}s; the first message on Connect must be Register"
            ) from None
        if message is grpc.aio.EOF:
            return None
        return cast(selector_pb2.ClientMessage, message)

    async def _read_loop(self, context: Context, session: Session) -> None:
        """Take the task manager's messages until its side of the stream ends."""
        try:
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    return
                message = cast(selector_pb2.ClientMessage, message)
                kind = message.WhichOneof("msg")
                running = max(0, message.heartbeat.running_tasks) if kind == "heartbeat" else None
                self._selector.touch(session, running)
                if kind == "task_status":
                    self._on_task_status(session, message.task_status)
                elif kind == "register":
                    registration = serde.registration_from_proto(message.register)
                    require_caller_is_client(registration.client_id)
                    if registration.client_id != session.client_id:
                        raise ValidationFailed(
                            f"a stream registered as {session.client_id!r} cannot register as "
                            f"{registration.client_id!r}; open a new stream"
                        )
                    await self._selector.update_registration(session, registration)
        except NsflError as exc:
            session.close(exc)
        except (grpc.RpcError, grpc.aio.AbortError) as exc:
            log.info("stream of client %s broke: %s", session.client_id, exc)
        except Exception:
            # The reader must end the session, not the handler: log it and close with a public message.
            log.exception("reading the stream of client %s failed", session.client_id)
            session.close(NsflError(CATALOGUE["Internal"].public_message))
        finally:
            session.close()

    def _on_task_status(self, session: Session, status: common_pb2.TaskStatus) -> None:
        if status.client_id and status.client_id != session.client_id:
            log.warning("client %s sent a status for client %s; ignored", session.client_id, status.client_id)
            return
        answer = serde.answer_from_status(status)
        if answer is not None and not self._selector.answer(session, status.task_id, answer):
            log.info(
                "late or unknown answer from client %s for task %s", session.client_id, status.task_id[:200]
            )

    # --- coordinators ------------------------------------------------------------------------

    @handle_errors
    async def SelectClients(
        self, request: selector_pb2.SelectRequest, context: Context
    ) -> selector_pb2.SelectResponse:
        selection = await self._selector.select(serde.selection_request_from_proto(request))
        return serde.selection_to_proto(selection)

    @handle_errors
    async def ReleaseClients(self, request: selector_pb2.ReleaseRequest, context: Context) -> common_pb2.Ack:
        job = serde.job_id(request.job_id)
        clients = [serde.client_id(c, "client_ids") for c in request.client_ids]
        released = await self._selector.release(job, clients)
        return common_pb2.Ack(ok=True, message=f"released {released} reservation(s) of job {job}")

    @handle_errors
    async def OfferTask(
        self, request: selector_pb2.OfferTaskRequest, context: Context
    ) -> selector_pb2.OfferTaskResponse:
        offer = self._checked_offer(request)
        return await self._offer(request, offer, context.time_remaining())

    @handle_errors
    async def OfferTasks(
        self, request: selector_pb2.OfferTasksRequest, context: Context
    ) -> selector_pb2.OfferTasksResponse:
        """A round's offers at once: every one checked first, then all pushed and awaited together."""
        if len(request.offers) > MAX_OFFERS_PER_CALL:
            raise ValidationFailed(
                f"{len(request.offers)} offers in one call; send at most {MAX_OFFERS_PER_CALL} per call"
            )
        checked = [self._checked_offer(one) for one in request.offers]
        remaining = context.time_remaining()
        answers = await asyncio.gather(
            *(self._offer(one, offer, remaining) for one, offer in zip(request.offers, checked, strict=True))
        )
        return selector_pb2.OfferTasksResponse(answers=answers)

    def _checked_offer(self, request: selector_pb2.OfferTaskRequest) -> CheckedOffer:
        return CheckedOffer(
            client=serde.client_id(request.client_id),
            task=serde.task_id(request.offer.task_id, "offer.task_id"),
            job=serde.job_id(request.offer.job_id),
            timeout=serde.seconds(
                request.answer_timeout_seconds, "answer_timeout_seconds", self._answer_timeout
            ),
        )

    async def _offer(
        self, request: selector_pb2.OfferTaskRequest, checked: CheckedOffer, remaining: float | None
    ) -> selector_pb2.OfferTaskResponse:
        """Push one offer down its client's stream and wait for the answer (see :meth:`Selector.offer`)."""
        client, task, job, timeout = checked.client, checked.task, checked.job, checked.timeout
        offer = request.offer
        if remaining is not None:  # answer before the caller's own deadline, not after it
            timeout = min(timeout, max(0.0, remaining - 0.05))
        if offer.deadline_unix and offer.deadline_unix <= time.time():
            return selector_pb2.OfferTaskResponse(
                accepted=False, reason=f"the deadline of task {task} has passed"
            )
        cancel = selector_pb2.SelectorMessage(
            cancel=selector_pb2.CancelTask(
                job_id=job, task_id=task, reason="the offer was not answered in time"
            )
        )
        with log_context(job=job, client=client, task=task):
            answer = await self._selector.offer(
                client, task, selector_pb2.SelectorMessage(task_offer=offer), timeout, on_timeout=cancel
            )
            if answer.accepted:
                log.debug("offer accepted")
            else:
                log.info("offer not accepted: %s", answer.reason)
        return selector_pb2.OfferTaskResponse(accepted=answer.accepted, reason=answer.reason)

    @handle_errors
    async def CancelTasks(self, request: selector_pb2.CancelTasksRequest, context: Context) -> common_pb2.Ack:
        job = serde.job_id(request.job_id)
        clients = [serde.client_id(c, "client_ids") for c in request.client_ids]
        reason = request.reason[:1000]

        def cancel_message(_: ClientId) -> selector_pb2.SelectorMessage:
            return selector_pb2.SelectorMessage(cancel=selector_pb2.CancelTask(job_id=job, reason=reason))

        sent, missed = self._selector.cancel(clients, cancel_message)
        message = f"cancel of job {job} sent to {len(sent)} client(s)"
        if missed:
            message += f"; not connected: {', '.join(missed[:20])}" + (" ..." if len(missed) > 20 else "")
        return common_pb2.Ack(ok=not missed, message=message)

    # --- operators ---------------------------------------------------------------------------

    @handle_errors
    async def ListClients(
        self, request: selector_pb2.ListClientsRequest, context: Context
    ) -> selector_pb2.ListClientsResponse:
        views = self._selector.list_clients(include_lost=request.include_lost)
        return selector_pb2.ListClientsResponse(clients=[serde.client_info_to_proto(v) for v in views])
