"""Fixed-point encoding of float updates into the ring Z_{2^k}, and back.

Masking (Bonawitz et al. 2017, §3) needs inputs in a finite group, so a float
update is clipped to ``[-clip_range, clip_range]``, scaled, rounded to an
integer and reduced mod ``2^k``.  Negative values are kept in two's
complement: the sum of encodings, read as a signed ``k``-bit integer, is the
integer sum of the values, as long as that sum stays inside
``(-2^(k-1), 2^(k-1))``.  The scale is chosen so it always does for up to
``max_clients`` summands:

    scale = (2^(k-1) - 1 - 2 max_clients)(1 - 2^-48) / (max_clients * max_weight * max(clip_range, 1))

(``2 max_clients`` leaves room for one rounding step per client, and the
factor ``1 - 2^-48`` for float64 rounding, which matters for ``k`` near 64).

Rounding is deterministic (nearest) or stochastic -- ``floor(v) + Bernoulli(v -
floor(v))`` with a passed numpy ``Generator`` -- which is unbiased, so the
quantisation error of a sum averages out instead of accumulating.

FedAvg weighting: the client encodes ``w * clip(x)`` and appends its weight
``w`` as one more element, so the decoded sum gives ``Σ w_i x_i`` and
``Σ w_i`` and the server divides; it never sees any single ``w_i``.  With
``w = 1`` the extra element counts the contributors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from libs.errors import ValidationFailed
from libs.secagg.prg import MAX_RING_BITS, UInt64Array, ring_mask, validate_ring_bits

Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DecodedSum:
    """A decoded aggregate: ``Σ w_i x_i`` and ``Σ w_i``."""

    weighted_sum: Float64Array
    total_weight: float

    def mean(self) -> Float64Array:
        """``Σ w_i x_i / Σ w_i`` (the FedAvg mean)."""
        if not self.total_weight > 0:
            raise ValidationFailed("the aggregate carries no weight; nothing to average")
        return self.weighted_sum / self.total_weight


@dataclass(frozen=True)
class FixedPointCodec:
    """How floats map into ``Z_{2^bits}`` for a sum of at most ``max_clients`` inputs."""

    bits: int
    clip_range: float
    max_clients: int
    max_weight: float = 1.0

    def __post_init__(self) -> None:
        validate_ring_bits(self.bits)
        if not (math.isfinite(self.clip_range) and self.clip_range > 0):
            raise ValidationFailed(f"clip range must be a positive number, got {self.clip_range}")
        if not (math.isfinite(self.max_weight) and self.max_weight > 0):
            raise ValidationFailed(f"max weight must be a positive number, got {self.max_weight}")
        if isinstance(self.max_clients, bool) or self.max_clients < 1:
            raise ValidationFailed(f"max clients must be at least 1, got {self.max_clients}")
        if not self.scale > 0:
            raise ValidationFailed(f"a {self.bits}-bit ring cannot hold a sum of {self.max_clients} inputs")

    @property
    def scale(self) -> float:
        """Integer units per unit of value."""
        headroom = float((1 << (self.bits - 1)) - 1 - 2 * self.max_clients) * (1.0 - 2.0**-48)
        return headroom / (self.max_clients * self.max_weight * max(self.clip_range, 1.0))

    @property
    def value_bound(self) -> float:
        """The largest magnitude of one encoded (weighted) element."""
        return self.clip_range * self.max_weight

    def to_ring(self, values: np.ndarray, rng: np.random.Generator | None = None) -> UInt64Array:
        """Fixed-point ``values`` (already within ``±value_bound``) as ring elements."""
        bound = self.value_bound
        scaled = np.clip(np.asarray(values, dtype=np.float64), -bound, bound) * self.scale
        if rng is None:
            integers = np.rint(scaled)
        else:
            floor = np.floor(scaled)
            integers = floor + (rng.random(scaled.shape) < (scaled - floor))
        signed = integers.astype(np.int64)
        return np.bitwise_and(signed.view(np.uint64), ring_mask(self.bits))

    def from_ring(self, elements: UInt64Array) -> Float64Array:
        """Ring elements read as signed ``bits``-bit integers, in value units."""
        reduced = np.bitwise_and(np.asarray(elements, dtype=np.uint64), ring_mask(self.bits))
        shift = np.uint64(MAX_RING_BITS - self.bits)
        signed = np.left_shift(reduced, shift).view(np.int64) >> shift.astype(np.int64)
        return signed.astype(np.float64) / self.scale

    def encode(
        self,
        values: np.ndarray,
        *,
        weight: float = 1.0,
        rng: np.random.Generator | None = None,
        noise: np.ndarray | None = None,
    ) -> UInt64Array:
        """``[w * clip(x) (+ noise), w]`` in the ring: the vector a client masks.

        ``noise`` (same shape as ``values``) is added after weighting, before
        rounding; it is how a client's share of central DP noise rides along.
        """
        vector = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(vector)):
            raise ValidationFailed("the update holds non-finite values")
        if not (math.isfinite(weight) and 0 <= weight <= self.max_weight):
            raise ValidationFailed(f"weight must be within [0, {self.max_weight}], got {weight}")
        weighted = np.clip(vector, -self.clip_range, self.clip_range) * weight
        if noise is not None:
            if noise.shape != values.shape:
                raise ValidationFailed("noise must have the shape of the update")
            weighted = weighted + np.asarray(noise, dtype=np.float64).reshape(-1)
        encoded = np.empty(vector.shape[0] + 1, dtype=np.uint64)
        encoded[:-1] = self.to_ring(weighted, rng)
        encoded[-1:] = self.to_ring(np.array([weight]))  # the weight is rounded to nearest, never randomly
        return encoded

    def decode(self, total: UInt64Array) -> DecodedSum:
        """Split a summed vector into ``Σ w_i x_i`` and ``Σ w_i``."""
        if total.ndim != 1 or total.shape[0] < 1:
            raise ValidationFailed("a summed vector needs at least the weight element")
        values = self.from_ring(total)
        return DecodedSum(weighted_sum=values[:-1], total_weight=float(values[-1]))
