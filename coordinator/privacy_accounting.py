"""Differential privacy in the coordinator: clipping and noising (central DP), and the budget.

``privacy.dp`` in the job spec selects where the Gaussian noise is added:

* ``mode: central`` (the default): the server clips each client's update to
  L2 norm ``C`` (``clipNorm``) as it arrives, sums the clipped updates, adds
  ``N(0, (σ C)²)`` per coordinate to the *sum* (σ = ``noiseMultiplier``) and
  divides by the number of updates (McMahan et al. 2018, "Learning
  Differentially Private Recurrent Language Models", DP-FedAvg with
  per-client clipping).  Every update weighs the same (a sample count could
  be anything, and weighting by it would change the sensitivity); the
  number of participants is treated as public.  Under secure aggregation the
  clients clip and add their share of the noise themselves
  (``coordinator.secure_rounds``), so the server adds none and only accounts.
* ``mode: local``: each client clips and noises its own update before it
  leaves the machine (``task_executor.privacy``); the server adds nothing.

Accounting.  Each round that releases a noised aggregate is one step of the
Gaussian mechanism, tracked by :class:`~libs.privacy.PrivacyAccountant` (RDP)
and converted to ε at ``targetDelta``.  The sampling rate is taken as
``q = 1``: the RDP bound for ``q < 1`` assumes each client joins each round
independently at random (Poisson sampling), which nsfl's selector does not
promise (it picks a fixed number, by liveness and optionally untrained
first), so no amplification by sampling is claimed; ε is then an upper bound
for any selection.  Under local DP each client is accounted separately, one
step per accepted upload, with the replace-one sensitivity ``2C``
(:mod:`libs.privacy.local`); the job reports the largest ε of any client.

Budget.  With ``targetEpsilon`` the driver asks :meth:`DifferentialPrivacy.stop_reason`
before each round and finishes the job (FINISHED, "target epsilon reached")
when one more round would spend more than the target; a target below the
cost of a single round is refused when the job starts.

Randomness.  The noise generator is seeded from the operating system, never
from the job: anyone who could rebuild the seed could subtract the noise.
Its state is not checkpointed for the same reason (a checkpoint is readable
by the job's owner); a resumed job draws fresh noise, which changes nothing
about the guarantee.  Tests pass their own generator.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from libs.errors import ValidationFailed
from libs.jobspec import JobSpec
from libs.privacy import PrivacyAccountant, clip_by_l2_norm, gaussian_noise_like
from libs.privacy.local import local_accountant
from libs.tasks import LocalDp

WeightMap = dict[str, np.ndarray]

CENTRAL, LOCAL, DISTRIBUTED = "central", "local", "distributed"


@dataclass(frozen=True)
class DpConfig:
    mode: str  # central | local | distributed (central DP whose noise the secure-aggregation clients add)
    clip_norm: float
    noise_multiplier: float
    delta: float
    target_epsilon: float | None

    def local_dp(self) -> LocalDp:
        """What a client needs to privatise its own update (local DP)."""
        return LocalDp(clip_norm=self.clip_norm, noise_multiplier=self.noise_multiplier, target_delta=self.delta)


def dp_config(spec: JobSpec) -> DpConfig | None:
    """The job's DP settings, or None without ``privacy.dp``."""
    dp = spec.privacy.dp
    if dp is None:
        return None
    mode = dp.mode
    if mode == CENTRAL and spec.privacy.secure_aggregation is not None:
        mode = DISTRIBUTED
    return DpConfig(
        mode=mode,
        clip_norm=dp.clip_norm,
        noise_multiplier=dp.noise_multiplier,
        delta=dp.target_delta,
        target_epsilon=dp.target_epsilon,
    )


