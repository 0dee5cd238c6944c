"""Expanding a 32-byte seed into a mask vector over the ring Z_{2^k}.

Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving
Machine Learning", §4) mask each input with ``PRG(seed)``: the self mask
``PRG(b_u)`` and the pairwise masks ``PRG(s_{u,v})``.  Both ends of a pair must
expand the same seed to the same vector, and the vector must be
indistinguishable from uniform over ``Z_{2^k}``.

We use AES-256 in counter mode (``cryptography``; AES-NI on any recent CPU):
the keystream over zero bytes, read as little-endian words of 4 bytes for
``k <= 32`` and 8 bytes otherwise, reduced mod ``2^k``.  Since ``2^k`` divides
``2^32`` (resp. ``2^64``) the reduction keeps the words uniform, and the
definition depends only on ``(seed, k)``, so every party expands the same
vector.  Each seed serves exactly one purpose -- ``b_u`` is drawn fresh per
round, pairwise seeds come from HKDF with a per-round salt and a purpose
label (:mod:`libs.secagg.key_agreement`) -- so the fixed zero IV never
repeats a (key, counter) pair.

Masking is the hot loop of a client (``n - 1`` pairwise masks over the whole
model), so :func:`add_mask` adds the raw keystream words straight into an
accumulator without reducing each mask (reduce once at the end: numpy's
unsigned arithmetic wraps modulo ``2^32``/``2^64``, and ``2^k`` divides both),
and reuses a per-thread keystream buffer instead of allocating one per mask.
With ``k <= 32`` a client can accumulate in uint32 (:func:`working_dtype`),
which halves both the AES work and the memory traffic: a 1M-element mask
then costs about 4 ms on one core.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from libs.errors import ValidationFailed

SEED_BYTES = 32
MIN_RING_BITS = 16
MAX_RING_BITS = 64
_ZERO_IV = bytes(16)

UInt64Array = npt.NDArray[np.uint64]
_scratch = threading.local()
_zeros = b""


def validate_ring_bits(bits: int) -> None:
    """Refuse a ring size outside ``[16, 64]`` bits."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_RING_BITS <= bits <= MAX_RING_BITS:
        raise ValidationFailed(f"ring size must be {MIN_RING_BITS}..{MAX_RING_BITS} bits, got {bits!r}")


def ring_mask(bits: int) -> np.uint64:
    """The bit mask ``2^k - 1`` that reduces a uint64 modulo ``2^k``."""
    validate_ring_bits(bits)
    return np.uint64((1 << bits) - 1)


def working_dtype(bits: int) -> type[np.unsignedinteger]:
    """The narrowest unsigned type whose wrap-around arithmetic is exact mod ``2^k``."""
    validate_ring_bits(bits)
    return np.uint32 if bits <= 32 else np.uint64


def _keystream(seed: bytes, length: int, bits: int) -> np.ndarray:
    """The raw PRG words for ``seed`` in this thread's scratch buffer (valid until the next call)."""
    global _zeros
    if len(seed) != SEED_BYTES:
        raise ValidationFailed(f"a PRG seed must be {SEED_BYTES} bytes, got {len(seed)}")
    if length < 0:
        raise ValidationFailed(f"mask length must be non-negative, got {length}")
    word = np.dtype("<u4") if working_dtype(bits) is np.uint32 else np.dtype("<u8")
    size = word.itemsize * length
    if len(_zeros) < size:
        _zeros = bytes(size)  # immutable, so threads may share it
    buffer: bytearray | None = getattr(_scratch, "buffer", None)
    if buffer is None or len(buffer) < size + 15:
        buffer = bytearray(size + 15)  # update_into wants room for a block of slack
        _scratch.buffer = buffer
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_IV)).encryptor()
    encryptor.update_into(memoryview(_zeros)[:size], buffer)
    return np.frombuffer(buffer, dtype=word, count=length)


def expand_seed(seed: bytes, length: int, bits: int) -> UInt64Array:
    """``PRG(seed)``: ``length`` pseudo-random elements of ``Z_{2^k}`` as uint64.

    Deterministic in ``(seed, bits)``; distinct seeds give independent-looking vectors.
    """
    words = _keystream(seed, length, bits).astype(np.uint64)
    return np.bitwise_and(words, ring_mask(bits), out=words)


def add_mask(accumulator: np.ndarray, seed: bytes, bits: int, *, sign: int = 1) -> None:
    """``accumulator += sign * PRG(seed)`` in place, modulo the accumulator's width (reduce later).

    ``accumulator`` is uint64, or uint32 when ``bits <= 32``.
    """
    if accumulator.dtype.itemsize * 8 < bits:
        raise ValidationFailed(f"a {accumulator.dtype} accumulator cannot hold a {bits}-bit ring")
    words = _keystream(seed, accumulator.shape[0], bits)
    if sign > 0:
        np.add(accumulator, words, out=accumulator, casting="unsafe")
    else:
        np.subtract(accumulator, words, out=accumulator, casting="unsafe")
