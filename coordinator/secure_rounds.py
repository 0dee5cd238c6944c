"""Secure aggregation in a job's train rounds: the ``libs.secagg`` server carried over gRPC.

With ``privacy.secureAggregation`` in the job spec, a train round's updates do
not travel over ``UploadUpdate``.  Each executor, once its training is done,
opens ``SecureAggregate`` (one bidirectional stream) and the coordinator plays
:class:`~libs.secagg.SecAggServer` (Bonawitz et al. 2017, Fig. 4) across the
streams of the round.  The stages, each closing when every expected client
answered, left, or at the stage deadline (``stage_seconds`` after it opened):

1. join: a client's first frame (its task's tags, token and plain metrics).
   The join phase closes when ``clientsPerRound`` clients joined, when every
   offered client joined or dropped, or at ``round deadline - stages x
   stage_seconds`` (so the stages still fit before the round's deadline).
   The joined clients are the round's participants, in join order.
2. ``SecAggPlan`` to each participant (the ``RoundSetup`` and how to encode),
   then ``advertise-keys`` in, ``key-directory`` out to U1;
3. (double-mask) ``share-keys`` in, one ``share-delivery`` out to each of U2;
4. ``masked-input`` in (in pieces, :mod:`coordinator.secure_links`: a
   1M-parameter model is 4 MB at 32 bits);
5. (double-mask) ``unmask-request`` out to U3, ``unmasking`` in; then the sum
   is unmasked, decoded to ``(Σ w_i x_i, Σ w_i)``, and the mean delta goes to
   the round's aggregator like a plain FedAvg update; each participant gets a
   ``SecAggOutcome`` (in the sum or not, and why).

A client missing at a stage (stream broken, task reported failed, message
refused, or too slow) is dropped per the protocol; with fewer than the
threshold left, or any dropout in one-mask mode, the round fails and the
driver's retry policy applies.  What the coordinator sees of one client: its
join (tags, metrics), its public keys, sealed shares for its peers, its
masked vector (uniform in the ring), and at the end shares that unmask the
*sum* only.  Metrics are not secret in this threat model; the sample count
is: it is masked inside the vector (FedAvg weighting), and only ``Σ w_i``
reaches the history, as the round's ``samples``.

Encoding (:mod:`coordinator.secure_encoding`): the floating-point tensors (all the aggregators take) are masked
as one vector in the canonical layout; elements are clipped to ``clip_range``
(:data:`~coordinator.secure_encoding.DEFAULT_CLIP_RANGE`, or the DP clip norm plus noise headroom) and the
sample weight is capped at ``max_weight`` (:func:`~coordinator.secure_encoding.weight_cap`), which is how a
fixed-point sum of ``n`` clients stays inside the ``bits``-bit ring.  With
central ``privacy.dp`` each client clips to ``clipNorm``, weighs 1, and adds
its share of the Gaussian noise (:class:`~libs.privacy.DistributedNoise`,
calibrated to the threshold: the fewest inputs a sum can hold), so the server
never adds noise of its own to a secure round (``coordinator.privacy_accounting``
only counts the release).  With local DP the client's algorithm has noised
the delta before it is masked; the clip range leaves room for that noise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from coordinator.aggregating import UpdateSink
from coordinator.model_state import GlobalModel
from coordinator.rounds import RoundBook, finite_metrics
from coordinator.secure_encoding import (
    SecureAggregationConfig,
    floating_layout,
    mean_delta,
    resolve_threshold,
)
from coordinator.secure_links import ClientLink
from coordinator.stopping import StopRequested
from libs.errors import NsflError, ValidationFailed
from libs.protos import coordinator_pb2
from libs.secagg import (
    AggregateResult,
    KeyAdvertisement,
    MaskedInput,
    Mode,
    RoundAborted,
    RoundSetup,
    SecAggServer,
    ShareKeys,
    UnmaskResponse,
)
from libs.secagg.key_agreement import RandomBytes
from libs.secagg.messages import element_bytes

log = logging.getLogger(__name__)

ADVERTISE, SHARE, MASK, UNMASK = "advertise-keys", "share-keys", "masked-input", "unmasking"
KEY_DIRECTORY, SHARE_DELIVERY, UNMASK_REQUEST = "key-directory", "share-delivery", "unmask-request"
_PARSERS: dict[str, Any] = {ADVERTISE: KeyAdvertisement, SHARE: ShareKeys, MASK: MaskedInput, UNMASK: UnmaskResponse}

_SMALL_MESSAGE = 64 * 1024  # bound of a non-vector message, plus 1 KiB per participant


class SecureRound:
    """The secure-aggregation stages of one train round (see the module docstring)."""

    def __init__(self, config: SecureAggregationConfig, book: RoundBook, model: GlobalModel, *,
                 changed: asyncio.Event, clock: Callable[[], float], random_bytes: RandomBytes) -> None:
        self.config, self.book, self.model = config, book, model
        self.changed, self.clock, self.random_bytes = changed, clock, random_bytes
        self.layout = floating_layout(model.weights)
        self.links: dict[str, ClientLink] = {}
        self.joining = True
        self.setup: RoundSetup | None = None
        self.server: SecAggServer | None = None
        self.collecting = ""
        self.answered: dict[str, set[str]] = {}
        self.summary: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    # -- called by the stream ------------------------------------------------------------------------------
    def join(self, join: coordinator_pb2.SecAggJoin) -> ClientLink:
        ticket = self.book.check_upload(join.task_id, join.task_token, join.client_id, join.round)
        if join.base_sha256 != self.model.sha256:
            raise ValueError("the update is not against this round's global model")
        if not self.joining:
            raise ValueError(f"late: the secure aggregation of round {self.book.round} already started")
        if ticket.client_id in self.links:
            raise ValueError(f"duplicate join for task {ticket.task_id!r}")
        if sum(link.alive for link in self.links.values()) >= self.book.target:
            raise ValueError(f"late: {self.book.target} clients already joined round {self.book.round}")
        link = ClientLink(ticket, finite_metrics(join.metrics))
        self.links[ticket.client_id] = link
        self.changed.set()
        return link

    def _limit(self, stage: str) -> int:
        setup = self.setup
        if setup is None:
            return 0
        if stage == MASK:
            return setup.vector_length * element_bytes(setup.ring_bits) + 1024
        return _SMALL_MESSAGE + 1024 * len(setup.participants)

    async def read(self, link: ClientLink, frames: AsyncIterator[coordinator_pb2.SecAggClientFrame]) -> None:
        """Feed the client's messages to the server until its stream ends."""
        try:
            async for frame in frames:
                if frame.WhichOneof("frame") != "piece":
                    raise ValidationFailed("only message pieces may follow the join frame")
                message = link.take(frame.piece, self._limit(frame.piece.stage))
                if message is not None:
                    await self.receive(link, frame.piece.stage, message)
        except NsflError as exc:
            self.refuse(link, f"{exc.code}: {exc.message}")
        except Exception as exc:  # the client went away mid-frame; the stream says no more
            self.disconnected(link, f"its stream broke ({type(exc).__name__})")

    async def receive(self, link: ClientLink, stage: str, data: bytes) -> None:
        server = self.server
        if not link.alive or server is None:
            return
        if stage != self.collecting:
            self.refuse(link, f"a {stage!r} message arrived while the round collects {self.collecting or 'nothing'!r}")
            return
        try:
            message = _PARSERS[stage].from_bytes(data)
            async with self._lock:
                if stage == ADVERTISE:
                    server.receive_keys(link.client_id, message)
                elif stage == SHARE:
                    server.receive_shares(link.client_id, message)
                elif stage == MASK:
                    await asyncio.to_thread(server.receive_masked_input, link.client_id, message)
                else:
                    server.receive_unmasking(link.client_id, message)
        except NsflError as exc:
            self.refuse(link, f"{exc.code}: {exc.message}")
            return
        self.answered.setdefault(stage, set()).add(link.client_id)
        self.changed.set()

    def refuse(self, link: ClientLink, reason: str) -> None:
        if link.alive:
            log.warning("secure aggregation: refused %s: %s", link.client_id, reason)
            link.gone = reason
            self.book.reject(link.ticket.task_id, reason)
            link.finish(False, reason)
            self.changed.set()

    def disconnected(self, link: ClientLink, reason: str = "its stream closed") -> None:
        if link.alive and not link.finished:
            self.drop(link, f"{reason} during {self.collecting or 'the join phase'}")

    def drop(self, link: ClientLink, reason: str) -> None:
        log.info("secure aggregation: dropped %s: %s", link.client_id, reason)
        link.gone = reason
        self.book.drop(link.ticket.task_id, reason)
        link.finish(False, reason)
        self.changed.set()

    # -- called by the round runner ---------------------------------------------------------------------------
    async def _wait(self, done: Callable[[], bool], deadline: float, stop: asyncio.Event) -> None:
        while True:
            self.changed.clear()
            if done() or self.clock() >= deadline:
                return
            if stop.is_set():
                raise StopRequested
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.0, min(deadline - self.clock(), 0.5)))
            except TimeoutError:
                pass

    async def _collect(self, stage: str, expected: list[ClientLink], stop: asyncio.Event) -> None:
        self.collecting = stage
        deadline = min(self.clock() + self.config.stage_seconds, self.book.deadline)
        await self._wait(lambda: all(not link.alive or link.client_id in self.answered.get(stage, ())
                                     for link in expected), deadline, stop)
        self.collecting = ""

    def _next(self, expected: list[ClientLink], kept: tuple[str, ...], what: str) -> list[ClientLink]:
        for link in expected:
            if link.alive and link.client_id not in kept:
                self.drop(link, f"did not send {what} before the stage closed")
        return [self.links[cid] for cid in kept]

    async def run(self, aggregator: UpdateSink, stop: asyncio.Event) -> None:
        book, config = self.book, self.config
        await self._wait(self._joined, book.deadline - config.stages * config.stage_seconds, stop)
        self.joining = False
        try:
            setup = self._setup([link for link in self.links.values() if link.alive])
            result = await self._stages(setup, stop)
            if len(result.contributors) < book.minimum:
                raise RoundAborted(f"only {len(result.contributors)} inputs in the sum; minClients {book.minimum}")
            delta, total_weight = mean_delta(result, setup, self.layout, self.model.weights)
        except NsflError as exc:  # too few clients left, or a setup the ring cannot hold
            reason = f"secure aggregation aborted: {exc.reason if isinstance(exc, RoundAborted) else exc.message}"
            log.warning("round %d: %s", book.round, reason)
            book.close(reason)
            return
        await asyncio.to_thread(aggregator.add, delta, total_weight)
        for cid in result.contributors:
            book.accept(self.links[cid].ticket, 0, self.links[cid].metrics)
            self.links[cid].finish(True, "the masked input is in the round's sum")
        self.summary["inputs"], self.summary["totalWeight"] = len(result.contributors), total_weight
        book.close(f"secure aggregation: {len(result.contributors)} masked inputs summed")

    def _joined(self) -> bool:
        if sum(link.alive for link in self.links.values()) >= self.book.target:
            return True
        outstanding = [t for t in self.book.outstanding if t.client_id not in self.links]
        return bool(self.book.tickets) and not outstanding

    def _setup(self, participants: list[ClientLink]) -> RoundSetup:
        needed = max(2, self.book.minimum)
        if len(participants) < needed:
            raise RoundAborted(f"only {len(participants)} clients joined; at least {needed} are needed")
        threshold = resolve_threshold(self.config.threshold, len(participants), self.config.mode)
        self.setup = RoundSetup(
            session_id=self.random_bytes(32), round_number=self.book.round,
            participants=tuple(link.client_id for link in participants), threshold=threshold,
            mode=self.config.mode.value, ring_bits=self.config.bits, vector_length=self.layout.size + 1,
            clip_range=self.config.clip_range(threshold), max_weight=self.config.max_weight(),
            model_sha256=bytes.fromhex(self.model.sha256))
        self.server = SecAggServer(self.setup)
        plan = coordinator_pb2.SecAggPlan(round_setup=self.setup.to_bytes(), stage_seconds=self.config.stage_seconds,
                                          weight_by_samples=not self.config.clients_add_noise)
        if self.config.clients_add_noise:  # calibrated to t: the fewest inputs a decodable sum holds
            plan.dp_clip_norm, plan.dp_noise_multiplier = self.config.dp_clip_norm, self.config.dp_noise_multiplier
            plan.dp_noise_contributors = threshold
        for link in participants:
            link.outbox.put_nowait(coordinator_pb2.SecAggServerFrame(plan=plan))
        self.summary = {"mode": self.config.mode.value, "threshold": threshold, "ringBits": self.config.bits,
                        "participants": len(participants)}
        log.info("round %d: secure aggregation of %d clients, threshold %d", self.book.round,
                 len(participants), threshold)
        return self.setup

    async def _stages(self, setup: RoundSetup, stop: asyncio.Event) -> AggregateResult:
        server = self.server
        assert server is not None
        expected = [self.links[cid] for cid in setup.participants]
        await self._collect(ADVERTISE, expected, stop)
        async with self._lock:
            directory = server.close_advertising()
        expected = self._next(expected, server.advertised, "its keys")
        self.summary["advertised"] = len(expected)
        for link in expected:
            link.send(KEY_DIRECTORY, directory.to_bytes())
        if setup.mode == Mode.DOUBLE_MASK:
            await self._collect(SHARE, expected, stop)
            async with self._lock:
                deliveries = server.close_sharing()
            expected = self._next(expected, tuple(deliveries), "its shares")
            self.summary["shared"] = len(expected)
            for link in expected:
                link.send(SHARE_DELIVERY, deliveries[link.client_id].to_bytes())
        await self._collect(MASK, expected, stop)
        async with self._lock:
            request = server.close_masked_input()
        if request is not None:
            survivors = tuple(setup.participants[i - 1] for i in request.survivors)
            self.summary["dropped"] = [setup.participants[i - 1] for i in request.dropped]
            expected = self._next(expected, survivors, "its masked input")
            for link in expected:
                link.send(UNMASK_REQUEST, request.to_bytes())
            await self._collect(UNMASK, expected, stop)
            self.summary["unmasked"] = len(self.answered.get(UNMASK, ()))
        async with self._lock:
            return await asyncio.to_thread(server.finish)

    def end(self, reason: str) -> None:
        self.joining = False
        for link in self.links.values():
            link.finish(False, reason)


