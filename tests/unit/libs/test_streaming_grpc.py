"""A model download over real gRPC and mutual TLS: an in-process Coordinator servicer on port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest

from libs import rpc
from libs.errors import NotFound
from libs.pki.identity import Identity
from libs.protos import coordinator_pb2, coordinator_pb2_grpc
from libs.weights.streaming import (
    DEFAULT_CHUNK,
    TransferInterrupted,
    frames_for,
    raw_download_model,
    receive_frames,
)
from libs.weights.tensors import decode, encode, sha256_hex
from libs.wire import Wire
from tests.fixtures.pki import TestPki


class ModelServer(coordinator_pb2_grpc.CoordinatorServicer):
    """Serves one encoded model; can drop the connection once, mid-stream."""

    def __init__(self, payload: bytes, drop_after_frames: int | None = None) -> None:
        self.payload, self.sha256 = payload, sha256_hex(payload)
        self.drop_after_frames = drop_after_frames
        self.offsets: list[int] = []

    @rpc.handle_errors
    async def DownloadModel(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if request.sha256 != self.sha256:
            raise NotFound(f"no model {request.sha256}")
        self.offsets.append(request.offset)
        for index, frame in enumerate(
            frames_for(self.payload, self.sha256, DEFAULT_CHUNK, offset=request.offset)
        ):
            if index == self.drop_after_frames:
                self.drop_after_frames = None
                await context.abort(grpc.StatusCode.UNAVAILABLE, "connection dropped")
            yield frame


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {f"layers.{i}.weight": rng.standard_normal((1000, 1000), dtype=np.float32) for i in range(5)}


COORDINATOR = Identity.coordinator("default", "job")


@pytest.fixture
def client(test_pki: TestPki) -> Wire:
    return test_pki.wire(test_pki.identity("client", "c1"))


@pytest.fixture
def serve(test_pki: TestPki) -> Callable[[ModelServer], Awaitable[tuple[grpc.aio.Server, str]]]:
    async def start(servicer: ModelServer) -> tuple[grpc.aio.Server, str]:
        wire = test_pki.wire(COORDINATOR)
        server = wire.server()
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(servicer, server)
        port = wire.add_port(server, "127.0.0.1:0")
        await server.start()
        return server, f"127.0.0.1:{port}"

    return start


def download_method(channel: grpc.aio.Channel, frames: str) -> Any:
    if frames == "undecoded":
        return raw_download_model(channel)
    return coordinator_pb2_grpc.CoordinatorStub(channel).DownloadModel


@pytest.mark.parametrize("frames", ["decoded", "undecoded"])
async def test_a_20_mb_model_downloads_through_grpc_and_decodes_to_the_same_weights(
    weights: dict[str, np.ndarray], frames: str, serve: Any, client: Wire
) -> None:
    servicer = ModelServer(encode(weights))
    server, target = await serve(servicer)
    try:
        async with client.channel(target, COORDINATOR) as channel:
            request = coordinator_pb2.DownloadRequest(job_id="job", round=1, sha256=servicer.sha256)
            call = download_method(channel, frames)(request)
            payload = await receive_frames(call, max_size=len(servicer.payload))
    finally:
        await server.stop(None)
    assert len(servicer.payload) > 20_000_000
    decoded = decode(payload)
    assert list(decoded) == sorted(weights)
    for name, array in weights.items():
        np.testing.assert_array_equal(decoded[name], array)


@pytest.mark.parametrize("frames", ["decoded", "undecoded"])
async def test_a_dropped_download_resumes_from_the_received_offset(
    weights: dict[str, np.ndarray], frames: str, serve: Any, client: Wire
) -> None:
    servicer = ModelServer(encode(weights), drop_after_frames=4)  # the header and three chunks
    server, target = await serve(servicer)
    try:
        async with client.channel(target, COORDINATOR) as channel:
            download = download_method(channel, frames)
            request = coordinator_pb2.DownloadRequest(job_id="job", round=1, sha256=servicer.sha256)
            with pytest.raises(TransferInterrupted, match="the stream failed: UNAVAILABLE") as caught:
                await receive_frames(download(request), max_size=len(servicer.payload))
            receiver = caught.value.receiver
            assert receiver.received == 3 * DEFAULT_CHUNK
            request.offset = receiver.received
            payload = await receive_frames(download(request), max_size=len(servicer.payload), resume=receiver)
    finally:
        await server.stop(None)
    assert servicer.offsets == [0, 3 * DEFAULT_CHUNK]
    assert payload == servicer.payload


async def test_an_unknown_model_fails_before_the_header_with_the_servers_error(
    serve: Any, client: Wire
) -> None:
    servicer = ModelServer(b"tiny")
    server, target = await serve(servicer)
    try:
        async with client.channel(target, COORDINATOR) as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)
            request = coordinator_pb2.DownloadRequest(sha256="0" * 64)
            with pytest.raises(NotFound, match="no model 0000"), rpc.call_errors():
                await receive_frames(stub.DownloadModel(request), max_size=100)
    finally:
        await server.stop(None)
