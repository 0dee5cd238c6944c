"""Key agreement, key derivation and share encryption for secure aggregation.

Bonawitz et al. 2017 (§4, Fig. 4) give each client two Diffie-Hellman key
pairs per round: ``c`` to agree the keys that encrypt Shamir shares sent
through the server, and ``s`` to agree the pairwise mask seeds ``s_{u,v}``.
We use X25519 (RFC 7748) for both and HKDF-SHA256 (RFC 5869) to turn the raw
shared secret into keys:

* salt: the round's 32-byte ``session_id``, so no derived key is ever reused
  across rounds even if a key pair were;
* info: a purpose label and the two participants' indices, so the mask seed,
  and the share key of each direction ``u -> v`` and ``v -> u``, are
  independent.  The mask seed uses the indices in ascending order, because
  both ends must derive the same seed.

Shares travel sealed with ChaCha20-Poly1305 (RFC 8439) under a fresh 12-byte
random nonce; the associated data binds the session and both indices, so the
server can neither replay a ciphertext into another round nor redirect it to
another recipient.  A failed authentication is a
:class:`~libs.secagg.errors.ProtocolViolation`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from libs.errors import ValidationFailed
from libs.secagg.errors import ProtocolViolation

KEY_BYTES = 32
NONCE_BYTES = 12
_LABEL_MASK = b"nsfl/secagg/v1/pairwise-mask"
_LABEL_SHARES = b"nsfl/secagg/v1/share-encryption"

RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair; ``private`` is raw 32 bytes so it can be secret-shared."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls, random_bytes: RandomBytes = os.urandom) -> KeyPair:
        return cls.from_private(random_bytes(KEY_BYTES))

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        if len(private) != KEY_BYTES:
            raise ValidationFailed(f"an X25519 private key is {KEY_BYTES} bytes")
        key = X25519PrivateKey.from_private_bytes(private)
        return cls(private=private, public=key.public_key().public_bytes_raw())

    def __repr__(self) -> str:  # never print the private half
        return f"KeyPair(public={self.public.hex()[:16]}...)"


def _shared_secret(private: bytes, peer_public: bytes) -> bytes:
    if len(peer_public) != KEY_BYTES:
        raise ValidationFailed(f"an X25519 public key is {KEY_BYTES} bytes")
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer_public)
        )
    except ValueError as exc:  # a low-order point gives the all-zero secret
        raise ProtocolViolation("a peer's public key is degenerate") from exc


def _hkdf(secret: bytes, session_id: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=session_id, info=info).derive(secret)


def pairwise_mask_seed(
    masking_private: bytes, peer_public: bytes, session_id: bytes, a: int, b: int
) -> bytes:
    """``s_{a,b}``: the PRG seed both ``a`` and ``b`` derive for their pairwise mask."""
    low, high = sorted((a, b))
    info = _LABEL_MASK + struct.pack(">II", low, high)
    return _hkdf(_shared_secret(masking_private, peer_public), session_id, info)


def share_encryption_key(
    encryption_private: bytes, peer_public: bytes, session_id: bytes, sender: int, recipient: int
) -> bytes:
    """The key that seals the shares ``sender`` sends to ``recipient`` (one direction)."""
    info = _LABEL_SHARES + struct.pack(">II", sender, recipient)
    return _hkdf(_shared_secret(encryption_private, peer_public), session_id, info)


def share_associated_data(session_id: bytes, sender: int, recipient: int) -> bytes:
    return _LABEL_SHARES + session_id + struct.pack(">II", sender, recipient)


def seal(
    key: bytes, plaintext: bytes, associated_data: bytes, random_bytes: RandomBytes = os.urandom
) -> bytes:
    """``nonce || ChaCha20-Poly1305(plaintext)``."""
    nonce = random_bytes(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated_data)


def open_sealed(key: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    """The plaintext of :func:`seal`, or :class:`ProtocolViolation` if it was tampered with."""
    if len(sealed) < NONCE_BYTES + 16:
        raise ProtocolViolation("a sealed share message is truncated")
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
    except InvalidTag as exc:
        raise ProtocolViolation("a sealed share message failed authentication") from exc
