"""Adapter: the client selector's ``ListClients`` as the REST client listing.

The selector owns the client registry and each client's liveness (from its
heartbeats); the API server only shows it.  :func:`client_to_json` is the one
place that turns a ``ClientInfo`` into the REST shape (camelCase, like the
job spec), so the wire type stays here.
"""

from __future__ import annotations

from typing import Protocol, TypedDict

from api_server.upstream import upstream_errors
from libs.protos import selector_pb2, selector_pb2_grpc
from libs.wire import Wire

SELECTOR = "the client selector"


class ClientDirectory(Protocol):
    """Where the REST API reads the registered clients from."""

    async def list_clients(self, *, include_lost: bool) -> list[ClientView]: ...

    async def ping(self) -> None:
        """Return once the selector can be reached (callers bound the wait with a timeout)."""
        ...

    async def close(self) -> None: ...


class DatasetView(TypedDict):
    name: str
    samples: int
    tags: list[str]


class ResourcesView(TypedDict):
    cpus: float
    memoryMb: int
    gpus: int
    diskMb: int


class ClientView(TypedDict):
    """A registered client as REST shows it (``Client`` in ``/openapi.json``)."""

    clientId: str
    liveness: str
    lastHeartbeat: float | None
    runningTasks: int
    reservedBy: str | None  # the reserving jobs, comma-separated
    source: str | None
    expiresAt: float | None
    runtimes: list[str]
    datasets: list[DatasetView]
    labels: dict[str, str]
    resources: ResourcesView


def client_to_json(info: selector_pb2.ClientInfo) -> ClientView:
    return {
        "clientId": info.client_id,
        "liveness": info.liveness or "unknown",
        "lastHeartbeat": info.last_heartbeat_unix or None,
        "runningTasks": info.running_tasks,
        "reservedBy": info.reserved_by or None,
        # Registry hygiene: the peer host it registered from, and when its entry expires if it stays away.
        "source": info.source or None,
        "expiresAt": info.expires_at_unix or None,
        "runtimes": list(info.runtimes),
        "datasets": [{"name": d.name, "samples": d.samples, "tags": list(d.tags)} for d in info.datasets],
        "labels": dict(info.labels),
        "resources": {
            "cpus": info.resources.cpus,
            "memoryMb": info.resources.memory_mb,
            "gpus": info.resources.gpus,
            "diskMb": info.resources.disk_mb,
        },
    }


class GrpcClientDirectory:
    """:class:`ClientDirectory` over a channel of ``wire`` that only the selector's identity can answer."""

    def __init__(self, address: str, *, wire: Wire, timeout: float) -> None:
        self._channel = wire.channel(address, wire.control("selector"))
        self._stub = selector_pb2_grpc.ClientSelectorStub(self._channel)
        self._timeout = timeout

    async def list_clients(self, *, include_lost: bool) -> list[ClientView]:
        request = selector_pb2.ListClientsRequest(include_lost=include_lost)
        with upstream_errors(SELECTOR):
            reply = await self._stub.ListClients(request, timeout=self._timeout)
        return sorted((client_to_json(info) for info in reply.clients), key=lambda c: str(c["clientId"]))

    async def ping(self) -> None:
        await self._channel.channel_ready()

    async def close(self) -> None:
        await self._channel.close()
