"""Clipping a model update to an L2 norm bound.

Differentially private federated averaging (McMahan et al. 2018, "Learning
Differentially Private Recurrent Language Models", Alg. 1; Abadi et al. 2016
for DP-SGD) bounds each client's influence by scaling its whole update --
all tensors together -- to L2 norm at most ``C``:

    Δ' = Δ · min(1, C / ||Δ||_2)

The norm is computed in float64 over every tensor.  After scaling in the
update's own dtype, rounding can leave the norm a hair above ``C``; the
result is rescaled until it is not, so the bound the accountant relies on
holds exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from libs.errors import ValidationFailed

WeightMap = dict[str, np.ndarray]  # defined locally on purpose: libs.privacy does not import libs.weights


@dataclass(frozen=True)
class ClipResult:
    """The clipped update, its norm before clipping, and whether it was scaled."""

    update: WeightMap
    norm: float
    clipped: bool


def l2_norm(update: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of all tensors of ``update`` taken together (float64)."""
    total = 0.0
    for name, array in update.items():
        values = np.asarray(array, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValidationFailed(f"tensor {name!r} holds non-finite values")
        total += float(np.dot(values.reshape(-1), values.reshape(-1)))
    return math.sqrt(total)


def clip_by_l2_norm(update: Mapping[str, np.ndarray], clip_norm: float) -> ClipResult:
    """``update`` scaled to L2 norm at most ``clip_norm`` (dtypes and shapes kept)."""
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValidationFailed(f"clip norm must be a positive number, got {clip_norm}")
    norm = l2_norm(update)
    if norm <= clip_norm:
        return ClipResult({name: np.array(array, copy=True) for name, array in update.items()}, norm, False)
    factor = clip_norm / norm
    for _ in range(8):  # converges in one or two passes; the loop only absorbs dtype rounding
        scaled = {name: _scale(array, factor) for name, array in update.items()}
        if l2_norm(scaled) <= clip_norm:
            return ClipResult(scaled, norm, True)
        factor *= 1.0 - 2.0**-20
    raise ValidationFailed("the update cannot be clipped in its dtype")  # e.g. float16 near its limits


def _scale(array: np.ndarray, factor: float) -> np.ndarray:
    values = np.asarray(array)
    return (values.astype(np.float64) * factor).astype(values.dtype)
