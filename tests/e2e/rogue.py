"""A rogue client for fault tests: it speaks the real protocols but sends bad updates.

It registers with the selector like a task manager (with its own client certificate), accepts every offer, and
for training tasks downloads the real global model and uploads a delta that
``plan(round)`` chooses: ``"nan"``, ``"shape"``, ``"duplicate"`` (a valid
delta sent twice) or ``"valid"``.  Every upload's answer is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np

from libs.protos import common_pb2, coordinator_pb2, coordinator_pb2_grpc, selector_pb2, selector_pb2_grpc
from libs.weights.streaming import BlobReceiver
from libs.weights.tensors import decode, encode
from libs.wire import Wire


@dataclass
class RogueClient:
    selector: str
    client_id: str
    plan: Callable[[int], str]
    wire: Wire
    answers: list[tuple[int, str, bool, str]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self._outbox: asyncio.Queue[selector_pb2.ClientMessage] = asyncio.Queue()
        self._channel = self.wire.channel(self.selector, self.wire.control("selector"))
        stub = selector_pb2_grpc.ClientSelectorStub(self._channel)
        self._outbox.put_nowait(selector_pb2.ClientMessage(register=selector_pb2.Register(
            client_id=self.client_id, runtimes=["pytorch"], max_parallel_tasks=2,
            datasets=[common_pb2.Dataset(name="digits", samples=100)])))
        self._call = stub.Connect(self._messages())
        self._tasks.append(asyncio.create_task(self._receive()))
        self._tasks.append(asyncio.create_task(self._heartbeat()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._call.cancel()
        await self._channel.close()

    async def _messages(self) -> AsyncIterator[selector_pb2.ClientMessage]:
        while True:
            yield await self._outbox.get()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(0.3)
            self._outbox.put_nowait(selector_pb2.ClientMessage(heartbeat=selector_pb2.Heartbeat()))

    async def _receive(self) -> None:
        async for message in self._call:
            if message.WhichOneof("msg") != "task_offer":
                continue
            offer = message.task_offer
            self._outbox.put_nowait(selector_pb2.ClientMessage(task_status=common_pb2.TaskStatus(
                task_id=offer.task_id, job_id=offer.job_id, round=offer.round, state=common_pb2.TASK_ACCEPTED,
                client_id=self.client_id, task_token=offer.task_token)))
            self._tasks.append(asyncio.create_task(self._work(offer)))

    async def _work(self, offer: selector_pb2.TaskOffer) -> None:
        async with self.wire.channel(offer.coordinator_endpoint, self.wire.coordinator_of(offer.job_id)) as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)
            if offer.kind == "evaluate":
                await self._upload(stub, offer, None, {"accuracy": 0.0, "loss": 9.0}, "valid")
                return
            if offer.model_follows:  # offered ahead: the model is named once the round starts
                reply = await stub.AwaitModel(coordinator_pb2.AwaitModelRequest(
                    job_id=offer.job_id, task_id=offer.task_id, task_token=offer.task_token, round=offer.round))
                if not reply.ready:
                    return
                started = selector_pb2.TaskOffer()
                started.CopyFrom(offer)
                started.model_sha256 = reply.model_sha256
                offer = started
            model = await self._download(stub, offer)
            mode = self.plan(offer.round)
            delta = {name: np.full_like(array, 0.001) for name, array in model.items()}
            if mode == "nan":
                first = next(iter(delta))
                delta[first] = delta[first].copy()
                delta[first].flat[0] = np.nan
            elif mode == "shape":
                first = next(iter(delta))
                delta[first] = np.zeros((3, 3), dtype=np.float32)
            payload = encode(delta)
            await self._upload(stub, offer, payload, {"loss": 1.0}, mode)
            if mode == "duplicate":
                await self._upload(stub, offer, payload, {"loss": 1.0}, "duplicate-again")

    async def _download(self, stub: coordinator_pb2_grpc.CoordinatorStub,
                        offer: selector_pb2.TaskOffer) -> dict[str, np.ndarray]:
        receiver = None
        async for frame in stub.DownloadModel(coordinator_pb2.DownloadRequest(
                job_id=offer.job_id, round=offer.round, sha256=offer.model_sha256, task_token=offer.task_token)):
            if frame.HasField("header"):
                receiver = BlobReceiver(frame.header.total_size, frame.header.sha256, max_size=1 << 30)
            else:
                assert receiver is not None
                receiver.write(frame.chunk.offset, frame.chunk.data)
        assert receiver is not None
        return decode(bytes(receiver.finish()), copy=True)

    async def _upload(self, stub: coordinator_pb2_grpc.CoordinatorStub, offer: selector_pb2.TaskOffer,
                      payload: bytes | None, metrics: dict[str, float], mode: str) -> None:
        blob = common_pb2.BlobHeader()
        if payload is not None:
            blob = common_pb2.BlobHeader(sha256=hashlib.sha256(payload).hexdigest(), total_size=len(payload))

        async def frames() -> AsyncIterator[coordinator_pb2.UploadFrame]:
            yield coordinator_pb2.UploadFrame(header=coordinator_pb2.UpdateHeader(
                job_id=offer.job_id, round=offer.round, client_id=self.client_id, attempt=offer.attempt,
                task_id=offer.task_id, task_token=offer.task_token, kind=offer.kind, num_samples=100,
                metrics=metrics, blob=blob, base_sha256=offer.model_sha256))
            if payload is not None:
                yield coordinator_pb2.UploadFrame(chunk=common_pb2.BlobChunk(offset=0, data=payload))

        result = await stub.UploadUpdate(frames())
        self.answers.append((offer.round, mode, result.accepted, result.reason))
