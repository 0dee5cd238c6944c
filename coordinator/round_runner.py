"""Running one round from its start to its close: the round core's one entry for the driver.

The round core is three pieces by responsibility, sharing the round in
progress (:class:`~coordinator.current_round.CurrentRound`):

* :class:`~coordinator.dispatch.Dispatch` -- select, offer, release, and the
  next round prepared ahead (:mod:`coordinator.lookahead`);
* :class:`~coordinator.uploads.Uploads` -- the gate every task's calls go
  through (the servicer's collaborator): tickets, accept or refuse, the
  model awaited by a task offered ahead;
* :class:`RoundRunner`, here -- the round's plan and close: it opens the
  round's book, decides how its updates are aggregated (folded one by one
  into the round's update sink by the upload gate, or, in a secure train
  round, summed masked by :mod:`coordinator.secure_rounds`), asks the
  dispatch for its clients, and waits until the book says the round closes.

Every wait here has a deadline (the round's ``roundTimeoutSeconds``) and ends
with the book closed and a reason, so a silent client can never hang a job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from coordinator.aggregating import UpdateSink
from coordinator.current_round import CurrentRound
from coordinator.dispatch import Dispatch
from coordinator.job_plan import JobPlan
from coordinator.lookahead import PREFETCH_MAX_AGE_SECONDS, Lookahead
from coordinator.model_state import GlobalModel, WeightMap
from coordinator.rounds import RoundBook, TaskOutcome
from coordinator.secure_rounds import SecureRounds
from coordinator.selector_client import SelectorClient
from coordinator.stopping import StopRequested, stopped_within
from coordinator.uploads import Uploads

RETRY_PAUSE_SECONDS = 5.0


class RoundRunner:
    def __init__(self, plan: JobPlan, selector: SelectorClient, endpoint: Callable[[], str], *,
                 stop_event: asyncio.Event, clock: Callable[[], float] = time.time,
                 secure_aggregation: SecureRounds | None = None) -> None:
        self.current = CurrentRound(plan)
        self.secure_aggregation = secure_aggregation  # train updates then travel over SecureAggregate
        self.stop_event = stop_event
        self.clock = clock
        secure = secure_aggregation is not None
        self.dispatch = Dispatch(self.current, selector, endpoint, stop_event=stop_event, clock=clock,
                                 secure=secure)
        self.uploads = Uploads(self.current, self.dispatch.lookahead, secure=secure)
        self._last_round_seconds: float | None = None  # the last train round, offers to close
        self._last_round_clean = False  # every client of the last round delivered

    # -- what the driver reads and sets between rounds --------------------------------------------------
    @property
    def plan(self) -> JobPlan:
        return self.current.plan

    @plan.setter
    def plan(self, plan: JobPlan) -> None:  # a train round's tasks carry the parameters its algorithm set
        self.current.plan = plan

    @property
    def model(self) -> GlobalModel | None:
        return self.current.model

    @model.setter
    def model(self, model: GlobalModel | None) -> None:
        self.current.model = model

    @property
    def book(self) -> RoundBook | None:
        """The book of the round in progress (or of the last one, once closed)."""
        return self.current.book

    @property
    def init_weights(self) -> WeightMap | None:
        """The initial weights an ``init`` round's client uploaded, once one did."""
        return self.uploads.init_weights

    @property
    def lookahead(self) -> Lookahead:
        return self.dispatch.lookahead

    @property
    def participants(self) -> set[str]:
        """Every client offered a task of the job: told when the job ends."""
        return self.dispatch.participants

    # -- the round -----------------------------------------------------------------------------------------
    async def run_round(self, round_number: int, kind: str, *, attempt: int, target: int, minimum: int,
                        aggregator: UpdateSink | None = None, evaluate_first: bool = False,
                        next_round: bool = False, offer_next: bool = False,
                        next_evaluate_first: bool = False) -> RoundBook:
        """Run one round to its close.

        ``next_round``: another train round follows this one (its clients are selected while this
        one runs); ``offer_next``: it follows directly, and its tasks may be offered ahead, asking
        to evaluate first if ``next_evaluate_first`` (coordinator.lookahead).
        """
        current, dispatch = self.current, self.dispatch
        started = self.clock()
        deadline = started + current.plan.round_timeout
        await dispatch.settled()
        taken = await dispatch.lookahead.take(round_number, kind, target, clean=self._last_round_clean)
        book = taken.book or RoundBook(job_id=current.plan.job_id, round_number=round_number, kind=kind,
                                       target=target, minimum=minimum, deadline=deadline)
        book.deadline = deadline
        current.sink, current.book, current.evaluate_first = aggregator, book, evaluate_first
        secure = self.secure_aggregation if kind == "train" else None
        if secure is not None:  # opened before the offers: a fast client may join at once
            assert current.model is not None
            secure.open(book, current.model, current.changed)
        try:
            clients = await dispatch.start(book, taken, attempt, deadline, evaluate_first)
            if clients:
                if next_round and kind == "train":
                    self._prepare_next(round_number + 1, target, minimum,
                                       offer_ahead=offer_next and secure is None,
                                       evaluate_first=next_evaluate_first)
                if secure is not None and aggregator is not None:
                    await secure.run(aggregator, self.stop_event)
                else:
                    await self._wait(book)
            return book
        finally:
            if secure is not None:
                secure.close(book.close_reason)
            book.close(book.close_reason or "round ended")
            dispatch.finish(book)
            if kind == "train":
                self._last_round_seconds = self.clock() - started
                self._last_round_clean = bool(book.tickets) and all(
                    t.outcome is TaskOutcome.ACCEPTED for t in book.tickets.values())

    def _prepare_next(self, round_number: int, target: int, minimum: int, *, offer_ahead: bool,
                      evaluate_first: bool) -> None:
        """Prepare round ``round_number`` while this round's clients train, when rounds are short.

        Only when the last one took under ``PREFETCH_MAX_AGE_SECONDS``: then dispatch is most of
        what stands between two rounds (coordinator.lookahead).
        """
        if self._last_round_seconds is None or self._last_round_seconds >= PREFETCH_MAX_AGE_SECONDS:
            return
        self.dispatch.prepare_next(round_number, target, minimum, offer_ahead=offer_ahead,
                                   evaluate_first=evaluate_first)

    async def _wait(self, book: RoundBook) -> None:
        changed = self.current.changed
        while True:
            reason = book.should_close(self.clock())
            if reason is not None:
                async with self.current.fold_lock:
                    book.close(reason)
                return
            changed.clear()
            timeout = max(0.0, min(book.deadline - self.clock(), 1.0))
            if self.stop_event.is_set():
                book.close("stop requested")
                raise StopRequested
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except TimeoutError:
                pass

    # -- between rounds, and at the job's end -------------------------------------------------------------
    async def release_all(self) -> None:
        """The job is over: release every client it holds (after what is still being settled)."""
        await self.dispatch.release_all()

    async def pause_before_retry(self) -> None:
        """Wait a little before a new attempt of a failed round.

        Clients may still be finishing the failed attempt (a restarted coordinator
        re-offers tasks its predecessor handed out): retrying at once would find
        them busy and burn every attempt within milliseconds.
        """
        if await stopped_within(self.stop_event, min(RETRY_PAUSE_SECONDS, self.current.plan.round_timeout / 10)):
            raise StopRequested
