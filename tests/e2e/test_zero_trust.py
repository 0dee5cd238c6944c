"""The attacks of issue 12 against real processes on loopback, while a real job runs.

A selector, three task managers and a coordinator speak mutual TLS with
certificates of the test CA.  While the job trains, an outsider with no
certificate, a stranger with another CA's, an enrolled client ("mallory")
and another job's coordinator try what worked before the wire was secured:
offering a task naming an attacker's endpoint, displacing a client's stream,
flooding the registry with invented ids, stopping the coordinator.  Every
attempt is refused with a status, never a crash, and the job still finishes
with the right result and only its own clients.  A second test replaces the
selector's and the coordinator's certificates on disk mid-job: the job
finishes and new connections get the new certificates.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509

from libs.pki.authority import load_certificates
from libs.protos import coordinator_pb2, coordinator_pb2_grpc, selector_pb2, selector_pb2_grpc
from libs.wire import Wire
from tests.e2e.conftest import client_config, digits_job
from tests.e2e.harness import Cluster, iter_evaluations, read_status, wait_for
from tests.fixtures.pki import TestPki

pytestmark = pytest.mark.slow

JOB = "default/digits"


def start_federation(cluster: Cluster, shares: dict[str, dict[str, Any]], rounds: int) -> tuple[str, Any]:
    selector = cluster.start_selector()
    for index, share in enumerate(shares.values()):
        name = f"client-{index}"
        cluster.start_task_manager(name, client_config(name, share, selector, cluster.base / name))
    workdir = cluster.base / "coordinator"
    proc = cluster.start_coordinator("coordinator", digits_job(rounds=rounds), selector=selector, workdir=workdir,
                                     state=cluster.base / "state")
    wait_for("round 2", lambda: read_status(workdir).get("round", 0) >= 2, 180, cluster.procs)
    return selector, proc


def finished(cluster: Cluster, proc: Any, timeout: float = 240) -> dict[str, Any]:
    wait_for("the coordinator to end", lambda: not proc.alive(), timeout, cluster.procs)
    status = read_status(cluster.base / "coordinator")
    assert status.get("state") == "FINISHED", f"{status.get('state')}: {status.get('reason')}\n{cluster.logs()}"
    return status


async def refused(call: Any) -> str:
    """The status code of a call that must fail; a success fails the test."""
    try:
        result = call()
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    raise AssertionError("the call was allowed")


def forged_offer(endpoint: str) -> selector_pb2.OfferTaskRequest:
    return selector_pb2.OfferTaskRequest(
        client_id="client-0",
        offer=selector_pb2.TaskOffer(task_id="forged-1", job_id=JOB, round=99, kind="train",
                                     coordinator_endpoint=endpoint, task_token="t" * 43),
        answer_timeout_seconds=2,
    )


async def register_as(wire: Wire, selector: str, client_id: str) -> str:
    async def messages() -> AsyncIterator[selector_pb2.ClientMessage]:
        yield selector_pb2.ClientMessage(register=selector_pb2.Register(client_id=client_id, runtimes=["pytorch"]))
        await asyncio.sleep(2)

    async with wire.channel(selector, wire.control("selector")) as channel:
        return await refused(lambda: selector_pb2_grpc.ClientSelectorStub(channel).Connect(messages(), timeout=5))


async def attack(cluster: Cluster, other_pki: TestPki, selector: str, coordinator: str) -> dict[str, list[str]]:
    pki = cluster.pki
    outsider = Wire.insecure()
    stranger = other_pki.wire(other_pki.identity("coordinator", "default", "digits"))
    mallory = pki.wire(pki.identity("client", "mallory"))
    other_job = pki.wire(pki.identity("coordinator", "default", "evil"))
    seen: dict[str, list[str]] = {}
    attacker_endpoint = "127.0.0.1:9"  # where a forged offer would send the client's update

    for wire in (outsider, stranger, mallory, other_job):
        async with wire.channel(selector, wire.control("selector")) as channel:
            stub = selector_pb2_grpc.ClientSelectorStub(channel)
            seen.setdefault("forged offer", []).append(
                await refused(lambda stub=stub: stub.OfferTask(forged_offer(attacker_endpoint), timeout=5))
            )
        async with wire.channel(coordinator, wire.coordinator_of(JOB)) as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)
            seen.setdefault("stop", []).append(
                await refused(lambda stub=stub: stub.Stop(coordinator_pb2.StopRequest(reason="attack"), timeout=5))
            )
            seen.setdefault("status", []).append(
                await refused(lambda stub=stub: stub.GetStatus(coordinator_pb2.StatusRequest(), timeout=5))
            )
    for wire in (outsider, stranger, mallory):
        seen.setdefault("displace client-0", []).append(await register_as(wire, selector, "client-0"))
    flood = await asyncio.gather(*(register_as(mallory, selector, f"invented-{i}") for i in range(200)))
    flood += await asyncio.gather(*(register_as(outsider, selector, f"plain-{i}") for i in range(20)))
    seen["registry flood"] = sorted(set(flood))
    return seen


async def registry(cluster: Cluster, selector: str) -> dict[str, str]:
    api = cluster.pki.wire(cluster.pki.identity("api-server"))
    async with api.channel(selector, api.control("selector")) as channel:
        reply = await selector_pb2_grpc.ClientSelectorStub(channel).ListClients(
            selector_pb2.ListClientsRequest(include_lost=True), timeout=5
        )
    return {c.client_id: c.liveness for c in reply.clients}


def test_attacks_on_a_running_job_are_refused_and_the_job_still_finishes_right(
    cluster: Cluster, digits_shares: Any, other_pki: TestPki
) -> None:
    selector, proc = start_federation(cluster, digits_shares, rounds=30)
    coordinator = read_status(cluster.base / "coordinator")["endpoint"]
    seen = asyncio.run(attack(cluster, other_pki, selector, coordinator))
    handshake, denied = "UNAVAILABLE", "PERMISSION_DENIED"
    assert seen["forged offer"] == [handshake, handshake, denied, denied], seen
    assert seen["stop"] == [handshake, handshake, denied, denied], seen
    assert seen["status"] == [handshake, handshake, denied, denied], seen
    assert seen["displace client-0"] == [handshake, handshake, denied], seen
    assert set(seen["registry flood"]) <= {handshake, denied}, seen
    clients = asyncio.run(registry(cluster, selector))
    assert sorted(clients) == ["client-0", "client-1", "client-2"], "no invented id was registered"
    assert all(liveness == "alive" for liveness in clients.values()), clients

    status = finished(cluster, proc)
    evaluations = dict(iter_evaluations(status))
    assert evaluations[30]["accuracy"] >= 0.90, evaluations
    participants = {c for record in status["history"] for c in record["accepted"]}
    assert participants == {"client-0", "client-1", "client-2"}


def served_certificate(address: str, pki: TestPki, server_name: str) -> x509.Certificate:
    """The certificate a server presents on a brand-new TLS connection."""
    files = pki.files(pki.identity("client", "client-0"))
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(str(files.cert), str(files.key))
    context.set_alpn_protocols(["h2"])
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, context.wrap_socket(
        raw, server_hostname=server_name
    ) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_certificates_replaced_on_disk_mid_job_serve_new_connections_and_the_job_finishes(
    cluster: Cluster, digits_shares: Any
) -> None:
    selector, proc = start_federation(cluster, digits_shares, rounds=25)
    coordinator = read_status(cluster.base / "coordinator")["endpoint"]
    pki = cluster.pki
    targets = {
        selector: pki.identity("selector"),
        coordinator: pki.identity("coordinator", "default", "digits"),
    }
    before = {address: served_certificate(address, pki, str(i.server_name)).serial_number
              for address, i in targets.items()}
    for identity in targets.values():
        pki.directory.issue(identity, hosts=["127.0.0.1", "localhost"])  # same paths, new key and certificate
    for address, identity in targets.items():
        on_disk = load_certificates(pki.files(identity).cert.read_bytes())[0].serial_number
        served = served_certificate(address, pki, str(identity.server_name)).serial_number
        assert served == on_disk != before[address]
    status = finished(cluster, proc)
    assert status["round"] == 25
    assert dict(iter_evaluations(status))[25]["accuracy"] >= 0.90
