"""Moving large payloads (models, deltas, checkpoints) in checked, resumable chunks.

A model can be many GiB, while a gRPC message is capped at a few MiB
(``libs.rpc.MAX_MESSAGE``) so that no peer ever has to buffer a whole model to
read one message.  A payload therefore travels as a stream of
``TransferFrame`` messages: one ``BlobHeader`` (total size, SHA-256, media
type, starting offset), then ``BlobChunk``s of 1-4 MiB carrying absolute
offsets.  2 MiB is the default: large enough that per-message overhead is
small, small enough that a stream keeps several chunks in flight.

The receiving side is :class:`BlobReceiver`.  It refuses a payload larger than
the caller's limit *before* allocating anything (the size comes from the
peer), then allocates the whole buffer once and writes each chunk straight
into it while hashing it, so it never holds a second copy or re-reads the
payload.  Chunks must arrive in order, without gap or overlap; the size and
SHA-256 are checked at :meth:`BlobReceiver.finish`.

A broken transfer resumes: :func:`receive_frames` raises
:class:`TransferInterrupted` carrying its receiver when the stream fails or
ends early.  The caller asks the sender for the rest from
``receiver.received`` (``DownloadRequest.offset``) and passes the receiver as
``resume=``; its hash state continues where it stopped.  A receiver can also be
rebuilt from a partial buffer kept elsewhere (``start_offset`` + ``buffer``);
it then re-hashes the prefix once.

Copies.  With generated stubs, :func:`frames_for` copies each chunk once into
its protobuf ``bytes`` field (protobuf will not alias a ``memoryview``) and
gRPC copies it again to serialise; the receiver's protobuf parse and
``chunk.data`` copy it twice more before the one write into the buffer.  The
undecoded path removes the protobuf copies on both sides:
:func:`encoded_frames_for` yields serialized frames built with one copy per
chunk (for a handler registered with ``response_serializer=None``), and
:func:`receive_frames` given raw messages (:func:`raw_download_model`) writes
each chunk from the message straight into the buffer (``framing.py``).  Both
paths carry identical bytes on the wire, so either end may use either.
Nothing ever concatenates chunks.  SHA-256 is computed on a worker thread for
large payloads (:class:`_Sha256`), so hashing overlaps receiving.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import grpc.aio

from libs.errors import ChecksumMismatch, CorruptPayload, PayloadTooLarge, ValidationFailed
from libs.protos import common_pb2, coordinator_pb2
from libs.rpc import MAX_CHUNK
from libs.weights.framing import chunk_in_place, encode_chunk, parse_frame
from libs.weights.tensors import MEDIA_TYPE, Buffer

DEFAULT_CHUNK = 2 * 1024 * 1024
# An update up to this size travels in one Coordinator.SubmitUpdate message, not an UploadUpdate stream.
SUBMIT_MAX_BYTES = 1 << 20
_BACKGROUND_HASH_MIN = 8 * 1024 * 1024  # smaller payloads hash inline: a thread is not worth it
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _byte_view(payload: Buffer) -> memoryview:
    view = memoryview(payload)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def iter_chunks(
    payload: Buffer, chunk_size: int = DEFAULT_CHUNK, start: int = 0
) -> Iterator[tuple[int, memoryview]]:
    """``(offset, piece)`` pairs covering ``payload[start:]``; pieces are views, not copies."""
    if not 0 < chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK} bytes, got {chunk_size}")
    view = _byte_view(payload)
    if not 0 <= start <= len(view):
        raise ValueError(f"start {start} is outside the {len(view)}-byte payload")
    for offset in range(start, len(view), chunk_size):
        yield offset, view[offset : offset + chunk_size]


class _Sha256:
    """SHA-256 fed in order; on a worker thread for large payloads.

    hashlib releases the GIL while it hashes more than 2 KiB, so a worker can
    hash chunk k while the event loop receives chunk k+1: on a machine with a
    spare core the hash (about 0.6 s per GiB) leaves the transfer's critical
    path.  The worker hashes the receive buffer itself, so a backlog holds no
    extra memory; one thread per large transfer keeps each stream's order.
    """

    def __init__(self, prefix: memoryview, background: bool) -> None:
        self._digest = hashlib.sha256(prefix)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="nsfl-sha256") if background else None
        self._last: Future[None] | None = None

    def update(self, data: memoryview) -> None:
        if self._worker is None:
            self._digest.update(data)
        else:
            self._last = self._worker.submit(self._digest.update, data)

    async def caught_up(self) -> None:
        """Wait, without blocking the event loop, until every chunk is hashed."""
        if self._last is not None:
            await asyncio.wrap_future(self._last)

    def hexdigest(self) -> str:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        return self._digest.hexdigest()


class BlobReceiver:
    """Collects one payload of known size and SHA-256 from in-order chunks."""

    def __init__(
        self,
        total_size: int,
        sha256: str,
        *,
        max_size: int,
        start_offset: int = 0,
        buffer: bytearray | None = None,
    ) -> None:
        if total_size < 0:
            raise CorruptPayload(f"payload size {total_size} is negative")
        if total_size > max_size:
            raise PayloadTooLarge(
                f"payload of {total_size} bytes exceeds the limit of {max_size} bytes",
                details={"total_size": total_size, "max_size": max_size},
            )
        sha256 = sha256.lower()
        if not _SHA256.fullmatch(sha256):
            raise CorruptPayload(f"{sha256[:80]!r} is not a hex SHA-256")
        if not 0 <= start_offset <= total_size:
            raise ValueError(f"start_offset {start_offset} is outside the {total_size}-byte payload")
        if buffer is None:
            if start_offset:
                raise ValueError("resuming at a non-zero offset needs the partial buffer")
            buffer = bytearray(total_size)
        elif len(buffer) != total_size:
            raise ValueError(f"the resume buffer holds {len(buffer)} bytes, expected {total_size}")
        self.total_size = total_size
        self.sha256 = sha256
        self._buffer = buffer
        self._view = memoryview(buffer)
        self._digest = _Sha256(self._view[:start_offset], total_size - start_offset >= _BACKGROUND_HASH_MIN)
        self._received = start_offset
        self._finished = False

    @property
    def received(self) -> int:
        """Bytes received so far: where a resumed transfer starts."""
        return self._received

    def write(self, offset: int, data: Buffer) -> None:
        """Take the chunk at ``offset``; it must start exactly where the last one ended."""
        if self._finished:
            raise CorruptPayload(f"chunk at offset {offset} after the transfer was finished")
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if offset < self._received:
            raise CorruptPayload(
                f"chunk at offset {offset} overlaps the {self._received} bytes already received"
            )
        if offset > self._received:
            raise CorruptPayload(
                f"chunk at offset {offset} leaves a gap after {self._received} bytes received"
            )
        end = offset + size
        if end > self.total_size:
            raise CorruptPayload(
                f"chunk [{offset}, {end}) runs past the end of the {self.total_size}-byte payload"
            )
        self._view[offset:end] = data
        self._digest.update(self._view[offset:end])
        self._received = end

    def finish(self) -> bytearray:
        """The complete payload, once its size and SHA-256 check out."""
        if self._received < self.total_size:
            raise CorruptPayload(
                f"truncated: got {self._received} of {self.total_size} bytes",
                details={"received": self._received, "total_size": self.total_size},
            )
        actual = self._digest.hexdigest()
        if actual != self.sha256:
            raise ChecksumMismatch(f"payload SHA-256 is {actual}, expected {self.sha256}")
        self._finished = True
        self._view.release()
        return self._buffer


class TransferInterrupted(CorruptPayload):
    """The stream broke or ended early; ``receiver`` holds what arrived and can resume."""

    def __init__(self, receiver: BlobReceiver, reason: str) -> None:
        received, total = receiver.received, receiver.total_size
        super().__init__(
            f"truncated: got {received} of {total} bytes ({reason}); resume from offset {received}",
            details={"received": received, "total_size": total},
        )
        self.receiver = receiver


# ------------------------------------------------------------------ gRPC frames


def frames_for(
    payload: Buffer,
    sha256: str,
    chunk_size: int = DEFAULT_CHUNK,
    offset: int = 0,
    media_type: str = MEDIA_TYPE,
) -> Iterator[common_pb2.TransferFrame]:
    """The frames that send ``payload[offset:]``: a header, then the chunks."""
    view = _byte_view(payload)
    if not 0 <= offset <= len(view):
        raise ValidationFailed(f"offset {offset} is outside the {len(view)}-byte payload")
    header = common_pb2.BlobHeader(sha256=sha256, total_size=len(view), media_type=media_type, offset=offset)
    yield common_pb2.TransferFrame(header=header)
    for position, piece in iter_chunks(view, chunk_size, offset):
        frame = common_pb2.TransferFrame()
        frame.chunk.offset = position
        frame.chunk.data = bytes(piece)
        yield frame


def encoded_frames_for(
    payload: Buffer,
    sha256: str,
    chunk_size: int = DEFAULT_CHUNK,
    offset: int = 0,
    media_type: str = MEDIA_TYPE,
) -> Iterator[bytes]:
    """:func:`frames_for` already serialized, with one copy per chunk instead of
    two, for a handler registered with ``response_serializer=None``."""
    frames = frames_for(payload, sha256, chunk_size, offset, media_type)
    yield next(frames).SerializeToString()
    for position, piece in iter_chunks(payload, chunk_size, offset):
        yield encode_chunk(position, piece)


_DOWNLOAD_MODEL = coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].methods_by_name["DownloadModel"]


def raw_download_model(channel: grpc.aio.Channel) -> grpc.aio.UnaryStreamMultiCallable:
    """``Coordinator.DownloadModel`` yielding undecoded frames, for :func:`receive_frames`."""
    return channel.unary_stream(
        f"/{_DOWNLOAD_MODEL.containing_service.full_name}/{_DOWNLOAD_MODEL.name}",
        request_serializer=coordinator_pb2.DownloadRequest.SerializeToString,
        response_deserializer=None,
    )


def _receiver_for(
    frame: common_pb2.TransferFrame, max_size: int, resume: BlobReceiver | None
) -> BlobReceiver:
    if frame.WhichOneof("frame") != "header":
        raise CorruptPayload("the stream did not start with a header frame")
    header = frame.header
    if resume is None:
        if header.offset != 0:
            raise CorruptPayload(f"the stream starts at offset {header.offset}, but nothing was received yet")
        return BlobReceiver(header.total_size, header.sha256, max_size=max_size)
    if header.sha256.lower() != resume.sha256 or header.total_size != resume.total_size:
        raise CorruptPayload(
            f"the resumed stream is for another payload ({header.total_size} bytes, SHA-256 {header.sha256[:80]}) "
            f"than the interrupted one ({resume.total_size} bytes, SHA-256 {resume.sha256})"
        )
    if header.offset != resume.received:
        raise CorruptPayload(
            f"the resumed stream starts at offset {header.offset}, expected {resume.received}"
        )
    return resume


def _describe(exc: BaseException) -> str:
    """A short cause for the message: the gRPC status name, never the peer's debug string."""
    code = getattr(exc, "code", None)
    status = code() if callable(code) else None
    return status.name if isinstance(status, grpc.StatusCode) else type(exc).__name__


