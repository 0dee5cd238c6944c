"""Getting a round's tasks to its clients: select, offer, release, and the next round ahead.

The round runner asks the dispatch for a round's clients (:meth:`Dispatch.start`):
those of the tasks offered ahead, when the look-ahead prepared them
(:mod:`coordinator.lookahead`), else a selection from the selector (retried
until the round's deadline while fewer than its minimum match) and the offers
of their tasks.  A refusal drops the client from the round; each task's
ticket is known by its token from the moment it is issued
(:meth:`~coordinator.current_round.CurrentRound.issue`).

Reservations.  The selector reserves what it selects.  A round's clients stay
reserved for the job after it closes: the next round selects them again
(renewing the reservation) and releases only those it no longer picks; late
clients are cancelled; the job's end releases the rest
(:meth:`Dispatch.release_all`).  Cancels and releases run behind the round
(the server step runs meanwhile), and the next selection first waits for them
(:meth:`Dispatch.settled`).  A selector that is down only delays this:
reservations expire on their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable

from coordinator.current_round import CurrentRound
from coordinator.job_plan import JobPlan
from coordinator.lookahead import PREFETCH_MAX_AGE_SECONDS, Lookahead, Taken
from coordinator.rounds import RoundBook, TaskOutcome
from coordinator.selector_client import Offer, Selection, SelectorClient
from coordinator.stopping import StopRequested, stopped_within

log = logging.getLogger(__name__)

OFFER_ANSWER_SECONDS = 10.0
SELECTION_RETRY_SECONDS = 0.5


class Dispatch:
    """Selections, offers and reservations of the job's rounds (see the module docstring)."""

    def __init__(self, current: CurrentRound, selector: SelectorClient, endpoint: Callable[[], str], *,
                 stop_event: asyncio.Event, clock: Callable[[], float] = time.time, secure: bool = False) -> None:
        self.current = current
        self.selector = selector
        self.endpoint = endpoint  # where the tasks reach this coordinator
        self.stop_event = stop_event
        self.clock = clock
        self.secure = secure  # the tasks' train updates travel over SecureAggregate
        self.participants: set[str] = set()  # every client offered a task: told when the job ends
        self._held: set[str] = set()  # clients reserved for the job since its last selection
        self._settling: set[asyncio.Task[None]] = set()
        # The next train round, selected and offered while this one runs (coordinator.lookahead).
        self.lookahead = Lookahead(select=lambda number, count, redundancy: self._ask_selector(
                                       number, "train", count, redundancy),
                                   offer=self._offer_ahead, new_book=self._ahead_book, forget=current.forget,
                                   clock=clock)

    async def start(self, book: RoundBook, taken: Taken, attempt: int, deadline: float,
                    evaluate_first: bool) -> list[str]:
        """The round's clients, offered their tasks: ahead (the model goes out now) or here."""
        if taken.book is not None:
            if taken.revalidate:
                await self.lookahead.revalidate(book)
            chosen = [t.client_id for t in book.tickets.values() if t.outcome is not TaskOutcome.DROPPED]
            self._picked(book, chosen, "offered ahead")
            self.lookahead.publish(taken)
            return chosen
        clients = await self._select(book, deadline, taken.selection)
        if clients:
            await self._offer(book, clients, attempt=attempt, deadline=deadline, evaluate_first=evaluate_first,
                              plan=self.current.plan, model_follows=False)
        return clients

    def prepare_next(self, round_number: int, target: int, minimum: int, *, offer_ahead: bool,
                     evaluate_first: bool) -> None:
        """Select (and offer, ``offer_ahead``) round ``round_number`` while this round's clients train."""
        self.lookahead.start(round_number, target, minimum, offer_ahead=offer_ahead,
                             evaluate_first=evaluate_first, plan=self.current.plan)

    def finish(self, book: RoundBook) -> None:
        """The round closed: drop and cancel its late clients (behind it); its tokens open nothing more."""
        outstanding = [t.client_id for t in book.outstanding]
        for ticket in book.outstanding:
            book.drop(ticket.task_id, f"round closed before it answered ({book.close_reason})")
        # Behind the round: the server step runs meanwhile, and the next selection waits for it.  The
        # round's clients stay reserved: the next round selects them again (renewing the reservation)
        # or releases those it does not (_select), and the job's end releases the rest.
        self._settle_behind(book.round, outstanding, [])
        self.current.forget(book)

    async def settled(self) -> None:
        """Wait until late clients are cancelled and clients no longer held are released."""
        while self._settling:
            await asyncio.gather(*self._settling)

    async def release_all(self) -> None:
        """The job is over: release every client it holds (after what is still being settled)."""
        await self.lookahead.withdraw("the job is ending")  # its reservations land first, then go
        await self.settled()
        try:
            await self.selector.release(self.current.plan.job_id)
        except Exception as exc:  # the selector may be down; reservations expire on their own
            log.warning("could not release the job's clients: %s", exc)
        self._held.clear()

    # -- selection ------------------------------------------------------------------------------------
    async def _select(self, book: RoundBook, deadline: float, prefetched: Selection | None) -> list[str]:
        target, minimum = book.target, book.minimum
        while True:
            selection = prefetched or await self._ask_selector(book.round, book.kind, target)
            prefetched = None
            if not selection.satisfied and minimum <= selection.matched < target:
                # The selector never hands out a partial set; ask for what is there.
                selection = await self._ask_selector(book.round, book.kind, selection.matched, redundancy=1.0)
            chosen = [client for client, _ in selection.clients]
            if len(chosen) >= minimum:
                self._picked(book, chosen, "; ".join(f"{client} ({why})" for client, why in selection.clients))
                return chosen
            if chosen:
                await self.selector.release(self.current.plan.job_id, chosen)
            if self.clock() + SELECTION_RETRY_SECONDS >= deadline:
                book.close(selection.reason or f"InsufficientClients {len(chosen)}/{target}")
                return []
            if await stopped_within(self.stop_event, SELECTION_RETRY_SECONDS):
                raise StopRequested

    async def _ask_selector(self, round_number: int, kind: str, count: int,
                            redundancy: float | None = None) -> Selection:
        """Select and reserve ``count`` clients for a round (seeded by the job, round and kind)."""
        plan = self.current.plan
        if redundancy is None:
            redundancy = plan.redundancy if kind == "train" else 1.0
        return await self.selector.select(
            job_id=plan.job_id, round_number=round_number, count=count, redundancy=redundancy,
            requirement=plan.requirement, random=plan.random,
            untrained_first=plan.untrained_first and kind == "train",
            reservation_seconds=plan.round_timeout + 30,
            seed=zlib.crc32(f"{plan.job_id}:{round_number}:{kind}".encode()))

    def _picked(self, book: RoundBook, chosen: list[str], how: str) -> None:
        log.info("round %d %s: picked %s", book.round, book.kind, how)
        self._settle_behind(book.round, [], sorted(self._held - set(chosen)))
        self._held = set(chosen)

    # -- offers -----------------------------------------------------------------------------------------
    def _ahead_book(self, round_number: int, target: int, minimum: int) -> RoundBook:
        plan = self.current.plan
        deadline = self.clock() + PREFETCH_MAX_AGE_SECONDS + plan.round_timeout  # reset when it starts
        return RoundBook(job_id=plan.job_id, round_number=round_number, kind="train", target=target,
                         minimum=minimum, deadline=deadline)

    async def _offer_ahead(self, book: RoundBook, clients: list[str], evaluate_first: bool,
                           plan: JobPlan) -> None:
        await self._offer(book, clients, attempt=0, deadline=book.deadline, evaluate_first=evaluate_first,
                          plan=plan, model_follows=True)

    async def _offer(self, book: RoundBook, clients: list[str], *, attempt: int, deadline: float,
                     evaluate_first: bool, plan: JobPlan, model_follows: bool) -> None:
        """Issue the clients' tickets and offer their tasks (with ``plan``'s inputs); refusals drop them."""
        current = self.current
        model = current.model if book.kind != "init" and not model_follows else None
        # Offered ahead, the executor asks AwaitModel for the model once the round starts.
        model_sha = model.sha256 if model is not None else ""
        inline = model.inline if model is not None else b""
        self.participants.update(clients)
        endpoint = self.endpoint()
        offers = []
        for client in clients:
            ticket = current.issue(book, client, attempt)
            offers.append(Offer(
                client_id=client, task_id=ticket.task_id, job_id=plan.job_id,
                namespace=plan.namespace, round=book.round, attempt=attempt, kind=book.kind,
                runtime=plan.runtime, endpoint=endpoint, model_sha256=model_sha,
                token=ticket.token, entry=plan.entry, parameters=plan.parameters, algorithm=plan.algorithm,
                datasets=plan.datasets, timeout_seconds=plan.task_timeout,
                deadline_unix=deadline, mode=plan.mode, evaluate_first=evaluate_first,
                secure_aggregation=self.secure, model=inline, model_follows=model_follows))
        answers = await self.selector.offer_many(offers, answer_timeout=OFFER_ANSWER_SECONDS)
        for offer, (accepted, reason) in zip(offers, answers, strict=True):
            if not accepted:
                log.info("client %s refused round %d: %s", offer.client_id, book.round, reason)
                book.drop(offer.task_id, f"refused: {reason}")

    # -- settling ---------------------------------------------------------------------------------------
    async def _settle(self, round_number: int, outstanding: list[str], unheld: list[str]) -> None:
        job_id = self.current.plan.job_id
        try:
            if outstanding:
                await self.selector.cancel(job_id, outstanding, f"round {round_number} closed")
            if unheld:
                await self.selector.release(job_id, unheld)
        except Exception as exc:  # the selector may be down; reservations expire on their own
            log.warning("could not cancel or release clients after round %d: %s", round_number, exc)

    def _settle_behind(self, round_number: int, outstanding: list[str], unheld: list[str]) -> None:
        if outstanding or unheld:
            task = asyncio.create_task(self._settle(round_number, outstanding, unheld))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
