"""Sending a train update through secure aggregation: one ``SecAggClient`` over ``SecureAggregate``.

When the coordinator's ``GetTaskPlan`` says the round is secure, the runner
calls :func:`contribute` instead of uploading the delta.  The delta never
leaves this process in the clear: it is flattened in the model's canonical
layout (floating-point tensors, names sorted), clipped and quantised to the
round's fixed point, weighted by the sample count (masked with it: the
coordinator learns only the sum of the weights), and masked
(:mod:`libs.secagg.client`).  The stream, in order (the coordinator's side,
with stages and deadlines, is :mod:`coordinator.secure_rounds`)::

    -> join (task tags, token, base model hash, plain metrics)
    <- plan (RoundSetup, weighting, DP noise)       -> advertise-keys
    <- key-directory                                 -> share-keys      (double-mask)
    <- share-delivery (double-mask)                  -> masked-input    (in pieces)
    <- unmask-request (double-mask)                  -> unmasking
    <- outcome (in the sum or not)

The client refuses a setup for another model than the one it downloaded and
verified (its SHA-256), stages out of order, duplicate keys, and an unmask
request that asks for both shares of one peer (``SecAggClient`` raises; the
task then fails with that reason).  Metrics travel in the join frame: they
are not secret in this threat model (honest-but-curious coordinator), the
update and the sample count are.

A synchronous client, like :mod:`task_executor.coordinator_client`: requests
go through a queue that gRPC drains on its own thread, replies are read in
order on this one.  Messages are sent in pieces of ``chunk_bytes``.

Test-only switch: with ``NSFL_TEST_SECAGG_DROP_AFTER=sharing`` in its
environment the executor SIGKILLs itself right after the coordinator delivered
its shares (it is then in U2 but never sends its masked input), which is how
the end-to-end test makes a client drop out after sharing.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import grpc
import numpy as np

from libs.errors import CorruptPayload, DeadlineExceeded, InvalidWeights, UpdateRejected, ValidationFailed
from libs.privacy import DistributedNoise
from libs.protos import coordinator_pb2, coordinator_pb2_grpc
from libs.rpc import call_errors, error_from_rpc
from libs.secagg import (
    KeyDirectory,
    Mode,
    ParameterLayout,
    RoundSetup,
    SecAggClient,
    ShareDelivery,
    UnmaskRequest,
)
from libs.secagg.wire import WireMessage
from libs.weights.deltas import compute_delta
from libs.weights.tensors import WeightMap, validate_update
from task_executor.channels import channel_to, in_background
from task_executor.session import Outcome
from task_executor.settings import ExecutorSettings
from task_executor.task import TaskSpec

log = logging.getLogger(__name__)

_STUB: Callable[[grpc.Channel], Any] = coordinator_pb2_grpc.CoordinatorStub

ADVERTISE, SHARE, MASK, UNMASK = "advertise-keys", "share-keys", "masked-input", "unmasking"
KEY_DIRECTORY, SHARE_DELIVERY, UNMASK_REQUEST = "key-directory", "share-delivery", "unmask-request"
TEST_DROP_ENV = "NSFL_TEST_SECAGG_DROP_AFTER"
_SMALL_MESSAGE = 64 * 1024  # bound of a server message, plus 1 KiB per participant


def _timeout(spec: TaskSpec, settings: ExecutorSettings) -> float:
    if spec.deadline_unix is None:
        return settings.rpc_timeout_seconds
    remaining = spec.deadline_unix - time.time()
    if remaining <= 0:
        raise DeadlineExceeded("the task's deadline has passed")
    return remaining


# A train task asks for its plan before its user code runs and reads the answer after it
# (prefetch_task_plan), so the round trip overlaps training instead of delaying the upload.
# One task at a time runs in an executor: at most one call is pending.
_prefetched: dict[str, Any] = {}


def _plan_request(spec: TaskSpec) -> coordinator_pb2.TaskPlanRequest:
    return coordinator_pb2.TaskPlanRequest(
        job_id=spec.job_id, round=spec.round, task_id=spec.task_id, task_token=spec.task_token
    )


def prefetch_task_plan(spec: TaskSpec, settings: ExecutorSettings) -> None:
    """Send a train task's ``GetTaskPlan`` now without waiting; :func:`secure_round_required` reads it."""
    _prefetched.clear()
    if spec.kind != "train" or spec.secure_aggregation is not None:
        return  # the offer carried the plan
    try:
        stub, request, timeout = (
            _STUB(channel_to(spec.coordinator_endpoint, spec.job_id, settings)),
            _plan_request(spec),
            _timeout(spec, settings),
        )
    except DeadlineExceeded:
        return  # asked again, and failed properly, when the answer is needed
    _prefetched[spec.task_id] = in_background(lambda: stub.GetTaskPlan(request, timeout=timeout))


