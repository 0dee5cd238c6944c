"""Differential privacy: clipping, Gaussian noise and an RDP accountant.

Clients clip their update to an L2 norm ``C`` (:mod:`~libs.privacy.clipping`);
Gaussian noise ``σ C`` is added centrally, split across clients under secure
aggregation, or locally (:mod:`~libs.privacy.noise`); and
:class:`~libs.privacy.accountant.PrivacyAccountant` reports the (ε, δ) spent
(RDP of the sampled Gaussian mechanism, :mod:`~libs.privacy.rdp`); a local-DP
upload is accounted with :mod:`~libs.privacy.local`.
"""

from libs.privacy.accountant import PrivacyAccountant
from libs.privacy.clipping import ClipResult, WeightMap, clip_by_l2_norm, l2_norm
from libs.privacy.noise import (
    DistributedNoise,
    LocalPrivatization,
    add_central_noise,
    gaussian_noise_like,
    privatize_locally,
)
from libs.privacy.rdp import DEFAULT_ORDERS, compute_rdp, epsilon_from_rdp

__all__ = [
    "DEFAULT_ORDERS",
    "ClipResult",
    "DistributedNoise",
    "LocalPrivatization",
    "PrivacyAccountant",
    "WeightMap",
    "add_central_noise",
    "clip_by_l2_norm",
    "compute_rdp",
    "epsilon_from_rdp",
    "gaussian_noise_like",
    "l2_norm",
    "privatize_locally",
]
