"""The messages of one secure-aggregation round (Bonawitz et al. 2017, Fig. 4).

Server -> clients                      Clients -> server
-------------------------------------  -------------------------------------
RoundSetup (with the global model)     KeyAdvertisement        (round 0)
KeyDirectory (the set U1)              ShareKeys               (round 1)
ShareDelivery (per recipient, U2)      MaskedInput             (round 2)
UnmaskRequest (dropped, survivors)     UnmaskResponse          (round 3)

In one-mask mode rounds 1 and 3 do not exist: a client masks right after the
KeyDirectory.  Clients are numbered by their 1-based position in
``RoundSetup.participants``; that index is the Shamir x-coordinate and orders
the pairwise masks.  A message never names its sender: the carrier passes the
identity it authenticated (the mTLS certificate, DESIGN §9).

Every message carries the round's ``session_id`` and is refused in any other
round.  All are frozen dataclasses of bytes, ints, str and tuples (see
:mod:`libs.secagg.wire` for the two encodings).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

import numpy as np

from libs.errors import ValidationFailed
from libs.secagg.prg import UInt64Array, ring_mask, validate_ring_bits
from libs.secagg.quantize import FixedPointCodec
from libs.secagg.shamir import SHARE_BYTES
from libs.secagg.wire import WireMessage

SESSION_ID_BYTES = 32
PUBLIC_KEY_BYTES = 32
MAX_PARTICIPANTS = 10_000
MAX_VECTOR_LENGTH = 1 << 32
_SIGNATURE_LABEL = b"nsfl/secagg/v1/keys"


class Mode(StrEnum):
    """``double-mask``: Bonawitz et al. with dropout recovery.  ``one-mask``:
    pairwise masks only (cross-silo, no client may drop; any dropout aborts)."""

    DOUBLE_MASK = "double-mask"
    ONE_MASK = "one-mask"


def _check_session(session_id: bytes) -> None:
    if len(session_id) != SESSION_ID_BYTES:
        raise ValidationFailed(f"session id must be {SESSION_ID_BYTES} bytes")


def _check_key(key: bytes, what: str) -> None:
    if len(key) != PUBLIC_KEY_BYTES:
        raise ValidationFailed(f"{what} must be {PUBLIC_KEY_BYTES} bytes")


def _check_indices(indices: tuple[int, ...], what: str) -> None:
    if len(set(indices)) != len(indices) or any(not 1 <= i <= MAX_PARTICIPANTS for i in indices):
        raise ValidationFailed(f"{what} must be distinct participant indices")


def key_signature_payload(session_id: bytes, index: int, encryption_key: bytes, masking_key: bytes) -> bytes:
    """What an optional signature over a client's advertised keys covers."""
    return _SIGNATURE_LABEL + session_id + struct.pack(">I", index) + encryption_key + masking_key


@dataclass(frozen=True)
class RoundSetup(WireMessage):
    """Server -> clients: the round's parameters, sent with the global model."""

    wire_tag: ClassVar[int] = 1
    session_id: bytes
    round_number: int
    participants: tuple[str, ...]
    threshold: int
    mode: str
    ring_bits: int
    vector_length: int
    clip_range: float
    max_weight: float
    model_sha256: bytes

    def __post_init__(self) -> None:
        _check_session(self.session_id)
        n = len(self.participants)
        if not 2 <= n <= MAX_PARTICIPANTS:
            raise ValidationFailed(f"a round needs 2..{MAX_PARTICIPANTS} participants, got {n}")
        if len(set(self.participants)) != n or not all(self.participants):
            raise ValidationFailed("participant ids must be distinct and non-empty")
        if self.mode not in {m.value for m in Mode}:
            raise ValidationFailed(f"mode must be one of {[m.value for m in Mode]}, got {self.mode!r}")
        validate_threshold(self.threshold, n, Mode(self.mode))
        validate_ring_bits(self.ring_bits)
        if not 1 <= self.vector_length <= MAX_VECTOR_LENGTH:
            raise ValidationFailed(f"vector length must be 1..{MAX_VECTOR_LENGTH}")
        if len(self.model_sha256) != 32:
            raise ValidationFailed("model_sha256 must be a 32-byte SHA-256 digest")
        self.codec()  # validates clip_range and max_weight

    def codec(self) -> FixedPointCodec:
        """The fixed-point encoding every client and the server use this round."""
        return FixedPointCodec(self.ring_bits, self.clip_range, len(self.participants), self.max_weight)

    def index_of(self, client_id: str) -> int:
        """The 1-based index of ``client_id``; 0 if it is not a participant."""
        try:
            return self.participants.index(client_id) + 1
        except ValueError:
            return 0


def validate_threshold(threshold: int, participants: int, mode: Mode) -> None:
    """``n/2 < t <= n`` in double-mask mode; ``t = n`` in one-mask mode.

    ``t > n/2`` is enforced, not merely recommended: with a smaller threshold a
    server that tells two halves of the clients different dropout sets could
    collect both the self-mask and the pairwise-mask shares of one client.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise ValidationFailed("threshold must be an integer")
    if mode is Mode.ONE_MASK and threshold != participants:
        raise ValidationFailed(f"one-mask mode needs every client: threshold must be {participants}")
    if not (participants // 2 < threshold <= participants):
        raise ValidationFailed(
            f"threshold must be more than half of the participants and at most all of them "
            f"({participants // 2 + 1}..{participants}), got {threshold}"
        )


@dataclass(frozen=True)
class KeyAdvertisement(WireMessage):
    """Client -> server, round 0: the public halves of ``c_u`` and ``s_u``."""

    wire_tag: ClassVar[int] = 2
    session_id: bytes
    encryption_public_key: bytes
    masking_public_key: bytes
    signature: bytes = b""  # empty unless the client signs its keys

    def __post_init__(self) -> None:
        _check_session(self.session_id)
        _check_key(self.encryption_public_key, "encryption public key")
        _check_key(self.masking_public_key, "masking public key")


@dataclass(frozen=True)
class DirectoryEntry(WireMessage):
    """One client's advertised keys, as relayed by the server."""

    index: int
    encryption_public_key: bytes
    masking_public_key: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        _check_indices((self.index,), "directory index")
        _check_key(self.encryption_public_key, "encryption public key")
        _check_key(self.masking_public_key, "masking public key")


