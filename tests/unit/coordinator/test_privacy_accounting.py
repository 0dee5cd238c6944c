"""Central and local DP on the coordinator: the noise, the ε spent, the budget and its checkpoint."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from coordinator.privacy_accounting import DifferentialPrivacy, DpConfig, dp_config
from libs.errors import ValidationFailed
from libs.privacy import PrivacyAccountant
from tests.unit.coordinator.specs import stored_spec


def spec(**dp: Any) -> dict[str, Any]:
    return {"privacy": {"dp": {"clipNorm": 2.0, "noiseMultiplier": 1.0, **dp}}}


def test_the_mode_follows_the_spec_and_secure_aggregation_makes_central_noise_distributed() -> None:
    assert dp_config(stored_spec({})) is None
    assert dp_config(stored_spec(spec())) == DpConfig("central", 2.0, 1.0, 1e-5, None)
    assert dp_config(stored_spec(spec(mode="local", targetEpsilon=8, targetDelta=1e-6))) == DpConfig(
        "local", 2.0, 1.0, 1e-6, 8.0
    )
    secure = {"privacy": {**spec()["privacy"], "secureAggregation": {"mode": "double-mask"}}}
    assert dp_config(stored_spec(secure)).mode == "distributed"  # type: ignore[union-attr]


def test_clipping_bounds_each_update_to_the_clip_norm() -> None:
    dp = DifferentialPrivacy(DpConfig("central", 1.0, 1.0, 1e-5, None), np.random.default_rng(0))
    clipped, norm = dp.clip({"w": np.full(4, 3.0, np.float32)})
    assert norm == pytest.approx(6.0) and float(np.linalg.norm(clipped["w"])) <= 1.0


def test_the_mean_gets_the_sum_noise_divided_by_the_number_of_updates() -> None:
    dp = DifferentialPrivacy(DpConfig("central", 2.0, 0.5, 1e-5, None), np.random.default_rng(1))
    noisy = dp.noisy_mean({"w": np.zeros(200_000, np.float32)}, count=4)
    assert float(np.std(noisy["w"])) == pytest.approx(0.5 * 2.0 / 4, rel=0.01)
    assert dp.steps == 1


def test_epsilon_is_that_of_the_gaussian_mechanism_without_sampling_amplification() -> None:
    dp = DifferentialPrivacy(DpConfig("central", 1.0, 1.3, 1e-5, None), np.random.default_rng())
    for _ in range(4):
        dp.released()
    assert dp.epsilon() == pytest.approx(PrivacyAccountant(1.3, 1.0, 1e-5).epsilon_after(4))
    assert dp.report()["samplingRate"] == 1.0 and dp.report()["rounds"] == 4


def test_without_noise_no_finite_epsilon_is_claimed() -> None:
    dp = DifferentialPrivacy(DpConfig("central", 1.0, 0.0, 1e-5, None), np.random.default_rng())
    assert dp.report()["epsilon"] == 0.0
    dp.released()
    assert dp.report()["epsilon"] is None


def test_the_budget_stops_before_the_round_that_would_exceed_it() -> None:
    accountant = PrivacyAccountant(2.0, 1.0, 1e-5)
    target = accountant.epsilon_after(3) + 1e-9
    dp = DifferentialPrivacy(DpConfig("central", 1.0, 2.0, 1e-5, target), np.random.default_rng())
    dp.check_target()
    for _ in range(3):
        assert dp.stop_reason() is None
        dp.released()
    reason = dp.stop_reason()
    assert (
        reason is not None
        and reason.startswith("target epsilon reached")
        and "after 3 noised round" in reason
    )


def test_local_dp_reports_the_client_with_the_most_uploads() -> None:
    dp = DifferentialPrivacy(DpConfig("local", 1.0, 2.0, 1e-5, None), np.random.default_rng())
    for client in ("a", "b", "a", "a"):
        dp.uploaded(client)
    assert dp.steps == 3 and dp.uploads == {"a": 3, "b": 1}
    assert dp.epsilon() == pytest.approx(PrivacyAccountant(1.0, 1.0, 1e-5).epsilon_after(3))


def test_the_state_round_trips_and_refuses_a_garbled_record() -> None:
    dp = DifferentialPrivacy(DpConfig("local", 1.0, 2.0, 1e-5, None), np.random.default_rng())
    dp.uploaded("a")
    again = DifferentialPrivacy(DpConfig("local", 1.0, 2.0, 1e-5, None), np.random.default_rng())
    again.load_state(dp.state())
    assert (again.steps, again.uploads) == (1, {"a": 1})
    assert "rng" not in dp.state() and "bit_generator" not in dp.state()  # the noise stays unpredictable
    with pytest.raises(ValidationFailed, match="unreadable"):
        again.load_state("{}")