def secure_round_required(spec: TaskSpec, settings: ExecutorSettings) -> bool:
    """Whether the coordinator wants this task's update over ``SecureAggregate`` (it decides per job)."""
    if spec.secure_aggregation is not None:
        return spec.secure_aggregation
    pending = _prefetched.pop(spec.task_id, None)
    try:
        if pending is not None:
            plan = pending.result()
        else:
            plan = _STUB(channel_to(spec.coordinator_endpoint, spec.job_id, settings)).GetTaskPlan(
                _plan_request(spec), timeout=_timeout(spec, settings)
            )
    except grpc.RpcError as exc:
        if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            return False  # a coordinator from before secure aggregation: every round is plain
        raise error_from_rpc(exc) from None
    return bool(plan.secure_aggregation)


class DeltaShaper(Protocol):
    """The job's client-side algorithm (``ClientRound``): shapes the delta, may add metrics."""

    metrics: dict[str, float]

    def finish(self, delta: WeightMap) -> WeightMap: ...


def flat_delta(
    trained: WeightMap, global_weights: WeightMap, shaper: DeltaShaper | None = None
) -> tuple[ParameterLayout, np.ndarray]:
    """``trained - global`` (shaped by the job's algorithm: FedProx's check, local DP) over the
    floating-point tensors, as one vector in the canonical layout."""
    try:
        validate_update(trained, global_weights, require_float=False)
    except InvalidWeights as exc:
        raise InvalidWeights(
            f"the committed weights cannot be aggregated: {exc.message}", details=exc.details
        ) from None
    delta = compute_delta(trained, global_weights)
    if shaper is not None:
        delta = shaper.finish(delta)
    floating = {name: array for name, array in delta.items() if array.dtype.kind == "f"}
    layout = ParameterLayout.of(floating)
    return layout, layout.flatten(floating)


class SecureStream:
    """The client end of one ``SecureAggregate`` stream (over the process's kept channel)."""

    def __init__(self, spec: TaskSpec, settings: ExecutorSettings) -> None:
        self._channel = channel_to(spec.coordinator_endpoint, spec.job_id, settings)
        self._outbox: queue.Queue[coordinator_pb2.SecAggClientFrame | None] = queue.Queue()
        self._chunk = settings.chunk_bytes
        self._replies: Iterator[coordinator_pb2.SecAggServerFrame] = _STUB(self._channel).SecureAggregate(
            self._frames(), timeout=_timeout(spec, settings)
        )
        self.message_limit = _SMALL_MESSAGE

    def _frames(self) -> Iterator[coordinator_pb2.SecAggClientFrame]:
        while (frame := self._outbox.get()) is not None:
            yield frame

    def close(self) -> None:
        self._outbox.put(None)
        cancel = getattr(self._replies, "cancel", None)
        if cancel is not None:
            cancel()  # the channel stays open for the next call (task_executor.channels)

    def join(self, spec: TaskSpec, metrics: Mapping[str, float]) -> None:
        join = coordinator_pb2.SecAggJoin(
            job_id=spec.job_id, round=spec.round, client_id=spec.client_id, attempt=spec.attempt,
            task_id=spec.task_id, task_token=spec.task_token, base_sha256=spec.model_sha256,
            metrics=dict(metrics),
        )  # fmt: skip
        self._outbox.put(coordinator_pb2.SecAggClientFrame(join=join))

    def send(self, stage: str, message: WireMessage) -> None:
        data = message.to_bytes()
        for start in range(0, len(data), self._chunk):
            piece = coordinator_pb2.SecAggPiece(
                stage=stage, total_size=len(data), offset=start, data=data[start : start + self._chunk]
            )
            self._outbox.put(coordinator_pb2.SecAggClientFrame(piece=piece))

    def _next(self) -> coordinator_pb2.SecAggServerFrame:
        with call_errors():
            frame = next(self._replies, None)
        if frame is None:
            raise CorruptPayload("the coordinator ended the secure-aggregation stream without an outcome")
        return frame

    def _expect(self, kind: str) -> coordinator_pb2.SecAggServerFrame:
        frame = self._next()
        got = frame.WhichOneof("frame")
        if got == "outcome" and kind != "outcome":
            raise UpdateRejected(
                f"the coordinator left this update out of the secure sum: {frame.outcome.reason}"
            )
        if got != kind:
            raise CorruptPayload(f"expected a {kind} frame from the coordinator, got {got}")
        return frame

    def plan(self) -> coordinator_pb2.SecAggPlan:
        return self._expect("plan").plan

    def receive(self, stage: str) -> bytes:
        """The next message, which must be of ``stage``, reassembled from its pieces."""
        buffer: bytearray | None = None
        buffer_size = 0
        while buffer is None or len(buffer) < buffer_size:
            piece = self._expect("piece").piece
            if buffer is None:
                if piece.stage != stage or not 0 < piece.total_size <= self.message_limit:
                    raise CorruptPayload(
                        f"expected a {stage} message, got {piece.stage} of {piece.total_size} bytes"
                    )
                buffer, buffer_size = bytearray(), piece.total_size
            if (piece.stage, piece.total_size, piece.offset) != (stage, buffer_size, len(buffer)):
                raise CorruptPayload(f"the pieces of the {stage} message arrived out of order")
            buffer += piece.data
        if len(buffer) != buffer_size:
            raise CorruptPayload(f"the {stage} message is longer than announced")
        return bytes(buffer)

    def outcome(self) -> coordinator_pb2.SecAggOutcome:
        return self._expect("outcome").outcome


