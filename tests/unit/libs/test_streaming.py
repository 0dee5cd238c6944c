"""Chunked, checked, resumable transfers of libs.weights.streaming (no network)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import AsyncIterator, Iterable

import pytest

from libs.errors import ChecksumMismatch, CorruptPayload, PayloadTooLarge, ValidationFailed
from libs.protos import common_pb2
from libs.rpc import MAX_CHUNK
from libs.weights.streaming import (
    BlobReceiver,
    TransferInterrupted,
    frames_for,
    iter_chunks,
    receive_frames,
    receive_frames_sync,
)

PAYLOAD = os.urandom(10_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


async def stream(
    frames: Iterable[common_pb2.TransferFrame], fail_after: int | None = None
) -> AsyncIterator[common_pb2.TransferFrame]:
    """Frames as a gRPC call would give them, optionally breaking like a dropped connection."""
    for index, frame in enumerate(frames):
        if index == fail_after:
            raise ConnectionResetError("connection reset by peer")
        yield frame


def receive_all(chunks: Iterable[tuple[int, memoryview]], receiver: BlobReceiver) -> None:
    for offset, piece in chunks:
        receiver.write(offset, piece)


# ------------------------------------------------------------------- chunking


def test_chunks_are_views_that_cover_the_payload_from_the_start_offset() -> None:
    chunks = list(iter_chunks(PAYLOAD, 4096, start=100))
    assert [offset for offset, _ in chunks] == [100, 4196, 8292]
    assert b"".join(chunks_ for _, chunks_ in chunks) == PAYLOAD[100:]
    assert all(isinstance(piece, memoryview) for _, piece in chunks)


def test_a_chunk_size_above_the_grpc_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk_size must be between 1 and"):
        list(iter_chunks(PAYLOAD, MAX_CHUNK + 1))


# ------------------------------------------------------------------- receiving


def test_a_receiver_reassembles_the_payload_and_checks_its_hash() -> None:
    receiver = BlobReceiver(len(PAYLOAD), SHA.upper(), max_size=len(PAYLOAD))
    receive_all(iter_chunks(PAYLOAD, 3000), receiver)
    assert receiver.received == len(PAYLOAD)
    assert receiver.finish() == PAYLOAD


def test_a_payload_over_the_limit_is_refused_before_allocating() -> None:
    with pytest.raises(
        PayloadTooLarge, match="payload of 1152921504606846976 bytes exceeds the limit of 1000"
    ):
        BlobReceiver(2**60, SHA, max_size=1000)  # allocating would be a MemoryError


def test_a_flipped_byte_is_a_checksum_mismatch() -> None:
    damaged = bytearray(PAYLOAD)
    damaged[5000] ^= 0x01
    receiver = BlobReceiver(len(PAYLOAD), SHA, max_size=len(PAYLOAD))
    receive_all(iter_chunks(damaged, 4096), receiver)
    with pytest.raises(ChecksumMismatch, match=f"expected {SHA}"):
        receiver.finish()


def test_a_truncated_payload_says_how_much_arrived() -> None:
    receiver = BlobReceiver(len(PAYLOAD), SHA, max_size=len(PAYLOAD))
    receiver.write(0, PAYLOAD[:4096])
    with pytest.raises(CorruptPayload, match="truncated: got 4096 of 10000 bytes"):
        receiver.finish()


@pytest.mark.parametrize(
    ("offset", "size", "message"),
    [
        (100, 10, "chunk at offset 100 overlaps the 4096 bytes already received"),
        (5000, 10, "chunk at offset 5000 leaves a gap after 4096 bytes received"),
        (4096, 6000, r"chunk \[4096, 10096\) runs past the end of the 10000-byte payload"),
    ],
)
def test_overlapping_gapped_or_overlong_chunks_are_corrupt(offset: int, size: int, message: str) -> None:
    receiver = BlobReceiver(len(PAYLOAD), SHA, max_size=len(PAYLOAD))
    receiver.write(0, PAYLOAD[:4096])
    with pytest.raises(CorruptPayload, match=message):
        receiver.write(offset, bytes(size))
    assert receiver.received == 4096


def test_a_malformed_sha256_is_refused() -> None:
    with pytest.raises(CorruptPayload, match="is not a hex SHA-256"):
        BlobReceiver(10, "abc", max_size=10)


def test_a_receiver_rebuilt_from_a_partial_buffer_resumes_and_verifies() -> None:
    first = BlobReceiver(len(PAYLOAD), SHA, max_size=len(PAYLOAD))
    first.write(0, PAYLOAD[:6000])
    partial = bytearray(PAYLOAD[:6000]) + bytearray(len(PAYLOAD) - 6000)
    resumed = BlobReceiver(
        len(PAYLOAD), SHA, max_size=len(PAYLOAD), start_offset=first.received, buffer=partial
    )
    receive_all(iter_chunks(PAYLOAD, 1000, start=resumed.received), resumed)
    assert resumed.finish() == PAYLOAD


def sha256_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("nsfl-sha256")]


def test_a_large_payload_is_hashed_on_a_worker_thread_that_ends_with_the_transfer() -> None:
    large = os.urandom(9 * 1024 * 1024)
    receiver = BlobReceiver(len(large), hashlib.sha256(large).hexdigest(), max_size=len(large))
    receive_all(iter_chunks(large, 1024 * 1024), receiver)
    assert sha256_threads()
    assert receiver.finish() == large
    assert not sha256_threads()


def test_a_flipped_byte_in_a_large_payload_is_still_a_checksum_mismatch() -> None:
    large = bytearray(os.urandom(9 * 1024 * 1024))
    receiver = BlobReceiver(len(large), hashlib.sha256(large).hexdigest(), max_size=len(large))
    large[-1] ^= 0x80
    receive_all(iter_chunks(large, 1024 * 1024), receiver)
    with pytest.raises(ChecksumMismatch):
        receiver.finish()
    assert not sha256_threads()


# --------------------------------------------------------------------- frames


def test_frames_start_with_a_header_then_carry_absolute_offsets() -> None:
    frames = list(frames_for(PAYLOAD, SHA, 4096, offset=1000, media_type="application/octet-stream"))
    header = frames[0].header
    assert (header.sha256, header.total_size, header.offset, header.media_type) == (
        SHA,
        10_000,
        1000,
        "application/octet-stream",
    )
    assert [frame.chunk.offset for frame in frames[1:]] == [1000, 5096, 9192]
    assert b"".join(frame.chunk.data for frame in frames[1:]) == PAYLOAD[1000:]


def test_frames_refuse_an_offset_past_the_end() -> None:
    with pytest.raises(ValidationFailed, match="offset 10001 is outside the 10000-byte payload"):
        next(frames_for(PAYLOAD, SHA, offset=10_001))


async def test_receiving_frames_returns_the_verified_payload() -> None:
    assert await receive_frames(stream(frames_for(PAYLOAD, SHA, 1024)), max_size=len(PAYLOAD)) == PAYLOAD


async def test_an_interrupted_stream_resumes_from_what_was_received() -> None:
    with pytest.raises(TransferInterrupted, match="truncated: got 3072 of 10000 bytes") as caught:
        await receive_frames(stream(frames_for(PAYLOAD, SHA, 1024), fail_after=4), max_size=len(PAYLOAD))
    receiver = caught.value.receiver
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    rest = stream(frames_for(PAYLOAD, SHA, 1024, offset=receiver.received))
    assert await receive_frames(rest, max_size=len(PAYLOAD), resume=receiver) == PAYLOAD


async def test_a_stream_that_ends_early_can_resume_too() -> None:
    frames = list(frames_for(PAYLOAD, SHA, 4096))[:-1]
    with pytest.raises(TransferInterrupted, match="truncated: got 8192 of 10000 bytes") as caught:
        await receive_frames(stream(frames), max_size=len(PAYLOAD))
    rest = stream(frames_for(PAYLOAD, SHA, 4096, offset=8192))
    assert await receive_frames(rest, max_size=len(PAYLOAD), resume=caught.value.receiver) == PAYLOAD


async def test_a_resumed_stream_for_another_payload_or_offset_is_refused() -> None:
    receiver = BlobReceiver(len(PAYLOAD), SHA, max_size=len(PAYLOAD))
    receiver.write(0, PAYLOAD[:1024])
    other = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(CorruptPayload, match="the resumed stream is for another payload"):
        await receive_frames(stream(frames_for(PAYLOAD, other, offset=1024)), max_size=10**6, resume=receiver)
    with pytest.raises(CorruptPayload, match="the resumed stream starts at offset 0, expected 1024"):
        await receive_frames(stream(frames_for(PAYLOAD, SHA)), max_size=10**6, resume=receiver)


async def test_a_stream_must_open_with_a_single_header_at_offset_zero() -> None:
    frames = list(frames_for(PAYLOAD, SHA, 4096))
    with pytest.raises(CorruptPayload, match="the stream did not start with a header frame"):
        await receive_frames(stream(frames[1:]), max_size=len(PAYLOAD))
    with pytest.raises(CorruptPayload, match="unexpected header frame after the header"):
        await receive_frames(stream([frames[0], frames[0]]), max_size=len(PAYLOAD))
    with pytest.raises(
        CorruptPayload, match="the stream starts at offset 4096, but nothing was received yet"
    ):
        await receive_frames(stream(frames_for(PAYLOAD, SHA, offset=4096)), max_size=len(PAYLOAD))
    with pytest.raises(CorruptPayload, match="the stream ended before its header"):
        await receive_frames(stream([]), max_size=len(PAYLOAD))


async def test_a_header_announcing_too_much_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        await receive_frames(stream(frames_for(PAYLOAD, SHA)), max_size=len(PAYLOAD) - 1)


async def test_a_streamed_payload_with_a_wrong_hash_is_a_checksum_mismatch() -> None:
    wrong = hashlib.sha256(b"not it").hexdigest()
    with pytest.raises(ChecksumMismatch):
        await receive_frames(stream(frames_for(PAYLOAD, wrong)), max_size=len(PAYLOAD))


def test_the_synchronous_receiver_checks_resumes_and_refuses_another_payload_as_the_async_one_does() -> None:
    frames = list(frames_for(PAYLOAD, SHA, 4096))
    assert receive_frames_sync(iter(frames), max_size=len(PAYLOAD), expected_sha256=SHA) == PAYLOAD
    with pytest.raises(TransferInterrupted, match="truncated: got 8192 of 10000 bytes") as caught:
        receive_frames_sync(iter(frames[:-1]), max_size=len(PAYLOAD))
    rest = frames_for(PAYLOAD, SHA, 4096, offset=8192)
    assert receive_frames_sync(rest, max_size=len(PAYLOAD), resume=caught.value.receiver) == PAYLOAD
    with pytest.raises(ChecksumMismatch, match=f"but {'0' * 64} was asked for"):
        receive_frames_sync(iter(frames), max_size=len(PAYLOAD), expected_sha256="0" * 64)
    with pytest.raises(CorruptPayload, match="ended before its header"):
        receive_frames_sync(iter([]), max_size=len(PAYLOAD))
