"""Delta arithmetic of libs.weights.deltas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from libs.errors import InvalidWeights
from libs.weights.deltas import apply_delta, clip_by_norm, compute_delta, l2_norm, zeros_like


def model(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "dense.weight": rng.standard_normal((8, 5)).astype(np.float32),
        "dense.bias": rng.standard_normal(5).astype(np.float16),
        "head": rng.standard_normal(3),
        "bn.num_batches_tracked": np.array(seed, np.int64),
        "counts": np.array([seed, 250], np.uint8),
        "mask": np.array([seed % 2 == 0, True]),
    }


def test_delta_keeps_each_dtype_and_is_the_correctly_rounded_difference() -> None:
    trained, base = model(1), model(2)
    delta = compute_delta(trained, base)
    for name, array in delta.items():
        assert array.dtype == base[name].dtype, name
    expected = (trained["dense.weight"].astype(np.float64) - base["dense.weight"]).astype(np.float32)
    np.testing.assert_array_equal(delta["dense.weight"], expected)
    np.testing.assert_array_equal(delta["dense.weight"], trained["dense.weight"] - base["dense.weight"])


def test_applying_a_delta_restores_the_trained_model_exactly_for_integers_and_masks() -> None:
    trained, base = model(1), model(2)
    restored = apply_delta(base, compute_delta(trained, base))
    for name in ("bn.num_batches_tracked", "counts", "mask"):
        np.testing.assert_array_equal(restored[name], trained[name], err_msg=name)
    np.testing.assert_allclose(restored["dense.weight"], trained["dense.weight"], atol=1e-6)
    np.testing.assert_allclose(restored["head"], trained["head"], atol=1e-12)


def test_apply_delta_scales_float_tensors_rounding_once() -> None:
    base = {"w": np.array([1.0, 2.0], np.float32)}
    delta = {"w": np.array([0.1, -0.3], np.float32)}
    result = apply_delta(base, delta, scale=0.5)
    expected = (base["w"].astype(np.float64) + 0.5 * delta["w"].astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(result["w"], expected)


def test_inputs_are_never_modified() -> None:
    trained, base = model(1), model(2)
    before = {name: array.copy() for name, array in base.items()}
    apply_delta(base, compute_delta(trained, base), scale=3.0)
    clip_by_norm(base, 0.1)
    for name in base:
        np.testing.assert_array_equal(base[name], before[name])


def test_incompatible_models_are_refused_before_any_arithmetic() -> None:
    with pytest.raises(InvalidWeights, match=r"tensor 'w': wrong shape \(3,\) vs \(2,\) expected"):
        compute_delta({"w": np.zeros(3, np.float32)}, {"w": np.zeros(2, np.float32)})
    with pytest.raises(InvalidWeights, match="missing tensors 'b'"):
        apply_delta({"w": np.zeros(2), "b": np.zeros(1)}, {"w": np.zeros(2)})


def test_l2_norm_covers_float_tensors_only() -> None:
    weights: dict[str, np.ndarray] = {
        "a": np.array([3.0], np.float32),
        "b": np.array([4.0], np.float16),
        "n": np.array([100], np.int64),
    }
    assert l2_norm(weights) == 5.0


def test_clipping_scales_a_large_delta_down_to_the_norm_and_leaves_counters_alone() -> None:
    weights: dict[str, np.ndarray] = {"a": np.array([30.0, 40.0], np.float32), "n": np.array(7, np.int64)}
    clipped = clip_by_norm(weights, 5.0)
    assert math.isclose(l2_norm(clipped), 5.0, rel_tol=1e-6)
    np.testing.assert_allclose(clipped["a"], [3.0, 4.0], rtol=1e-6)
    assert clipped["n"] == 7
    assert clipped["a"].dtype == np.float32


def test_clipping_leaves_a_small_delta_as_it_is() -> None:
    weights = {"a": np.array([0.3, 0.4], np.float32)}
    np.testing.assert_array_equal(clip_by_norm(weights, 1.0)["a"], weights["a"])


def test_clipping_refuses_non_finite_weights_and_a_non_positive_norm() -> None:
    with pytest.raises(InvalidWeights, match="norm is nan"):
        clip_by_norm({"a": np.array([np.nan])}, 1.0)
    with pytest.raises(ValueError, match="max_norm must be a positive number"):
        clip_by_norm({"a": np.zeros(1)}, 0.0)


def test_zeros_like_keeps_names_shapes_and_dtypes() -> None:
    zeros = zeros_like(model(3))
    assert list(zeros) == sorted(model(3))
    assert all(not array.any() and array.dtype == model(3)[name].dtype for name, array in zeros.items())
