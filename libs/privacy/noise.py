"""Gaussian noise for differentially private aggregation.

The Gaussian mechanism (Dwork & Roth 2014, Thm. A.1; analysed in Rényi DP by
Mironov 2017) adds ``N(0, (σ C)^2)`` per coordinate to a sum of updates whose
L2 sensitivity is ``C`` (each clipped to norm ``C``); ``σ`` is the noise
multiplier the accountant (:mod:`libs.privacy.accountant`) is told about.
Three placements are offered:

* central: the server adds ``σ C`` noise to the sum (:func:`add_central_noise`);
* distributed: each of ``m`` clients adds ``N(0, σ² C² / m)`` before secure
  aggregation, so the sum carries ``σ C`` while the server, which sees only
  the sum, never sees un-noised data (:class:`DistributedNoise`; if fewer than
  ``m`` contribute the sum carries less noise, so calibrate ``m`` to the
  fewest contributors the round may close with, e.g. the SecAgg threshold);
* local: each client clips and adds the full ``σ C`` itself
  (:func:`privatize_locally`), which protects it even from the sum.

Random numbers come from a passed ``numpy.random.Generator``.  For DP in
production, seed it from the OS (``np.random.default_rng()``): a predictable
seed voids the guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from libs.errors import ValidationFailed
from libs.privacy.clipping import ClipResult, WeightMap, clip_by_l2_norm


def _check_positive(value: float, what: str, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValidationFailed(f"{what} must be a {'non-negative' if allow_zero else 'positive'} number")


def gaussian_noise_like(update: Mapping[str, np.ndarray], std: float, rng: np.random.Generator) -> WeightMap:
    """``N(0, std²)`` noise with the names, shapes and dtypes of ``update``."""
    _check_positive(std, "noise standard deviation", allow_zero=True)
    return {
        name: rng.normal(0.0, std, size=np.shape(array)).astype(np.asarray(array).dtype)
        for name, array in update.items()
    }


def _add(update: Mapping[str, np.ndarray], noise: WeightMap) -> WeightMap:
    return {
        name: (np.asarray(array) + noise[name]).astype(np.asarray(array).dtype)
        for name, array in update.items()
    }


def add_central_noise(
    total: Mapping[str, np.ndarray], *, noise_multiplier: float, clip_norm: float, rng: np.random.Generator
) -> WeightMap:
    """The sum of clipped updates plus ``N(0, (σ C)²)`` per coordinate."""
    _check_positive(noise_multiplier, "noise multiplier", allow_zero=True)
    _check_positive(clip_norm, "clip norm")
    return _add(total, gaussian_noise_like(total, noise_multiplier * clip_norm, rng))


@dataclass(frozen=True)
class LocalPrivatization:
    """A locally privatised update and the clipping that preceded the noise."""

    update: WeightMap
    norm: float
    clipped: bool


def privatize_locally(
    update: Mapping[str, np.ndarray], *, clip_norm: float, noise_multiplier: float, rng: np.random.Generator
) -> LocalPrivatization:
    """Local DP: clip to ``C``, then add ``N(0, (σ C)²)`` on the client itself."""
    _check_positive(noise_multiplier, "noise multiplier", allow_zero=True)
    clipped: ClipResult = clip_by_l2_norm(update, clip_norm)
    noisy = _add(clipped.update, gaussian_noise_like(clipped.update, noise_multiplier * clip_norm, rng))
    return LocalPrivatization(noisy, clipped.norm, clipped.clipped)


@dataclass(frozen=True)
class DistributedNoise:
    """Each of ``contributors`` clients adds ``N(0, σ² C² / contributors)``; the sum carries ``σ C``."""

    noise_multiplier: float
    clip_norm: float
    contributors: int

    def __post_init__(self) -> None:
        _check_positive(self.noise_multiplier, "noise multiplier", allow_zero=True)
        _check_positive(self.clip_norm, "clip norm")
        if isinstance(self.contributors, bool) or self.contributors < 1:
            raise ValidationFailed("the number of noise contributors must be at least 1")

    @property
    def std(self) -> float:
        """One client's share of the noise: ``σ C / sqrt(m)``."""
        return self.noise_multiplier * self.clip_norm / math.sqrt(self.contributors)

    def sample(self, size: int, rng: np.random.Generator, *, scale: float = 1.0) -> npt.NDArray[np.float64]:
        """One client's noise vector (``scale`` multiplies the std, e.g. by the maximum weight)."""
        return rng.normal(0.0, self.std * scale, size=size)
