"""The round runner's preparation of the next short round: its selection, used when fresh and clean, else
made anew; its tasks offered ahead with the model to follow, used when enough clients took them, else
withdrawn."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coordinator.aggregating import StreamingMean
from coordinator.lookahead import PREFETCH_MAX_AGE_SECONDS
from coordinator.model_state import GlobalModel
from coordinator.round_runner import RoundRunner
from coordinator.selector_client import Offer, Selection
from libs.protos import common_pb2, coordinator_pb2
from libs.weights.tensors import encode, sha256_hex
from tests.unit.coordinator.specs import job_plan

CLIENTS = ["c1", "c2", "c3"]
PLAN = job_plan(mode="function", clientsPerRound=3, minClients=3, roundTimeoutSeconds=20, random=False)


@dataclass
class Selector:
    """Answers every selection with all clients; each offered client uploads a zero delta at once."""

    calls: list[tuple[str, Any]] = field(default_factory=list)  # ("select", round) / ("release", clients)
    failing: set[tuple[int, str]] = field(default_factory=set)  # (round, client) whose task fails
    runner: RoundRunner | None = None
    clients: list[asyncio.Task[None]] = field(default_factory=list)
    select_delay: float = 0.0
    alive: list[str] = field(default_factory=list)  # the clients it selects (empty: all)
    train_seconds: float = 0.05  # longer than the moment a round waits before preparing the next
    awaited: list[coordinator_pb2.AwaitModelReply] = field(default_factory=list)
    asked_during: list[int | None] = field(default_factory=list)  # the round open at each select

    async def select(self, **kwargs: Any) -> Selection:
        self.calls.append(("select", kwargs["round_number"]))
        book = self.runner.book if self.runner is not None else None
        self.asked_during.append(book.round if book is not None and not book.closed else None)
        await asyncio.sleep(self.select_delay)
        self.calls.append(("selected", kwargs["round_number"]))
        alive = self.alive or CLIENTS
        if len(alive) < kwargs["count"]:  # never a partial set, as the real selector
            return Selection([], len(alive), kwargs["count"], False, "InsufficientClients")
        return Selection([(c, "test") for c in alive[: kwargs["count"]]], len(alive), kwargs["count"], True, "")

    async def offer_many(self, offers: list[Offer], *, answer_timeout: float) -> list[tuple[bool, str]]:
        for offer in offers:
            self.clients.append(asyncio.create_task(self._client(offer)))
        return [(True, "accepted")] * len(offers)

    async def _client(self, offer: Offer) -> None:
        runner = self.runner
        assert runner is not None and runner.model is not None
        base = offer.model_sha256
        if offer.model_follows:  # offered ahead: wait for the round, as an executor does
            assert not offer.model and not offer.model_sha256
            if (offer.round, offer.client_id) in self.failing:
                runner.uploads.report_task(common_pb2.TaskStatus(task_id=offer.task_id, task_token=offer.token,
                                                         state=common_pb2.TASK_FAILED, reason="crashed early"))
                return
            reply = await runner.uploads.await_model(offer.task_id, offer.token, offer.round, 10.0)
            self.awaited.append(reply)
            if not reply.ready:
                return
            base = reply.model_sha256
        await asyncio.sleep(self.train_seconds)
        if (offer.round, offer.client_id) in self.failing:
            runner.uploads.report_task(common_pb2.TaskStatus(task_id=offer.task_id, task_token=offer.token,
                                                     state=common_pb2.TASK_FAILED, reason="crashed"))
            return
        payload = bytearray(encode({name: np.zeros_like(a) for name, a in runner.model.weights.items()}))
        header = coordinator_pb2.UpdateHeader(
            job_id=offer.job_id, round=offer.round, client_id=offer.client_id, attempt=offer.attempt,
            task_id=offer.task_id, task_token=offer.token, kind=offer.kind, num_samples=1,
            base_sha256=base,
            blob=common_pb2.BlobHeader(sha256=sha256_hex(payload), total_size=len(payload)))
        ticket, _ = runner.uploads.begin_upload(header)
        try:
            await runner.uploads.finish_upload(ticket, header, payload)
        finally:
            runner.uploads.end_upload(ticket)

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


async def train(runner: RoundRunner, number: int, last: int, *, ahead: bool = False, minimum: int = 3) -> bool:
    """Round ``number``; the next one is selected ahead (and offered ahead with ``ahead``)."""
    runner.model = GlobalModel.from_weights({"w": np.full((2, 2), number, np.float32)}, number - 1)
    book = await runner.run_round(number, "train", attempt=0, target=3, minimum=minimum,
                                  aggregator=StreamingMean(runner.model.weights), next_round=number < last,
                                  offer_next=ahead and number < last)
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
    runner.plan = job_plan(mode="function", clientsPerRound=3, minClients=2, roundTimeoutSeconds=20, random=False)
    assert await train(runner, 1, last=3)
    assert await train(runner, 2, last=3, minimum=2)
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
    assert runner.lookahead.pending is None


async def test_a_short_rounds_next_tasks_are_offered_ahead_and_get_their_model_when_it_starts() -> None:
    selector = Selector()
    runner = make_runner(selector)
    for number in (1, 2, 3):
        assert await train(runner, number, last=3, ahead=True)
    # Round 2 selected and offered round 3 while it ran; round 3 only published its model.
    assert [c[1] for c in selector.calls if c[0] == "select"] == [1, 2, 3]
    assert len(selector.awaited) == 3 and all(reply.ready for reply in selector.awaited)
    round3 = GlobalModel.from_weights({"w": np.full((2, 2), 3, np.float32)}, 2)
    assert {reply.model_sha256 for reply in selector.awaited} == {round3.sha256}, "round 3's model, not round 2's"
    assert all(reply.model == round3.payload for reply in selector.awaited), "a small model rides in the answer"
    await runner.release_all()


async def test_tasks_offered_ahead_are_withdrawn_when_another_round_comes_first() -> None:
    selector = Selector()
    runner = make_runner(selector)
    assert await train(runner, 1, last=3, ahead=True)
    assert await train(runner, 2, last=3, ahead=True)  # offers round 3 ahead
    assert runner.model is not None
    book = await runner.run_round(2, "evaluate", attempt=0, target=3, minimum=3)  # e.g. an evaluation
    assert book.succeeded
    await asyncio.gather(*selector.clients)
    assert [r.ready for r in selector.awaited] == [False] * 3
    assert all("withdrawn" in r.reason and "round 2 (evaluate) came first" in r.reason for r in selector.awaited)
    assert await train(runner, 3, last=3)  # offered anew
    late = await runner.uploads.await_model("x", "no-such-token", 3, 1.0)
    assert not late.ready and "not waiting for a model here" in late.reason


async def test_a_client_that_fails_before_its_round_offered_ahead_starts_is_dropped_from_it() -> None:
    selector = Selector(failing={(3, "c2")})
    runner = make_runner(selector)
    assert await train(runner, 1, last=3, ahead=True, minimum=2)
    assert await train(runner, 2, last=3, ahead=True, minimum=2)
    book = runner.lookahead.pending.book if runner.lookahead.pending else None
    assert book is not None and book.round == 3
    runner.model = GlobalModel.from_weights({"w": np.full((2, 2), 3, np.float32)}, 2)
    book = await runner.run_round(3, "train", attempt=0, target=3, minimum=2,
                                  aggregator=StreamingMean(runner.model.weights))
    assert book.succeeded and sorted(t.client_id for t in book.accepted) == ["c1", "c3"]
    assert [c[1] for c in selector.calls if c[0] == "select"] == [1, 2, 3], "round 3 selected ahead only"


async def test_the_jobs_end_withdraws_the_tasks_offered_ahead() -> None:
    selector = Selector(train_seconds=0.1)
    runner = make_runner(selector)
    assert await train(runner, 1, last=5, ahead=True)
    assert await train(runner, 2, last=5, ahead=True)
    await runner.release_all()
    await asyncio.gather(*selector.clients)
    assert [r.ready for r in selector.awaited] == [False] * 3
    assert all("the job is ending" in r.reason for r in selector.awaited)
    assert selector.calls[-1] == ("release", [])


async def test_stale_tasks_offered_ahead_are_kept_for_the_clients_the_selector_still_selects() -> None:
    clock = Clock()
    selector = Selector()
    runner = make_runner(selector, clock)
    assert await train(runner, 1, last=3, ahead=True, minimum=2)
    assert await train(runner, 2, last=3, ahead=True, minimum=2)  # offers round 3 to c1, c2, c3 ahead
    clock.skew += PREFETCH_MAX_AGE_SECONDS + 1  # round 2 took long: c2 went silent meanwhile
    selector.alive = ["c1", "c3"]
    assert await train(runner, 3, last=3, minimum=2)
    assert runner.book is not None and sorted(t.client_id for t in runner.book.accepted) == ["c1", "c3"]
    assert runner.book.tickets["ns/job:3:train:c2:0"].reason == "withdrawn: the selector no longer selects it"
    withdrawn = [r for r in selector.awaited if not r.ready]
    assert len(withdrawn) == 1 and "no longer selects" in withdrawn[0].reason
    assert [c[1] for c in selector.calls if c[0] == "select"] == [1, 2, 3, 3, 3], "asked ahead, checked, partial"
