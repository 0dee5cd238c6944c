"""Chunk frames read and written in place (libs.weights.framing) and their use in receive_frames."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterable

import pytest

from libs.errors import CorruptPayload
from libs.protos import common_pb2
from libs.weights.framing import chunk_in_place, encode_chunk, parse_frame
from libs.weights.streaming import encoded_frames_for, frames_for, receive_frames

PAYLOAD = os.urandom(5000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


async def stream(messages: Iterable[bytes]) -> AsyncIterator[bytes]:
    for message in messages:
        yield message


def chunk_frame(offset: int, data: bytes) -> common_pb2.TransferFrame:
    frame = common_pb2.TransferFrame()
    frame.chunk.offset = offset
    frame.chunk.data = data
    return frame


@pytest.mark.parametrize(
    ("offset", "data"), [(0, b""), (0, b"abc"), (300, b""), (2**40, b"x" * 200), (2**63 - 1, b"z")]
)
def test_encoded_chunks_are_byte_identical_to_protobuf_and_read_back_in_place(
    offset: int, data: bytes
) -> None:
    encoded = encode_chunk(offset, memoryview(data))
    assert encoded == chunk_frame(offset, data).SerializeToString()
    read = chunk_in_place(encoded)
    assert read is not None
    assert read[0] == offset and read[1] == data
    assert read[1].obj is encoded  # a view into the message, not a copy


def test_encoded_frames_match_the_protobuf_frames() -> None:
    encoded = list(encoded_frames_for(PAYLOAD, SHA, 1024, offset=10))
    assert encoded == [frame.SerializeToString() for frame in frames_for(PAYLOAD, SHA, 1024, offset=10)]


@pytest.mark.parametrize(
    "message",
    [
        common_pb2.TransferFrame(header=common_pb2.BlobHeader(sha256=SHA, total_size=3)).SerializeToString(),
        chunk_frame(5, b"ab").SerializeToString() + chunk_frame(7, b"cd").SerializeToString(),  # two fields
        b"\x12\x05\x12\x03abc" + b"\x1a\x00",  # an unknown field after the chunk
        b"\x12\x07\x12\x03abc\x08\x01",  # data before offset
        b"\x12\x0b" + b"\x08" + b"\xff" * 9 + b"\x01",  # a negative offset
        b"\x12\x05\x12\x09abc",  # data longer than the message
        b"",
    ],
)
def test_anything_but_a_canonical_chunk_is_left_to_protobuf(message: bytes) -> None:
    assert chunk_in_place(message) is None


def test_a_message_that_is_no_frame_at_all_is_corrupt() -> None:
    with pytest.raises(CorruptPayload, match="is not a valid TransferFrame"):
        parse_frame(b"\x12\x09abc")


async def test_receive_frames_takes_undecoded_frames_and_falls_back_for_unusual_ones() -> None:
    messages = list(encoded_frames_for(PAYLOAD, SHA, 1024))
    messages[2] = messages[2] + b"\x1a\x00"  # an unknown field: still a valid frame, parsed by protobuf
    assert await receive_frames(stream(messages), max_size=len(PAYLOAD)) == PAYLOAD


async def test_undecoded_frames_are_checked_like_decoded_ones() -> None:
    messages = list(encoded_frames_for(PAYLOAD, SHA, 1024))
    with pytest.raises(CorruptPayload, match="chunk at offset 2048 leaves a gap after 1024 bytes received"):
        await receive_frames(stream([messages[0], messages[1], messages[3]]), max_size=len(PAYLOAD))
    with pytest.raises(CorruptPayload, match="unexpected header frame after the header"):
        await receive_frames(stream([messages[0], messages[0]]), max_size=len(PAYLOAD))
