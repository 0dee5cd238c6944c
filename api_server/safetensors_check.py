"""Checking an uploaded model is a safetensors file while it streams through.

A model upload is streamed to the object store and never held in memory,
so it cannot be decoded to be checked.  What can be checked on the way is
the file's structure, which is all in its first bytes (DESIGN §6)::

    8 bytes   N, little-endian: the header's length
    N bytes   JSON: {name: {"dtype", "shape", "data_offsets": [begin, end]},
                     "__metadata__": {str: str}}
    ...       the data section, exactly as long as the offsets say

:class:`SafetensorsStream` buffers only the header (bounded by
:data:`MAX_HEADER_BYTES`), checks it the way the platform's decoder will
(known dtypes, offsets that match each shape and tile the data section with
no gap or overlap), then passes the data through, counting.  A body longer
or shorter than the header promises is refused at the end; a header that
promises more than the size limit is refused at once (413) rather than
after gigabytes have arrived.  Every refusal raises inside the object
store's ``put``, which then stores nothing.

The dtypes are those the platform's weights codec decodes (no BF16 or FP8:
numpy has no native type for them; convert such models to F32 first).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from libs.errors import CorruptPayload, InvalidWeights, PayloadTooLarge

HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_DIMENSIONS = 64
METADATA_KEY = "__metadata__"
ITEM_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2,
    "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip


def _invalid(problem: str) -> InvalidWeights:
    return InvalidWeights(
        f"the upload is not a valid safetensors file: {problem}", details={"problem": problem}
    )


@dataclass(frozen=True)
class Layout:
    """What a checked header promises."""

    header_bytes: int
    data_bytes: int
    tensors: int

    @property
    def total_bytes(self) -> int:
        return HEADER_LENGTH_BYTES + self.header_bytes + self.data_bytes


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _invalid(f"the header names {key[:60]!r} twice")
        result[key] = value
    return result


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_entry(name: str, entry: Any) -> tuple[int, int]:
    shown = name[:60]
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _invalid(f"tensor {shown!r} must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in ITEM_SIZES:
        raise _invalid(
            f"tensor {shown!r} has dtype {str(dtype)[:20]!r}; supported: {', '.join(sorted(ITEM_SIZES))} "
            "(convert BF16/FP8 models to F32)"
        )
    if not isinstance(shape, list) or len(shape) > MAX_DIMENSIONS or not all(map(_is_count, shape)):
        raise _invalid(f"tensor {shown!r} has a shape that is not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_count, offsets)):
        raise _invalid(f"tensor {shown!r} has data_offsets that are not two non-negative integers")
    begin, end = offsets
    expected = math.prod(shape) * ITEM_SIZES[dtype]
    if end - begin != expected:
        raise _invalid(f"tensor {shown!r} spans {end - begin} bytes but its shape and dtype need {expected}")
    return begin, end


def parse_header(header: bytes) -> Layout:
    """Check the JSON header; the layout it promises, or ``InvalidWeights`` naming the problem."""
    try:
        document = json.loads(header.decode("utf-8"), object_pairs_hook=_unique)
    except UnicodeDecodeError:
        raise _invalid("the header is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _invalid(f"the header is not JSON ({exc.msg} at byte {exc.pos})") from None
    if not isinstance(document, dict):
        raise _invalid("the header is not a JSON object")
    metadata = document.pop(METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _invalid("__metadata__ must map strings to strings")
    if not document:
        raise _invalid("it holds no tensors")
    spans = sorted(_check_entry(name, entry) for name, entry in document.items())
    position = 0
    for begin, end in spans:
        if begin != position:
            raise _invalid(f"the tensors' data_offsets leave a gap or overlap at byte {min(begin, position)}")
        position = end
    return Layout(header_bytes=len(header), data_bytes=position, tensors=len(spans))


class SafetensorsStream:
    """Pass ``chunks`` through unchanged once their header checks out; see the module docstring."""

    def __init__(self, chunks: AsyncIterable[bytes], *, max_size: int) -> None:
        self._chunks = chunks
        self._max_size = max_size
        self.layout: Layout | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._checked()

    async def _checked(self) -> AsyncIterator[bytes]:
        iterator = aiter(self._chunks)
        buffered = bytearray()
        header_end: int | None = None
        async for chunk in iterator:
            buffered += chunk
            if header_end is None and len(buffered) >= HEADER_LENGTH_BYTES:
                header_end = HEADER_LENGTH_BYTES + self._header_length(bytes(buffered[:HEADER_LENGTH_BYTES]))
            if header_end is not None and len(buffered) >= header_end:
                break
        else:
            raise _invalid(f"it ends after {len(buffered)} bytes, inside its header")
        assert header_end is not None
        self.layout = layout = parse_header(bytes(buffered[HEADER_LENGTH_BYTES:header_end]))
        if layout.total_bytes > self._max_size:
            raise PayloadTooLarge(
                f"the model's header describes {layout.total_bytes} bytes; the limit is {self._max_size}",
                details={"limit": self._max_size},
            )
        seen = len(buffered)
        if seen > layout.total_bytes:
            raise _invalid(f"it is longer than its header describes ({layout.total_bytes} bytes)")
        yield bytes(buffered)
        async for chunk in iterator:
            seen += len(chunk)
            if seen > layout.total_bytes:
                raise _invalid(f"it is longer than its header describes ({layout.total_bytes} bytes)")
            yield chunk
        if seen < layout.total_bytes:
            raise CorruptPayload(
                f"the upload is truncated: {seen} of the {layout.total_bytes} bytes its header describes"
            )

    def _header_length(self, prefix: bytes) -> int:
        length = int.from_bytes(prefix, "little")
        if length < 2:
            raise _invalid(f"its header length is {length}")
        if length > MAX_HEADER_BYTES or HEADER_LENGTH_BYTES + length > self._max_size:
            raise _invalid(
                f"its header length is {length} bytes; at most {min(MAX_HEADER_BYTES, self._max_size)} "
                "is accepted (is this a safetensors file?)"
            )
        return length
