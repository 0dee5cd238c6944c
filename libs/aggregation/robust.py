"""Byzantine-robust aggregation rules, and norm-based screening of updates.

These rules need every update of the round at once (they sort, rank or
compare updates), so they trade the streaming accumulator's memory bound for
robustness: the coordinator holds all n updates.  Each takes the updates as a
list of weight maps and returns an aggregate delta (or, for Krum selection,
indices); the server optimiser then applies it.

Rules and their assumptions:

* Coordinate-wise median (Yin et al. 2018, "Byzantine-Robust Distributed
  Learning: Towards Optimal Statistical Rates", ICML, Definition 1): per
  coordinate, the median of the n values.  With f Byzantine updates and
  f < n/2, every coordinate of the result lies within the honest updates'
  range for that coordinate.
* Coordinate-wise trimmed mean (same paper, Definition 2): per coordinate,
  drop the k = floor(beta * n) largest and k smallest values, average the
  rest.  Tolerates f <= k Byzantine updates the same way; requires
  0 <= beta < 1/2, and refuses a round where beta > 0 but k = 0 (it would
  silently be a plain mean).
* Krum and Multi-Krum (Blanchard et al. 2017, "Machine Learning with
  Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS, §4): the score
  of update i is the sum of squared L2 distances to its n - f - 2 nearest
  other updates; Krum returns the update with the lowest score, Multi-Krum
  the mean of the m lowest-scored (m = n - f unless given).  Requires
  n > 2f + 2.  Ties go to the lowest index.
* Norm screening: :func:`clip_updates` scales each update to at most a
  maximum L2 norm; :func:`reject_by_norm` drops updates whose norm exceeds a
  factor times the median norm.

The statistical guarantees behind these rules assume honest updates are
i.i.d. draws around the true gradient (bounded variance); with strongly
non-IID clients, honest but unusual updates can be discarded or outvoted,
which costs accuracy.  Client-reported sample counts are ignored on purpose:
a Byzantine client could claim any weight.

Numerics: statistics are computed per tensor over a stacked copy (n x tensor)
in the tensor's dtype; means and distances accumulate in float64 and results
return in the input dtype.  Inputs must share one layout and be finite
(:class:`~libs.errors.InvalidWeights` otherwise); parameters outside their
rules are :class:`~libs.errors.ValidationFailed`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np

from libs.aggregation.types import WeightMap
from libs.aggregation.validation import check_updates
from libs.errors import InvalidWeights, ValidationFailed

Updates = Sequence[Mapping[str, np.ndarray]]


def _stack(updates: Updates, name: str) -> np.ndarray:
    """The n values of tensor ``name``, as a fresh (n, ...) array we may reorder in place."""
    return np.stack([update[name] for update in updates])


def coordinate_median(updates: Updates) -> WeightMap:
    """The coordinate-wise median of ``updates`` (the mean of the two middle values when n is even)."""
    layout = check_updates(updates)
    n = len(updates)
    result: WeightMap = {}
    for name, spec in layout.items():
        stack = _stack(updates, name)
        middle = n // 2
        if n % 2:
            stack.partition(middle, axis=0)
            result[name] = stack[middle].copy()
        else:
            stack.partition((middle - 1, middle), axis=0)
            pair = stack[middle - 1].astype(np.float64) + stack[middle]
            result[name] = (pair / 2).astype(spec.dtype)
    return result


def trimmed_count(clients: int, trim_fraction: float) -> int:
    """k = floor(beta * n): how many values :func:`trimmed_mean` drops at each end."""
    if isinstance(trim_fraction, bool) or not isinstance(trim_fraction, Real) or not 0 <= trim_fraction < 0.5:
        raise ValidationFailed(f"trimmed mean: trim fraction must be in [0, 0.5), got {trim_fraction!r}")
    trimmed = math.floor(trim_fraction * clients)
    if trim_fraction > 0 and trimmed == 0:
        needed = math.ceil(1 / trim_fraction)
        raise ValidationFailed(
            f"trimmed mean: trim fraction {trim_fraction} trims nothing with {clients} client(s); "
            f"it needs at least {needed} to trim one from each end",
            details={"clients": clients, "needed": needed},
        )
    return trimmed


def trimmed_mean(updates: Updates, trim_fraction: float) -> WeightMap:
    """Per coordinate, the mean after dropping the ``floor(trim_fraction * n)`` largest and smallest values."""
    layout = check_updates(updates)
    n = len(updates)
    k = trimmed_count(n, trim_fraction)
    result: WeightMap = {}
    for name, spec in layout.items():
        stack = _stack(updates, name)
        stack.sort(axis=0)
        result[name] = stack[k : n - k].mean(axis=0, dtype=np.float64).astype(spec.dtype)
    return result


def _check_byzantine(clients: int, byzantine: int) -> None:
    if isinstance(byzantine, bool) or not isinstance(byzantine, int | np.integer) or byzantine < 0:
        raise ValidationFailed(
            f"krum: the Byzantine bound f must be a non-negative integer, got {byzantine!r}"
        )
    if clients <= 2 * byzantine + 2:
        raise ValidationFailed(
            f"krum needs n > 2f + 2 updates: with f = {byzantine} at least {2 * byzantine + 3}, got {clients}",
            details={"clients": clients, "needed": 2 * byzantine + 3},
        )


def pairwise_squared_distances(updates: Updates) -> np.ndarray:
    """The (n, n) matrix of squared L2 distances between whole updates, in float64.

    Uses ``|a - b|^2 = |a|^2 + |b|^2 - 2 a.b`` on a Gram matrix (one BLAS call
    per tensor).  Each tensor is first centred on its coordinate-wise median
    across updates, which leaves distances unchanged and keeps the
    cancellation error at the scale of the honest updates: centring on the
    mean instead would let one huge Byzantine update inflate the rounding
    error of every honest-to-honest distance.
    """
    layout = check_updates(updates)
    n = len(updates)
    gram = np.zeros((n, n), dtype=np.float64)
    for name in layout:
        rows = np.stack([update[name].reshape(-1) for update in updates]).astype(np.float64)
        rows -= np.median(rows, axis=0)
        gram += rows @ rows.T
    squared = np.diag(gram)
    distances = squared[:, None] + squared[None, :] - 2 * gram
    np.maximum(distances, 0.0, out=distances)
    np.fill_diagonal(distances, 0.0)
    return distances


def krum_scores(updates: Updates, byzantine: int) -> np.ndarray:
    """Each update's Krum score: the sum of squared distances to its n - f - 2 nearest others."""
    _check_byzantine(len(updates), byzantine)
    distances = pairwise_squared_distances(updates)
    n = len(updates)
    neighbours = n - byzantine - 2
    scores = np.empty(n, dtype=np.float64)
    for i in range(n):
        others = np.delete(distances[i], i)
        scores[i] = np.sort(others)[:neighbours].sum()
    return scores


