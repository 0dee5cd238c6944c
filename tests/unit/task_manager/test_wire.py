"""The task manager on the wire: its client certificate everywhere, and only the offered job's coordinator trusted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from libs.protos import common_pb2
from libs.wire import Wire
from task_executor.settings import load as load_executor_settings
from task_manager.reporting import CoordinatorReporter
from tests.fixtures.pki import TestPki
from tests.unit.task_manager.conftest import MakeSettings
from tests.unit.task_manager.fakes import (
    FakeCoordinator,
    FakeSelector,
    eventually,
    offer,
    running_coordinator,
)
from tests.unit.task_manager.test_app import serving

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

C1 = "spiffe://nsfl.local/client/c1"


@pytest.fixture
async def selector(test_pki: TestPki) -> AsyncIterator[FakeSelector]:
    fake = FakeSelector(test_pki)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture(params=[("coordinator", "ns", "other"), ("client", "c2")], ids=["another-job", "a-client"])
async def impostor(request: pytest.FixtureRequest, test_pki: TestPki) -> AsyncIterator[FakeCoordinator]:
    """An endpoint with a certificate of our own CA that is not the coordinator of the offered job (ns/digits)."""
    async with running_coordinator(test_pki, test_pki.identity(*request.param)) as fake:
        yield fake


async def test_the_task_manager_registers_with_its_certificate_and_its_executors_get_the_same_tls_files(
    make_settings: MakeSettings, selector: FakeSelector, coordinator: FakeCoordinator, test_pki: TestPki
) -> None:
    settings = make_settings(
        "record_wire_environment", selector_address=selector.address, warm_runtimes=False
    )
    async with serving(settings):
        await asyncio.wait_for(selector.connected.wait(), 10)
        assert selector.callers == [C1]
        answer = await selector.offer(offer(endpoint=coordinator.endpoint))
        assert answer.state == common_pb2.TASK_ACCEPTED
        [recorded] = await eventually(lambda: list((settings.workspace / "tasks").glob("*/*/wire.json")))
        env = json.loads(recorded.read_text())
    executor = load_executor_settings(env)
    assert (executor.tls_cert, executor.tls_key) == (settings.tls_cert, settings.tls_key)
    assert executor.trust_domain == "nsfl.local" and not executor.insecure
    assert Wire.from_settings(executor, role="client").identity == test_pki.identity("client", "c1")


async def test_a_failure_report_goes_to_the_offered_jobs_coordinator_with_the_clients_certificate(
    coordinator: FakeCoordinator, test_pki: TestPki
) -> None:
    reporter = CoordinatorReporter("c1", test_pki.wire(test_pki.identity("client", "c1")), retry_delay=0.01)
    assert await reporter.report_failed(offer(endpoint=coordinator.endpoint), "it broke")
    report = coordinator.reports.get_nowait()
    assert report.state == common_pb2.TASK_FAILED and coordinator.callers == [C1]


async def test_a_failure_report_is_never_sent_to_an_endpoint_that_is_not_the_jobs_coordinator(
    impostor: FakeCoordinator, test_pki: TestPki
) -> None:
    reporter = CoordinatorReporter("c1", test_pki.wire(test_pki.identity("client", "c1")), retry_delay=0.01)
    assert not await reporter.report_failed(offer(endpoint=impostor.endpoint), "it broke")
    assert impostor.reports.empty() and impostor.callers == [], "not even its task token reached it"


async def test_a_forged_offer_is_accepted_but_its_endpoint_never_trusted_and_nothing_is_uploaded(
    make_settings: MakeSettings, selector: FakeSelector, impostor: FakeCoordinator
) -> None:
    """The real executor: the download fails the handshake, so no data is touched and nothing is uploaded."""
    settings = make_settings(
        selector_address=selector.address, warm_runtimes=False, executor_entry="task_executor.runner:run_task"
    )
    async with serving(settings):
        await asyncio.wait_for(selector.connected.wait(), 10)
        answer = await selector.offer(offer(endpoint=impostor.endpoint, timeout=20.0))
        assert answer.state == common_pb2.TASK_ACCEPTED
        [result] = await eventually(
            lambda: list((settings.workspace / "tasks").glob("*/*/result.json")), within=20
        )
        outcome = json.loads(result.read_text())
    assert outcome["state"] == "failed" and outcome["reason"].startswith("Unavailable"), outcome
    assert impostor.callers == [] and impostor.reports.empty(), "no download, no upload, no report"
