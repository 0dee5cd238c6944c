"""The Connect stream against a fake selector: register, heartbeat, answer offers, come back after outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from libs.protos import common_pb2, selector_pb2
from task_manager.connection import Backoff, SelectorConnection
from task_manager.policy import Accept, Decision, Refuse
from task_manager.tasks import Offer
from tests.fixtures.pki import TestPki
from tests.unit.task_manager.conftest import MakeSettings
from tests.unit.task_manager.fakes import FakeSelector, eventually, offer, offer_message

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


@dataclass
class RecordingHandler:
    """Accepts offers for ``digits-train``, refuses the rest, and records what the connection told it."""

    confirmed_ids: list[str] = field(default_factory=list)
    unconfirmed_ids: list[str] = field(default_factory=list)
    cancels: list[tuple[str, str, str]] = field(default_factory=list)

    def consider(self, offer: Offer) -> Decision:
        return Accept() if offer.entry == "digits-train" else Refuse(f"unknown task entry {offer.entry!r}")

    def confirmed(self, task_id: str) -> None:
        self.confirmed_ids.append(task_id)

    def unconfirmed(self, task_id: str) -> None:
        self.unconfirmed_ids.append(task_id)

    def cancel(self, job_id: str, task_id: str, reason: str) -> int:
        self.cancels.append((job_id, task_id, reason))
        return 1

    def running_tasks(self) -> int:
        return 1


@contextlib.asynccontextmanager
async def connected(connection: SelectorConnection) -> AsyncIterator[None]:
    stop = asyncio.Event()
    runner = asyncio.create_task(connection.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(runner, 5)


@pytest.fixture
async def selector(test_pki: TestPki) -> AsyncIterator[FakeSelector]:
    fake = FakeSelector(test_pki)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_a_session_registers_heartbeats_and_answers_offers_and_cancels(
    make_settings: MakeSettings, selector: FakeSelector
) -> None:
    handler = RecordingHandler()
    settings = make_settings(selector_address=selector.address, max_parallel_tasks=2, labels={"site": "a"})
    async with connected(SelectorConnection(settings, handler)):
        await asyncio.wait_for(selector.connected.wait(), 10)
        (register,) = selector.registrations
        assert (register.client_id, list(register.runtimes), register.max_parallel_tasks) == (
            "c1",
            ["pytorch"],
            2,
        )
        assert [(d.name, d.samples, list(d.tags)) for d in register.datasets] == [("digits", 600, ["iid"])]
        assert dict(register.labels) == {"site": "a"}
        await eventually(lambda: len(selector.heartbeats) >= 2)
        assert selector.heartbeats[0].running_tasks == 1

        accepted = await selector.offer(offer("t-1"))
        assert (accepted.state, accepted.client_id, accepted.task_token) == (
            common_pb2.TASK_ACCEPTED,
            "c1",
            "",
        )
        await eventually(lambda: handler.confirmed_ids == ["t-1"])  # launched as the answer is sent

        refused = await selector.offer(offer("t-2", entry="cifar-train"))
        assert (refused.state, refused.reason) == (
            common_pb2.TASK_REFUSED,
            "unknown task entry 'cifar-train'",
        )

        malformed = offer_message(offer("t-3"))
        malformed.spec.algorithm.local_dp.clip_norm = -1.0
        selector.push(selector_pb2.SelectorMessage(task_offer=malformed))
        answer = await eventually(lambda: [s for s in selector.statuses if s.task_id == "t-3"])
        assert answer[0].state == common_pb2.TASK_REFUSED
        assert answer[0].reason.startswith("invalid offer: spec.algorithm: the task's local DP settings are out of range")

        selector.push(
            selector_pb2.SelectorMessage(cancel=selector_pb2.CancelTask(job_id="ns/digits", reason="stop"))
        )
        await eventually(lambda: handler.cancels == [("ns/digits", "", "stop")])
    assert handler.confirmed_ids == ["t-1"] and handler.unconfirmed_ids == []


async def test_the_connection_retries_until_the_selector_is_up_and_comes_back_after_it_restarts(
    make_settings: MakeSettings, caplog: pytest.LogCaptureFixture, test_pki: TestPki
) -> None:
    selector = FakeSelector(test_pki)
    await selector.start()  # learn a free port, then go down before the task manager starts
    await selector.stop()
    caplog.set_level(logging.DEBUG, logger="task_manager.connection")
    connection = SelectorConnection(make_settings(selector_address=selector.address), RecordingHandler())
    async with connected(connection):
        await asyncio.sleep(0.6)  # several attempts at 0.05-0.2s
        assert connection.registrations == 0
        await selector.start()
        await eventually(lambda: connection.registrations == 1)

        await selector.stop()
        await eventually(lambda: not connection.registered.is_set())
        await asyncio.sleep(0.6)
        await selector.start()
        await eventually(lambda: connection.registrations == 2 and len(selector.registrations) == 2)
        assert (await selector.offer(offer("after-restart"))).state == common_pb2.TASK_ACCEPTED
        await selector.stop()

    records = [r for r in caplog.records if r.name == "task_manager.connection"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # one per outage, however many attempts
    assert warnings[0].startswith("cannot register with the selector") and "lost the stream" in warnings[1]
    assert sum(r.levelno == logging.DEBUG for r in records) >= 2
    assert any(r.getMessage().startswith("reconnected to the selector") for r in records)


def test_backoff_grows_to_its_cap_with_jitter_and_resets() -> None:
    import random

    backoff = Backoff(0.2, 5.0, random.Random(7))
    delays = [backoff.next() for _ in range(8)]
    assert 0.1 <= delays[0] <= 0.2 and 0.2 <= delays[1] <= 0.4
    assert all(2.5 <= d <= 5.0 for d in delays[5:])
    backoff.reset()
    assert backoff.next() <= 0.2
