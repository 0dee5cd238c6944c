"""``TransferFrame`` chunk messages read and written in place, without protobuf.

Parsing a 2 MiB chunk with the protobuf runtime copies its data into a fresh
arena, and reading ``frame.chunk.data`` copies it again into a fresh
``bytes``; on a receiver that is two allocations and two copies per chunk on
top of the one write into the payload buffer, and fresh memory costs page
faults (measured by ``bench/weights_stream.py``: it roughly doubled the
receiver's CPU time).  A chunk frame has a fixed, tiny structure, so this
module reads it directly: :func:`chunk_in_place` returns the chunk's offset
and a ``memoryview`` of its data inside the received message, which the
receiver writes straight into its buffer.  :func:`encode_chunk` is the send
side: one copy of the piece into the message, byte-identical to
``SerializeToString`` (a unit test holds both to that).

Only the canonical encoding takes the fast path: exactly one ``chunk`` field,
holding an optional ``offset`` then optional ``data``, as every protobuf
runtime writes it.  Anything else (headers, unknown fields, repeated fields)
returns ``None`` and is parsed by protobuf, so the fast path never changes
what a frame means.  The same applies to ``UploadFrame``, whose ``chunk`` is
also field 2 holding a ``BlobChunk``.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from libs.errors import CorruptPayload
from libs.protos import common_pb2

_CHUNK_FIELD = 0x12  # field 2, length-delimited: TransferFrame.chunk and UploadFrame.chunk
_OFFSET_FIELD = 0x08  # BlobChunk.offset: field 1, varint
_DATA_FIELD = 0x12  # BlobChunk.data: field 2, length-delimited
_MAX_OFFSET = 2**63 - 1


class _Malformed(Exception):
    pass


def _read_varint(message: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 64:
        if position >= len(message):
            raise _Malformed
        byte = message[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    raise _Malformed


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def chunk_in_place(message: bytes) -> tuple[int, memoryview] | None:
    """``(offset, data)`` of a canonically encoded chunk frame, ``data`` being a
    view into ``message``; ``None`` for any other frame."""
    try:
        if not message or message[0] != _CHUNK_FIELD:
            return None
        length, position = _read_varint(message, 1)
        end = len(message)
        if position + length != end:  # not exactly one field
            return None
        offset, data = 0, memoryview(message)[end:end]
        if position < end and message[position] == _OFFSET_FIELD:
            offset, position = _read_varint(message, position + 1)
        if position < end and message[position] == _DATA_FIELD:
            size, position = _read_varint(message, position + 1)
            if position + size != end:
                return None
            data, position = memoryview(message)[position:end], end
        if position != end or offset > _MAX_OFFSET:
            return None
        return offset, data
    except _Malformed:
        return None


def encode_chunk(offset: int, piece: memoryview) -> bytes:
    """The serialized ``TransferFrame(chunk=BlobChunk(offset, data=piece))``."""
    inner = b""
    if offset:
        inner += bytes((_OFFSET_FIELD,)) + _varint(offset)
    if piece.nbytes:
        inner += bytes((_DATA_FIELD,)) + _varint(piece.nbytes)
    return b"".join((bytes((_CHUNK_FIELD,)), _varint(len(inner) + piece.nbytes), inner, piece))


def parse_frame(message: bytes) -> common_pb2.TransferFrame:
    """A received message parsed by protobuf; :class:`CorruptPayload` if it is not a frame."""
    try:
        return common_pb2.TransferFrame.FromString(message)
    except DecodeError as exc:
        raise CorruptPayload(f"a {len(message)}-byte message is not a valid TransferFrame: {exc}") from None