class SecureRounds:
    """The job-level side: the round in progress, its stream handler, and what the history records."""

    def __init__(self, config: SecureAggregationConfig, *, clock: Callable[[], float] = time.time,
                 random_bytes: RandomBytes = os.urandom) -> None:
        self.config, self.clock, self.random_bytes = config, clock, random_bytes
        self.current: SecureRound | None = None
        self.last: SecureRound | None = None

    def open(self, book: RoundBook, model: GlobalModel, changed: asyncio.Event) -> None:
        self.current = SecureRound(self.config, book, model, changed=changed, clock=self.clock,
                                   random_bytes=self.random_bytes)

    async def run(self, aggregator: UpdateSink, stop: asyncio.Event) -> None:
        assert self.current is not None, "open() comes first"
        await self.current.run(aggregator, stop)

    def close(self, reason: str) -> None:
        if self.current is not None:
            self.current.end(reason or "the round ended")
            self.last, self.current = self.current, None

    def record_fields(self) -> dict[str, Any]:
        """For the round's history record: the stage counts, and ``samples`` as the decoded ``Σ w_i``
        (under DP every weight is 1, so the sample count stays unknown)."""
        summary = dict(self.last.summary) if self.last is not None else {}
        fields: dict[str, Any] = {"secureAggregation": summary}
        if "totalWeight" in summary and not self.config.clients_add_noise:  # whole counts, rounded in the ring
            fields["samples"] = round(summary["totalWeight"])
        return fields

    async def serve(self, frames: AsyncIterator[coordinator_pb2.SecAggClientFrame],
                    ) -> AsyncIterator[coordinator_pb2.SecAggServerFrame]:
        """One client's ``SecureAggregate`` stream: a join, then its messages; the replies as they come."""
        first = await anext(aiter(frames), None)
        if first is None or first.WhichOneof("frame") != "join":
            raise ValidationFailed("a SecureAggregate stream must start with a join frame")
        round_ = self.current
        try:
            if round_ is None:
                raise ValueError(f"late: round {first.join.round} is not in progress")
            link = round_.join(first.join)
        except ValueError as exc:
            log.warning("refused a secure-aggregation join from %s: %s", first.join.client_id, exc)
            yield coordinator_pb2.SecAggServerFrame(outcome=coordinator_pb2.SecAggOutcome(reason=str(exc)))
            return
        reader = asyncio.create_task(round_.read(link, frames))
        try:
            while (frame := await link.outbox.get()) is not None:
                yield frame
        finally:
            reader.cancel()
            round_.disconnected(link)
