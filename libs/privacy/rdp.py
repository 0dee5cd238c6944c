"""Rényi DP of the (Poisson-subsampled) Gaussian mechanism, and its conversion to (ε, δ).

* Mironov 2017, "Rényi Differential Privacy", Prop. 7: without subsampling the
  Gaussian mechanism with noise multiplier ``σ`` is ``(α, α / (2σ²))``-RDP.
* Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled
  Gaussian Mechanism", §3: with sampling rate ``q`` the RDP at order ``α`` is
  ``log(A_α) / (α - 1)``.  For integer ``α`` (§3.3, Eq. 3)

      A_α = Σ_{i=0..α} C(α, i) (1-q)^(α-i) q^i exp((i² - i) / (2σ²)),

  computed exactly in log space; for fractional ``α`` (§3.3, Eq. 4) as two
  series of ``erfc`` terms summed until the terms fall below ``e^-30``.
  These are the same formulas as tensorflow-privacy, dp-accounting's
  ``RdpAccountant`` and opacus' ``RDPAccountant``.
* RDP composes additively over steps.
* Conversion to (ε, δ): Balle et al. 2020, "Hypothesis Testing
  Interpretations and Rényi Differential Privacy", Thm. 21 (also Canonne,
  Kamath, Steinke 2020, Prop. 12):

      ε = min_α  rdp(α) + log((α - 1) / α) - (log δ + log α) / (α - 1),

  exactly as dp-accounting's ``compute_epsilon`` does it (orders with
  ``α <= 1.01`` are skipped, an RDP below ``-log(1 - δ²)`` gives ``ε = 0``,
  and ε is at least 0); opacus' ``get_privacy_spent`` uses the same bound.

Only the standard library's ``math`` is used (``lgamma`` for binomial
coefficients of fractional order, and an asymptotic ``log erfc`` where
``erfc`` underflows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from libs.errors import ValidationFailed

DEFAULT_ORDERS: tuple[float, ...] = (
    (1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5)
    + tuple(float(order) for order in range(5, 64))
    + (128.0, 256.0, 512.0)
)
_SERIES_CUTOFF = -30.0


def _log_add(a: float, b: float) -> float:
    low, high = min(a, b), max(a, b)
    if low == -math.inf:
        return high
    return math.log1p(math.exp(low - high)) + high


def _log_sub(a: float, b: float) -> float:
    """``log(e^a - e^b)`` for ``a >= b``."""
    if b == -math.inf:
        return a
    if a == b:
        return -math.inf
    if a < b:
        raise ValidationFailed("RDP series went negative; the parameters are out of range")
    try:
        return math.log(math.expm1(a - b)) + b
    except OverflowError:
        return a


def _log_erfc(x: float) -> float:
    """``log(erfc(x))``, accurate where ``erfc`` itself underflows (x > ~26)."""
    if x < 25.0:
        value = math.erfc(x)
        return math.log(value) if value > 0 else -math.inf
    inv = 1.0 / (2.0 * x * x)  # asymptotic series: erfc(x) ~ e^{-x²}/(x√π) (1 - 1/(2x²) + 3/(4x⁴) - ...)
    series = 1.0 - inv + 3.0 * inv**2 - 15.0 * inv**3 + 105.0 * inv**4
    return -x * x - math.log(x) - 0.5 * math.log(math.pi) + math.log(series)


def _log_a_integer(q: float, sigma: float, alpha: int) -> float:
    log_a = -math.inf
    for i in range(alpha + 1):
        log_coefficient = math.log(math.comb(alpha, i)) + i * math.log(q) + (alpha - i) * math.log1p(-q)
        log_a = _log_add(log_a, log_coefficient + (i * i - i) / (2.0 * sigma**2))
    return log_a


def _log_a_fractional(q: float, sigma: float, alpha: float) -> float:
    log_a0, log_a1 = -math.inf, -math.inf
    z0 = sigma**2 * math.log(1.0 / q - 1.0) + 0.5
    coefficient_sign, log_coefficient = 1, 0.0  # C(alpha, 0) = 1, updated by the recurrence below
    i = 0
    while True:
        j = alpha - i
        log_t0 = log_coefficient + i * math.log(q) + j * math.log1p(-q)
        log_t1 = log_coefficient + j * math.log(q) + i * math.log1p(-q)
        log_e0 = math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2.0) * sigma))
        log_e1 = math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2.0) * sigma))
        log_s0 = log_t0 + (i * i - i) / (2.0 * sigma**2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2.0 * sigma**2) + log_e1
        if coefficient_sign > 0:
            log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, log_s0), _log_sub(log_a1, log_s1)
        if max(log_s0, log_s1) < _SERIES_CUTOFF:
            return _log_add(log_a0, log_a1)
        # C(alpha, i + 1) = C(alpha, i) * (alpha - i) / (i + 1); alpha is not an integer, so never zero
        ratio = (alpha - i) / (i + 1)
        coefficient_sign *= 1 if ratio > 0 else -1
        log_coefficient += math.log(abs(ratio))
        i += 1


def rdp_of_sampled_gaussian(sampling_rate: float, noise_multiplier: float, order: float) -> float:
    """The RDP at ``order`` of one step of the sampled Gaussian mechanism."""
    q, sigma = sampling_rate, noise_multiplier
    if not 0.0 <= q <= 1.0:
        raise ValidationFailed(f"sampling rate must be within [0, 1], got {q}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValidationFailed(f"noise multiplier must be a positive number, got {sigma}")
    if not order > 1.0:
        raise ValidationFailed(f"RDP orders must be above 1, got {order}")
    if q == 0.0:
        return 0.0
    if q == 1.0:
        return order / (2.0 * sigma**2)
    if math.isinf(order):
        return math.inf
    if float(order).is_integer():
        log_a = _log_a_integer(q, sigma, int(order))
    else:
        log_a = _log_a_fractional(q, sigma, order)
    return log_a / (order - 1.0)


def compute_rdp(
    sampling_rate: float, noise_multiplier: float, steps: int, orders: Sequence[float] = DEFAULT_ORDERS
) -> list[float]:
    """RDP at each order after ``steps`` compositions of the sampled Gaussian mechanism."""
    return [steps * rdp_of_sampled_gaussian(sampling_rate, noise_multiplier, order) for order in orders]


def epsilon_from_rdp(orders: Sequence[float], rdp: Sequence[float], delta: float) -> tuple[float, float]:
    """``(ε, best order)`` for ``δ`` by Balle et al. 2020, Thm. 21 (dp-accounting's conversion)."""
    if len(orders) != len(rdp) or not orders:
        raise ValidationFailed("one RDP value per order is needed")
    if not 0.0 < delta < 1.0:
        raise ValidationFailed(f"delta must be within (0, 1), got {delta}")
    best_epsilon, best_order = math.inf, math.nan
    for order, value in zip(orders, rdp, strict=True):
        if value < 0:
            raise ValidationFailed("RDP values must be non-negative")
        if delta**2 + math.expm1(-value) > 0:  # the KL bound alone gives ε = 0 (dp-accounting)
            epsilon = 0.0
        elif order > 1.01:
            epsilon = value + math.log1p(-1.0 / order) - math.log(delta * order) / (order - 1.0)
        else:
            epsilon = math.inf
        if epsilon < best_epsilon:
            best_epsilon, best_order = epsilon, order
    return max(0.0, best_epsilon), best_order
