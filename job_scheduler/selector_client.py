"""Adapter: "are there enough clients for this job right now?", asked of the client selector.

Admission asks ``SelectClients`` with ``dry_run=True``: the selector answers
as it would for a round but reserves nobody, so checking a queued job never
takes clients away from a running one.  The count asked for is the job's
``minClients`` (the fewest that can close a round), not ``clientsPerRound``:
a job that can make progress is admitted, and the coordinator asks for its
full round itself.

The selector never returns a partial set: when too few match, ``satisfied``
is false and ``matched`` says how many were eligible.  A selector that
cannot be reached counts as zero matching clients (with that reason), so a
PENDING job still reaches its deadline instead of waiting forever.

The channel goes through the scheduler's :class:`~libs.wire.Wire`: TLS checks
the server is the control plane's selector, and the selector's table lets
the scheduler ask only with ``dry_run``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import grpc.aio

from libs.errors import NsflError
from libs.jobspec import JobSpec
from libs.jobspec.serde import requirement_to_proto
from libs.protos import selector_pb2, selector_pb2_grpc
from libs.rpc import call_errors
from libs.wire import Wire

log = logging.getLogger(__name__)

_PREFIX = "InsufficientClients"


@dataclass(frozen=True)
class Availability:
    satisfied: bool
    matched: int
    needed: int
    detail: str = ""

    @property
    def reason(self) -> str:
        """``InsufficientClients <matched>/<needed>: <why>``, the reason a PENDING or FAILED job shows."""
        why = self.detail
        if why.startswith(_PREFIX):  # the selector's own reason already starts with the counts
            why = why.partition(":")[2].strip()
        return f"{_PREFIX} {self.matched}/{self.needed}" + (f": {why}" if why else "")


class ClientAvailability(Protocol):
    async def check(self, job_id: str, spec: JobSpec) -> Availability: ...


class SelectorAvailability:
    """:class:`ClientAvailability` over the selector's gRPC API."""

    def __init__(self, target: str, wire: Wire, *, timeout: float = 5.0) -> None:
        self._channel: grpc.aio.Channel = wire.channel(target, wire.control("selector"))
        self._stub = selector_pb2_grpc.ClientSelectorStub(self._channel)
        self._timeout = timeout

    async def check(self, job_id: str, spec: JobSpec) -> Availability:
        needed = spec.min_clients
        request = selector_pb2.SelectRequest(
            job_id=job_id,
            round=0,
            count=needed,
            redundancy=1.0,
            requirement=requirement_to_proto(spec.requirement),
            dry_run=True,
        )
        try:
            with call_errors():
                reply = await self._stub.SelectClients(request, timeout=self._timeout)
        except NsflError as exc:
            log.warning("cannot ask the client selector about %s: %s", job_id, exc.message)
            return Availability(False, 0, needed, f"the client selector is unavailable ({exc.message})")
        return Availability(bool(reply.satisfied), int(reply.matched), needed, reply.reason)

    async def close(self) -> None:
        await self._channel.close()
