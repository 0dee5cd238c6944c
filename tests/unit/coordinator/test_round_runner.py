"""The round runner's selection ahead of short rounds: used when fresh and clean, else selected anew."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coordinator.aggregating import StreamingMean
from coordinator.model_state import GlobalModel
from coordinator.round_runner import PREFETCH_MAX_AGE_SECONDS, JobPlan, RoundRunner
from coordinator.selector_client import Offer, Selection
from libs.protos import common_pb2, coordinator_pb2
from libs.weights.tensors import encode, sha256_hex

CLIENTS = ["c1", "c2", "c3"]
PLAN = JobPlan(job_id="ns/job", namespace="ns", runtime="pytorch", entry="train", mode="function", parameters={},
               datasets=[], clients_per_round=3, min_clients=3, round_timeout=20.0, task_timeout=20.0,
               redundancy=1.0, requirement={}, random=False, untrained_first=False)  # fmt: skip


@dataclass
class Selector:
    """Answers every selection with all clients; each offered client uploads a zero delta at once."""

    calls: list[tuple[str, Any]] = field(default_factory=list)  # ("select", round) / ("release", clients)
    failing: set[tuple[int, str]] = field(default_factory=set)  # (round, client) whose task fails
    runner: RoundRunner | None = None
    clients: list[asyncio.Task[None]] = field(default_factory=list)
    select_delay: float = 0.0
    asked_during: list[int | None] = field(default_factory=list)  # the round open at each select

    async def select(self, **kwargs: Any) -> Selection:
        self.calls.append(("select", kwargs["round_number"]))
        book = self.runner.book if self.runner is not None else None
        self.asked_during.append(book.round if book is not None and not book.closed else None)
        await asyncio.sleep(self.select_delay)
        self.calls.append(("selected", kwargs["round_number"]))
        return Selection([(c, "test") for c in CLIENTS], len(CLIENTS), kwargs["count"], True, "")

    async def offer_many(self, offers: list[Offer], *, answer_timeout: float) -> list[tuple[bool, str]]:
        for offer in offers:
            self.clients.append(asyncio.create_task(self._client(offer)))
        return [(True, "accepted")] * len(offers)

    async def _client(self, offer: Offer) -> None:
        runner = self.runner
        assert runner is not None and runner.model is not None
        await asyncio.sleep(0.01)
        if (offer.round, offer.client_id) in self.failing:
            runner.report_task(common_pb2.TaskStatus(task_id=offer.task_id, task_token=offer.token,
                                                     state=common_pb2.TASK_FAILED, reason="crashed"))
            return
        payload = bytearray(encode({name: np.zeros_like(a) for name, a in runner.model.weights.items()}))
        header = coordinator_pb2.UpdateHeader(
            job_id=offer.job_id, round=offer.round, client_id=offer.client_id, attempt=offer.attempt,
            task_id=offer.task_id, task_token=offer.token, kind=offer.kind, num_samples=1,
            base_sha256=offer.model_sha256,
            blob=common_pb2.BlobHeader(sha256=sha256_hex(payload), total_size=len(payload)))
        ticket, _ = runner.begin_upload(header)
        try:
            await runner.finish_upload(ticket, header, payload)
        finally:
            runner.end_upload(ticket)

    async def release(self, job_id: str, client_ids: Any = ()) -> None:
        self.calls.append(("release", list(client_ids)))

    async def cancel(self, job_id: str, client_ids: Any, reason: str) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return asyncio.get_running_loop().time() + self.skew


def make_runner(selector: Selector, clock: Clock | None = None) -> RoundRunner:
    runner = RoundRunner(PLAN, selector, lambda: "127.0.0.1:1", stop_event=asyncio.Event(),  # type: ignore[arg-type]
                         clock=clock or Clock())
    runner.model = GlobalModel.from_weights({"w": np.ones((2, 2), np.float32)}, 0)
    selector.runner = runner
    return runner


async def train(runner: RoundRunner, number: int, last: int) -> bool:
    assert runner.model is not None
    book = await runner.run_round(number, "train", attempt=0, target=3, minimum=3,
                                  aggregator=StreamingMean(runner.model.weights), next_round=number < last)
    return book.succeeded


async def test_a_short_rounds_next_selection_is_made_while_it_runs_and_used() -> None:
    selector = Selector(select_delay=0.005)
    runner = make_runner(selector)
    for number in (1, 2, 3):
        assert await train(runner, number, last=3)
    # Round 1 selects at its start (no round yet to say rounds are short); round 2 selects round 3
    # while its clients train; round 3 uses that selection; the last round selects nothing ahead.
    assert [c for c in selector.calls if c[0] == "select"] == [("select", 1), ("select", 2), ("select", 3)]
    assert selector.asked_during == [1, 2, 2], "round 3's clients were selected while round 2 ran"
    await runner.release_all()
    assert selector.calls[-1] == ("release", [])


async def test_a_round_in_which_a_client_failed_selects_the_next_one_anew() -> None:
    selector = Selector(failing={(2, "c2")})
    runner = make_runner(selector)
    runner.plan = PLAN.__class__(**{**PLAN.__dict__, "min_clients": 2})
    assert await train(runner, 1, last=3)
    book = await runner.run_round(2, "train", attempt=0, target=3, minimum=2,
                                  aggregator=StreamingMean(runner.model.weights), next_round=True)  # type: ignore[union-attr]
    assert book.succeeded and len(book.accepted) == 2
    assert await train(runner, 3, last=3)
    assert [c[1] for c in selector.calls if c[0] == "select"] == [1, 2, 3, 3], "asked ahead, then anew"


async def test_a_selection_older_than_the_limit_is_not_used() -> None:
    clock = Clock()
    selector = Selector()
    runner = make_runner(selector, clock)
    assert await train(runner, 1, last=3)
    assert await train(runner, 2, last=3)  # selects round 3 ahead
    clock.skew += PREFETCH_MAX_AGE_SECONDS + 1
    assert await train(runner, 3, last=3)
    assert [c[1] for c in selector.calls if c[0] == "select"] == [1, 2, 3, 3]


async def test_the_jobs_end_waits_for_a_selection_made_ahead_before_releasing() -> None:
    selector = Selector()
    runner = make_runner(selector)
    assert await train(runner, 1, last=5)
    selector.select_delay = 0.2
    assert await train(runner, 2, last=5)  # round 3's selection is still on its way
    await runner.release_all()
    assert selector.calls[-2:] == [("selected", 3), ("release", [])]
    assert runner._prefetched is None
