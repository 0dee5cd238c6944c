"""One participant's ``SecureAggregate`` stream, as the secure round sees it.

A secure round (:mod:`coordinator.secure_rounds`) talks to each participant
through a :class:`ClientLink`: the frames to send it (an outbox the stream
handler drains), the message it is sending in pieces (bounded before any
buffer is allocated, in order, adding up to the announced size), and whether
it is still in the round.  Messages of any size travel as pieces of at most
``libs.rpc.MAX_CHUNK`` bytes (:func:`pieces`): a 1M-parameter masked vector is
4 MB at 32 bits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from coordinator.rounds import TaskOutcome, Ticket
from libs.errors import ValidationFailed
from libs.protos import coordinator_pb2
from libs.rpc import MAX_CHUNK


def pieces(stage: str, data: bytes) -> list[coordinator_pb2.SecAggPiece]:
    """One message as pieces of at most ``MAX_CHUNK`` bytes."""
    return [coordinator_pb2.SecAggPiece(stage=stage, total_size=len(data), offset=start,
                                        data=data[start:start + MAX_CHUNK])
            for start in range(0, len(data), MAX_CHUNK)]


@dataclass(eq=False)
class ClientLink:
    """One participant's stream: what to send it, and the message it is sending in pieces."""

    ticket: Ticket
    metrics: dict[str, float]
    outbox: asyncio.Queue[coordinator_pb2.SecAggServerFrame | None] = field(default_factory=asyncio.Queue)
    gone: str = ""  # why it left the round, once it did
    finished: bool = False  # its outcome was sent
    _buffer: bytearray | None = None
    _stage: str = ""
    _received: int = 0

    @property
    def client_id(self) -> str:
        return self.ticket.client_id

    @property
    def alive(self) -> bool:
        return not self.gone and self.ticket.outcome in (TaskOutcome.OFFERED, TaskOutcome.RUNNING)

    def send(self, stage: str, data: bytes) -> None:
        for piece in pieces(stage, data):
            self.outbox.put_nowait(coordinator_pb2.SecAggServerFrame(piece=piece))

    def finish(self, included: bool, reason: str) -> None:
        if not self.finished:
            self.finished = True
            outcome = coordinator_pb2.SecAggOutcome(included=included, reason=reason)
            self.outbox.put_nowait(coordinator_pb2.SecAggServerFrame(outcome=outcome))
            self.outbox.put_nowait(None)

    def take(self, piece: coordinator_pb2.SecAggPiece, limit: int) -> bytes | None:
        """Add a piece; the whole message once its last piece is in (bounded before allocating)."""
        if self._buffer is None:
            if not 0 < piece.total_size <= limit:
                raise ValidationFailed(f"a {piece.stage!r} message of {piece.total_size} bytes is out of bounds")
            self._buffer, self._stage, self._received = bytearray(piece.total_size), piece.stage, 0
        if (piece.stage, piece.total_size, piece.offset) != (self._stage, len(self._buffer), self._received) \
                or self._received + len(piece.data) > len(self._buffer):
            raise ValidationFailed("message pieces must arrive in order and add up to the announced size")
        self._buffer[self._received:self._received + len(piece.data)] = piece.data
        self._received += len(piece.data)
        if self._received < len(self._buffer):
            return None
        message, self._buffer = bytes(self._buffer), None
        return message