def _start(
    first: common_pb2.TransferFrame | bytes, max_size: int, resume: BlobReceiver | None, expected_sha256: str
) -> BlobReceiver:
    """The receiver for a stream whose first message is ``first``; a header naming another payload than
    ``expected_sha256`` (when given) is refused before anything is allocated."""
    frame = parse_frame(first) if isinstance(first, bytes) else first
    if expected_sha256 and frame.WhichOneof("frame") == "header" and frame.header.sha256.lower() != expected_sha256:
        raise ChecksumMismatch(
            f"the sender sent payload {frame.header.sha256[:64]!r}, but {expected_sha256} was asked for"
        )
    return _receiver_for(frame, max_size, resume)


def _take(receiver: BlobReceiver, frame: common_pb2.TransferFrame | bytes) -> None:
    """Write one frame after the header into ``receiver``: undecoded chunks straight from the message."""
    if isinstance(frame, bytes):
        chunk = chunk_in_place(frame)
        if chunk is not None:
            receiver.write(*chunk)
            return
        frame = parse_frame(frame)
    if frame.WhichOneof("frame") != "chunk":
        raise CorruptPayload(f"unexpected {frame.WhichOneof('frame')} frame after the header")
    receiver.write(frame.chunk.offset, frame.chunk.data)


def _check_complete(receiver: BlobReceiver) -> None:
    if receiver.received < receiver.total_size:
        raise TransferInterrupted(receiver, "the stream ended early")


