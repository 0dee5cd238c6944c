"""Fixed-point encoding: sums decode exactly to the sum of the rounded values, signs included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.errors import ValidationFailed
from libs.secagg.layout import ParameterLayout
from libs.secagg.quantize import FixedPointCodec


@settings(max_examples=50, deadline=None)
@given(
    bits=st.sampled_from([16, 32, 48, 62, 64]),
    clients=st.integers(1, 50),
    seed=st.integers(0, 2**32),
)
def test_sum_of_encodings_decodes_to_the_sum_of_clipped_values(bits: int, clients: int, seed: int) -> None:
    codec = FixedPointCodec(bits, clip_range=2.0, max_clients=clients)
    rng = np.random.default_rng(seed)
    updates = [rng.uniform(-3, 3, size=20) for _ in range(clients)]
    total = np.zeros(21, dtype=np.uint64)
    for update in updates:
        np.add(total, codec.encode(update, rng=rng), out=total)
    decoded = codec.decode(total)
    expected = sum(np.clip(u, -2, 2) for u in updates)
    assert decoded.total_weight == pytest.approx(clients, abs=clients / codec.scale)
    np.testing.assert_allclose(decoded.weighted_sum, expected, rtol=0, atol=clients / codec.scale + 1e-9)


def test_extreme_values_at_the_bounds_do_not_overflow() -> None:
    for bits in (16, 32, 64):
        codec = FixedPointCodec(bits, clip_range=1.0, max_clients=100, max_weight=5.0)
        total = np.zeros(3, dtype=np.uint64)
        for _ in range(100):
            np.add(total, codec.encode(np.array([-1.0, 1.0]), weight=5.0), out=total)
        decoded = codec.decode(total)
        resolution = 100 / codec.scale  # one rounding step per client at most
        np.testing.assert_allclose(decoded.weighted_sum, [-500.0, 500.0], rtol=0, atol=resolution)
        assert decoded.total_weight == pytest.approx(500.0, abs=resolution)


def test_stochastic_rounding_is_unbiased_where_nearest_rounding_is_not() -> None:
    codec = FixedPointCodec(16, clip_range=1.0, max_clients=1000)
    value = 0.3 / codec.scale  # a third of an integer step: nearest rounding always gives 0
    values = np.full(100_000, value)
    nearest = codec.from_ring(codec.encode(values)[:-1])
    stochastic = codec.from_ring(codec.encode(values, rng=np.random.default_rng(0))[:-1])
    assert nearest.mean() == 0.0
    assert stochastic.mean() == pytest.approx(value, rel=0.05)


def test_weighted_mean_is_sum_of_weighted_values_over_sum_of_weights() -> None:
    codec = FixedPointCodec(48, clip_range=1.0, max_clients=3, max_weight=100.0)
    updates = [np.array([0.5, -0.5]), np.array([-1.0, 1.0]), np.array([0.25, 0.0])]
    weights = [10.0, 30.0, 60.0]
    total = np.zeros(3, dtype=np.uint64)
    for update, weight in zip(updates, weights, strict=True):
        np.add(total, codec.encode(update, weight=weight), out=total)
    expected = sum(w * u for u, w in zip(updates, weights, strict=True)) / sum(weights)
    np.testing.assert_allclose(codec.decode(total).mean(), expected, atol=1e-9)


def test_invalid_inputs_are_refused() -> None:
    codec = FixedPointCodec(32, clip_range=1.0, max_clients=3)
    with pytest.raises(ValidationFailed):
        codec.encode(np.array([np.nan]))
    with pytest.raises(ValidationFailed):
        codec.encode(np.array([0.0]), weight=2.0)
    with pytest.raises(ValidationFailed):
        FixedPointCodec(8, clip_range=1.0, max_clients=3)
    with pytest.raises(ValidationFailed):
        FixedPointCodec(16, clip_range=1.0, max_clients=40_000)


def test_layout_round_trips_a_model_and_refuses_a_mismatch() -> None:
    model: dict[str, np.ndarray] = {"b": np.ones((2, 3), np.float32), "a": np.arange(4, dtype=np.float64)}
    layout = ParameterLayout.of(model)
    assert [t.name for t in layout.tensors] == ["a", "b"] and layout.size == 10
    back = layout.unflatten(layout.flatten(model))
    assert back["b"].dtype == np.float32 and np.array_equal(back["b"], model["b"])
    assert np.array_equal(back["a"], model["a"])
    with pytest.raises(ValidationFailed):
        layout.flatten({"a": np.zeros(4)})
    with pytest.raises(ValidationFailed):
        layout.flatten({"a": np.zeros(5), "b": np.zeros((2, 3))})