@dataclass(frozen=True)
class KeyDirectory(WireMessage):
    """Server -> clients, end of round 0: the keys of every client in U1."""

    wire_tag: ClassVar[int] = 3
    session_id: bytes
    entries: tuple[DirectoryEntry, ...]

    def __post_init__(self) -> None:
        _check_session(self.session_id)


@dataclass(frozen=True)
class SealedShares(WireMessage):
    """Encrypted shares for (in ShareKeys) or from (in ShareDelivery) client ``peer``."""

    peer: int
    ciphertext: bytes

    def __post_init__(self) -> None:
        _check_indices((self.peer,), "peer index")


@dataclass(frozen=True)
class ShareKeys(WireMessage):
    """Client -> server, round 1: one sealed pair of shares per other client in U1."""

    wire_tag: ClassVar[int] = 4
    session_id: bytes
    sealed: tuple[SealedShares, ...]

    def __post_init__(self) -> None:
        _check_session(self.session_id)
        _check_indices(tuple(s.peer for s in self.sealed), "share recipients")


@dataclass(frozen=True)
class ShareDelivery(WireMessage):
    """Server -> one client, end of round 1: the shares addressed to it (senders form U2)."""

    wire_tag: ClassVar[int] = 5
    session_id: bytes
    sealed: tuple[SealedShares, ...]

    def __post_init__(self) -> None:
        _check_session(self.session_id)
        _check_indices(tuple(s.peer for s in self.sealed), "share senders")


@dataclass(frozen=True)
class MaskedInput(WireMessage):
    """Client -> server, round 2: ``y_u`` packed in ``ceil(k/8)`` little-endian bytes per element."""

    wire_tag: ClassVar[int] = 6
    session_id: bytes
    ring_bits: int
    vector: bytes

    def __post_init__(self) -> None:
        _check_session(self.session_id)
        validate_ring_bits(self.ring_bits)
        if len(self.vector) % element_bytes(self.ring_bits):
            raise ValidationFailed("masked vector length is not a whole number of elements")

    @classmethod
    def pack(cls, session_id: bytes, ring_bits: int, vector: np.ndarray) -> MaskedInput:
        """Pack a reduced vector (uint32 for rings up to 32 bits, or uint64)."""
        width = element_bytes(ring_bits)
        word = 4 if width <= 4 else 8
        raw = np.ascontiguousarray(vector, dtype=f"<u{word}")
        packed = raw.tobytes() if width == word else raw.view(np.uint8).reshape(-1, word)[:, :width].tobytes()
        return cls(session_id, ring_bits, packed)

    def unpack(self) -> UInt64Array:
        """The masked vector as uint64 (each element below ``2^k``)."""
        width = element_bytes(self.ring_bits)
        if width in (4, 8):  # the common rings (32, 64 bits and just below) read in place
            vector = np.frombuffer(self.vector, dtype=f"<u{width}").astype(np.uint64)
        else:
            length = len(self.vector) // width
            raw = np.zeros((length, 8), dtype=np.uint8)
            raw[:, :width] = np.frombuffer(self.vector, dtype=np.uint8).reshape(length, width)
            vector = raw.view("<u8").reshape(length).astype(np.uint64)
        if self.ring_bits < 8 * width and np.any(vector > ring_mask(self.ring_bits)):
            raise ValidationFailed("masked vector holds values outside the ring")
        return vector


def element_bytes(ring_bits: int) -> int:
    return math.ceil(ring_bits / 8)


@dataclass(frozen=True)
class UnmaskRequest(WireMessage):
    """Server -> survivors, round 3: who dropped after sharing (U2 \\ U3) and who did not (U3)."""

    wire_tag: ClassVar[int] = 7
    session_id: bytes
    dropped: tuple[int, ...]
    survivors: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_session(self.session_id)
        _check_indices(self.dropped, "dropped clients")
        _check_indices(self.survivors, "surviving clients")


@dataclass(frozen=True)
class ShareEntry(WireMessage):
    """The responder's share of client ``owner``'s secret."""

    owner: int
    share: bytes

    def __post_init__(self) -> None:
        _check_indices((self.owner,), "share owner")
        if len(self.share) != SHARE_BYTES:
            raise ValidationFailed(f"a share is {SHARE_BYTES} bytes")


@dataclass(frozen=True)
class UnmaskResponse(WireMessage):
    """Client -> server, round 3: ``s_v^SK`` shares of the dropped, ``b_v`` shares of survivors."""

    wire_tag: ClassVar[int] = 8
    session_id: bytes
    masking_key_shares: tuple[ShareEntry, ...]
    self_mask_shares: tuple[ShareEntry, ...]

    def __post_init__(self) -> None:
        _check_session(self.session_id)
        _check_indices(tuple(e.owner for e in self.masking_key_shares), "masking key share owners")
        _check_indices(tuple(e.owner for e in self.self_mask_shares), "self mask share owners")
