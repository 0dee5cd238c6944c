"""The coordinator's selector client: a round's offers in one call, and one call each to an older selector.

The fake selectors are served over mutual TLS as the selector's identity, and
the client dials them as the coordinator of job ``ns/j`` (the job its offers
name), as a real coordinator does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest

from coordinator.selector_client import Offer, SelectorClient
from libs.protos import selector_pb2, selector_pb2_grpc
from libs.tasks import AlgorithmSettings, LocalDp
from libs.tasks.serde import algorithm_from_proto, parameters_from_proto
from tests.fixtures.pki import TestPki


@dataclass
class OldSelector(selector_pb2_grpc.ClientSelectorServicer):
    """A selector from before OfferTasks: the generated base answers it UNIMPLEMENTED."""

    single: list[selector_pb2.OfferTaskRequest] = field(default_factory=list)

    async def OfferTask(self, request: selector_pb2.OfferTaskRequest, context: Any) -> Any:
        self.single.append(request)
        return selector_pb2.OfferTaskResponse(accepted=request.client_id != "c2", reason=f"one {request.client_id}")


@dataclass
class NewSelector(OldSelector):
    batches: list[selector_pb2.OfferTasksRequest] = field(default_factory=list)
    fail_with: grpc.StatusCode | None = None

    async def OfferTasks(self, request: selector_pb2.OfferTasksRequest, context: Any) -> Any:
        if self.fail_with is not None:
            await context.abort(self.fail_with, "selector trouble")
        self.batches.append(request)
        return selector_pb2.OfferTasksResponse(answers=[
            selector_pb2.OfferTaskResponse(accepted=o.client_id != "c2", reason=f"batch {o.client_id}")
            for o in request.offers])


async def serve(
    servicer: OldSelector, pki: TestPki, as_who: str = "selector"
) -> AsyncIterator[SelectorClient]:
    selector = pki.wire(pki.identity(as_who))
    server = selector.server()
    selector_pb2_grpc.add_ClientSelectorServicer_to_server(servicer, server)
    port = selector.add_port(server, "127.0.0.1:0")
    await server.start()
    coordinator = pki.wire(pki.identity("coordinator", "ns", "j"))
    client = SelectorClient(f"127.0.0.1:{port}", coordinator, call_timeout=5.0)
    try:
        yield client
    finally:
        await client.close()
        await server.stop(None)


def offer(client: str, **changes: Any) -> Offer:
    values: dict[str, Any] = dict(
        client_id=client, task_id=f"ns/j:1:train:{client}:0", job_id="ns/j", namespace="ns", round=1, attempt=0,
        kind="train", runtime="pytorch", endpoint="127.0.0.1:1", model_sha256="a" * 64, token=f"t-{client}",
        entry="digits", parameters={"lr": 0.1}, datasets=["digits"], timeout_seconds=30.0, deadline_unix=0.0)
    return Offer(**(values | changes))


@pytest.fixture
async def new(test_pki: TestPki) -> AsyncIterator[tuple[NewSelector, SelectorClient]]:
    servicer = NewSelector()
    async for client in serve(servicer, test_pki):
        yield servicer, client


async def test_a_rounds_offers_go_in_one_call_with_the_plan_and_the_small_model(
    new: tuple[NewSelector, SelectorClient],
) -> None:
    servicer, client = new
    offers = [offer("c1", model=b"weights", secure_aggregation=True), offer("c2"), offer("c3")]
    answers = await client.offer_many(offers, answer_timeout=1.0)
    assert answers == [(True, "batch c1"), (False, "batch c2"), (True, "batch c3")]
    [batch] = servicer.batches
    assert servicer.single == []
    first = batch.offers[0]
    assert first.client_id == "c1" and first.answer_timeout_seconds == 1.0
    assert first.offer.model == b"weights" and first.offer.secure_aggregation is True
    assert first.offer.HasField("secure_aggregation") and batch.offers[1].offer.HasField("secure_aggregation")
    assert batch.offers[1].offer.model == b""


async def test_an_offer_carries_its_parameters_and_algorithm_settings_typed_and_apart(
    new: tuple[NewSelector, SelectorClient],
) -> None:
    servicer, client = new
    settings = AlgorithmSettings(aggregation="fedprox", fedprox_mu=0.1, local_dp=LocalDp(1.0, 0.5))
    parameters = {"epochs": 2, "lr": 0.1, "layers": [64, 32], "name": None}
    await client.offer_many([offer("c1", parameters=parameters, algorithm=settings)], answer_timeout=1.0)
    [batch] = servicer.batches
    spec = batch.offers[0].offer.spec
    assert parameters_from_proto(spec.parameters) == parameters
    assert spec.parameters.fields["epochs"].WhichOneof("kind") == "int_value", "an int stays an int"
    assert algorithm_from_proto(spec.algorithm) == settings


async def test_an_older_selector_gets_one_call_per_offer_and_is_remembered(test_pki: TestPki) -> None:
    servicer = OldSelector()
    async for client in serve(servicer, test_pki):
        answers = await client.offer_many([offer("c1"), offer("c2")], answer_timeout=1.0)
        assert answers == [(True, "one c1"), (False, "one c2")]
        assert await client.offer(offer("c3"), answer_timeout=1.0) == (True, "one c3")
        assert sorted(r.client_id for r in servicer.single[:2]) == ["c1", "c2"], "sent together"
        assert servicer.single[2].client_id == "c3"
        assert client._one_by_one, "OfferTasks is not asked again"


async def test_a_failed_batch_drops_its_clients_with_the_reason(new: tuple[NewSelector, SelectorClient]) -> None:
    servicer, client = new
    servicer.fail_with = grpc.StatusCode.INTERNAL
    answers = await client.offer_many([offer("c1"), offer("c2")], answer_timeout=1.0)
    assert [accepted for accepted, _ in answers] == [False, False]
    assert all(reason.startswith("offer failed:") and "selector trouble" in reason for _, reason in answers)
    assert servicer.single == [], "an error that is not UNIMPLEMENTED is not a reason to retry one by one"


async def test_a_server_that_is_not_the_selector_gets_no_offers(test_pki: TestPki) -> None:
    servicer = NewSelector()
    async for client in serve(servicer, test_pki, as_who="scheduler"):
        answers = await client.offer_many([offer("c1")], answer_timeout=1.0)
        assert [accepted for accepted, _ in answers] == [False]
        assert servicer.batches == [] and servicer.single == [], "TLS refused the scheduler's certificate"
