"""Fake ``JobControl`` and ``ClientSelector`` servers for the API server tests.

They speak the real protocols over real channels on loopback port 0, so the
API server's gRPC adapters, error mapping and timeouts are exercised as in
production, over mutual TLS with the identities of the test PKI: the fake
scheduler answers as ``control/scheduler`` and the fake selector as
``control/selector``, each behind the real authorisation guard.  The fake scheduler keeps jobs in the same SQLite file the API
server reads (through its own connection), as the real scheduler does, and
follows the state rules of DESIGN §4 closely enough for the REST tests; it
records every call (with the ``nsfl-namespaces`` header and the verified
caller) so tests can check what was forwarded and on whose behalf.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
import grpc.aio

from libs.errors import InvalidState, VersionConflict
from libs.pki.identity import Identity
from libs.protos import common_pb2, scheduler_pb2, scheduler_pb2_grpc, selector_pb2, selector_pb2_grpc
from libs.rpc import handle_errors
from libs.store import DocumentStore
from libs.wire import Wire, current_caller

UPDATABLE = {"QUEUED", "PENDING", "FINISHED", "FAILED", "STOPPED"}
TERMINAL = {"FINISHED", "FAILED", "STOPPED"}
COORDINATOR_SECRET = "coordinator-secret-never-shown"
Context: TypeAlias = grpc.aio.ServicerContext


def job_document(
    namespace: str, spec: dict[str, Any], *, state: str = "QUEUED", now: float | None = None
) -> dict[str, Any]:
    now = time.time() if now is None else now
    return {
        "namespace": namespace, "name": spec["name"], "spec": spec, "state": state, "reason": "Submitted",
        "priority": spec.get("priority", 0), "createdAt": now, "updatedAt": now, "startedAt": None,
        "endedAt": None, "transitions": [{"to": state, "reason": "Submitted", "at": now}],
        "status": {"round": 0, "rounds": spec.get("rounds", 10), "progress": 0.0, "participants": [],
                   "lastMetrics": {}, "trainMetrics": {}, "checkpoints": [], "finalModel": None},
        "coordinator": {"endpoint": "", "token": COORDINATOR_SECRET},
    }  # fmt: skip


def _reply(data: dict[str, Any], version: int | None = None) -> scheduler_pb2.JobReply:
    return scheduler_pb2.JobReply(job_json=json.dumps({**data, **({"version": version} if version else {})}))


@dataclass(frozen=True)
class Forwarded:
    """On whose behalf a call came: the ``nsfl-namespaces`` header and the caller's certificate identity."""

    method: str
    namespaces: str | None
    caller: Identity | None


@dataclass
class FakeJobControl(scheduler_pb2_grpc.JobControlServicer):
    store: DocumentStore
    calls: list[tuple[str, Any]] = field(default_factory=list)
    forwarded: list[Forwarded] = field(default_factory=list)
    logs: str = "line 1\nline 2\nline 3\n"

    def _record(self, method: str, request: Any, context: Context) -> None:
        self.calls.append((method, request))
        header = dict(context.invocation_metadata() or ()).get("nsfl-namespaces")
        self.forwarded.append(Forwarded(method, header, current_caller()))

    async def _set_state(self, namespace: str, name: str, state: str) -> scheduler_pb2.JobReply:
        document = await self.store.get("jobs", f"{namespace}/{name}")
        updated = await self.store.patch(
            "jobs", document.key, {"state": state, "reason": f"user asked: {state}"}
        )
        return _reply(updated.data, updated.version)

    @handle_errors
    async def SubmitJob(
        self, request: scheduler_pb2.SubmitJobRequest, context: Context
    ) -> scheduler_pb2.JobReply:
        self._record("SubmitJob", request, context)
        spec = json.loads(request.spec_json)
        document = await self.store.insert(
            "jobs", f"{request.namespace}/{spec['name']}", job_document(request.namespace, spec)
        )
        return _reply(document.data, document.version)

    @handle_errors
    async def UpdateJob(
        self, request: scheduler_pb2.UpdateJobRequest, context: Context
    ) -> scheduler_pb2.JobReply:
        self._record("UpdateJob", request, context)
        key = f"{request.ref.namespace}/{request.ref.name}"
        document = await self.store.get("jobs", key)
        if document.version != request.expected_version:
            raise VersionConflict("the job changed meanwhile", details={"current_version": document.version})
        if document.data["state"] not in UPDATABLE:
            raise InvalidState(f"cannot update job in state {document.data['state']}")
        updated = await self.store.patch(
            "jobs", key, {"spec": json.loads(request.spec_json)}, expected_version=request.expected_version
        )
        return _reply(updated.data, updated.version)

    @handle_errors
    async def StartJob(
        self, request: scheduler_pb2.StartJobRequest, context: Context
    ) -> scheduler_pb2.JobReply:
        self._record("StartJob", request, context)
        document = await self.store.get("jobs", f"{request.ref.namespace}/{request.ref.name}")
        if document.data["state"] not in TERMINAL | {"QUEUED"}:
            raise InvalidState(
                f"cannot start job in state {document.data['state']} (allowed in: FINISHED, FAILED, STOPPED)"
            )
        return await self._set_state(request.ref.namespace, request.ref.name, "QUEUED")

    @handle_errors
    async def StopJob(self, request: scheduler_pb2.JobRef, context: Context) -> scheduler_pb2.JobReply:
        self._record("StopJob", request, context)
        document = await self.store.get("jobs", f"{request.namespace}/{request.name}")
        state = document.data["state"]
        if state == "FINISHED" or state == "FAILED":
            raise InvalidState(f"cannot stop job in state {state}")
        target = "STOPPED" if state in ("QUEUED", "PENDING", "STOPPED") else "STOPPING"
        return await self._set_state(request.namespace, request.name, target)

    @handle_errors
    async def DeleteJob(self, request: scheduler_pb2.JobRef, context: Context) -> scheduler_pb2.JobReply:
        self._record("DeleteJob", request, context)
        key = f"{request.namespace}/{request.name}"
        document = await self.store.get("jobs", key)
        if document.data["state"] not in TERMINAL | {"QUEUED", "PENDING"}:
            raise InvalidState(f"cannot delete job in state {document.data['state']}; stop it first")
        await self.store.delete("jobs", key)
        return _reply({**document.data, "state": "DELETING"})

    @handle_errors
    async def GetJob(self, request: scheduler_pb2.JobRef, context: Context) -> scheduler_pb2.JobReply:
        document = await self.store.get("jobs", f"{request.namespace}/{request.name}")
        return _reply(document.data, document.version)

    @handle_errors
    async def ListJobs(
        self, request: scheduler_pb2.ListJobsRequest, context: Context
    ) -> scheduler_pb2.ListJobsReply:
        documents = await self.store.find("jobs", {"namespace": request.namespace})
        return scheduler_pb2.ListJobsReply(jobs_json=[json.dumps(d.data) for d in documents])

    async def ReportProgress(self, request: scheduler_pb2.ProgressReport, context: Context) -> common_pb2.Ack:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the API server never reports progress")
        raise AssertionError("unreachable")

    @handle_errors
    async def GetJobLogs(
        self, request: scheduler_pb2.JobLogsRequest, context: Context
    ) -> scheduler_pb2.JobLogsReply:
        self._record("GetJobLogs", request, context)
        lines = self.logs.splitlines(keepends=True)
        tail = lines[-request.tail_lines :] if request.tail_lines else lines
        return scheduler_pb2.JobLogsReply(text="".join(tail))


