"""Rules of the secure-aggregation round that the client and the server share.

The protocol is Bonawitz et al. 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning" (CCS '17), Fig. 4, for an honest-but-
curious server, plus the client-side checks that stop the simplest active
attacks (see :mod:`libs.secagg.client`).  Client ``u`` sends

    y_u = x_u + PRG(b_u) + Σ_{v∈U2, v<u} PRG(s_{u,v}) - Σ_{v∈U2, v>u} PRG(s_{u,v})   (mod 2^k)

The pairwise terms cancel in the sum over any set containing both ends of
each pair; the server removes ``PRG(b_u)`` of every survivor and the pairwise
terms that point to dropped clients, after ``t`` survivors hand it the shares
of ``b_u`` (survivors) and ``s_u^SK`` (dropped).  No client ever reveals both
kinds of share for one peer, so the server never unmasks a single ``x_u``.

``one-mask`` mode drops ``b_u`` and the Shamir sharing: the masks cancel only
if every participant's input arrives, so any dropout aborts the round.  It
suits cross-silo rounds of a few always-on clients.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from enum import StrEnum

import numpy as np

from libs.errors import ValidationFailed
from libs.secagg.key_agreement import pairwise_mask_seed
from libs.secagg.prg import add_mask, ring_mask
from libs.secagg.shamir import SHARE_BYTES

_SHARE_PLAINTEXT = struct.Struct(f">II{SHARE_BYTES}s{SHARE_BYTES}s")


class ClientStage(StrEnum):
    NEW = "new"
    ADVERTISED = "advertised"  # sent KeyAdvertisement, waits for the KeyDirectory
    SHARED = "shared"  # sent ShareKeys, waits for its ShareDelivery
    MASKED = "masked"  # sent MaskedInput, waits for the UnmaskRequest
    DONE = "done"
    ABORTED = "aborted"


class ServerStage(StrEnum):
    COLLECTING_KEYS = "collecting-keys"
    COLLECTING_SHARES = "collecting-shares"
    COLLECTING_INPUTS = "collecting-inputs"
    COLLECTING_UNMASKING = "collecting-unmasking"
    FINISHED = "finished"
    ABORTED = "aborted"


def model_digest(model_bytes: bytes) -> bytes:
    """The SHA-256 a client compares with ``RoundSetup.model_sha256``."""
    return hashlib.sha256(model_bytes).digest()


def pairwise_sign(own: int, peer: int) -> int:
    """+1 if ``own`` adds ``PRG(s_{own,peer})``, -1 if it subtracts it (peer < own adds)."""
    return 1 if peer < own else -1


def add_pairwise_masks(
    accumulator: np.ndarray,
    own: int,
    masking_private: bytes,
    peers: Mapping[int, bytes],
    session_id: bytes,
    bits: int,
    *,
    direction: int = 1,
) -> None:
    """Add (``direction=1``) or remove (``-1``) ``own``'s pairwise masks with ``peers``.

    ``peers`` maps each peer index to its masking public key.  The client adds
    its masks.  The server, holding a dropped client's reconstructed key,
    calls this *as that dropped client* with the survivors as peers: adding
    the dropped client's own pairwise masks cancels exactly the masks the
    survivors added towards it, since ``pairwise_sign(u, v) = -pairwise_sign(v, u)``.
    """
    for peer, public in peers.items():
        if peer == own:
            continue
        seed = pairwise_mask_seed(masking_private, public, session_id, own, peer)
        add_mask(accumulator, seed, bits, sign=direction * pairwise_sign(own, peer))


def reduce(vector: np.ndarray, bits: int) -> np.ndarray:
    """``vector mod 2^k`` in place (uint32 or uint64); returns it."""
    np.bitwise_and(vector, vector.dtype.type(int(ring_mask(bits))), out=vector)
    return vector


def pack_share_plaintext(
    sender: int, recipient: int, masking_key_share: bytes, self_mask_share: bytes
) -> bytes:
    """The plaintext a client seals for one peer: both indices and its two shares."""
    return _SHARE_PLAINTEXT.pack(sender, recipient, masking_key_share, self_mask_share)


def unpack_share_plaintext(plaintext: bytes) -> tuple[int, int, bytes, bytes]:
    if len(plaintext) != _SHARE_PLAINTEXT.size:
        raise ValidationFailed("a share plaintext has the wrong size")
    sender, recipient, masking_key_share, self_mask_share = _SHARE_PLAINTEXT.unpack(plaintext)
    return sender, recipient, masking_key_share, self_mask_share
