"""t-of-n Shamir secret sharing of 32-byte secrets, with a reconstruction check.

Bonawitz et al. 2017 (§4, round ShareKeys) split each client's self-mask seed
``b_u`` and masking private key ``s_u^SK`` with Shamir's scheme (Shamir 1979,
"How to share a secret") so that any ``t`` surviving clients can hand the
server what it needs to remove the masks of the dropped, and no ``t - 1`` of
them can.

Field: the Mersenne prime ``p = 2^521 - 1``.  A 32-byte secret is shared as
the integer ``secret || tag`` (48 bytes, below ``2^384``), where ``tag`` is
the first 16 bytes of ``SHA-256("nsfl/shamir/v1" || secret)``.  Interpolating
fewer than ``t`` shares yields a value that is, for the holder of those shares,
uniform in the field: it is at least ``2^384`` (probability ``1 - 2^-137``)
or carries a wrong tag (probability ``1 - 2^-128``), and :func:`combine_shares`
raises instead of returning garbage.  The tag is a checksum, not a MAC over
the share holders: it detects a wrong reconstruction, not which share was bad.

Shares carry their x-coordinate (the holder's 1-based index in the round), and
the y-coordinate as 66 big-endian bytes.  Coefficients come from a passed
``random_bytes`` callable (``os.urandom`` in production).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from libs.errors import ValidationFailed

PRIME = (1 << 521) - 1
SECRET_BYTES = 32
TAG_BYTES = 16
SHARE_BYTES = 66  # ceil(521 / 8)
_TAG_LABEL = b"nsfl/shamir/v1"
_PAYLOAD_BITS = 8 * (SECRET_BYTES + TAG_BYTES)

RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class Share:
    """One holder's share: ``x`` is the holder's index (1..n), ``y`` 66 bytes."""

    x: int
    y: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.x < PRIME:
            raise ValidationFailed(f"share index must be positive, got {self.x}")
        if len(self.y) != SHARE_BYTES or int.from_bytes(self.y, "big") >= PRIME:
            raise ValidationFailed("a share value must be 66 bytes below the field prime")

    @property
    def value(self) -> int:
        return int.from_bytes(self.y, "big")


def _tag(secret: bytes) -> bytes:
    return hashlib.sha256(_TAG_LABEL + secret).digest()[:TAG_BYTES]


def _random_field_element(random_bytes: RandomBytes) -> int:
    while True:  # rejection sampling: uniform in [0, p); retries with probability 2^-521
        candidate = int.from_bytes(random_bytes(SHARE_BYTES), "big") & PRIME
        if candidate < PRIME:
            return candidate


def split_secret(
    secret: bytes,
    threshold: int,
    holders: Sequence[int],
    random_bytes: RandomBytes = os.urandom,
) -> dict[int, Share]:
    """Shares of ``secret`` for each holder index; any ``threshold`` of them rebuild it."""
    if len(secret) != SECRET_BYTES:
        raise ValidationFailed(f"a shared secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if len(set(holders)) != len(holders):
        raise ValidationFailed("share holders must be distinct")
    if not 1 <= threshold <= len(holders):
        raise ValidationFailed(f"threshold must be 1..{len(holders)}, got {threshold}")
    if any(not 1 <= x < PRIME for x in holders):
        raise ValidationFailed("share holder indices must be positive")
    coefficients = [int.from_bytes(secret + _tag(secret), "big")]
    coefficients += [_random_field_element(random_bytes) for _ in range(threshold - 1)]
    shares: dict[int, Share] = {}
    for x in holders:
        y = 0
        for coefficient in reversed(coefficients):  # Horner
            y = (y * x + coefficient) % PRIME
        shares[x] = Share(x, y.to_bytes(SHARE_BYTES, "big"))
    return shares


def lagrange_coefficients_at_zero(xs: Sequence[int]) -> list[int]:
    """``λ_i`` with ``f(0) = Σ λ_i f(x_i)`` for any polynomial of degree < len(xs).

    Computed once per set of holders and reused for every secret they share,
    which turns the server's unmasking from O(secrets · t²) into O(t² + secrets · t).
    """
    if len(set(xs)) != len(xs):
        raise ValidationFailed("share indices must be distinct")
    coefficients = []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        coefficients.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return coefficients


def combine_with_coefficients(values: Sequence[int], coefficients: Sequence[int]) -> bytes:
    """Rebuild a secret from share values and matching Lagrange coefficients."""
    if len(values) != len(coefficients):
        raise ValidationFailed("one Lagrange coefficient per share is needed")
    payload = sum(v * c for v, c in zip(values, coefficients, strict=True)) % PRIME
    if payload >> _PAYLOAD_BITS:
        raise ValidationFailed("the shares do not reconstruct a valid secret (too few or corrupt shares)")
    raw = payload.to_bytes(SECRET_BYTES + TAG_BYTES, "big")
    secret, tag = raw[:SECRET_BYTES], raw[SECRET_BYTES:]
    if not hmac.compare_digest(tag, _tag(secret)):
        raise ValidationFailed("the shares do not reconstruct a valid secret (too few or corrupt shares)")
    return secret


def combine_shares(shares: Sequence[Share], threshold: int) -> bytes:
    """The secret behind ``shares`` (all of them are interpolated).

    Fewer than ``threshold`` shares is refused outright; a caller that
    understates ``threshold`` gets :class:`ValidationFailed` from the tag check.
    """
    if len(shares) < threshold:
        raise ValidationFailed(f"need at least {threshold} shares to reconstruct, got {len(shares)}")
    coefficients = lagrange_coefficients_at_zero([share.x for share in shares])
    return combine_with_coefficients([share.value for share in shares], coefficients)
