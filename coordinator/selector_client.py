"""Adapter: the coordinator's calls to the client selector (gRPC).

Wire types stay here: the driver passes plain values and gets plain values
back, so it can be tested against a fake with the same four methods.  The
channel answers only to the selector's identity (``control/selector``), over
the coordinator's own :class:`~libs.wire.Wire`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from libs.jobspec.serde import requirement_to_proto
from libs.jobspec.spec import ClientRequirement
from libs.protos import selector_pb2, selector_pb2_grpc
from libs.rpc import call_errors, error_from_rpc
from libs.tasks import AlgorithmSettings
from libs.tasks.serde import algorithm_to_proto, parameters_to_proto
from libs.wire import Wire


@dataclass(frozen=True)
class Selection:
    clients: list[tuple[str, str]]  # (client id, why it was picked)
    matched: int
    wanted: int
    satisfied: bool
    reason: str


@dataclass(frozen=True)
class Offer:
    client_id: str
    task_id: str
    job_id: str
    namespace: str
    round: int
    attempt: int
    kind: str
    runtime: str
    endpoint: str
    model_sha256: str
    token: str
    entry: str
    parameters: Mapping[str, Any]  # the job's, for the user's code
    datasets: Sequence[str]
    timeout_seconds: float
    deadline_unix: float
    mode: str = "script"
    evaluate_first: bool = False  # train task: evaluate the model given first (coordinator.piggyback)
    secure_aggregation: bool = False  # the update travels over SecureAggregate (the task's plan)
    model: bytes = b""  # the global model itself, when small enough to ride along (no download)
    model_follows: bool = False  # offered ahead: the executor asks AwaitModel (coordinator.lookahead)
    algorithm: AlgorithmSettings = AlgorithmSettings()  # what the client must know of the job's algorithm


class SelectorClient:
    def __init__(self, target: str, wire: Wire, *, call_timeout: float = 15.0) -> None:
        self._channel: grpc.aio.Channel = wire.channel(target, wire.control("selector"))
        self._stub = selector_pb2_grpc.ClientSelectorStub(self._channel)
        self._timeout = call_timeout
        self._one_by_one = False  # the selector has no OfferTasks (an older one)

    async def close(self) -> None:
        await self._channel.close()

    async def select(self, *, job_id: str, round_number: int, count: int, redundancy: float,
                     requirement: ClientRequirement, random: bool, untrained_first: bool,
                     reservation_seconds: float, seed: int) -> Selection:
        request = selector_pb2.SelectRequest(
            job_id=job_id, round=round_number, count=count, redundancy=redundancy,
            requirement=requirement_to_proto(requirement),
            random=random, untrained_first=untrained_first, reservation_seconds=reservation_seconds,
            seed=seed,
        )
        with call_errors():
            reply = await self._stub.SelectClients(request, timeout=self._timeout)
        return Selection(clients=[(c.client_id, c.why) for c in reply.clients], matched=reply.matched,
                         wanted=reply.wanted, satisfied=reply.satisfied, reason=reply.reason)

    async def offer(self, offer: Offer, *, answer_timeout: float) -> tuple[bool, str]:
        return (await self.offer_many([offer], answer_timeout=answer_timeout))[0]

    async def offer_many(self, offers: Sequence[Offer], *, answer_timeout: float) -> list[tuple[bool, str]]:
        """Offer a round's tasks in one call (``OfferTasks``); ``(accepted, reason)`` per offer, in order.

        One call instead of one per client: the offers reach their clients together, and a round
        costs the coordinator and the selector one exchange.  A selector from before ``OfferTasks``
        answers UNIMPLEMENTED, and the offers then go one call each, as they used to.
        """
        requests = [selector_pb2.OfferTaskRequest(client_id=o.client_id, offer=_task_offer(o),
                                                  answer_timeout_seconds=answer_timeout) for o in offers]
        if not self._one_by_one:
            try:
                reply = await self._stub.OfferTasks(selector_pb2.OfferTasksRequest(offers=requests),
                                                    timeout=answer_timeout + self._timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:  # a failed offer only drops its clients
                    return [(False, f"offer failed: {error_from_rpc(exc)}")] * len(offers)
                self._one_by_one = True
            else:
                if len(reply.answers) != len(offers):
                    return [(False, f"offer failed: {len(reply.answers)} answers to {len(offers)} offers")] \
                        * len(offers)
                return [(a.accepted, a.reason) for a in reply.answers]
        return list(await asyncio.gather(*(self._offer_one(r, answer_timeout) for r in requests)))

    async def _offer_one(self, request: selector_pb2.OfferTaskRequest, answer_timeout: float) -> tuple[bool, str]:
        try:
            with call_errors():
                reply = await self._stub.OfferTask(request, timeout=answer_timeout + self._timeout)
        except Exception as exc:  # a failed offer only drops that client
            return False, f"offer failed: {exc}"
        return reply.accepted, reply.reason

    async def release(self, job_id: str, client_ids: Sequence[str] = ()) -> None:
        with call_errors():
            await self._stub.ReleaseClients(
                selector_pb2.ReleaseRequest(job_id=job_id, client_ids=list(client_ids)), timeout=self._timeout)

    async def cancel(self, job_id: str, client_ids: Sequence[str], reason: str) -> None:
        with call_errors():
            await self._stub.CancelTasks(
                selector_pb2.CancelTasksRequest(job_id=job_id, client_ids=list(client_ids), reason=reason),
                timeout=self._timeout)


def _task_offer(offer: Offer) -> selector_pb2.TaskOffer:
    return selector_pb2.TaskOffer(
        task_id=offer.task_id, job_id=offer.job_id, namespace=offer.namespace, round=offer.round,
        attempt=offer.attempt, kind=offer.kind, runtime=offer.runtime,
        coordinator_endpoint=offer.endpoint, model_sha256=offer.model_sha256,
        spec=selector_pb2.TaskSpec(entry=offer.entry, parameters=parameters_to_proto(offer.parameters),
                                   algorithm=algorithm_to_proto(offer.algorithm), datasets=list(offer.datasets),
                                   timeout_seconds=offer.timeout_seconds, mode=offer.mode),
        task_token=offer.token, deadline_unix=offer.deadline_unix, evaluate_first=offer.evaluate_first,
        secure_aggregation=offer.secure_aggregation, model=offer.model, model_follows=offer.model_follows,
    )
