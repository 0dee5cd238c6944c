"""The next train round, prepared while this one runs: its clients selected, its tasks offered.

Why.  With a small model a round is a few dozen milliseconds of training, and
what stands between two rounds is mostly dispatch: the selection (a round
trip to the selector), then the offers (coordinator, selector, each task
manager's stream, the task manager, its job executor), every hop a process
that must wake up on a busy host.  Measured on a 2-core host running three
clients, the last client started training about 14 ms after its round began,
nearly all of it that chain.  So when rounds are short (the last one took
under ``PREFETCH_MAX_AGE_SECONDS``), as soon as round N's offers are
answered the coordinator:

1. selects round N+1's clients (same seed and reservation as the round would
   ask for), and, when the round may be offered ahead (a plain train round
   follows: no secure aggregation, no evaluation round in between),
2. offers them round N+1's tasks at once, without a model
   (``TaskOffer.model_follows``).  Each task manager queues the task behind
   the job's running one (``task_manager.policy``), hands it to the job's
   executor once that is free, and the executor waits in
   ``Coordinator.AwaitModel``.  When round N+1 starts, its model (and the
   task's final parameters) goes out in the answers to those calls: one hop
   instead of four.

When round N+1 starts it takes what was prepared (:meth:`Lookahead.take`):

* tasks offered ahead are used when they are for this round and at least the
  round's minimum were accepted; a client that refused or failed meanwhile is
  simply dropped from the round, as at any offer.  When they are no longer
  fresh, or a client of the previous round did not deliver, the round first
  asks the selector again (``Taken.revalidate``) and withdraws the tasks of
  clients it no longer selects (a client that went silent meanwhile), rather
  than withdrawing them all: a task manager still holding a withdrawn task
  would refuse the same round offered anew as a duplicate;
* a selection alone (nothing offered ahead) is used only if it is still fresh
  and every client of the previous round delivered, as before;
* anything else is withdrawn: executors waiting for the model are answered
  "withdrawn" and end their task without an upload.  That happens when round
  N failed and is tried again, when an evaluation round comes first, and at
  the job's end (:meth:`Lookahead.withdraw`).  The clients stay reserved.

The preparation is always awaited before it is judged, so its reservations
and offers have landed before the round goes on (and before the job's end
releases its clients).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from coordinator.job_plan import JobPlan
from coordinator.offload import behind_the_round
from coordinator.rounds import RoundBook, TaskOutcome
from coordinator.selector_client import Selection

log = logging.getLogger(__name__)

# Short rounds prepare the next one ahead; a selection older than this is not used alone, and rounds
# that last longer do not prepare ahead.
PREFETCH_MAX_AGE_SECONDS = 2.0

# (round, count, redundancy or None for the job's) -> the round's selection, reserved.
SelectFunction = Callable[[int, int, float | None], Awaitable[Selection]]
# Offers the book's tickets to the clients, the model to follow (evaluate_first, the plan offered).
OfferFunction = Callable[[RoundBook, list[str], bool, JobPlan], Awaitable[None]]


@dataclass
class Prepared:
    """One train round prepared ahead: its selection and, offered ahead, its book of tickets."""

    round: int
    target: int
    minimum: int
    asked_at: float
    offer_ahead: bool
    evaluate_first: bool
    plan: JobPlan  # whose task inputs the offers carry (the round's final ones come with its model)
    published: asyncio.Future[str | None]  # None: the model is out; a reason: withdrawn
    task: asyncio.Task[None] | None = None
    selection: Selection | None = None
    book: RoundBook | None = None

    @property
    def accepted(self) -> int:
        if self.book is None:
            return 0
        return sum(1 for t in self.book.tickets.values() if t.outcome is not TaskOutcome.DROPPED)


@dataclass
class Taken:
    """What a round may use of the preparation: a book already offered, or a selection to offer."""

    book: RoundBook | None = None
    selection: Selection | None = None
    prepared: Prepared | None = field(default=None, repr=False)
    revalidate: bool = False  # the book is stale or the last round lost a client: check who is selected


class Lookahead:
    def __init__(self, *, select: SelectFunction, offer: OfferFunction,
                 new_book: Callable[[int, int, int], RoundBook], forget: Callable[[RoundBook], None],
                 clock: Callable[[], float]) -> None:
        self._select = select
        self._offer = offer
        self._new_book = new_book  # (round, target, minimum) -> a train round's book
        self._forget = forget  # a withdrawn book's tickets are no longer valid
        self.clock = clock
        self.pending: Prepared | None = None

    def start(self, round_number: int, target: int, minimum: int, *, offer_ahead: bool,
              evaluate_first: bool, plan: JobPlan) -> None:
        """Prepare train round ``round_number`` in the background (one at a time)."""
        if self.pending is not None:
            return
        prepared = Prepared(round_number, target, minimum, self.clock(), offer_ahead, evaluate_first,
                            plan, asyncio.get_running_loop().create_future())
        prepared.task = asyncio.create_task(self._prepare(prepared), name=f"prepare-round-{round_number}")
        self.pending = prepared

    async def _prepare(self, prepared: Prepared) -> None:
        # Not at once: the round's clients are being handed their model now, and on a small host the
        # selection and offers (CPU in three kinds of process) would delay them.  A moment later the
        # same work overlaps their training instead.
        await behind_the_round()
        prepared.selection = await self._select(prepared.round, prepared.target, None)
        if not prepared.offer_ahead or not prepared.selection.satisfied:
            return
        prepared.book = self._new_book(prepared.round, prepared.target, prepared.minimum)
        clients = [client for client, _ in prepared.selection.clients]
        await self._offer(prepared.book, clients, prepared.evaluate_first, prepared.plan)

    async def take(self, round_number: int, kind: str, target: int, *, clean: bool) -> Taken:
        """What round ``round_number`` may use of what was prepared (see the module docstring)."""
        prepared = self.pending
        if prepared is None:
            return Taken()
        failure = await self._landed(prepared)
        self.pending = None  # only now: meanwhile an executor asking for the model still finds it
        if failure is not None:
            self._withdraw(prepared, f"preparing it failed: {failure}")
            return Taken()
        if prepared.round != round_number or kind != "train" or prepared.target != target:
            self._withdraw(prepared, f"round {round_number} ({kind}) came first")
            return Taken()
        fresh = self.clock() - prepared.asked_at <= PREFETCH_MAX_AGE_SECONDS
        if prepared.book is not None:
            if prepared.accepted >= prepared.minimum:
                return Taken(book=prepared.book, prepared=prepared, revalidate=not (fresh and clean))
            self._withdraw(prepared, f"only {prepared.accepted} client(s) took it")
            return Taken()
        selection = prepared.selection
        if fresh and clean and selection is not None and selection.satisfied:
            return Taken(selection=selection)
        return Taken()

    async def revalidate(self, book: RoundBook) -> None:
        """Drop from a book offered ahead the clients the selector no longer selects (a client that went
        silent since): their tasks are answered "withdrawn" when they ask for the model."""
        try:
            selection = await self._select(book.round, book.target, None)
            if not selection.satisfied and selection.matched >= book.minimum:  # never a partial set: ask again
                selection = await self._select(book.round, selection.matched, 1.0)
        except Exception as exc:  # the selector may be down: the tasks offered ahead stand
            log.warning("could not check round %d's clients offered ahead: %s", book.round, exc)
            return
        selected = {client for client, _ in selection.clients}
        for ticket in book.tickets.values():
            if ticket.client_id not in selected:
                book.drop(ticket.task_id, "withdrawn: the selector no longer selects it")

    @staticmethod
    def publish(taken: Taken) -> None:
        """The round has started with the book offered ahead: its model may go out."""
        if taken.prepared is not None and not taken.prepared.published.done():
            taken.prepared.published.set_result(None)

    async def withdraw(self, reason: str) -> None:
        """Withdraw what is being prepared, once its reservations and offers have landed."""
        prepared, self.pending = self.pending, None
        if prepared is not None:
            await self._landed(prepared)
            self._withdraw(prepared, reason)

    @staticmethod
    async def _landed(prepared: Prepared) -> Exception | None:
        """Wait for the preparation to end (its reservations and offers made); what failed, if it did."""
        assert prepared.task is not None
        try:
            await prepared.task
        except Exception as exc:
            log.info("preparing round %d ahead failed: %s", prepared.round, exc)
            return exc
        return None

    def _withdraw(self, prepared: Prepared, reason: str) -> None:
        if not prepared.published.done():
            prepared.published.set_result(f"round {prepared.round} offered ahead was withdrawn: {reason}")
        if prepared.book is not None:
            log.info("withdrew round %d's tasks offered ahead: %s", prepared.round, reason)
            self._forget(prepared.book)

    def book_of(self, task_id: str) -> RoundBook | None:
        """The book of the round being prepared, if ``task_id`` was offered ahead in it."""
        prepared = self.pending
        if prepared is None or prepared.book is None or task_id not in prepared.book.tickets:
            return None
        return prepared.book

    def waiting_for(self, task_id: str, round_number: int) -> asyncio.Future[str | None] | None:
        """The future a task offered ahead waits on, if it belongs to the round being prepared."""
        book = self.book_of(task_id)
        if book is None or book.round != round_number:
            return None
        assert self.pending is not None
        return self.pending.published
