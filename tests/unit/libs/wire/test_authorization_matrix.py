"""Every RPC of every service × every kind of caller, over real mTLS on loopback.

The services are read from the compiled proto descriptors and served by stand-in
handlers behind the real guard (the servicers' own checks, a stream's registration
or a task's ticket, are tested with each component).  The expected outcome of each
call is written out here by hand, not derived from the table, so a change to the
table that widens or narrows access fails this test; an RPC without an expectation
here fails it too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from libs.pki.authority import cert_pem, key_pem, new_key, utcnow
from libs.pki.directory import write_issued
from libs.pki.identity import Identity
from libs.pki.revocation import RECHECK_SECONDS
from libs.protos import coordinator_pb2, scheduler_pb2, selector_pb2
from libs.wire import Wire, WireSettings
from tests.fixtures.pki import TestPki

JOB_X, JOB_Y = "team-a/x", "team-b/y"
CALLERS = (
    "anonymous", "client-a", "client-b", "coordinator-x", "coordinator-y", "scheduler", "api-server",
    "revoked-client", "expired", "stranger",
)  # fmt: skip
SERVICES: list[ServiceDescriptor] = [
    service
    for module in (selector_pb2, coordinator_pb2, scheduler_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
]
# Which server identity serves each service: the coordinator under test is job X's.
SERVER_OF = {
    "nsfl.v1.ClientSelector": "selector",
    "nsfl.v1.Coordinator": "coordinator-x",
    "nsfl.v1.JobControl": "scheduler",
}

CLIENTS = {"client-a", "client-b"}
TASK_HOLDERS = CLIENTS
USER_RPC = {"api-server"}


@dataclass(frozen=True)
class Case:
    method: str  # "Service/Method"
    allowed: frozenset[str]
    request: dict[str, Any]
    label: str = ""


def cases() -> list[Case]:
    def case(method: str, allowed: set[str], label: str = "", **request: Any) -> Case:
        return Case(method, frozenset(allowed), request, label)

    offer_x = {"client_id": "client-a", "offer": {"job_id": JOB_X, "task_id": "t1"}}
    offer_y = {"client_id": "client-a", "offer": {"job_id": JOB_Y, "task_id": "t2"}}
    return [
        case("ClientSelector/Connect", CLIENTS),
        case("ClientSelector/SelectClients", {"coordinator-x"}, "own job", job_id=JOB_X),
        case(
            "ClientSelector/SelectClients",
            {"coordinator-x", "scheduler"},
            "dry run",
            job_id=JOB_X,
            dry_run=True,
        ),
        case("ClientSelector/ReleaseClients", {"coordinator-x"}, job_id=JOB_X),
        case("ClientSelector/OfferTask", {"coordinator-x"}, **offer_x),
        case("ClientSelector/OfferTasks", {"coordinator-x"}, "own job", offers=[offer_x]),
        case("ClientSelector/OfferTasks", set(), "one offer of another job", offers=[offer_x, offer_y]),
        case("ClientSelector/CancelTasks", {"coordinator-x"}, job_id=JOB_X),
        case("ClientSelector/ListClients", {"scheduler", "api-server"}),
        *(
            case(f"Coordinator/{name}", TASK_HOLDERS)
            for name in (
                "DownloadModel",
                "UploadUpdate",
                "SubmitUpdate",
                "GetUploadOffset",
                "ReportTaskStatus",
                "GetTaskPlan",
                "SecureAggregate",
                "AwaitModel",
            )
        ),  # fmt: skip
        case("Coordinator/GetStatus", {"scheduler", "api-server", "coordinator-x"}),
        case("Coordinator/Stop", {"scheduler", "coordinator-x"}),
        *(
            case(f"JobControl/{name}", USER_RPC)
            for name in (
                "SubmitJob",
                "GetJob",
                "ListJobs",
                "UpdateJob",
                "StartJob",
                "StopJob",
                "DeleteJob",
                "GetJobLogs",
            )
        ),
        case("JobControl/ReportProgress", {"coordinator-x"}, job_id=JOB_X),
    ]


def methods() -> dict[str, MethodDescriptor]:
    return {f"{s.name}/{m.name}": m for s in SERVICES for m in s.methods}


def message_class(descriptor: Any) -> Any:
    return message_factory.GetMessageClass(descriptor)


def test_every_rpc_of_every_service_has_expectations_here() -> None:
    assert {c.method for c in cases()} == set(methods())


# --- servers: stand-in handlers for every method, behind the real guard --------------------------------


def stand_in_handler(service: ServiceDescriptor) -> grpc.GenericRpcHandler:
    handlers = {}
    for method in service.methods:
        reply = message_class(method.output_type)
        parse = message_class(method.input_type).FromString

        async def answer(request: Any, context: grpc.aio.ServicerContext, reply: Any = reply) -> Any:
            return reply()

        async def stream(
            request: Any, context: grpc.aio.ServicerContext, reply: Any = reply
        ) -> AsyncIterator[Any]:
            yield reply()

        kind = (method.client_streaming, method.server_streaming)
        maker = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[kind]
        handlers[method.name] = maker(
            stream if method.server_streaming else answer,
            request_deserializer=parse,
            response_serializer=lambda m: m.SerializeToString(),
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def wire_for(test_pki: TestPki, other_pki: TestPki, who: str, tmp: Path) -> Wire:
    named = {
        "client-a": test_pki.identity("client", "client-a"),
        "client-b": test_pki.identity("client", "client-b"),
        "coordinator-x": test_pki.identity("coordinator", *JOB_X.split("/")),
        "coordinator-y": test_pki.identity("coordinator", *JOB_Y.split("/")),
        "scheduler": test_pki.identity("scheduler"),
        "api-server": test_pki.identity("api-server"),
        "selector": test_pki.identity("selector"),
    }
    if who == "anonymous":
        return Wire.insecure()
    if who == "stranger":
        return other_pki.wire(other_pki.identity("api-server"))
    if who in ("revoked-client", "expired"):
        folder = tmp / who
        folder.mkdir(parents=True, exist_ok=True)
        authority = test_pki.directory.authority()
        identity = Identity.client(who, test_pki.trust_domain)
        if who == "expired":
            key = new_key()
            cert = authority.issue(identity, key.public_key(), days=1, now=utcnow() - dt.timedelta(days=3))
            (folder / "key.pem").write_bytes(key_pem(key))
            (folder / "cert.pem").write_bytes(cert_pem(cert))
        else:
            write_issued(authority, identity, folder / "cert.pem", folder / "key.pem")
            test_pki.directory.revoke(x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes()))
        return Wire.from_settings(
            WireSettings(
                tls_ca=test_pki.directory.ca, tls_cert=folder / "cert.pem", tls_key=folder / "key.pem"
            )
        )
    return test_pki.wire(named[who])


@pytest.fixture
async def servers(test_pki: TestPki) -> AsyncIterator[dict[str, tuple[int, Identity]]]:
    started: dict[str, tuple[int, Identity]] = {}
    running = []
    for service in SERVICES:
        who = SERVER_OF[service.full_name]
        identity = (
            test_pki.identity("coordinator", *JOB_X.split("/"))
            if who == "coordinator-x"
            else test_pki.identity(who)
        )
        wire = test_pki.wire(identity)
        server = wire.server()
        server.add_generic_rpc_handlers([stand_in_handler(service)])
        port = wire.add_port(server, "127.0.0.1:0")
        await server.start()
        running.append(server)
        started[service.name] = (port, identity)
    yield started
    for server in running:
        await server.stop(None)


async def invoke(channel: grpc.aio.Channel, method: MethodDescriptor, request: Any) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    serialize = message_class(method.input_type).SerializeToString
    parse = message_class(method.output_type).FromString
    if method.client_streaming:

        async def one() -> AsyncIterator[Any]:
            yield request

        if method.server_streaming:
            call = channel.stream_stream(path, request_serializer=serialize, response_deserializer=parse)(
                one(), timeout=5
            )
            async for _ in call:
                pass
        else:
            await channel.stream_unary(path, request_serializer=serialize, response_deserializer=parse)(
                one(), timeout=5
            )
    elif method.server_streaming:
        call = channel.unary_stream(path, request_serializer=serialize, response_deserializer=parse)(
            request, timeout=5
        )
        async for _ in call:
            pass
    else:
        await channel.unary_unary(path, request_serializer=serialize, response_deserializer=parse)(
            request, timeout=5
        )


def outcomes() -> Iterator[tuple[Case, str]]:
    for case in cases():
        for who in CALLERS:
            yield case, who


async def test_each_call_is_allowed_or_refused_as_the_table_says(
    test_pki: TestPki, other_pki: TestPki, tmp_path: Path, servers: dict[str, tuple[int, Identity]]
) -> None:
    table = methods()
    wires = {who: wire_for(test_pki, other_pki, who, tmp_path) for who in CALLERS}
    await asyncio.sleep(RECHECK_SECONDS + 0.1)  # the servers take the new revocation list within this
    wrong: list[str] = []
    for case, who in outcomes():
        method = table[case.method]
        port, server_identity = servers[method.containing_service.name]
        request = message_class(method.input_type)(**case.request)
        async with wires[who].channel(f"127.0.0.1:{port}", server_identity) as channel:
            try:
                await invoke(channel, method, request)
                got = "allowed"
            except grpc.aio.AioRpcError as exc:
                got = exc.code().name
        expected_allowed = who in case.allowed
        if expected_allowed and got != "allowed":
            wrong.append(f"{case.method} [{case.label}] by {who}: expected allowed, got {got}")
        if not expected_allowed:
            # Refused at the handshake (no or untrusted certificate) or by the guard: never a crash.
            acceptable = {"UNAVAILABLE"} if who in ("anonymous", "expired", "stranger") else set()
            acceptable |= {"UNAUTHENTICATED"} if who == "revoked-client" else {"PERMISSION_DENIED"}
            if got not in acceptable:
                wrong.append(
                    f"{case.method} [{case.label}] by {who}: expected one of {sorted(acceptable)}, got {got}"
                )
    assert not wrong, "\n".join(wrong)
