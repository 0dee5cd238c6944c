"""Secure aggregation's settings and encoding: what a job asks for, and how updates fit the ring.

Pure, no I/O: the job spec's ``privacy.secureAggregation`` (and ``privacy.dp``)
read once from its :class:`~libs.jobspec.JobSpec` (:class:`SecureAggregationConfig`), the threshold for the clients
that joined, which tensors are masked (the floating-point ones, in the
canonical layout) and how the unmasked sum becomes the round's mean delta.
Why the clip range and the weight cap: a fixed-point sum of ``n`` clients
must stay inside the ``bits``-bit ring (see :mod:`coordinator.secure_rounds`,
which runs the protocol's stages over gRPC).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from coordinator.model_state import WeightMap
from libs.errors import UpdateRejected
from libs.jobspec import JobSpec
from libs.secagg import AggregateResult, Mode, ParameterLayout, RoundSetup

DEFAULT_CLIP_RANGE = 4.0  # per element of a delta; a larger delta element is clipped (the client logs how many)
DP_NOISE_HEADROOM = 8.0  # noise standard deviations kept inside the clip range
STAGE_SHARE = 0.08  # of the round timeout, per stage, within [2 s, 60 s]


def weight_cap(bits: int) -> float:
    """The largest sample weight: 2^16 in a 32-bit ring, less in smaller rings (1 at 16 bits)."""
    return float(2 ** min(max(bits - 16, 0), 24))


@dataclass(frozen=True)
class SecureAggregationConfig:
    """``privacy.secureAggregation`` (and ``privacy.dp``) of a job, read once."""

    mode: Mode
    threshold: float  # a fraction (< 1) of the participants, or a count
    bits: int
    stage_seconds: float
    dp_clip_norm: float = 0.0  # 0: no differential privacy
    dp_noise_multiplier: float = 0.0
    dp_local: bool = False

    @property
    def stages(self) -> int:
        return 4 if self.mode is Mode.DOUBLE_MASK else 2

    @property
    def clients_add_noise(self) -> bool:
        """Central DP through secure aggregation: each client adds its share of the noise.

        (Local DP noises the delta in the client's algorithm, before masking, at full strength.)"""
        return bool(self.dp_clip_norm) and not self.dp_local

    def clip_range(self, threshold: int) -> float:
        if not self.dp_clip_norm:
            return DEFAULT_CLIP_RANGE
        contributors = threshold if self.clients_add_noise else 1
        std = self.dp_noise_multiplier * self.dp_clip_norm / math.sqrt(contributors)
        return max(DEFAULT_CLIP_RANGE, self.dp_clip_norm + DP_NOISE_HEADROOM * std)

    def max_weight(self) -> float:
        return 1.0 if self.clients_add_noise else weight_cap(self.bits)


def config_from_spec(spec: JobSpec) -> SecureAggregationConfig | None:
    """The job's secure aggregation settings, or None when it asks for none."""
    secure, dp = spec.privacy.secure_aggregation, spec.privacy.dp
    if secure is None:
        return None
    round_timeout = float(spec.round_timeout_seconds)
    return SecureAggregationConfig(
        mode=Mode(secure.mode), threshold=secure.threshold, bits=secure.bits,
        stage_seconds=min(max(round_timeout * STAGE_SHARE, 2.0), 60.0),
        dp_clip_norm=0.0 if dp is None else dp.clip_norm,
        dp_noise_multiplier=0.0 if dp is None else dp.noise_multiplier,
        dp_local=dp is not None and dp.mode == "local")


def resolve_threshold(threshold: float, participants: int, mode: Mode) -> int:
    """``t`` for ``participants`` clients: a fraction rounds up, and t > n/2 always (see validate_threshold)."""
    if mode is Mode.ONE_MASK:
        return participants
    count = math.ceil(threshold * participants - 1e-9) if threshold < 1 else int(threshold)
    if count > participants:
        raise UpdateRejected(f"threshold {count} exceeds the {participants} clients that joined")
    return max(count, participants // 2 + 1)


def floating_layout(weights: Mapping[str, np.ndarray]) -> ParameterLayout:
    """The masked part of a model: its floating-point tensors, names sorted."""
    return ParameterLayout.of({name: array for name, array in weights.items() if array.dtype.kind == "f"})


def mean_delta(result: AggregateResult, setup: RoundSetup, layout: ParameterLayout,
               reference: Mapping[str, np.ndarray]) -> tuple[WeightMap, float]:
    """The decoded sum as the weighted mean delta (zero for unmasked tensors) and ``Σ w_i``."""
    decoded = result.decode(setup)
    delta = layout.unflatten(decoded.mean())
    for name, array in reference.items():
        delta.setdefault(name, np.zeros_like(array))
    return delta, decoded.total_weight