@dataclass
class FakeSelector(selector_pb2_grpc.ClientSelectorServicer):
    calls: list[selector_pb2.ListClientsRequest] = field(default_factory=list)

    @handle_errors
    async def ListClients(
        self, request: selector_pb2.ListClientsRequest, context: Context
    ) -> selector_pb2.ListClientsResponse:
        self.calls.append(request)
        clients = [
            selector_pb2.ClientInfo(
                client_id="hospital-a", runtimes=["pytorch"], liveness="alive", last_heartbeat_unix=time.time(),
                datasets=[common_pb2.Dataset(name="mnist", samples=600)], labels={"region": "eu"},
                resources=common_pb2.Resources(cpus=4, memory_mb=8192), source="10.0.0.7",
                expires_at_unix=2_000_000_000.0,
            ),
            selector_pb2.ClientInfo(client_id="hospital-b", runtimes=["pytorch"], liveness="lost"),
        ]  # fmt: skip
        if not request.include_lost:
            clients = [c for c in clients if c.liveness == "alive"]
        return selector_pb2.ListClientsResponse(clients=clients)

    # The rest of the service is for task managers and coordinators, never the API server.

    async def Connect(
        self, request_iterator: Any, context: Context
    ) -> AsyncIterator[selector_pb2.SelectorMessage]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by the API server")
        yield selector_pb2.SelectorMessage()  # never reached: abort raises; the yield makes a stream

    async def SelectClients(self, request: selector_pb2.SelectRequest, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by the API server")

    async def ReleaseClients(self, request: selector_pb2.ReleaseRequest, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by the API server")

    async def OfferTask(self, request: selector_pb2.OfferTaskRequest, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by the API server")

    async def OfferTasks(self, request: selector_pb2.OfferTasksRequest, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by the API server")

    async def CancelTasks(self, request: selector_pb2.CancelTasksRequest, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by the API server")


_add_scheduler: Callable[[Any, grpc.aio.Server], None] = scheduler_pb2_grpc.add_JobControlServicer_to_server
_add_selector: Callable[[Any, grpc.aio.Server], None] = selector_pb2_grpc.add_ClientSelectorServicer_to_server


async def start_fake_server(
    wire: Wire, add: Callable[[grpc.aio.Server], None]
) -> tuple[grpc.aio.Server, int]:
    """A gRPC server of ``wire`` (its identity, its guard) on a free loopback port; (server, port)."""
    server = wire.server()
    add(server)
    port = wire.add_port(server, "127.0.0.1:0")
    await server.start()
    return server, port


async def start_fake_servers(
    scheduler: FakeJobControl, selector: FakeSelector, *, scheduler_wire: Wire, selector_wire: Wire
) -> tuple[list[grpc.aio.Server], int, int]:
    """The fake scheduler and the fake selector, each as its own identity; (servers, scheduler port, selector port)."""
    scheduler_server, scheduler_port = await start_fake_server(
        scheduler_wire, lambda server: _add_scheduler(scheduler, server)
    )
    selector_server, selector_port = await start_fake_server(
        selector_wire, lambda server: _add_selector(selector, server)
    )
    return [scheduler_server, selector_server], scheduler_port, selector_port