def _test_drop_point(point: str) -> None:
    if os.environ.get(TEST_DROP_ENV) == point:
        log.warning("%s=%s: this executor kills itself (test-only dropout)", TEST_DROP_ENV, point)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


def _encoding(
    plan: coordinator_pb2.SecAggPlan, setup: RoundSetup, samples: int, vector: np.ndarray
) -> tuple[float, DistributedNoise | None]:
    """The weight to mask and the DP noise to add; logs what clipping will do (counts, never values)."""
    noise = None
    if plan.dp_clip_norm > 0:
        noise = DistributedNoise(
            plan.dp_noise_multiplier, plan.dp_clip_norm, max(plan.dp_noise_contributors, 1)
        )
        norm = float(np.linalg.norm(vector))
        if norm > plan.dp_clip_norm:
            log.info("the update's L2 norm %.4g is clipped to %.4g", norm, plan.dp_clip_norm)
    else:
        clipped = int(np.count_nonzero(np.abs(vector) > setup.clip_range))
        if clipped:
            log.warning("%d of %d delta elements exceed the clip range %g and are clipped",
                        clipped, vector.size, setup.clip_range)  # fmt: skip
    if not plan.weight_by_samples:
        return 1.0, noise
    if samples > setup.max_weight:
        log.info("the sample weight %d is capped at %g", samples, setup.max_weight)
    return min(float(samples), setup.max_weight), noise


def contribute(
    spec: TaskSpec,
    settings: ExecutorSettings,
    outcome: Outcome,
    global_weights: WeightMap,
    metrics: Mapping[str, float],
    shaper: DeltaShaper | None = None,
) -> None:
    """Run this task's part of the round's secure aggregation; returns once the input is in the sum."""
    assert outcome.weights is not None, "execute() guarantees committed weights for train tasks"
    samples = outcome.num_samples or 0
    if samples <= 0:
        raise InvalidWeights(
            "a training update needs a positive sample count (commit_weights(num_samples=...))"
        )
    layout, vector = flat_delta(outcome.weights, global_weights, shaper)
    stream = SecureStream(spec, settings)
    try:
        stream.join(spec, {**metrics, **(shaper.metrics if shaper is not None else {})})
        plan = stream.plan()
        setup = RoundSetup.from_bytes(plan.round_setup)
        if setup.round_number != spec.round:
            raise ValidationFailed(f"the round setup is for round {setup.round_number}, not {spec.round}")
        if setup.vector_length != layout.size + 1:
            raise ValidationFailed(
                f"the round masks {setup.vector_length - 1} parameters; this model has {layout.size}"
            )
        stream.message_limit = _SMALL_MESSAGE + 1024 * len(setup.participants)
        client = SecAggClient(spec.client_id)
        stream.send(ADVERTISE, client.advertise_keys(setup, bytes.fromhex(spec.model_sha256)))
        directory = KeyDirectory.from_bytes(stream.receive(KEY_DIRECTORY))
        request: KeyDirectory | ShareDelivery = directory
        if setup.mode == Mode.DOUBLE_MASK:
            stream.send(SHARE, client.share_keys(directory))
            request = ShareDelivery.from_bytes(stream.receive(SHARE_DELIVERY))
            _test_drop_point("sharing")
        weight, noise = _encoding(plan, setup, samples, vector)
        stream.send(
            MASK, client.mask_update(request, vector, weight=weight, rng=np.random.default_rng(), noise=noise)
        )
        if setup.mode == Mode.DOUBLE_MASK:
            stream.send(UNMASK, client.unmask(UnmaskRequest.from_bytes(stream.receive(UNMASK_REQUEST))))
        verdict = stream.outcome()
    finally:
        stream.close()
    if not verdict.included:
        raise UpdateRejected(f"the coordinator left this update out of the secure sum: {verdict.reason}")
    log.info("masked update of %d parameters is in the round's secure sum (%s mode, %d clients)",
             layout.size, setup.mode, len(setup.participants))  # fmt: skip