def krum_select(updates: Updates, byzantine: int) -> int:
    """The index Krum selects: the lowest score (the lowest index on ties)."""
    return int(np.argmin(krum_scores(updates, byzantine)))


def multi_krum_select(updates: Updates, byzantine: int, selected: int | None = None) -> list[int]:
    """The indices of the ``selected`` lowest Krum scores (default n - f), best first."""
    n = len(updates)
    scores = krum_scores(updates, byzantine)
    m = n - byzantine if selected is None else selected
    if isinstance(m, bool) or not isinstance(m, int | np.integer) or not 1 <= m <= n:
        raise ValidationFailed(f"multi-krum: the number selected must be in [1, {n}], got {selected!r}")
    return [int(index) for index in np.argsort(scores, kind="stable")[:m]]


def krum(updates: Updates, byzantine: int) -> WeightMap:
    """The update Krum selects (a copy)."""
    chosen = updates[krum_select(updates, byzantine)]
    return {name: array.copy() for name, array in chosen.items()}


def multi_krum(updates: Updates, byzantine: int, selected: int | None = None) -> WeightMap:
    """The unweighted mean of the updates Multi-Krum selects."""
    indices = multi_krum_select(updates, byzantine, selected)
    return _mean([updates[index] for index in indices])


def _mean(updates: Updates) -> WeightMap:
    return {
        name: np.mean(_stack(updates, name), axis=0, dtype=np.float64).astype(array.dtype)
        for name, array in updates[0].items()
    }


