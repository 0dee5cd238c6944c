"""Secure rounds in the coordinator: the stage driver against in-process fake clients over real gRPC.

A real ``grpc.aio`` server on ``127.0.0.1:0`` serves :class:`CoordinatorService`
over a real :class:`RoundRunner`; a fake selector accepts every offer and
starts a fake client for it, which speaks ``SecureAggregate`` with a real
:class:`SecAggClient` and can misbehave on cue (leave, stall, send the wrong
stage, present a bad token, try a plain upload, present another client's task).
Everything speaks mutual TLS: the server as the coordinator of ``ns/job``,
each fake client as ``client/<name>`` (certificates from ``test_pki``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest

from coordinator.aggregating import StreamingMean
from coordinator.grpc_service import CoordinatorService
from coordinator.model_state import GlobalModel
from coordinator.round_runner import RoundRunner
from coordinator.secure_encoding import (
    SecureAggregationConfig,
    config_from_spec,
    floating_layout,
    resolve_threshold,
)
from coordinator.secure_links import pieces
from coordinator.secure_rounds import (
    ADVERTISE,
    KEY_DIRECTORY,
    MASK,
    SHARE,
    SHARE_DELIVERY,
    UNMASK,
    UNMASK_REQUEST,
    SecureRounds,
)
from coordinator.selector_client import Offer, Selection
from coordinator.uploads import Uploads
from libs.errors import UpdateRejected
from libs.protos import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from libs.secagg import KeyDirectory, Mode, RoundSetup, SecAggClient, ShareDelivery, UnmaskRequest
from libs.secagg.wire import WireMessage
from tests.fixtures.pki import TestPki
from tests.unit.coordinator.specs import job_plan, stored_spec

JOB = "ns/job"
WEIGHTS = {
    "b": np.linspace(-1, 1, 4).astype(np.float32),
    "w": np.arange(12, dtype=np.float32).reshape(3, 4) / 10,
}


def delta_for(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"b": rng.normal(0, 0.3, 4).astype(np.float32), "w": rng.normal(0, 0.3, (3, 4)).astype(np.float32)}


@dataclass
class Behaviour:
    samples: int = 10
    seed: int = 0
    leave_after: str = ""  # close the stream once this server message arrived
    stall_after: str = ""  # stop answering (stream kept open) once this server message arrived
    wrong_stage: bool = False  # answer the plan with a share-keys message
    huge_piece: bool = False  # announce a message far larger than any stage allows
    token: str | None = None  # present this token instead of the offered one
    plain_upload: bool = False  # try UploadUpdate first
    absent: bool = False  # never join; the task manager reports the task failed
    chunk: int = 97  # piece size: every message arrives in several pieces
    impersonate: str = ""  # join with this other client's task (its id, task and stolen token)


@dataclass
class Verdict:
    included: bool = False
    reason: str = ""
    plain: tuple[bool, str] | None = None
    stopped_at: str = ""
    code: grpc.StatusCode | None = None  # the stream ended with this error status


class Excluded(Exception):
    def __init__(self, outcome: coordinator_pb2.SecAggOutcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class FakeClient:
    def __init__(self, endpoint: str, offer: Offer, behaviour: Behaviour, pki: TestPki,
                 offers: dict[str, Offer]) -> None:
        self.offer, self.b, self.offers = offer, behaviour, offers
        wire = pki.wire(pki.identity("client", offer.client_id))
        self.channel = wire.channel(endpoint, wire.coordinator_of(JOB))
        self.stub = coordinator_pb2_grpc.CoordinatorStub(self.channel)
        self.outbox: asyncio.Queue[coordinator_pb2.SecAggClientFrame | None] = asyncio.Queue()
        self.verdict = Verdict()

    async def frames(self) -> AsyncIterator[coordinator_pb2.SecAggClientFrame]:
        while (frame := await self.outbox.get()) is not None:
            yield frame

    def send(self, stage: str, message: WireMessage | bytes) -> None:
        data = message if isinstance(message, bytes) else message.to_bytes()
        for start in range(0, len(data), self.b.chunk):
            piece = coordinator_pb2.SecAggPiece(stage=stage, total_size=len(data), offset=start,
                                                data=data[start:start + self.b.chunk])
            self.outbox.put_nowait(coordinator_pb2.SecAggClientFrame(piece=piece))

    async def frame(self, kind: str) -> Any:
        frame = await self.replies.__anext__()
        if frame.WhichOneof("frame") == "outcome" and kind != "outcome":
            raise Excluded(frame.outcome)
        assert frame.WhichOneof("frame") == kind, frame
        return getattr(frame, kind)

    async def message(self, stage: str) -> bytes:
        data = b""
        while True:
            piece = await self.frame("piece")
            assert piece.stage == stage and piece.offset == len(data)
            data += piece.data
            if len(data) == piece.total_size:
                return data

    async def checkpoint(self, stage: str) -> bool:
        """True when the behaviour stops here."""
        if stage == self.b.leave_after:
            self.verdict.stopped_at = stage
            self.call.cancel()
            return True
        if stage == self.b.stall_after:
            self.verdict.stopped_at = stage
            outcome = await self.frame("outcome")  # the coordinator drops us at the stage deadline
            self.verdict.included, self.verdict.reason = outcome.included, outcome.reason
            return True
        return False

    async def run(self) -> Verdict:
        try:
            await self._run()
        except Excluded as exc:
            self.verdict.included, self.verdict.reason = exc.outcome.included, exc.outcome.reason
        except grpc.aio.AioRpcError as exc:
            self.verdict.code, self.verdict.reason = exc.code(), exc.details() or ""
        finally:
            self.outbox.put_nowait(None)
            await self.channel.close()
        return self.verdict

    async def _run(self) -> None:
        offer, b = self.offer, self.b
        if b.plain_upload:
            header = coordinator_pb2.UpdateHeader(job_id=JOB, round=offer.round, client_id=offer.client_id,
                                                  task_id=offer.task_id, task_token=offer.token, kind="train",
                                                  num_samples=b.samples, base_sha256=offer.model_sha256)
            result = await self.stub.UploadUpdate(iter([coordinator_pb2.UploadFrame(header=header)]))
            self.verdict.plain = (result.accepted, result.reason)
        self.call = self.stub.SecureAggregate(self.frames())
        self.replies = self.call.__aiter__()
        task = self.offers[b.impersonate] if b.impersonate else offer
        join = coordinator_pb2.SecAggJoin(job_id=JOB, round=offer.round, client_id=task.client_id,
                                          task_id=task.task_id, task_token=b.token or task.token,
                                          base_sha256=offer.model_sha256, metrics={"loss": 0.5})
        self.outbox.put_nowait(coordinator_pb2.SecAggClientFrame(join=join))
        plan = await self.frame("plan")
        setup = RoundSetup.from_bytes(plan.round_setup)
        client = SecAggClient(offer.client_id)
        if b.wrong_stage or b.huge_piece:
            if b.huge_piece:
                piece = coordinator_pb2.SecAggPiece(stage=ADVERTISE, total_size=10**12, offset=0, data=b"x")
                self.outbox.put_nowait(coordinator_pb2.SecAggClientFrame(piece=piece))
            else:
                self.send(SHARE, b"NSA1 not really shares")
            outcome = await self.frame("outcome")  # the coordinator refuses the message at once
            self.verdict.included, self.verdict.reason = outcome.included, outcome.reason
            return
        self.send(ADVERTISE, client.advertise_keys(setup, bytes.fromhex(offer.model_sha256)))
        directory = KeyDirectory.from_bytes(await self.message(KEY_DIRECTORY))
        if await self.checkpoint(KEY_DIRECTORY):
            return
        request: KeyDirectory | ShareDelivery = directory
        if setup.mode == Mode.DOUBLE_MASK:
            self.send(SHARE, client.share_keys(directory))
            request = ShareDelivery.from_bytes(await self.message(SHARE_DELIVERY))
            if await self.checkpoint(SHARE_DELIVERY):
                return
        delta = delta_for(b.seed)
        vector = floating_layout(delta).flatten(delta)
        self.send(MASK, client.mask_update(request, vector, weight=float(b.samples)))
        if setup.mode == Mode.DOUBLE_MASK:
            unmask = UnmaskRequest.from_bytes(await self.message(UNMASK_REQUEST))
            if await self.checkpoint(UNMASK_REQUEST):
                return
            self.send(UNMASK, client.unmask(unmask))
        outcome = await self.frame("outcome")
        self.verdict.included, self.verdict.reason = outcome.included, outcome.reason


@dataclass
class FakeSelector:
    behaviours: dict[str, Behaviour]
    pki: TestPki
    endpoint: str = ""
    offers: dict[str, Offer] = field(default_factory=dict)
    runner: RoundRunner | None = None
    clients: dict[str, asyncio.Task[Verdict]] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)

    async def select(self, **kwargs: Any) -> Selection:
        names = list(self.behaviours)
        return Selection([(n, "test") for n in names], len(names), kwargs["count"], True, "")

    async def offer(self, offer: Offer, *, answer_timeout: float) -> tuple[bool, str]:
        behaviour = self.behaviours[offer.client_id]
        if behaviour.absent:
            assert self.runner is not None
            self.runner.uploads.report_task(common_pb2.TaskStatus(task_id=offer.task_id, task_token=offer.token,
                                                          state=common_pb2.TASK_FAILED, reason="executor crashed"))
        else:
            self.offers[offer.client_id] = offer
            client = FakeClient(self.endpoint, offer, behaviour, self.pki, self.offers)
            self.clients[offer.client_id] = asyncio.create_task(client.run())
        return True, ""

    async def offer_many(self, offers: list[Offer], *, answer_timeout: float) -> list[tuple[bool, str]]:
        for offer in offers:
            assert offer.secure_aggregation, "a secure job's offers say so"
        return [await self.offer(offer, answer_timeout=answer_timeout) for offer in offers]

    async def release(self, job_id: str, client_ids: Any = ()) -> None:
        pass

    async def cancel(self, job_id: str, client_ids: Any, reason: str) -> None:
        self.cancelled.extend(client_ids)


@dataclass
class ServedRunner:
    """The job the servicer serves (its ``ServedJob``), over the real round runner."""

    runner: RoundRunner
    job_id: str = JOB

    @property
    def uploads(self) -> Uploads:
        return self.runner.uploads

    @property
    def secure_aggregation(self) -> SecureRounds | None:
        return self.runner.secure_aggregation

    def status_message(self) -> coordinator_pb2.CoordinatorStatus:
        return coordinator_pb2.CoordinatorStatus(job_id=JOB, state="RUNNING")

    def request_stop(self, reason: str) -> None:
        self.runner.stop_event.set()


def config(mode: Mode = Mode.DOUBLE_MASK, threshold: float = 2, stage_seconds: float = 1.0) -> SecureAggregationConfig:
    return SecureAggregationConfig(mode=mode, threshold=threshold, bits=32, stage_seconds=stage_seconds)


@dataclass
class Round:
    book: Any
    aggregator: StreamingMean
    verdicts: dict[str, Verdict]
    secure: SecureRounds
    selector: FakeSelector

    def mean(self) -> dict[str, np.ndarray]:
        return self.aggregator.result()


async def run_secure_round(pki: TestPki, behaviours: dict[str, Behaviour],
                           cfg: SecureAggregationConfig | None = None, *,
                           target: int | None = None, minimum: int = 2, round_timeout: float = 20.0) -> Round:
    selector = FakeSelector(behaviours, pki)
    plan = job_plan(mode="script", clientsPerRound=len(behaviours), minClients=minimum,
                    roundTimeoutSeconds=int(round_timeout), random=False)
    secure = SecureRounds(cfg or config())
    wire = pki.wire(pki.identity("coordinator", "ns", "job"))
    server = wire.server()
    port = wire.add_port(server, "127.0.0.1:0")
    runner = RoundRunner(plan, selector, lambda: f"127.0.0.1:{port}", stop_event=asyncio.Event(),  # type: ignore[arg-type]
                         secure_aggregation=secure)
    runner.model = GlobalModel.from_weights(dict(WEIGHTS), 0)
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorService(ServedRunner(runner)), server)
    selector.endpoint, selector.runner = f"127.0.0.1:{port}", runner
    await server.start()
    try:
        aggregator = StreamingMean(runner.model.weights)
        book = await runner.run_round(1, "train", attempt=0, target=target or len(behaviours), minimum=minimum,
                                      aggregator=aggregator)
        verdicts = {name: await asyncio.wait_for(task, 10) for name, task in selector.clients.items()}
    finally:
        await server.stop(None)
    return Round(book, aggregator, verdicts, secure, selector)


def expected_mean(behaviours: dict[str, Behaviour], contributors: list[str]) -> dict[str, np.ndarray]:
    weights = np.array([behaviours[c].samples for c in contributors], dtype=np.float64)
    deltas = [delta_for(behaviours[c].seed) for c in contributors]
    return {name: sum(w * d[name].astype(np.float64) for w, d in zip(weights, deltas, strict=True)) / weights.sum()
            for name in ("b", "w")}


def assert_mean(result: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    for name, array in expected.items():
        np.testing.assert_allclose(result[name], array, atol=1e-4)


async def test_a_double_mask_round_decodes_the_sample_weighted_mean_of_its_clients(test_pki: TestPki) -> None:
    behaviours = {"a": Behaviour(10, 1), "b": Behaviour(20, 2), "c": Behaviour(30, 3)}
    done = await run_secure_round(test_pki, behaviours)
    assert done.book.succeeded and sorted(t.client_id for t in done.book.accepted) == ["a", "b", "c"]
    assert_mean(done.mean(), expected_mean(behaviours, ["a", "b", "c"]))
    assert all(v.included for v in done.verdicts.values()), done.verdicts
    fields = done.secure.record_fields()
    assert fields["samples"] == pytest.approx(60, abs=1e-3)
    assert fields["secureAggregation"] | {"totalWeight": 0} == {
        "mode": "double-mask", "threshold": 2, "ringBits": 32, "participants": 3, "advertised": 3,
        "shared": 3, "dropped": [], "unmasked": 3, "inputs": 3, "totalWeight": 0}
    # the individual sample counts never reached the book: only their masked sum did
    assert all(t.num_samples == 0 and t.metrics == {"loss": 0.5} for t in done.book.accepted)


async def test_a_client_that_leaves_after_sharing_is_unmasked_out_and_the_sum_still_decodes(
    test_pki: TestPki,
) -> None:
    behaviours = {"a": Behaviour(10, 1), "b": Behaviour(20, 2, leave_after=SHARE_DELIVERY),
                  "c": Behaviour(30, 3), "d": Behaviour(5, 4)}
    done = await run_secure_round(test_pki, behaviours, config(threshold=3))
    assert done.book.succeeded and sorted(t.client_id for t in done.book.accepted) == ["a", "c", "d"]
    assert_mean(done.mean(), expected_mean(behaviours, ["a", "c", "d"]))
    summary = done.secure.record_fields()["secureAggregation"]
    assert summary["shared"] == 4 and summary["dropped"] == ["b"] and summary["inputs"] == 3
    assert "stream" in done.book.summary()["dropped"]["b"]


async def test_a_client_that_stalls_is_dropped_at_the_stage_deadline(test_pki: TestPki) -> None:
    behaviours = {"a": Behaviour(10, 1), "b": Behaviour(20, 2), "c": Behaviour(30, 3, stall_after=SHARE_DELIVERY)}
    done = await run_secure_round(test_pki, behaviours, config(stage_seconds=1.0))
    assert sorted(t.client_id for t in done.book.accepted) == ["a", "b"]
    assert_mean(done.mean(), expected_mean(behaviours, ["a", "b"]))
    assert done.verdicts["c"].included is False and "masked input" in done.verdicts["c"].reason


async def test_a_client_that_never_answers_the_unmasking_is_still_in_the_sum(test_pki: TestPki) -> None:
    behaviours = {"a": Behaviour(10, 1), "b": Behaviour(20, 2), "c": Behaviour(30, 3, leave_after=UNMASK_REQUEST)}
    done = await run_secure_round(test_pki, behaviours)
    assert_mean(done.mean(), expected_mean(behaviours, ["a", "b", "c"]))
    assert done.secure.record_fields()["secureAggregation"]["unmasked"] == 2


async def test_one_mask_rounds_fail_when_any_client_drops(test_pki: TestPki) -> None:
    behaviours = {"a": Behaviour(10, 1), "b": Behaviour(20, 2), "c": Behaviour(30, 3, leave_after=KEY_DIRECTORY)}
    done = await run_secure_round(test_pki, behaviours, config(Mode.ONE_MASK))
    assert not done.book.succeeded and "one-mask" in done.book.close_reason
    assert not any(v.included for v in done.verdicts.values())


async def test_one_mask_rounds_decode_when_every_client_stays(test_pki: TestPki) -> None:
    behaviours = {"a": Behaviour(10, 1), "b": Behaviour(20, 2)}
    done = await run_secure_round(test_pki, behaviours, config(Mode.ONE_MASK))
    assert done.book.succeeded
    assert_mean(done.mean(), expected_mean(behaviours, ["a", "b"]))


async def test_a_round_fails_when_too_few_clients_join(test_pki: TestPki) -> None:
    behaviours = {"a": Behaviour(10, 1), "b": Behaviour(absent=True), "c": Behaviour(absent=True)}
    done = await run_secure_round(test_pki, behaviours)
    assert not done.book.succeeded and "only 1 clients joined" in done.book.close_reason
    assert done.book.summary()["dropped"]["b"] == "executor crashed"
    assert done.verdicts["a"].included is False


async def test_a_join_with_a_bad_token_is_refused_and_the_others_go_on(test_pki: TestPki) -> None:
    behaviours = {"a": Behaviour(10, 1), "b": Behaviour(20, 2), "c": Behaviour(30, 3, token="forged")}
    # c's task stays outstanding (a forged token names no task), so the join phase lasts until
    # the round deadline less the four stages: 6 - 4 x 1 s.
    done = await run_secure_round(test_pki, behaviours, round_timeout=6.0)
    assert "bad token" in done.verdicts["c"].reason and not done.verdicts["c"].included
    assert_mean(done.mean(), expected_mean(behaviours, ["a", "b"]))


async def test_a_client_joining_with_another_clients_stolen_token_is_denied_and_that_client_is_summed(
    test_pki: TestPki,
) -> None:
    behaviours = {"a": Behaviour(10, 1), "b": Behaviour(20, 2), "c": Behaviour(30, 3, impersonate="a")}
    # c's own task stays outstanding, so the join phase lasts until the round deadline less the stages.
    done = await run_secure_round(test_pki, behaviours, round_timeout=6.0)
    assert done.verdicts["c"].code == grpc.StatusCode.PERMISSION_DENIED
    assert "does not hold this task" in done.verdicts["c"].reason
    assert done.verdicts["a"].included and done.verdicts["b"].included
    assert sorted(t.client_id for t in done.book.accepted) == ["a", "b"] and done.book.rejections == []
    assert_mean(done.mean(), expected_mean(behaviours, ["a", "b"]))


@pytest.mark.parametrize("misbehaviour", ["wrong_stage", "huge_piece"])
async def test_a_message_out_of_stage_or_out_of_bounds_gets_its_sender_refused(
    test_pki: TestPki, misbehaviour: str,
) -> None:
    behaviours = {"a": Behaviour(10, 1), "b": Behaviour(20, 2), "c": Behaviour(30, 3, **{misbehaviour: True})}
    done = await run_secure_round(test_pki, behaviours)
    assert not done.verdicts["c"].included
    assert ("collects 'advertise-keys'" if misbehaviour == "wrong_stage" else "out of bounds") in \
        done.verdicts["c"].reason
    assert [task for task, _ in done.book.rejections] == [f"{JOB}:1:train:c:0"]
    assert_mean(done.mean(), expected_mean(behaviours, ["a", "b"]))


async def test_plain_uploads_of_train_updates_are_refused_in_a_secure_job(test_pki: TestPki) -> None:
    behaviours = {"a": Behaviour(10, 1, plain_upload=True), "b": Behaviour(20, 2)}
    done = await run_secure_round(test_pki, behaviours)
    assert done.verdicts["a"].plain == (False, "this job uses secure aggregation: train updates travel over "
                                               "SecureAggregate")
    assert done.verdicts["a"].included


def test_thresholds_round_up_and_always_exceed_half_the_participants() -> None:
    assert resolve_threshold(0.7, 3, Mode.DOUBLE_MASK) == 3
    assert resolve_threshold(0.6, 10, Mode.DOUBLE_MASK) == 6
    assert resolve_threshold(0.2, 10, Mode.DOUBLE_MASK) == 6
    assert resolve_threshold(2, 3, Mode.DOUBLE_MASK) == 2
    assert resolve_threshold(2, 2, Mode.ONE_MASK) == 2
    with pytest.raises(UpdateRejected, match="exceeds"):
        resolve_threshold(4, 3, Mode.DOUBLE_MASK)


def test_the_spec_gives_the_config_and_dp_switches_to_unit_weights_with_noise_headroom() -> None:
    assert config_from_spec(stored_spec({"privacy": {}})) is None
    plain = config_from_spec(stored_spec({"roundTimeoutSeconds": 100, "privacy": {"secureAggregation": {"bits": 40}}}))
    assert plain is not None and plain.mode is Mode.DOUBLE_MASK and plain.threshold == 0.7
    assert plain.stage_seconds == 8.0 and plain.max_weight() == 2.0**24 and plain.clip_range(3) == 4.0
    dp = config_from_spec(stored_spec({"privacy": {"secureAggregation": {"mode": "one-mask"},
                                       "dp": {"clipNorm": 1.0, "noiseMultiplier": 1.0}}}))
    assert dp is not None and dp.clients_add_noise and dp.max_weight() == 1.0
    assert dp.clip_range(4) == pytest.approx(max(4.0, 1.0 + 8 * 0.5))  # each of t = 4 adds sigma C / 2
    local = config_from_spec(stored_spec({"privacy": {"secureAggregation": {}, "dp": {"mode": "local", "clipNorm": 1.0,
                                                                            "noiseMultiplier": 1.0}}}))
    assert local is not None and not local.clients_add_noise and local.max_weight() == 2.0**16
    assert local.clip_range(4) == pytest.approx(1.0 + 8 * 1.0)  # the client's own noise is full strength


def test_messages_are_cut_into_pieces_no_larger_than_a_chunk() -> None:
    from libs.rpc import MAX_CHUNK

    data = bytes(range(256)) * (MAX_CHUNK // 100)
    cut = pieces(MASK, data)
    assert len(cut) == 3 and all(len(p.data) <= MAX_CHUNK for p in cut)
    assert b"".join(p.data for p in cut) == data and [p.offset for p in cut] == [0, MAX_CHUNK, 2 * MAX_CHUNK]


async def test_with_redundancy_the_first_target_joiners_are_the_participants_and_later_ones_are_late(
    test_pki: TestPki,
) -> None:
    behaviours = {"a": Behaviour(10, 1), "b": Behaviour(20, 2), "c": Behaviour(30, 3)}
    done = await run_secure_round(test_pki, behaviours, target=2)
    accepted = sorted(t.client_id for t in done.book.accepted)
    [late] = [name for name, verdict in done.verdicts.items() if verdict.reason.startswith("late:")]
    assert len(accepted) == 2 and late not in accepted
    assert_mean(done.mean(), expected_mean(behaviours, accepted))
