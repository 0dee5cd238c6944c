"""The gate every task's calls go through: its ticket, its model, its upload, its failure.

What a task asks of the round in progress (:class:`~coordinator.current_round.CurrentRound`),
as the servicer hands it over: the ticket its token opens, the round's model
(downloaded, or awaited by a task offered ahead), its update (checked against
the round and its ticket, then folded into the round's update sink), or its
failure (dropped from its round).  Every refusal has a reason the client is
told, and nothing about a task changes before its checks pass.

Who may present a token is the servicer's to check (the zero-trust check in
:mod:`coordinator.grpc_service`): this gate trusts that the caller holds the
ticket and decides whether the round takes what it sends.
"""

from __future__ import annotations

import asyncio
import logging

from coordinator.current_round import CurrentRound
from coordinator.lookahead import PREFETCH_MAX_AGE_SECONDS, Lookahead
from coordinator.model_state import GlobalModel, WeightMap
from coordinator.offload import run_sized
from coordinator.rounds import TaskOutcome, Ticket, finite_metrics
from libs.aggregation.attachments import split as split_attachments
from libs.errors import UpdateRejected
from libs.protos import common_pb2, coordinator_pb2
from libs.tasks.serde import algorithm_to_proto, parameters_to_proto
from libs.weights.tensors import decode, validate_update

log = logging.getLogger(__name__)

_FAILED = (common_pb2.TASK_FAILED, common_pb2.TASK_CANCELLED, common_pb2.TASK_REFUSED)


class Uploads:
    """The round's gate for its tasks (see the module docstring)."""

    def __init__(self, current: CurrentRound, lookahead: Lookahead, *, secure: bool) -> None:
        self.current = current
        self.lookahead = lookahead  # a task offered ahead belongs to the round being prepared
        self.secure = secure  # train updates then travel over SecureAggregate
        self.max_init_size = 4 << 30
        self.init_weights: WeightMap | None = None  # the first init upload's weights
        self._arriving: set[str] = set()  # task ids whose upload is on its way

    def ticket_for(self, token: str) -> Ticket | None:
        """The live task ``token`` was issued for (this round's, or one offered ahead), if any."""
        return self.current.tickets.get(token)

    def model_for(self, sha256: str) -> GlobalModel | None:
        return self.current.model_for(sha256)

    def begin_upload(self, header: coordinator_pb2.UpdateHeader) -> tuple[Ticket, GlobalModel | None]:
        """The ticket of an update that may be received (and the model it must fit); ValueError why not."""
        current = self.current
        book = current.book
        if book is None or header.round != book.round or header.kind != book.kind:
            raise ValueError(f"late update: round {header.round} ({header.kind}) is not in progress")
        ticket = book.check_upload(header.task_id, header.task_token, header.client_id, header.round)
        if book.kind == "train" and self.secure:
            raise ValueError("this job uses secure aggregation: train updates travel over SecureAggregate")
        if ticket.task_id in self._arriving:
            raise ValueError(f"duplicate update for task {ticket.task_id!r} (one is already arriving)")
        if book.kind == "train":
            assert current.model is not None
            if header.base_sha256 != current.model.sha256:
                raise ValueError("the update is not against this round's global model")
            if header.num_samples <= 0:
                raise ValueError("a training update needs a positive sample count")
        self._arriving.add(ticket.task_id)
        return ticket, (current.model if book.kind == "train" else None)

    def end_upload(self, ticket: Ticket) -> None:
        self._arriving.discard(ticket.task_id)

    def reject(self, ticket: Ticket, reason: str) -> None:
        book = self.current.book
        if book is not None and ticket.task_id in book.tickets:
            book.reject(ticket.task_id, reason)
            self.current.changed.set()

    async def finish_upload(self, ticket: Ticket, header: coordinator_pb2.UpdateHeader,
                            payload: bytearray | None) -> tuple[bool, str]:
        """Fold a received update into the round (train) or keep it (init); whether it was taken, and why."""
        current = self.current
        book = current.book
        if book is None or book.closed or ticket.task_id not in book.tickets:
            return False, f"late update: round {header.round} closed before the upload completed"
        metrics = finite_metrics(header.metrics)
        if book.kind == "train":
            if payload is None:
                raise UpdateRejected("a training update must carry a delta")
            assert current.model is not None and current.sink is not None
            # Attachments (SCAFFOLD's control-variate delta) travel under reserved names beside the delta.
            delta, attachments = split_attachments(decode(payload))
            validate_update(delta, current.model.weights)
            async with current.fold_lock:
                if book.closed:
                    return False, "late update: the round closed while the update was checked"
                await run_sized(len(payload), current.sink.add, delta, float(header.num_samples),
                                client_id=ticket.client_id, attachments=attachments)
        elif book.kind == "init":
            if payload is None:
                raise UpdateRejected("an init upload must carry the initial weights")
            weights = decode(payload, copy=True)
            validate_update(weights, weights)
            if self.init_weights is None:
                self.init_weights = weights
        book.accept(ticket, int(header.num_samples), metrics)
        current.changed.set()
        return True, "accepted"

    def report_task(self, status: common_pb2.TaskStatus) -> None:
        """A task's state from its task manager or executor: a failed one is dropped from its round."""
        ticket = self.current.tickets.get(status.task_token)
        if ticket is None or ticket.task_id != status.task_id:
            return
        book = self.current.book
        book = book if book is not None and ticket.task_id in book.tickets else None
        book = book or self.lookahead.book_of(ticket.task_id)  # a task offered ahead may fail early
        if book is None:
            return
        if status.state in _FAILED:
            log.info("client %s dropped from round %d: %s", ticket.client_id, ticket.round, status.reason)
            book.drop(status.task_id, status.reason or "task failed")
            self.current.changed.set()

    async def await_model(self, task_id: str, token: str, round_number: int,
                          wait_seconds: float) -> coordinator_pb2.AwaitModelReply:
        """For a task offered ahead: its round's model once the round starts, or why it will not come."""
        current = self.current
        ticket = current.tickets.get(token)
        if ticket is None or ticket.task_id != task_id or ticket.round != round_number:
            return _not_ready(f"task {task_id[:200]} is not waiting for a model here (withdrawn or unknown)")
        waiting = self.lookahead.waiting_for(task_id, round_number)
        if waiting is not None:
            wait_seconds = min(wait_seconds, PREFETCH_MAX_AGE_SECONDS + current.plan.round_timeout)
            try:
                withdrawn = await asyncio.wait_for(asyncio.shield(waiting), wait_seconds)
            except TimeoutError:
                return _not_ready(f"round {round_number} did not start within {wait_seconds:.0f}s")
            if withdrawn is not None:
                return _not_ready(withdrawn)
        book, model = current.book, current.model
        if book is None or book.round != round_number or task_id not in book.tickets or model is None:
            return _not_ready(f"round {round_number} is not in progress (task {task_id[:200]})")
        if ticket.outcome is TaskOutcome.DROPPED:  # e.g. withdrawn when the round started
            return _not_ready(ticket.reason)
        plan = current.plan  # the task as the round offers it
        return coordinator_pb2.AwaitModelReply(
            ready=True, model_sha256=model.sha256, model=model.inline, evaluate_first=current.evaluate_first,
            parameters=parameters_to_proto(plan.parameters), algorithm=algorithm_to_proto(plan.algorithm))


def _not_ready(reason: str) -> coordinator_pb2.AwaitModelReply:
    return coordinator_pb2.AwaitModelReply(ready=False, reason=reason)
