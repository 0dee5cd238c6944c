"""Secure aggregation of weighted float updates decodes the FedAvg mean, with or without DP noise."""

from __future__ import annotations

import numpy as np
import pytest

from libs.privacy.noise import DistributedNoise
from libs.secagg.client import SecAggClient
from libs.secagg.layout import ParameterLayout
from libs.secagg.messages import KeyDirectory, MaskedInput, RoundSetup, ShareDelivery
from libs.secagg.simulation import DropPoint, make_setup, simulate_round
from tests.unit.libs.secagg.harness import seeded_bytes


def _weighted_round(
    setup: RoundSetup,
    updates: list[np.ndarray],
    weights: list[float],
    *,
    dropouts: dict[str, DropPoint] | None = None,
    noise: DistributedNoise | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    rngs = {cid: np.random.default_rng([seed, i]) for i, cid in enumerate(setup.participants)}
    by_id = dict(zip(setup.participants, zip(updates, weights, strict=True), strict=True))

    def step(client: SecAggClient, request: ShareDelivery | KeyDirectory) -> MaskedInput:
        update, weight = by_id[client.client_id]
        return client.mask_update(request, update, weight=weight, rng=rngs[client.client_id], noise=noise)

    result = simulate_round(setup, dropouts=dropouts, random_bytes=seeded_bytes(seed), mask_step=step)
    assert result.total is not None, result.abort_reason
    decoded = setup.codec().decode(result.total)
    return decoded.mean(), decoded.total_weight


def test_weighted_updates_decode_to_the_weighted_mean() -> None:
    rng = np.random.default_rng(1)
    models: list[dict[str, np.ndarray]] = [
        {"w": rng.normal(0, 0.1, (4, 5)).astype(np.float32), "b": rng.normal(0, 0.1, 5)} for _ in range(6)
    ]
    layout = ParameterLayout.of(models[0])
    updates = [layout.flatten(m) for m in models]
    weights = [10.0, 200.0, 35.0, 1.0, 80.0, 500.0]
    setup = make_setup(6, 4, vector_length=layout.size + 1, ring_bits=48, max_weight=1000.0)

    mean, total_weight = _weighted_round(setup, updates, weights)

    expected = sum(w * u for u, w in zip(updates, weights, strict=True)) / sum(weights)
    assert total_weight == pytest.approx(sum(weights))
    np.testing.assert_allclose(mean, expected, atol=1e-6)
    assert layout.unflatten(mean)["w"].dtype == np.float32


def test_weighted_mean_covers_only_the_clients_whose_inputs_arrived() -> None:
    rng = np.random.default_rng(2)
    updates = [rng.uniform(-1, 1, 30) for _ in range(5)]
    weights = [1.0, 2.0, 3.0, 4.0, 5.0]
    setup = make_setup(5, 3, vector_length=31, ring_bits=48, max_weight=5.0)
    drops = {"client-2": DropPoint.AFTER_SHARING, "client-5": DropPoint.AFTER_MASKED_INPUT}

    mean, total_weight = _weighted_round(setup, updates, weights, dropouts=drops)

    kept = [0, 2, 3, 4]  # client-5 dropped after its input arrived: it counts
    expected = sum(weights[i] * updates[i] for i in kept) / sum(weights[i] for i in kept)
    assert total_weight == pytest.approx(sum(weights[i] for i in kept))
    np.testing.assert_allclose(mean, expected, atol=1e-9)


def test_distributed_dp_noise_sums_to_sigma_times_clip_norm() -> None:
    n, length, sigma, clip = 8, 40_000, 0.5, 1.0
    noise = DistributedNoise(noise_multiplier=sigma, clip_norm=clip, contributors=n)
    setup = make_setup(n, 5, vector_length=length + 1, ring_bits=48, clip_range=10.0)
    updates = [np.zeros(length) for _ in range(n)]

    mean, total_weight = _weighted_round(setup, updates, [1.0] * n, noise=noise, seed=3)

    noise_in_sum = mean * total_weight
    assert noise_in_sum.std() == pytest.approx(sigma * clip, rel=0.03)
    assert abs(noise_in_sum.mean()) < 0.02


def test_updates_are_clipped_to_the_dp_norm_before_noise() -> None:
    noise = DistributedNoise(noise_multiplier=0.0, clip_norm=1.0, contributors=3)
    setup = make_setup(3, 2, vector_length=3, ring_bits=48, clip_range=10.0)
    updates = [np.array([3.0, 4.0]), np.array([0.3, 0.4]), np.array([0.0, 0.0])]
    mean, total_weight = _weighted_round(setup, updates, [1.0, 1.0, 1.0], noise=noise)
    np.testing.assert_allclose(mean * total_weight, [0.6 + 0.3, 0.8 + 0.4], atol=1e-9)
