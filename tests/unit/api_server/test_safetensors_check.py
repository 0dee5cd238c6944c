"""The streaming safetensors check: what passes, what is refused, and when."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import numpy as np
import pytest
from safetensors.numpy import save

from api_server.safetensors_check import SafetensorsStream, parse_header
from libs.errors import CorruptPayload, InvalidWeights, PayloadTooLarge


def file_with(header: dict[str, object], data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


async def pieces(payload: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


async def through(payload: bytes, *, size: int = 3, max_size: int = 1 << 20) -> bytes:
    stream = SafetensorsStream(pieces(payload, size), max_size=max_size)
    return b"".join([chunk async for chunk in stream])


async def test_a_real_file_passes_through_unchanged_in_any_chunking() -> None:
    payload = save({"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(2, dtype=np.int64)})
    for size in (1, 7, 8, 100, len(payload)):
        assert await through(payload, size=size) == payload


def test_the_header_layout_is_read_from_the_offsets() -> None:
    layout = parse_header(json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                      "__metadata__": {"k": "v"}}).encode())  # fmt: skip
    assert (layout.data_bytes, layout.tensors) == (8, 1)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ({}, "no tensors"),
        ({"a": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}, "BF16"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, "need 8"),
        ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, "non-negative"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, "gap or overlap"),
        ({"a": {"dtype": "F32", "shape": [1]}}, "exactly dtype, shape and data_offsets"),
        (
            {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "__metadata__": {"k": 1}},
            "__metadata__",
        ),
    ],
)
async def test_a_header_that_does_not_describe_its_data_is_refused(
    header: dict[str, object], problem: str
) -> None:
    with pytest.raises(InvalidWeights, match=problem):
        await through(file_with(header, b"\0" * 8))


async def test_duplicate_names_and_non_json_headers_are_refused() -> None:
    text = b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {}}'
    with pytest.raises(InvalidWeights, match="twice"):
        await through(len(text).to_bytes(8, "little") + text + b"\0")
    with pytest.raises(InvalidWeights, match="not JSON"):
        await through((4).to_bytes(8, "little") + b"nope")


async def test_a_body_shorter_or_longer_than_its_header_is_refused() -> None:
    payload = file_with({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, b"1234")
    with pytest.raises(CorruptPayload, match="truncated"):
        await through(payload[:-1])
    with pytest.raises(InvalidWeights, match="longer"):
        await through(payload + b"5")
    with pytest.raises(InvalidWeights, match="inside its header"):
        await through(payload[:12])


async def test_a_header_promising_more_than_the_limit_is_refused_before_the_data_arrives() -> None:
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        yield file_with({"a": {"dtype": "U8", "shape": [10_000], "data_offsets": [0, 10_000]}})
        while True:
            consumed += 1
            yield b"\0" * 1000

    with pytest.raises(PayloadTooLarge):
        async for _ in SafetensorsStream(endless(), max_size=5_000):
            pass
    assert consumed == 0
    with pytest.raises(InvalidWeights, match="header length"):
        await through((1 << 40).to_bytes(8, "little") + b"{}")
