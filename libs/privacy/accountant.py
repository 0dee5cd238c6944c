"""Privacy spent by repeated rounds of the sampled Gaussian mechanism.

A :class:`PrivacyAccountant` tracks one job's DP budget: each aggregation
round (or DP-SGD step) in which a fraction ``q`` of clients (or examples) is
sampled and the clipped sum gets Gaussian noise of multiplier ``σ`` is one
``step``.  The RDP of one step is computed once (:mod:`libs.privacy.rdp`:
Mironov 2017; Mironov, Talwar, Zhang 2019) and composes linearly, so
``epsilon()`` after any number of steps is one conversion (Balle et al. 2020,
Thm. 21, as in dp-accounting) over the standard orders.

The state is a small JSON-ready dict so the coordinator can checkpoint it with
the model and report "privacy spent" in the job status.  Loading a state
recorded for different ``σ``, ``q``, ``δ`` or orders is refused: it would
silently mis-account.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from libs.errors import ValidationFailed
from libs.privacy.rdp import DEFAULT_ORDERS, epsilon_from_rdp, rdp_of_sampled_gaussian

_STATE_VERSION = 1
_MAX_STEPS = 1 << 62


class PrivacyAccountant:
    """RDP accountant for ``steps`` of the sampled Gaussian mechanism with fixed ``σ``, ``q``, ``δ``."""

    def __init__(
        self,
        noise_multiplier: float,
        sampling_rate: float,
        delta: float,
        *,
        orders: Sequence[float] = DEFAULT_ORDERS,
    ) -> None:
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise ValidationFailed(f"noise multiplier must be a positive number, got {noise_multiplier}")
        if not 0.0 < sampling_rate <= 1.0:
            raise ValidationFailed(f"sampling rate must be within (0, 1], got {sampling_rate}")
        if not 0.0 < delta < 1.0:
            raise ValidationFailed(f"delta must be within (0, 1), got {delta}")
        if not orders or any(not order > 1.0 for order in orders):
            raise ValidationFailed("RDP orders must be a non-empty list of numbers above 1")
        self.noise_multiplier = float(noise_multiplier)
        self.sampling_rate = float(sampling_rate)
        self.delta = float(delta)
        self.orders = tuple(float(order) for order in orders)
        self.steps = 0
        self._rdp_per_step = [
            rdp_of_sampled_gaussian(self.sampling_rate, self.noise_multiplier, order) for order in self.orders
        ]

    def step(self, n: int = 1) -> None:
        """Account for ``n`` more steps."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValidationFailed(f"the number of steps must be a non-negative integer, got {n!r}")
        self.steps += n

    def epsilon_after(self, steps: int) -> float:
        """ε at this accountant's ``δ`` after ``steps`` steps in total."""
        return epsilon_from_rdp(self.orders, [steps * r for r in self._rdp_per_step], self.delta)[0]

    def epsilon(self) -> float:
        """ε spent so far at this accountant's ``δ``."""
        return self.epsilon_after(self.steps)

    def best_order(self) -> float:
        """The RDP order that gives :meth:`epsilon` (near the ends of the list: widen the orders)."""
        return epsilon_from_rdp(self.orders, [self.steps * r for r in self._rdp_per_step], self.delta)[1]

    def steps_until(self, target_epsilon: float) -> int:
        """How many more steps keep ε at or below ``target_epsilon`` (0 if already over)."""
        if not target_epsilon >= 0:
            raise ValidationFailed(f"target epsilon must be non-negative, got {target_epsilon}")
        if self.epsilon() > target_epsilon:
            return 0
        low, high = 0, 1  # invariant: ε(steps + low) <= target
        while self.epsilon_after(self.steps + high) <= target_epsilon:
            low, high = high, high * 2
            if high > _MAX_STEPS:
                return _MAX_STEPS
        while high - low > 1:
            middle = (low + high) // 2
            if self.epsilon_after(self.steps + middle) <= target_epsilon:
                low = middle
            else:
                high = middle
        return low

    def state(self) -> dict[str, Any]:
        """A JSON-ready record of the accountant (for checkpoints and job status)."""
        return {
            "version": _STATE_VERSION,
            "noise_multiplier": self.noise_multiplier,
            "sampling_rate": self.sampling_rate,
            "delta": self.delta,
            "orders": list(self.orders),
            "steps": self.steps,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state`; refuses a record of a different mechanism."""
        if state.get("version") != _STATE_VERSION:
            raise ValidationFailed(f"unsupported accountant state version {state.get('version')!r}")
        mine = self.state()
        for key in ("noise_multiplier", "sampling_rate", "delta", "orders"):
            if state.get(key) != mine[key]:
                raise ValidationFailed(f"the accountant state was recorded with a different {key}")
        steps = state.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValidationFailed("the accountant state holds an invalid step count")
        self.steps = steps

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PrivacyAccountant:
        """A new accountant resumed from :meth:`state`."""
        try:
            accountant = cls(
                state["noise_multiplier"], state["sampling_rate"], state["delta"], orders=state["orders"]
            )
        except (KeyError, TypeError) as exc:
            raise ValidationFailed("the accountant state is incomplete") from exc
        accountant.load_state(state)
        return accountant
