"""Who may Connect as whom: only ``client/<id>`` registers as ``<id>``, so no identity displaces another's stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from client_selector.app import SelectorApp
from client_selector.registry import ClientId
from libs.protos import selector_pb2
from libs.wire import TlsFiles, Wire
from tests.fixtures.pki import TestPki
from tests.unit.client_selector.fakes import (
    TIMEOUT,
    Callers,
    FakeTaskManager,
    callers,
    client_wire,
    running_selector,
    selector_stub,
    settings_for,
)


@pytest.fixture
async def app(tmp_path: Path, test_pki: TestPki) -> AsyncIterator[SelectorApp]:
    async with running_selector(settings_for(tmp_path / "selector.db", test_pki)) as running:
        yield running


@pytest.fixture
async def plane(app: SelectorApp, test_pki: TestPki) -> AsyncIterator[Callers]:
    async with callers(test_pki, app.port) as made:
        yield made


def offer_to(client_id: str, task: str) -> selector_pb2.OfferTaskRequest:
    return selector_pb2.OfferTaskRequest(
        client_id=client_id,
        answer_timeout_seconds=2.0,
        offer=selector_pb2.TaskOffer(task_id=task, job_id="ns/job", round=1, kind="train", runtime="pytorch"),
    )


async def test_a_client_whose_certificate_names_it_may_register(app: SelectorApp, test_pki: TestPki) -> None:
    fake = FakeTaskManager(f"127.0.0.1:{app.port}", "alice", wire=client_wire(test_pki, "alice"))
    try:
        assert (await fake.connect()).client_id == "alice"
    finally:
        await fake.close()


async def test_a_client_registering_under_another_clients_id_is_denied_and_never_registered(
    app: SelectorApp, test_pki: TestPki
) -> None:
    fake = FakeTaskManager(f"127.0.0.1:{app.port}", "carol", wire=client_wire(test_pki, "mallory"))
    try:
        error = await fake.open_and_fail(selector_pb2.ClientMessage(register=fake.register))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "client/mallory cannot act for client 'carol'" in (error.details() or "")
    finally:
        await fake.close()
    assert app.selector.record(ClientId("carol")) is None, "a denied client is never registered"


async def test_a_second_connect_under_an_existing_id_by_another_identity_cannot_displace_the_stream(
    app: SelectorApp, plane: Callers, test_pki: TestPki
) -> None:
    alice = FakeTaskManager(f"127.0.0.1:{app.port}", "alice", wire=client_wire(test_pki, "alice"))
    impostor = FakeTaskManager(f"127.0.0.1:{app.port}", "alice", wire=client_wire(test_pki, "mallory"))
    try:
        await alice.connect()
        error = await impostor.open_and_fail(selector_pb2.ClientMessage(register=impostor.register))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        await asyncio.sleep(TIMEOUT / 2)
        assert not alice.ended.is_set(), "the real client's stream is still open"
        answer = await plane.OfferTask(offer_to("alice", "ns/job:1:train:alice:0"))
        assert answer.accepted and [o.task_id for o in alice.offers] == ["ns/job:1:train:alice:0"]
        assert impostor.offers == [], "the offer, its task token and model went to the real client only"
    finally:
        await alice.close()
        await impostor.close()


async def test_a_later_register_under_another_id_ends_the_stream_as_permission_denied(
    app: SelectorApp, test_pki: TestPki
) -> None:
    alice = FakeTaskManager(f"127.0.0.1:{app.port}", "alice", wire=client_wire(test_pki, "alice"))
    try:
        await alice.connect()
        other = selector_pb2.Register(client_id="bob", runtimes=["pytorch"])
        await alice.send(selector_pb2.ClientMessage(register=other))
        await asyncio.wait_for(alice.ended.wait(), 2.0)
        assert alice.end_code == grpc.StatusCode.PERMISSION_DENIED
        assert "cannot act for client 'bob'" in alice.end_details
    finally:
        await alice.close()
    assert app.selector.record(ClientId("bob")) is None


async def test_a_certificate_from_another_ca_is_refused_so_an_id_that_never_enrolled_cannot_register(
    app: SelectorApp, test_pki: TestPki, other_pki: TestPki
) -> None:
    # The stranger even trusts our CA (it knows whom it dials); its own certificate is not ours.
    stranger = other_pki.files(other_pki.identity("client", "stranger"))
    wire = Wire(TlsFiles(ca=test_pki.directory.ca, cert=stranger.cert, key=stranger.key), "nsfl.local")
    fake = FakeTaskManager(f"127.0.0.1:{app.port}", "stranger", wire=wire)
    try:
        error = await fake.open_and_fail(selector_pb2.ClientMessage(register=fake.register))
        assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        await fake.close()
    assert app.selector.record(ClientId("stranger")) is None


async def test_a_plaintext_task_manager_is_refused(app: SelectorApp) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await selector_stub(channel).ListClients(selector_pb2.ListClientsRequest(), timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()


async def test_a_client_may_not_list_the_registry_nor_offer_tasks(app: SelectorApp, plane: Callers) -> None:
    client = plane.stub(plane.pki.identity("client", "alice"))
    for call in (
        client.ListClients(selector_pb2.ListClientsRequest()),
        client.OfferTask(offer_to("alice", "ns/job:1:train:alice:0")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