def update_norm(update: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of a whole update (all tensors as one vector), in float64."""
    total = 0.0
    for array in update.values():
        flat = array.reshape(-1).astype(np.float64)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def _check_positive(label: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not (math.isfinite(value) and value > 0):
        raise ValidationFailed(f"{label} must be a positive finite number, got {value!r}")
    return float(value)


def clip_update(update: Mapping[str, np.ndarray], max_norm: float) -> WeightMap:
    """``update * min(1, max_norm / ||update||)``: new arrays if scaled, the same arrays if not.

    After rounding to the update's dtype the norm may exceed ``max_norm`` by a
    few units in the last place.
    """
    limit = _check_positive("max_norm", max_norm)
    norm = update_norm(update)
    if not math.isfinite(norm):
        raise InvalidWeights("cannot clip an update with NaN or infinite values")
    if norm <= limit:
        return dict(update)
    scale = limit / norm
    return {name: (array.astype(np.float64) * scale).astype(array.dtype) for name, array in update.items()}


def clip_updates(updates: Updates, max_norm: float) -> list[WeightMap]:
    """:func:`clip_update` applied to each update."""
    check_updates(updates)
    return [clip_update(update, max_norm) for update in updates]


@dataclass(frozen=True)
class RejectedUpdate:
    """One update :func:`reject_by_norm` dropped, and why."""

    index: int
    norm: float
    reason: str


@dataclass(frozen=True)
class NormScreening:
    """The outcome of :func:`reject_by_norm`: indices kept, updates rejected, and the threshold used."""

    kept: tuple[int, ...]
    rejected: tuple[RejectedUpdate, ...]
    median_norm: float | None
    threshold: float | None


def reject_by_norm(updates: Updates, factor: float) -> NormScreening:
    """Reject updates whose L2 norm exceeds ``factor`` times the median norm.

    A scaled-up (boosted) malicious update stands out by its norm; so does a
    diverged client.  The median of the norms is itself robust while fewer
    than half of the updates are outliers.  Updates with NaN or infinite
    values are rejected outright and left out of the median.  ``factor`` must
    be at least 1 (below 1 the typical update itself would be rejected).  If
    the median norm is 0, every non-zero update is rejected.
    """
    if (
        isinstance(factor, bool)
        or not isinstance(factor, Real)
        or not (math.isfinite(factor) and factor >= 1)
    ):
        raise ValidationFailed(f"reject_by_norm: factor must be a finite number >= 1, got {factor!r}")
    if isinstance(updates, Mapping) or not isinstance(updates, Sequence) or not updates:
        raise InvalidWeights("reject_by_norm needs a non-empty sequence of updates")
    norms = [update_norm(update) for update in updates]
    finite = [norm for norm in norms if math.isfinite(norm)]
    median = float(np.median(finite)) if finite else None
    threshold = None if median is None else factor * median
    kept: list[int] = []
    rejected: list[RejectedUpdate] = []
    for index, norm in enumerate(norms):
        if not math.isfinite(norm):
            rejected.append(RejectedUpdate(index, norm, "the update has NaN or infinite values"))
        elif threshold is not None and norm > threshold:
            reason = f"norm {norm:.6g} exceeds {factor:g} x the median norm {median:.6g}"
            rejected.append(RejectedUpdate(index, norm, reason))
        else:
            kept.append(index)
    return NormScreening(tuple(kept), tuple(rejected), median, threshold)