async def receive_frames(
    frames: AsyncIterable[common_pb2.TransferFrame | bytes],
    *,
    max_size: int,
    resume: BlobReceiver | None = None,
    expected_sha256: str = "",
) -> bytearray:
    """Receive one streamed payload and return it once size and SHA-256 check out.

    ``frames`` are ``TransferFrame`` messages, or their undecoded bytes (a call
    made through :func:`raw_download_model`): chunks then go from the received
    message straight into the buffer (see ``framing.py``).  The header is
    validated before anything is allocated (and, with ``expected_sha256``, must
    name that payload).  A failure of the stream after the header (a gRPC
    error, a broken connection, an early end) raises
    :class:`TransferInterrupted`; pass its ``receiver`` back as ``resume`` with
    a new stream that starts at ``receiver.received``.  On any error the caller
    should cancel its call.
    """
    iterator = aiter(frames)
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        raise CorruptPayload("the stream ended before its header") from None
    receiver = _start(first, max_size, resume, expected_sha256)
    try:
        async for frame in iterator:
            _take(receiver, frame)
    except (grpc.RpcError, OSError) as exc:
        raise TransferInterrupted(receiver, f"the stream failed: {_describe(exc)}") from exc
    _check_complete(receiver)
    await receiver._digest.caught_up()
    return receiver.finish()


def receive_frames_sync(
    frames: Iterator[common_pb2.TransferFrame | bytes],
    *,
    max_size: int,
    resume: BlobReceiver | None = None,
    expected_sha256: str = "",
) -> bytearray:
    """:func:`receive_frames` over a synchronous call's stream (the executor's, which runs no event loop).

    A gRPC error on the first message is raised as it is (the caller maps it); after the header, as
    :class:`TransferInterrupted`.
    """
    first = next(frames, None)
    if first is None:
        raise CorruptPayload("the stream ended before its header")
    receiver = _start(first, max_size, resume, expected_sha256)
    try:
        for frame in frames:
            _take(receiver, frame)
    except (grpc.RpcError, OSError) as exc:
        raise TransferInterrupted(receiver, f"the stream failed: {_describe(exc)}") from exc
    _check_complete(receiver)
    return receiver.finish()
