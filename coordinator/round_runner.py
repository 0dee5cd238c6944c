"""Running one round: select clients, offer tasks, take uploads, close on time.

:class:`RoundRunner` holds the live :class:`~coordinator.rounds.RoundBook`
and the aggregator of the round in progress.  The gRPC servicer calls
:meth:`begin_upload` / :meth:`finish_upload` / :meth:`report_task`; the
job-level driver calls :meth:`run_round`.  Every wait here has a deadline
(the round's ``roundTimeoutSeconds``) and ends with the book closed and a
reason, so a silent client can never hang a job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from coordinator.aggregating import RoundAggregator
from coordinator.job_plan import JobPlan
from coordinator.lookahead import PREFETCH_MAX_AGE_SECONDS, Lookahead, Taken
from coordinator.model_state import GlobalModel, WeightMap
from coordinator.offload import run_sized
from coordinator.rounds import RoundBook, TaskOutcome, Ticket, finite_metrics
from coordinator.selector_client import Offer, Selection, SelectorClient
from libs.aggregation.attachments import split as split_attachments
from libs.errors import UpdateRejected
from libs.protos import common_pb2, coordinator_pb2
from libs.weights.tensors import decode, validate_update

if TYPE_CHECKING:
    from coordinator.secure_rounds import SecureRounds

log = logging.getLogger(__name__)

OFFER_ANSWER_SECONDS = 10.0
SELECTION_RETRY_SECONDS = 0.5
RETRY_PAUSE_SECONDS = 5.0
# A global model up to this size travels inside the offers (TaskOffer.model): its clients need no
# DownloadModel, which on a small model is a round trip longer than the transfer.  Larger models are
# downloaded by each executor, so the selector never carries more than this per offer.
INLINE_MODEL_BYTES = 256 * 1024


class StopRequested(Exception):
    """The job was asked to stop; the round in progress was abandoned."""


class RoundRunner:
    def __init__(self, plan: JobPlan, selector: SelectorClient, endpoint: Callable[[], str], *,
                 stop_event: asyncio.Event, clock: Callable[[], float] = time.time,
                 secure_aggregation: SecureRounds | None = None) -> None:
        self.plan = plan
        self.secure_aggregation = secure_aggregation  # train updates then travel over SecureAggregate
        self.selector = selector
        self.endpoint = endpoint
        self.stop_event = stop_event
        self.clock = clock
        self.book: RoundBook | None = None
        self.model: GlobalModel | None = None
        self.aggregator: RoundAggregator | None = None
        self.init_weights: WeightMap | None = None
        self.max_init_size = 4 << 30
        self._tokens: dict[str, Ticket] = {}
        self.participants: set[str] = set()  # every client offered a task: told when the job ends
        self._settling: set[asyncio.Task[None]] = set()
        self._held: set[str] = set()  # clients reserved for the job since its last selection
        self._uploading: set[str] = set()
        self._changed = asyncio.Event()
        self._fold_lock = asyncio.Lock()
        # The next train round, selected and offered while this one runs (coordinator.lookahead).
        self.lookahead = Lookahead(select=lambda number, count, redundancy: self._ask_selector(
                                       number, "train", count, redundancy),
                                   offer=self._offer_ahead, new_book=self._ahead_book, forget=self._forget,
                                   clock=self.clock)
        self._last_round_seconds: float | None = None  # the last train round, offers to close
        self._last_round_clean = False  # every client of the last round delivered
        self._evaluate_first = False  # whether the round in progress asks to evaluate first

    # -- called by the servicer ----------------------------------------------
    def token_known(self, token: str) -> bool:
        return token in self._tokens

    def ticket_for(self, token: str) -> Ticket | None:
        """The live task ``token`` was issued for (this round's, or one offered ahead), if any."""
        return self._tokens.get(token)

    def model_for(self, sha256: str) -> GlobalModel | None:
        return self.model if self.model is not None and self.model.sha256 == sha256 else None

    def begin_upload(self, header: coordinator_pb2.UpdateHeader) -> tuple[Ticket, GlobalModel | None]:
        book = self.book
        if book is None or header.round != book.round or header.kind != book.kind:
            raise ValueError(f"late update: round {header.round} ({header.kind}) is not in progress")
        ticket = book.check_upload(header.task_id, header.task_token, header.client_id, header.round)
        if book.kind == "train" and self.secure_aggregation is not None:
            raise ValueError("this job uses secure aggregation: train updates travel over SecureAggregate")
        if ticket.task_id in self._uploading:
            raise ValueError(f"duplicate update for task {ticket.task_id!r} (one is already arriving)")
        if book.kind == "train":
            assert self.model is not None
            if header.base_sha256 != self.model.sha256:
                raise ValueError("the update is not against this round's global model")
            if header.num_samples <= 0:
                raise ValueError("a training update needs a positive sample count")
        self._uploading.add(ticket.task_id)
        return ticket, (self.model if book.kind == "train" else None)

    def end_upload(self, ticket: Ticket) -> None:
        self._uploading.discard(ticket.task_id)

    def reject(self, ticket: Ticket, reason: str) -> None:
        if self.book is not None and ticket.task_id in self.book.tickets:
            self.book.reject(ticket.task_id, reason)
            self._changed.set()

    async def finish_upload(self, ticket: Ticket, header: coordinator_pb2.UpdateHeader,
                            payload: bytearray | None) -> tuple[bool, str]:
        book = self.book
        if book is None or book.closed or ticket.task_id not in book.tickets:
            return False, f"late update: round {header.round} closed before the upload completed"
        metrics = finite_metrics(header.metrics)
        if book.kind == "train":
            if payload is None:
                raise UpdateRejected("a training update must carry a delta")
            assert self.model is not None and self.aggregator is not None
            # Attachments (SCAFFOLD's control-variate delta) travel under reserved names beside the delta.
            delta, attachments = split_attachments(decode(payload))
            validate_update(delta, self.model.weights)
            async with self._fold_lock:
                if book.closed:
                    return False, "late update: the round closed while the update was checked"
                await run_sized(len(payload), self.aggregator.add, delta, float(header.num_samples),
                                client_id=ticket.client_id, attachments=attachments)
        elif book.kind == "init":
            if payload is None:
                raise UpdateRejected("an init upload must carry the initial weights")
            weights = decode(payload, copy=True)
            validate_update(weights, weights)
            if self.init_weights is None:
                self.init_weights = weights
        book.accept(ticket, int(header.num_samples), metrics)
        self._changed.set()
        return True, "accepted"

    def report_task(self, status: common_pb2.TaskStatus) -> None:
        ticket = self._tokens.get(status.task_token)
        if ticket is None or ticket.task_id != status.task_id:
            return
        book = self.book if self.book is not None and ticket.task_id in self.book.tickets else None
        book = book or self.lookahead.book_of(ticket.task_id)  # a task offered ahead may fail early
        if book is None:
            return
        if status.state in (common_pb2.TASK_FAILED, common_pb2.TASK_CANCELLED, common_pb2.TASK_REFUSED):
            log.info("client %s dropped from round %d: %s", ticket.client_id, ticket.round, status.reason)
            book.drop(status.task_id, status.reason or "task failed")
            self._changed.set()

    async def await_model(self, task_id: str, token: str, round_number: int,
                          wait_seconds: float) -> coordinator_pb2.AwaitModelReply:
        """For a task offered ahead: its round's model once the round starts, or why it will not come."""
        ticket = self._tokens.get(token)
        if ticket is None or ticket.task_id != task_id or ticket.round != round_number:
            return coordinator_pb2.AwaitModelReply(
                ready=False, reason=f"task {task_id[:200]} is not waiting for a model here (withdrawn or unknown)")
        waiting = self.lookahead.waiting_for(task_id, round_number)
        if waiting is not None:
            wait_seconds = min(wait_seconds, PREFETCH_MAX_AGE_SECONDS + self.plan.round_timeout)
            try:
                withdrawn = await asyncio.wait_for(asyncio.shield(waiting), wait_seconds)
            except TimeoutError:
                return coordinator_pb2.AwaitModelReply(
                    ready=False, reason=f"round {round_number} did not start within {wait_seconds:.0f}s")
            if withdrawn is not None:
                return coordinator_pb2.AwaitModelReply(ready=False, reason=withdrawn)
        book, model = self.book, self.model
        if book is None or book.round != round_number or task_id not in book.tickets or model is None:
            return coordinator_pb2.AwaitModelReply(
                ready=False, reason=f"round {round_number} is not in progress (task {task_id[:200]})")
        if ticket.outcome is TaskOutcome.DROPPED:  # e.g. withdrawn when the round started
            return coordinator_pb2.AwaitModelReply(ready=False, reason=ticket.reason)
        return coordinator_pb2.AwaitModelReply(
            ready=True, model_sha256=model.sha256,
            model=bytes(model.payload) if model.size <= INLINE_MODEL_BYTES else b"",
            parameters_json=json.dumps(self.plan.parameters), evaluate_first=self._evaluate_first)

    # -- called by the driver -------------------------------------------------
    async def run_round(self, round_number: int, kind: str, *, attempt: int, target: int, minimum: int,
                        aggregator: RoundAggregator | None = None, evaluate_first: bool = False,
                        next_round: bool = False, offer_next: bool = False,
                        next_evaluate_first: bool = False) -> RoundBook:
        """Run one round to its close.

        ``next_round``: another train round follows this one (its clients are selected while this
        one runs); ``offer_next``: it follows directly, and its tasks may be offered ahead, asking
        to evaluate first if ``next_evaluate_first`` (coordinator.lookahead).
        """
        started = self.clock()
        deadline = started + self.plan.round_timeout
        await self.settled()
        taken = await self.lookahead.take(round_number, kind, target, clean=self._last_round_clean)
        book = taken.book or RoundBook(job_id=self.plan.job_id, round_number=round_number, kind=kind,
                                       target=target, minimum=minimum, deadline=deadline)
        book.deadline = deadline
        self.aggregator = aggregator
        self.book = book
        self._evaluate_first = evaluate_first
        secure = self.secure_aggregation if kind == "train" else None
        if secure is not None:  # opened before the offers: a fast client may join at once
            assert self.model is not None
            secure.open(book, self.model, self._changed)
        try:
            clients = await self._start_round(book, taken, attempt, deadline, evaluate_first)
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
            await self._finish(book)
            if kind == "train":
                self._last_round_seconds = self.clock() - started
                self._last_round_clean = bool(book.tickets) and all(
                    t.outcome is TaskOutcome.ACCEPTED for t in book.tickets.values())

    async def _start_round(self, book: RoundBook, taken: Taken, attempt: int, deadline: float,
                           evaluate_first: bool) -> list[str]:
        """The round's clients, offered their tasks: ahead (the model goes out now) or here."""
        if taken.book is not None:
            if taken.revalidate:
                await self.lookahead.revalidate(book)
            chosen = [t.client_id for t in book.tickets.values() if t.outcome is not TaskOutcome.DROPPED]
            self._picked(book, chosen, "offered ahead")
            self.lookahead.publish(taken)
            return chosen
        clients = await self._select(book.round, book.target, book.minimum, deadline, book, taken.selection)
        if clients:
            await self._offer_all(book, clients, attempt, deadline, evaluate_first)
        return clients

    def _picked(self, book: RoundBook, chosen: list[str], how: str) -> None:
        log.info("round %d %s: picked %s", book.round, book.kind, how)
        self._settle_behind(book.round, [], sorted(self._held - set(chosen)))
        self._held = set(chosen)

    async def _select(self, round_number: int, target: int, minimum: int, deadline: float,
                      book: RoundBook, prefetched: Selection | None) -> list[str]:
        while True:
            selection = prefetched or await self._ask_selector(round_number, book.kind, target)
            prefetched = None
            if not selection.satisfied and minimum <= selection.matched < target:
                # The selector never hands out a partial set; ask for what is there.
                selection = await self._ask_selector(round_number, book.kind, selection.matched, redundancy=1.0)
            chosen = [client for client, _ in selection.clients]
            if len(chosen) >= minimum:
                self._picked(book, chosen, "; ".join(f"{client} ({why})" for client, why in selection.clients))
                return chosen
            if chosen:
                await self.selector.release(self.plan.job_id, chosen)
            if self.clock() + SELECTION_RETRY_SECONDS >= deadline:
                book.close(selection.reason or f"InsufficientClients {len(chosen)}/{target}")
                return []
            if await self._stopped_within(SELECTION_RETRY_SECONDS):
                raise StopRequested

    async def _ask_selector(self, round_number: int, kind: str, count: int,
                            redundancy: float | None = None) -> Selection:
        """Select and reserve ``count`` clients for a round (seeded by the job, round and kind)."""
        if redundancy is None:
            redundancy = self.plan.redundancy if kind == "train" else 1.0
        return await self.selector.select(
            job_id=self.plan.job_id, round_number=round_number, count=count, redundancy=redundancy,
            requirement=self.plan.requirement, random=self.plan.random,
            untrained_first=self.plan.untrained_first and kind == "train",
            reservation_seconds=self.plan.round_timeout + 30,
            seed=zlib.crc32(f"{self.plan.job_id}:{round_number}:{kind}".encode()))

    def _prepare_next(self, round_number: int, target: int, minimum: int, *, offer_ahead: bool,
                      evaluate_first: bool) -> None:
        """Select (and offer, ``offer_ahead``) round ``round_number`` while this round's clients train.

        Only when rounds are short (the last one took under ``PREFETCH_MAX_AGE_SECONDS``): then
        dispatch is most of what stands between two rounds (coordinator.lookahead).
        """
        if self._last_round_seconds is None or self._last_round_seconds >= PREFETCH_MAX_AGE_SECONDS:
            return
        self.lookahead.start(round_number, target, minimum, offer_ahead=offer_ahead,
                             evaluate_first=evaluate_first, parameters=self.plan.parameters)

    def _ahead_book(self, round_number: int, target: int, minimum: int) -> RoundBook:
        deadline = self.clock() + PREFETCH_MAX_AGE_SECONDS + self.plan.round_timeout  # reset when it starts
        return RoundBook(job_id=self.plan.job_id, round_number=round_number, kind="train", target=target,
                         minimum=minimum, deadline=deadline)

    def _forget(self, book: RoundBook) -> None:
        for ticket in book.tickets.values():
            self._tokens.pop(ticket.token, None)

    async def _offer_ahead(self, book: RoundBook, clients: list[str], evaluate_first: bool,
                           parameters: Mapping[str, Any]) -> None:
        await self._offer(book, clients, attempt=0, deadline=book.deadline, evaluate_first=evaluate_first,
                          parameters=parameters, model_follows=True)

    async def _offer_all(self, book: RoundBook, clients: list[str], attempt: int, deadline: float,
                         evaluate_first: bool = False) -> None:
        await self._offer(book, clients, attempt=attempt, deadline=deadline, evaluate_first=evaluate_first,
                          parameters=self.plan.parameters, model_follows=False)

    async def _offer(self, book: RoundBook, clients: list[str], *, attempt: int, deadline: float,
                     evaluate_first: bool, parameters: Mapping[str, Any], model_follows: bool) -> None:
        """Issue the clients' tickets and offer their tasks; refusals drop them from the round."""
        model_sha = self.model.sha256 if self.model is not None and book.kind != "init" else ""
        inline = b""
        if model_follows:
            model_sha = ""  # the executor asks AwaitModel once the round starts
        elif model_sha and self.model is not None and self.model.size <= INLINE_MODEL_BYTES:
            inline = bytes(self.model.payload)
        self.participants.update(clients)
        offers = []
        for client in clients:
            ticket = book.issue(client, attempt)
            self._tokens[ticket.token] = ticket
            offers.append(Offer(
                client_id=client, task_id=ticket.task_id, job_id=self.plan.job_id,
                namespace=self.plan.namespace, round=book.round, attempt=attempt, kind=book.kind,
                runtime=self.plan.runtime, endpoint=self.endpoint(), model_sha256=model_sha,
                token=ticket.token, entry=self.plan.entry, parameters=parameters,
                datasets=self.plan.datasets, timeout_seconds=self.plan.task_timeout,
                deadline_unix=deadline, mode=self.plan.mode, evaluate_first=evaluate_first,
                secure_aggregation=self.secure_aggregation is not None, model=inline,
                model_follows=model_follows))
        answers = await self.selector.offer_many(offers, answer_timeout=OFFER_ANSWER_SECONDS)
        for offer, (accepted, reason) in zip(offers, answers, strict=True):
            if not accepted:
                log.info("client %s refused round %d: %s", offer.client_id, book.round, reason)
                book.drop(offer.task_id, f"refused: {reason}")

    async def _wait(self, book: RoundBook) -> None:
        while True:
            reason = book.should_close(self.clock())
            if reason is not None:
                async with self._fold_lock:
                    book.close(reason)
                return
            self._changed.clear()
            timeout = max(0.0, min(book.deadline - self.clock(), 1.0))
            if self.stop_event.is_set():
                book.close("stop requested")
                raise StopRequested
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass

    async def _settle(self, round_number: int, outstanding: list[str], unheld: list[str]) -> None:
        try:
            if outstanding:
                await self.selector.cancel(self.plan.job_id, outstanding, f"round {round_number} closed")
            if unheld:
                await self.selector.release(self.plan.job_id, unheld)
        except Exception as exc:  # the selector may be down; reservations expire on their own
            log.warning("could not cancel or release clients after round %d: %s", round_number, exc)

    def _settle_behind(self, round_number: int, outstanding: list[str], unheld: list[str]) -> None:
        if outstanding or unheld:
            task = asyncio.create_task(self._settle(round_number, outstanding, unheld))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def settled(self) -> None:
        """Wait until late clients are cancelled and clients no longer held are released."""
        while self._settling:
            await asyncio.gather(*self._settling)

    async def release_all(self) -> None:
        """The job is over: release every client it holds (after what is still being settled)."""
        await self.lookahead.withdraw("the job is ending")  # its reservations land first, then go
        await self.settled()
        try:
            await self.selector.release(self.plan.job_id)
        except Exception as exc:  # the selector may be down; reservations expire on their own
            log.warning("could not release the job's clients: %s", exc)
        self._held.clear()

    async def pause_before_retry(self) -> None:
        """Wait a little before a new attempt of a failed round.

        Clients may still be finishing the failed attempt (a restarted coordinator
        re-offers tasks its predecessor handed out): retrying at once would find
        them busy and burn every attempt within milliseconds.
        """
        if await self._stopped_within(min(RETRY_PAUSE_SECONDS, self.plan.round_timeout / 10)):
            raise StopRequested

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.stop_event.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _finish(self, book: RoundBook) -> None:
        outstanding = [t.client_id for t in book.outstanding]
        for ticket in book.outstanding:
            book.drop(ticket.task_id, f"round closed before it answered ({book.close_reason})")
        # Behind the round: the server step runs meanwhile, and the next selection waits for it.  The
        # round's clients stay reserved: the next round selects them again (renewing the reservation)
        # or releases those it does not (_select), and the job's end releases the rest.
        self._settle_behind(book.round, outstanding, [])
        for ticket in book.tickets.values():
            self._tokens.pop(ticket.token, None)
