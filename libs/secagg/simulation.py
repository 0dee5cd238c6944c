"""An in-memory run of one secure-aggregation round, for tests and benchmarks.

:func:`simulate_round` plays ``n`` :class:`SecAggClient` objects and one
:class:`SecAggServer` through the stages, serialising every message to bytes
and back on the way (so the wire encoding is exercised too), and drops
clients at the points a schedule names.  It returns the unmasked sum (or the
abort reason) and a transcript of every message the server received, which
is what the curious-server tests inspect.

No network, no threads, no clock: a stage closes once every client that has
not dropped has answered, which is what a deadline would do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import numpy as np

from libs.secagg.client import SecAggClient
from libs.secagg.errors import RoundAborted
from libs.secagg.key_agreement import RandomBytes
from libs.secagg.messages import KeyDirectory, MaskedInput, Mode, RoundSetup, ShareDelivery
from libs.secagg.prg import UInt64Array
from libs.secagg.server import SecAggServer
from libs.secagg.wire import WireMessage

W = TypeVar("W", bound=WireMessage)


class DropPoint(StrEnum):
    """Where a client falls silent."""

    BEFORE_KEYS = "before-keys"  # never advertises keys (not in U1)
    BEFORE_SHARING = "before-sharing"  # advertised keys, never sends shares (in U1, not U2)
    AFTER_SHARING = "after-sharing"  # sent shares, never sends its masked input (in U2, not U3)
    AFTER_MASKED_INPUT = "after-masked-input"  # sent its input, never answers the unmasking (in U3, not U4)


@dataclass(frozen=True)
class TranscriptEntry:
    """One message the server received: the stage, the sender and the message."""

    stage: str
    sender: str
    message: WireMessage
    size: int  # bytes on the wire


@dataclass(frozen=True)
class SimulationResult:
    """The unmasked sum (None if aborted), who is in it, and what the server saw."""

    total: UInt64Array | None
    contributors: tuple[str, ...]
    abort_reason: str | None
    transcript: tuple[TranscriptEntry, ...] = field(repr=False)

    @property
    def aborted(self) -> bool:
        return self.abort_reason is not None


def make_setup(
    participants: int,
    threshold: int,
    *,
    vector_length: int,
    mode: Mode = Mode.DOUBLE_MASK,
    ring_bits: int = 32,
    clip_range: float = 1.0,
    max_weight: float = 1.0,
    model_sha256: bytes = bytes(32),
    random_bytes: RandomBytes = os.urandom,
) -> RoundSetup:
    """A round setup for clients ``client-1 .. client-n`` with a fresh session id."""
    return RoundSetup(
        session_id=random_bytes(32),
        round_number=0,
        participants=tuple(f"client-{i}" for i in range(1, participants + 1)),
        threshold=threshold,
        mode=mode.value,
        ring_bits=ring_bits,
        vector_length=vector_length,
        clip_range=clip_range,
        max_weight=max_weight,
        model_sha256=model_sha256,
    )


def _over_wire(message: W) -> W:
    return type(message).from_bytes(message.to_bytes())


MaskStep = Callable[[SecAggClient, ShareDelivery | KeyDirectory], MaskedInput]


def simulate_round(
    setup: RoundSetup,
    inputs: Sequence[UInt64Array] | None = None,
    *,
    dropouts: Mapping[str, DropPoint] | None = None,
    random_bytes: RandomBytes = os.urandom,
    mask_step: MaskStep | None = None,
) -> SimulationResult:
    """Run one round; ``inputs[i]`` is the encoded vector of ``setup.participants[i]``.

    ``mask_step`` replaces the plain ``mask_input(request, inputs[i])`` call
    (e.g. to use :meth:`SecAggClient.mask_update` with DP noise).
    """
    drops = dict(dropouts or {})
    clients = {cid: SecAggClient(cid, random_bytes=random_bytes) for cid in setup.participants}
    vectors = dict(zip(setup.participants, inputs, strict=True)) if inputs is not None else {}
    server = SecAggServer(_over_wire(setup))
    transcript: list[TranscriptEntry] = []

    def alive(cid: str, point: DropPoint) -> bool:
        return drops.get(cid) is not point and cid in clients

    def deliver(stage: str, sender: str, message: W, receive: Callable[[str, W], None]) -> None:
        wire = message.to_bytes()
        parsed = type(message).from_bytes(wire)
        transcript.append(TranscriptEntry(stage, sender, parsed, len(wire)))
        receive(sender, parsed)

    def mask(cid: str, request: ShareDelivery | KeyDirectory) -> MaskedInput:
        if mask_step is not None:
            return mask_step(clients[cid], request)
        return clients[cid].mask_input(request, vectors[cid])

    def drop(point: DropPoint) -> None:
        for cid in [c for c in clients if drops.get(c) is point]:
            del clients[cid]

    try:
        drop(DropPoint.BEFORE_KEYS)
        for cid, client in clients.items():
            advertisement = client.advertise_keys(_over_wire(setup), setup.model_sha256)
            deliver("advertise-keys", cid, advertisement, server.receive_keys)
        directory = _over_wire(server.close_advertising())
        drop(DropPoint.BEFORE_SHARING)
        if setup.mode == Mode.DOUBLE_MASK:
            for cid, client in clients.items():
                deliver("share-keys", cid, client.share_keys(directory), server.receive_shares)
            deliveries = server.close_sharing()
            drop(DropPoint.AFTER_SHARING)
            for cid in list(clients):
                masked = mask(cid, _over_wire(deliveries[cid]))
                deliver("masked-input", cid, masked, server.receive_masked_input)
        else:
            drop(DropPoint.AFTER_SHARING)
            for cid in list(clients):
                deliver("masked-input", cid, mask(cid, directory), server.receive_masked_input)
        request = server.close_masked_input()
        drop(DropPoint.AFTER_MASKED_INPUT)
        if request is not None:
            for cid, client in clients.items():
                deliver("unmasking", cid, client.unmask(_over_wire(request)), server.receive_unmasking)
        result = server.finish()
    except RoundAborted as exc:
        return SimulationResult(None, (), exc.reason, tuple(transcript))
    return SimulationResult(result.total, result.contributors, None, tuple(transcript))


def plain_sum(inputs: Sequence[UInt64Array], bits: int) -> UInt64Array:
    """The sum the server should find, computed in the clear (for checks)."""
    total = np.zeros_like(inputs[0])
    for vector in inputs:
        np.add(total, vector, out=total)
    return np.bitwise_and(total, np.uint64((1 << bits) - 1))
