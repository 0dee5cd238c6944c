"""The selector over real gRPC with mutual TLS: registration, heartbeats, offers, selection, restarts, bad input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from client_selector.app import SelectorApp
from libs.protos import selector_pb2
from tests.fixtures.pki import TestPki
from tests.unit.client_selector.fakes import (
    TIMEOUT,
    Callers,
    FakeTaskManager,
    callers,
    client_wire,
    eventually,
    running_selector,
    settings_for,
)

Stub = Callers
MakeManager = Callable[..., FakeTaskManager]


@pytest.fixture
async def app(tmp_path: Path, test_pki: TestPki) -> AsyncIterator[SelectorApp]:
    async with running_selector(settings_for(tmp_path / "selector.db", test_pki)) as running:
        yield running


@pytest.fixture
async def stub(app: SelectorApp, test_pki: TestPki) -> AsyncIterator[Stub]:
    async with callers(test_pki, app.port) as made:
        yield made


@pytest.fixture
async def manager(app: SelectorApp, test_pki: TestPki) -> AsyncIterator[MakeManager]:
    made: list[FakeTaskManager] = []

    def make(client_id: str, **kwargs: Any) -> FakeTaskManager:
        if "wire" not in kwargs:
            kwargs["wire"] = client_wire(test_pki, client_id)
        made.append(FakeTaskManager(f"127.0.0.1:{app.port}", client_id, **kwargs))
        return made[-1]

    yield make
    for fake in made:
        await fake.close()


def select_request(job: str = "ns/job", count: int = 1, **kwargs: Any) -> selector_pb2.SelectRequest:
    return selector_pb2.SelectRequest(job_id=job, round=1, count=count, **kwargs)


def offer_request(
    client_id: str, task: str = "ns/job:1:train:c1:0", timeout: float = 1.0
) -> selector_pb2.OfferTaskRequest:
    return selector_pb2.OfferTaskRequest(
        client_id=client_id,
        answer_timeout_seconds=timeout,
        offer=selector_pb2.TaskOffer(task_id=task, job_id="ns/job", round=1, kind="train", runtime="pytorch"),
    )


async def liveness(stub: Stub, client_id: str) -> str:
    listed = await stub.ListClients(selector_pb2.ListClientsRequest(include_lost=True))
    return next((c.liveness for c in listed.clients if c.client_id == client_id), "absent")


async def test_a_task_manager_registers_and_is_listed_alive_with_what_it_declared(
    stub: Stub, manager: MakeManager
) -> None:
    registered = await manager("c1", labels={"nsfl.io/zone": "eu"}).connect()
    assert registered.client_id == "c1" and registered.heartbeat_timeout_seconds == TIMEOUT
    listed = await stub.ListClients(selector_pb2.ListClientsRequest())
    [info] = listed.clients
    assert info.liveness == "alive" and list(info.runtimes) == ["pytorch"]
    assert info.datasets[0].name == "digits" and info.datasets[0].samples == 600
    assert dict(info.labels) == {"nsfl.io/zone": "eu"} and info.resources.cpus == 2
    assert list(info.protections) == ["environment-allowlist", "landlock-abi-7"]


async def test_the_first_message_must_be_register(manager: MakeManager) -> None:
    error = await manager("c1").open_and_fail(selector_pb2.ClientMessage(heartbeat=selector_pb2.Heartbeat()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "must be Register" in (error.details() or "")


async def test_an_invalid_client_id_is_refused(manager: MakeManager, test_pki: TestPki) -> None:
    # No certificate can name such an id; a valid client sends it, and the payload check answers first.
    error = await manager("bad id!", wire=client_wire(test_pki, "c1")).open_and_fail(
        selector_pb2.ClientMessage(register=selector_pb2.Register(client_id="bad id!"))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a valid client id" in (
        error.details() or ""
    )


async def test_an_offer_reaches_the_task_manager_and_its_acceptance_comes_back(
    stub: Stub, manager: MakeManager
) -> None:
    fake = manager("c1", policy="accept")
    await fake.connect()
    answer = await stub.OfferTask(offer_request("c1"))
    assert answer.accepted and [o.task_id for o in fake.offers] == ["ns/job:1:train:c1:0"]


async def test_a_refusal_comes_back_with_the_task_managers_reason(stub: Stub, manager: MakeManager) -> None:
    await manager("c1", policy="refuse").connect()
    answer = await stub.OfferTask(offer_request("c1"))
    assert not answer.accepted and answer.reason == "no free GPU"


async def test_a_rounds_offers_go_in_one_call_and_come_back_in_order(
    stub: Stub, manager: MakeManager
) -> None:
    slow = manager("c1", policy="ignore")
    fast, refusing = manager("c2", policy="accept"), manager("c3", policy="refuse")
    for fake in (slow, fast, refusing):
        await fake.connect()
    offers = [
        offer_request(c, task=f"ns/job:1:train:{c}:0", timeout=0.5) for c in ("c1", "c2", "c3", "nobody")
    ]
    offers[1].offer.model = b"model bytes"
    offers[1].offer.secure_aggregation = False
    started = time.monotonic()
    reply = await stub.OfferTasks(selector_pb2.OfferTasksRequest(offers=offers))
    elapsed = time.monotonic() - started
    assert [(a.accepted, a.reason) for a in reply.answers] == [
        (False, "client c1 did not answer the offer within 0.5s"),
        (True, "accepted"),
        (False, "no free GPU"),
        (False, "client nobody is not registered"),
    ]
    assert elapsed < 1.5, "the offers were pushed and awaited together, not one after the other"
    [offered] = fast.offers
    assert offered.model == b"model bytes" and offered.HasField("secure_aggregation"), "passed on untouched"


async def test_a_batch_with_one_malformed_offer_is_refused_whole_before_anything_is_pushed(
    stub: Stub, manager: MakeManager
) -> None:
    fake = manager("c1", policy="accept")
    await fake.connect()
    offers = [offer_request("c1"), offer_request("bad id!")]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.OfferTasks(selector_pb2.OfferTasksRequest(offers=offers))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fake.offers == []


async def test_an_offer_to_a_disconnected_client_is_refused_at_once(stub: Stub, manager: MakeManager) -> None:
    fake = manager("c1")
    await fake.connect()
    await fake.close()
    await eventually(lambda: _is(stub, "c1", "lost"))
    started = time.monotonic()
    answer = await stub.OfferTask(offer_request("c1", timeout=5.0))
    assert not answer.accepted and "c1 is lost" in answer.reason
    assert time.monotonic() - started < 1.0
    unknown = await stub.OfferTask(offer_request("nobody", timeout=5.0))
    assert not unknown.accepted and "not registered" in unknown.reason


async def test_an_unanswered_offer_is_refused_after_its_timeout_and_then_cancelled(
    stub: Stub, manager: MakeManager
) -> None:
    fake = manager("c1", policy="ignore")
    await fake.connect()
    started = time.monotonic()
    answer = await stub.OfferTask(offer_request("c1", timeout=0.3))
    assert not answer.accepted and "did not answer the offer within 0.3s" in answer.reason
    assert 0.25 < time.monotonic() - started < 1.5
    await eventually(lambda: _true(len(fake.cancels) == 1))
    assert fake.cancels[0].task_id == "ns/job:1:train:c1:0"


async def test_a_client_that_stops_heartbeating_is_lost_and_not_selected(
    stub: Stub, manager: MakeManager
) -> None:
    fake = manager("c1")
    await fake.connect()
    assert (await stub.SelectClients(select_request())).satisfied
    await stub.ReleaseClients(selector_pb2.ReleaseRequest(job_id="ns/job"))
    fake.stop_heartbeats()
    started = time.monotonic()
    await eventually(lambda: _is(stub, "c1", "lost"), within=TIMEOUT * 3)
    assert time.monotonic() - started < TIMEOUT * 2
    answer = await stub.SelectClients(select_request())
    assert not answer.satisfied and "1 registered, 0 alive" in answer.reason
    await asyncio.wait_for(fake.ended.wait(), 2.0)
    assert fake.end_code == grpc.StatusCode.UNAVAILABLE and "register again" in fake.end_details


async def test_too_few_matches_answer_at_once_with_the_reason(stub: Stub, manager: MakeManager) -> None:
    await manager("c1").connect()
    await manager("c2", runtimes=("tensorflow",)).connect()
    started = time.monotonic()
    answer = await stub.SelectClients(
        select_request(
            count=3, requirement=selector_pb2.ClientRequirement(runtime="pytorch", datasets=["digits"])
        )
    )
    assert time.monotonic() - started < 0.5
    assert not answer.satisfied and not answer.clients and answer.matched == 1
    assert answer.reason.startswith(
        "InsufficientClients 1/3: 2 registered, 2 alive, 1 match runtime=pytorch datasets=[digits]"
    )


async def test_selection_reserves_until_release(stub: Stub, manager: MakeManager) -> None:
    await manager("c1").connect()
    first = await stub.SelectClients(select_request("ns/a"))
    assert first.satisfied and first.clients[0].client_id == "c1" and first.clients[0].why
    listed = await stub.ListClients(selector_pb2.ListClientsRequest())
    assert listed.clients[0].reserved_by == "ns/a"
    assert not (await stub.SelectClients(select_request("ns/b"))).satisfied
    ack = await stub.ReleaseClients(selector_pb2.ReleaseRequest(job_id="ns/a", client_ids=["c1"]))
    assert ack.ok and "released 1" in ack.message
    assert (await stub.SelectClients(select_request("ns/b"))).satisfied


async def test_a_reservation_expires_by_itself(stub: Stub, manager: MakeManager) -> None:
    await manager("c1").connect()
    assert (await stub.SelectClients(select_request("ns/a", reservation_seconds=0.2))).satisfied
    assert not (await stub.SelectClients(select_request("ns/b"))).satisfied
    await asyncio.sleep(0.3)
    assert (await stub.SelectClients(select_request("ns/b"))).satisfied


async def test_concurrent_selections_never_over_reserve_a_single_slot_client(
    stub: Stub, manager: MakeManager
) -> None:
    for n in range(3):
        await manager(f"c{n}", max_parallel_tasks=1).connect()
    answers = await asyncio.gather(
        *(stub.SelectClients(select_request(f"ns/job{n}", count=1)) for n in range(8))
    )
    chosen = [a.clients[0].client_id for a in answers if a.satisfied]
    assert sorted(chosen) == ["c0", "c1", "c2"]
    for n in range(8):
        await stub.ReleaseClients(selector_pb2.ReleaseRequest(job_id=f"ns/job{n}"))
    pair = await asyncio.gather(
        stub.SelectClients(select_request("ns/x", count=2)),
        stub.SelectClients(select_request("ns/y", count=2)),
    )
    assert sorted(a.satisfied for a in pair) == [False, True], "3 single-slot clients serve one pair, not two"
    winner = next(a for a in pair if a.satisfied)
    loser = next(a for a in pair if not a.satisfied)
    assert len(winner.clients) == 2 and loser.reason.startswith("InsufficientClients 1/2")


async def test_an_offer_waiting_on_a_client_that_disconnects_ends_at_once(
    stub: Stub, manager: MakeManager
) -> None:
    fake = manager("c1", policy="ignore")
    await fake.connect()
    started = time.monotonic()
    pending = asyncio.ensure_future(stub.OfferTask(offer_request("c1", timeout=5.0)))
    await eventually(lambda: _true(len(fake.offers) == 1))
    await fake.close()
    answer = await pending
    assert not answer.accepted and "disconnected before answering" in answer.reason
    assert time.monotonic() - started < 2.0


async def test_a_second_register_replaces_the_older_stream(stub: Stub, manager: MakeManager) -> None:
    old = manager("c1")
    await old.connect()
    new = manager("c1")
    await new.connect()
    await asyncio.wait_for(old.ended.wait(), 2.0)
    assert old.end_code == grpc.StatusCode.ALREADY_EXISTS
    await asyncio.sleep(TIMEOUT / 2)
    assert await liveness(stub, "c1") == "alive"
    assert (await stub.OfferTask(offer_request("c1"))).accepted and len(new.offers) == 1


async def test_cancel_reaches_the_named_clients_and_names_the_disconnected_ones(
    stub: Stub, manager: MakeManager
) -> None:
    fake = manager("c1")
    await fake.connect()
    ack = await stub.CancelTasks(
        selector_pb2.CancelTasksRequest(job_id="ns/job", client_ids=["c1", "c9"], reason="stopped by user")
    )
    assert not ack.ok and "sent to 1" in ack.message and "c9" in ack.message
    await eventually(lambda: _true(len(fake.cancels) == 1))
    assert fake.cancels[0].job_id == "ns/job" and fake.cancels[0].task_id == ""
    assert fake.cancels[0].reason == "stopped by user"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (select_request(count=0), "count must be within 1-"),
        (select_request(count=-2), "count must be within 1-"),
        (select_request(redundancy=0.5), "redundancy must be within [1, 2]"),
        (select_request(redundancy=2.5), "redundancy must be within [1, 2]"),
        (select_request(redundancy=float("nan")), "redundancy must be within [1, 2]"),
        # No coordinator can be of such a job: the scheduler's admission probe (dry_run) sends them.
        (select_request(job="", dry_run=True), "job_id is required"),
        (select_request(job="no-namespace", dry_run=True), 'must be "<namespace>/<name>"'),
        (select_request(reservation_seconds=-1), "reservation_seconds must be a non-negative"),
    ],
)
async def test_bad_selection_requests_are_invalid_arguments_with_a_clear_message(
    stub: Stub, request_: selector_pb2.SelectRequest, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SelectClients(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_a_restarted_selector_keeps_its_clients_lost_until_they_reconnect(
    tmp_path: Path, test_pki: TestPki
) -> None:
    settings = settings_for(tmp_path / "selector.db", test_pki)
    async with running_selector(settings) as first, callers(test_pki, first.port) as stub:
        fake = FakeTaskManager(
            f"127.0.0.1:{first.port}", "c1", labels={"nsfl.io/zone": "eu"}, wire=client_wire(test_pki, "c1")
        )
        await fake.connect()
        assert (await stub.SelectClients(select_request("ns/a"))).satisfied
    await asyncio.wait_for(fake.ended.wait(), 2.0)
    assert fake.end_code == grpc.StatusCode.UNAVAILABLE
    await fake.close()

    async with running_selector(settings) as second, callers(test_pki, second.port) as stub:
        listed = await stub.ListClients(selector_pb2.ListClientsRequest(include_lost=True))
        [info] = listed.clients
        assert (
            info.client_id == "c1" and info.liveness == "lost" and dict(info.labels) == {"nsfl.io/zone": "eu"}
        )
        assert info.reserved_by == "ns/a", "reservations survive a restart"
        assert info.source == "127.0.0.1", "so does the source the per-source cap counts"
        assert not (await stub.ListClients(selector_pb2.ListClientsRequest())).clients
        assert not (await stub.SelectClients(select_request("ns/a"))).satisfied
        again = FakeTaskManager(f"127.0.0.1:{second.port}", "c1", wire=client_wire(test_pki, "c1"))
        await again.connect()
        answer = await stub.SelectClients(select_request("ns/a", untrained_first=True))
        assert answer.satisfied and "picked 1x for this job" in answer.clients[0].why
        await again.close()


async def _is(stub: Stub, client_id: str, state: str) -> bool:
    return await liveness(stub, client_id) == state


async def _true(value: bool) -> bool:
    return value


async def test_a_dry_run_selection_answers_without_reserving(stub: Stub, manager: MakeManager) -> None:
    await manager("c1").connect()
    probe = await stub.SelectClients(select_request("ns/a", dry_run=True))
    assert probe.satisfied and [c.client_id for c in probe.clients] == ["c1"]
    assert (await stub.SelectClients(select_request("ns/b"))).satisfied