class DifferentialPrivacy:
    """One job's DP: server-side clipping and noise (central mode) and the ε spent."""

    def __init__(self, config: DpConfig, rng: np.random.Generator | None = None) -> None:
        self.config = config
        self._rng = rng if rng is not None else np.random.default_rng()
        self._noised = config.noise_multiplier > 0
        self._accountant: PrivacyAccountant | None = None
        if self._noised:
            self._accountant = (
                local_accountant(config.noise_multiplier, config.delta)
                if config.mode == LOCAL
                else PrivacyAccountant(config.noise_multiplier, 1.0, config.delta)
            )
        self.steps = 0  # central: noised releases; local: the most uploads of any one client
        self.uploads: dict[str, int] = {}  # local: accepted uploads per client

    @property
    def server_noise(self) -> bool:
        """Whether this coordinator clips and noises updates itself (central DP without secure aggregation)."""
        return self.config.mode == CENTRAL

    # -- central DP ------------------------------------------------------------------------
    def clip(self, update: Mapping[str, np.ndarray]) -> tuple[WeightMap, float]:
        """``update`` scaled to norm at most ``C``, and its norm before."""
        clipped = clip_by_l2_norm(update, self.config.clip_norm)
        return clipped.update, clipped.norm

    def noisy_mean(self, mean: Mapping[str, np.ndarray], count: int) -> WeightMap:
        """``(Σ clipped + N(0, (σC)²)) / n`` from the mean of ``n`` clipped updates; one step spent."""
        if count < 1:
            raise ValidationFailed("no updates to add noise to")
        std = self.config.noise_multiplier * self.config.clip_norm
        noise = gaussian_noise_like(mean, std, self._rng)
        self.steps += 1
        return {
            name: (array.astype(np.float64) + noise[name].astype(np.float64) / count).astype(array.dtype)
            for name, array in mean.items()
        }

    def released(self) -> None:
        """A noised aggregate was released without server noise (secure aggregation): one step."""
        self.steps += 1

    # -- local DP --------------------------------------------------------------------------
    def uploaded(self, client_id: str) -> None:
        """A client's locally noised update was accepted."""
        self.uploads[client_id] = self.uploads.get(client_id, 0) + 1
        self.steps = max(self.uploads.values())

    # -- the budget -------------------------------------------------------------------------
    def epsilon_after(self, steps: int) -> float:
        if self._accountant is None:
            return 0.0 if steps == 0 else math.inf
        return self._accountant.epsilon_after(steps)

    def epsilon(self) -> float:
        return self.epsilon_after(self.steps)

    def check_target(self) -> None:
        """Refuse a target ε that even one round would exceed (checked when the job starts)."""
        target = self.config.target_epsilon
        if target is not None and self.steps == 0 and self.epsilon_after(1) > target:
            raise ValidationFailed(
                f"privacy.dp.targetEpsilon {target:g} is below the ε of a single round "
                f"({self.epsilon_after(1):.3g} with noiseMultiplier {self.config.noise_multiplier:g}); "
                "raise the target or the noise multiplier"
            )

    def stop_reason(self) -> str | None:
        """Why no further round may run (the target ε), or None."""
        target = self.config.target_epsilon
        if target is None:
            return None
        following = self.epsilon_after(self.steps + 1)
        if following <= target:
            return None
        return (
            f"target epsilon reached: ε = {self.epsilon():.4g} spent after {self.steps} noised round(s); "
            f"one more would spend {following:.4g} > targetEpsilon {target:g}"
        )

    def report(self) -> dict[str, Any]:
        """The ``privacy`` field of a round record and of the job status."""
        epsilon = self.epsilon()
        report: dict[str, Any] = {
            "mode": self.config.mode,
            "epsilon": epsilon if math.isfinite(epsilon) else None,
            "delta": self.config.delta,
            "noiseMultiplier": self.config.noise_multiplier,
            "clipNorm": self.config.clip_norm,
            "rounds": self.steps,
            "samplingRate": 1.0,
        }
        if self.config.target_epsilon is not None:
            report["targetEpsilon"] = self.config.target_epsilon
        return report

    # -- checkpoints ----------------------------------------------------------------------------
    def state(self) -> str:
        """JSON of what a resumed job needs (never the noise generator: see the module docstring)."""
        return json.dumps(
            {
                "mode": self.config.mode,
                "noiseMultiplier": self.config.noise_multiplier,
                "clipNorm": self.config.clip_norm,
                "delta": self.config.delta,
                "steps": self.steps,
                "uploads": self.uploads,
            },
            sort_keys=True,
        )

    def load_state(self, text: str) -> None:
        try:
            state = json.loads(text)
            recorded = (state["mode"], state["noiseMultiplier"], state["clipNorm"], state["delta"])
            steps, uploads = int(state["steps"]), {str(k): int(v) for k, v in dict(state["uploads"]).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationFailed(f"the checkpoint's privacy state is unreadable: {exc}") from None
        mine = (self.config.mode, self.config.noise_multiplier, self.config.clip_norm, self.config.delta)
        if tuple(recorded) != mine:
            raise ValidationFailed(
                "the checkpoint was made with other privacy.dp settings; "
                "resuming would mis-account the privacy spent"
            )
        self.steps, self.uploads = steps, uploads
