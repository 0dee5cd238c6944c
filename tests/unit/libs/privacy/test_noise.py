"""Gaussian noise has the calibrated scale wherever it is added."""

from __future__ import annotations

import numpy as np
import pytest

from libs.errors import ValidationFailed
from libs.privacy.clipping import l2_norm
from libs.privacy.noise import DistributedNoise, add_central_noise, gaussian_noise_like, privatize_locally


def test_central_noise_has_std_sigma_times_clip_norm() -> None:
    total = {"w": np.zeros((200, 500), np.float32)}
    noisy = add_central_noise(total, noise_multiplier=1.3, clip_norm=0.5, rng=np.random.default_rng(0))
    assert noisy["w"].dtype == np.float32
    assert noisy["w"].std() == pytest.approx(0.65, rel=0.02)


def test_local_privatization_clips_then_adds_the_full_noise() -> None:
    update = {"w": np.full(100_000, 10.0)}
    result = privatize_locally(update, clip_norm=2.0, noise_multiplier=0.0, rng=np.random.default_rng(0))
    assert result.clipped and l2_norm(result.update) <= 2.0
    noisy = privatize_locally(update, clip_norm=2.0, noise_multiplier=1.0, rng=np.random.default_rng(0))
    assert (noisy.update["w"] - result.update["w"]).std() == pytest.approx(2.0, rel=0.02)


def test_distributed_noise_shares_add_up_to_the_central_noise() -> None:
    noise = DistributedNoise(noise_multiplier=1.0, clip_norm=2.0, contributors=16)
    assert noise.std == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    total = sum(noise.sample(50_000, rng) for _ in range(16))
    assert np.std(total) == pytest.approx(2.0, rel=0.02)


def test_noise_is_reproducible_with_the_same_generator_seed() -> None:
    update = {"a": np.zeros(10)}
    first = gaussian_noise_like(update, 1.0, np.random.default_rng(5))
    second = gaussian_noise_like(update, 1.0, np.random.default_rng(5))
    assert np.array_equal(first["a"], second["a"])


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValidationFailed):
        DistributedNoise(noise_multiplier=-1.0, clip_norm=1.0, contributors=3)
    with pytest.raises(ValidationFailed):
        DistributedNoise(noise_multiplier=1.0, clip_norm=1.0, contributors=0)
    with pytest.raises(ValidationFailed):
        add_central_noise(
            {"a": np.zeros(2)}, noise_multiplier=1.0, clip_norm=0.0, rng=np.random.default_rng()
        )
