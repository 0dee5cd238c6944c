"""WeightedSum: streaming FedAvg, its checks, and that a rejected update changes nothing."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from libs.aggregation import accumulator
from libs.aggregation.accumulator import WeightedSum
from libs.errors import InvalidWeights, UpdateRejected, ValidationFailed


def model(dtype: type[np.floating] = np.float32) -> dict[str, np.ndarray]:
    """A tiny model: one matrix, one bias."""
    return {"w": np.zeros((2, 2), dtype=dtype), "b": np.zeros(3, dtype=dtype)}


def delta(
    w: list[list[float]], b: list[float], dtype: type[np.floating] = np.float32
) -> dict[str, np.ndarray]:
    return {"w": np.array(w, dtype=dtype), "b": np.array(b, dtype=dtype)}


def snapshot(total: WeightedSum) -> tuple[int, float, dict[str, bytes]]:
    return total.count, total.total_weight, {name: array.tobytes() for name, array in total.mean().items()}


def test_mean_is_the_sample_weighted_average_of_deltas() -> None:
    total = WeightedSum(model())
    total.add(delta([[1, 2], [3, 4]], [1, 0, -1]), 1)
    total.add(delta([[5, 6], [7, 8]], [-3, 4, 1]), 3)
    mean = total.mean()
    # (1*d1 + 3*d2) / 4, by hand
    np.testing.assert_array_equal(mean["w"], np.array([[4.0, 5.0], [6.0, 7.0]], dtype=np.float32))
    np.testing.assert_array_equal(mean["b"], np.array([-2.0, 3.0, 0.5], dtype=np.float32))
    assert mean["w"].dtype == np.float32 and mean["b"].dtype == np.float32
    assert total.count == 2
    assert total.total_weight == 4.0


def test_add_returns_the_l2_norm_of_the_whole_delta() -> None:
    total = WeightedSum(model())
    norm = total.add(delta([[3, 0], [0, 0]], [0, 4, 0]), 2.0)
    assert norm == pytest.approx(5.0)


def test_mean_can_be_taken_again_after_more_updates() -> None:
    total = WeightedSum(model())
    total.add(delta([[2, 2], [2, 2]], [2, 2, 2]), 1)
    first = total.mean()
    total.add(delta([[4, 4], [4, 4]], [4, 4, 4]), 1)
    np.testing.assert_array_equal(first["b"], [2, 2, 2])
    np.testing.assert_array_equal(total.mean()["b"], [3, 3, 3])


def test_mean_without_updates_is_an_error() -> None:
    with pytest.raises(ValidationFailed, match="no updates"):
        WeightedSum(model()).mean()


def test_float64_models_accumulate_in_float64() -> None:
    total = WeightedSum(model(np.float64))
    total.add(delta([[0.1, 0.2], [0.3, 0.4]], [1e-17, 1, 2], np.float64), 1)
    total.add(delta([[0.1, 0.2], [0.3, 0.4]], [1e-17, 1, 2], np.float64), 1)
    mean = total.mean()
    assert mean["w"].dtype == np.float64
    np.testing.assert_array_equal(mean["b"], np.array([1e-17, 1, 2]))


def test_float16_models_accumulate_in_float32_and_return_float16() -> None:
    # 3000 updates of 1.0 weighted by 100 would overflow a float16 sum (max 65504).
    reference = {"w": np.zeros(5, dtype=np.float16)}
    total = WeightedSum(reference)
    for _ in range(3000):
        total.add({"w": np.ones(5, dtype=np.float16)}, 100)
    mean = total.mean()
    assert mean["w"].dtype == np.float16
    np.testing.assert_array_equal(mean["w"], np.ones(5, dtype=np.float16))


def test_float64_accumulator_can_be_requested_for_a_float32_model() -> None:
    total = WeightedSum(model(), accumulator_dtype=np.float64)
    total.add(delta([[1, 1], [1, 1]], [1, 1, 1]), 1)
    assert total.mean()["w"].dtype == np.float32


def test_accumulator_dtype_narrower_than_the_model_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="cannot hold"):
        WeightedSum(model(np.float64), accumulator_dtype=np.float32)
    with pytest.raises(ValidationFailed, match="floating-point"):
        WeightedSum(model(), accumulator_dtype=np.int64)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({}, "no tensors"),
        ({"w": [1.0, 2.0]}, "not a numpy array"),
        ({"w": np.zeros(2, dtype=np.int64)}, "only floating-point"),
        ({1: np.zeros(2)}, "not a string"),
    ],
)
def test_reference_model_must_be_named_float_arrays(reference: object, message: str) -> None:
    with pytest.raises(InvalidWeights, match=message):
        WeightedSum(reference)  # type: ignore[arg-type]


def _bad_updates() -> list[tuple[str, object, str]]:
    good_w = np.ones((2, 2), dtype=np.float32)
    good_b = np.ones(3, dtype=np.float32)
    return [
        ("nan", {"w": np.array([[1, np.nan], [1, 1]], np.float32), "b": good_b}, "NaN or infinite"),
        ("inf", {"w": good_w, "b": np.array([1, np.inf, 1], np.float32)}, "NaN or infinite"),
        ("-inf", {"w": good_w, "b": np.array([1, -np.inf, 1], np.float32)}, "NaN or infinite"),
        ("wrong shape", {"w": np.ones((4,), np.float32), "b": good_b}, r"shape \[4\]; expected \[2, 2\]"),
        ("wrong dtype", {"w": good_w, "b": np.ones(3, np.float64)}, "dtype float64; expected float32"),
        ("missing tensor", {"w": good_w}, "missing tensor"),
        ("extra tensor", {"w": good_w, "b": good_b, "c": good_b}, "unexpected tensor"),
        ("not an array", {"w": good_w, "b": [1.0, 1.0, 1.0]}, "not a numpy array"),
        ("not a mapping", [good_w, good_b], "must be a mapping"),
        ("too large", {"w": np.full((2, 2), 3e38, np.float32), "b": good_b}, "overflow"),
    ]


@pytest.mark.parametrize(
    ("label", "update", "message"), _bad_updates(), ids=[case[0] for case in _bad_updates()]
)
def test_rejected_update_leaves_the_sum_unchanged(label: str, update: object, message: str) -> None:
    total = WeightedSum(model())
    total.add(delta([[1, 2], [3, 4]], [5, 6, 7]), 2)
    before = snapshot(total)
    with pytest.raises(UpdateRejected, match=message):
        total.add(update, 1)  # type: ignore[arg-type]
    assert snapshot(total) == before


@pytest.mark.parametrize("weight", [0, -1.0, math.nan, math.inf, 1e13, 1e-13, True, "3", None])
def test_weight_must_be_a_plausible_positive_number(weight: object) -> None:
    total = WeightedSum(model())
    with pytest.raises(UpdateRejected, match="weight"):
        total.add(delta([[1, 1], [1, 1]], [1, 1, 1]), weight)  # type: ignore[arg-type]
    assert total.count == 0


def test_update_bad_in_its_last_tensor_folds_none_of_its_tensors() -> None:
    # "big" is folded alone, the small ones are packed after it: the NaN is found
    # only in the last unit, after "big" was already checked.
    reference = {
        "big": np.zeros(5000, np.float32),
        "bias": np.zeros(4, np.float32),
        "gain": np.zeros(2, np.float32),
    }
    total = WeightedSum(reference)
    total.add({name: np.ones_like(array) for name, array in reference.items()}, 1)
    before = snapshot(total)
    bad = {name: np.full_like(array, 2.0) for name, array in reference.items()}
    bad["gain"][1] = np.nan
    with pytest.raises(UpdateRejected, match="'gain'"):
        total.add(bad, 1)
    assert snapshot(total) == before


def test_overflow_guard_counts_earlier_updates() -> None:
    total = WeightedSum({"w": np.zeros(1, np.float32)})
    total.add({"w": np.array([5e37], np.float32)}, 1)
    with pytest.raises(UpdateRejected, match="overflow"):
        total.add({"w": np.array([5e37], np.float32)}, 1)
    assert np.isfinite(total.mean()["w"]).all()


def test_huge_but_finite_values_are_accepted_when_the_sum_stays_finite() -> None:
    # 1e20 squared overflows float32, so the dot-product check falls back to float64.
    total = WeightedSum({"w": np.zeros(3, np.float32)})
    total.add({"w": np.array([1e20, -1e20, 0], np.float32)}, 1)
    np.testing.assert_array_equal(total.mean()["w"], np.array([1e20, -1e20, 0], np.float32))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_chunked_and_packed_paths_match_a_float64_reference(
    dtype: type[np.floating], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny chunk and pack sizes force every loop through several iterations.
    monkeypatch.setattr(accumulator, "_BLAS_CHUNK", 7)
    monkeypatch.setattr(accumulator, "_SCRATCH_CHUNK", 5)
    monkeypatch.setattr(accumulator, "_SMALL_TENSOR", 6)
    monkeypatch.setattr(accumulator, "_PACK_ELEMENTS", 10)
    rng = np.random.default_rng(7)
    shapes = {"a": (3, 9), "b": (4,), "c": (2, 3), "d": (5,), "e": (), "f": (31,)}
    reference = {name: np.zeros(shape, dtype=dtype) for name, shape in shapes.items()}
    total = WeightedSum(reference)
    deltas = [{n: rng.standard_normal(s).astype(dtype) for n, s in shapes.items()} for _ in range(4)]
    weights = [1.0, 2.5, 0.25, 7.0]
    for update, weight in zip(deltas, weights, strict=True):
        total.add(update, weight)
    mean = total.mean()
    for name in shapes:
        expected = sum(w * d[name].astype(np.float64) for d, w in zip(deltas, weights, strict=True)) / sum(
            weights
        )
        assert mean[name].dtype == dtype and mean[name].shape == shapes[name]
        np.testing.assert_allclose(
            mean[name], expected, rtol=2e-3 if dtype == np.float16 else 1e-5, atol=1e-3
        )


def test_non_contiguous_deltas_are_accepted() -> None:
    total = WeightedSum({"w": np.zeros((3, 2), np.float32)})
    transposed = np.arange(6, dtype=np.float32).reshape(2, 3).T
    total.add({"w": transposed}, 1)
    np.testing.assert_array_equal(total.mean()["w"], transposed)


def test_memory_is_one_model_and_add_allocates_no_model_sized_temporary() -> None:
    size = 1 << 20  # 4 MiB of float32
    reference = {"w": np.zeros(size, np.float32), "b": np.zeros(10, np.float32)}
    update = {"w": np.ones(size, np.float32), "b": np.ones(10, np.float32)}
    total = WeightedSum(reference)
    total.add(update, 2.0)  # warm-up: scratch buffers are allocated once
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        total.add(update, 3.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size * 4 // 8, f"add() allocated {peak} bytes at peak"
    np.testing.assert_array_equal(total.mean()["w"][:3], np.ones(3, np.float32))


def test_extreme_plausible_weights_keep_the_mean_finite() -> None:
    total = WeightedSum({"w": np.zeros(2, np.float32)})
    total.add({"w": np.array([1.0, -1.0], np.float32)}, 1e12)
    total.add({"w": np.array([3.0, 1.0], np.float32)}, 1e-12)
    np.testing.assert_allclose(total.mean()["w"], [1.0, -1.0], rtol=1e-6)
