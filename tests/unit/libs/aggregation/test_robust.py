"""Robust rules against hand-computed values from their papers' definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from libs.aggregation.robust import (
    clip_update,
    clip_updates,
    coordinate_median,
    krum,
    krum_scores,
    krum_select,
    multi_krum,
    multi_krum_select,
    pairwise_squared_distances,
    reject_by_norm,
    trimmed_count,
    trimmed_mean,
    update_norm,
)
from libs.errors import InvalidWeights, ValidationFailed


def points(*values: float) -> list[dict[str, np.ndarray]]:
    """One-coordinate updates, one per value."""
    return [{"x": np.array([value], dtype=np.float64)} for value in values]


def test_median_of_an_odd_count_is_the_middle_value_per_coordinate() -> None:
    updates = [
        {"a": np.array([1.0, 9.0], np.float32)},
        {"a": np.array([5.0, -1.0], np.float32)},
        {"a": np.array([3.0, 4.0], np.float32)},
    ]
    result = coordinate_median(updates)
    np.testing.assert_array_equal(result["a"], np.array([3.0, 4.0], np.float32))
    assert result["a"].dtype == np.float32


def test_median_of_an_even_count_averages_the_two_middle_values() -> None:
    # [1, 2, 10, 4] -> sorted [1, 2, 4, 10] -> (2 + 4) / 2 = 3
    np.testing.assert_array_equal(coordinate_median(points(1, 2, 10, 4))["x"], [3.0])


def test_median_of_huge_float32_values_does_not_overflow() -> None:
    updates = [{"x": np.array([3e38], np.float32)} for _ in range(2)]
    np.testing.assert_array_equal(coordinate_median(updates)["x"], np.array([3e38], np.float32))


def test_median_does_not_reorder_the_callers_arrays() -> None:
    updates = points(3, 1, 2)
    coordinate_median(updates)
    assert [u["x"][0] for u in updates] == [3, 1, 2]


def test_trimmed_mean_drops_k_values_at_each_end() -> None:
    # beta = 0.25, n = 4: k = 1; [1, 2, 10, 4] -> drop 1 and 10 -> mean(2, 4) = 3
    np.testing.assert_array_equal(trimmed_mean(points(1, 2, 10, 4), 0.25)["x"], [3.0])
    # beta = 0.2, n = 10: k = 2 per coordinate
    updates = [{"x": np.array([v, -v], dtype=np.float64)} for v in (1, 2, 3, 4, 5, 6, 7, 8, 100, -100)]
    # sorted first coordinate: -100, 1 | 2 3 4 5 6 7 | 8 100 -> mean 4.5; second: mirror -> -4.5
    np.testing.assert_array_equal(trimmed_mean(updates, 0.2)["x"], [4.5, -4.5])


def test_trimmed_mean_with_zero_trim_is_the_plain_mean() -> None:
    np.testing.assert_array_equal(trimmed_mean(points(1, 2, 6), 0.0)["x"], [3.0])


@pytest.mark.parametrize("beta", [-0.1, 0.5, 0.7, math.nan, True, "0.1"])
def test_trim_fraction_must_be_in_zero_to_one_half(beta: object) -> None:
    with pytest.raises(ValidationFailed, match=r"\[0, 0.5\)"):
        trimmed_mean(points(1, 2, 3, 4), beta)  # type: ignore[arg-type]


def test_trimmed_mean_refuses_a_round_too_small_to_trim_anything() -> None:
    # beta = 0.1 with 5 clients: floor(0.5) = 0 would silently be a plain mean
    with pytest.raises(ValidationFailed, match="needs at least 10"):
        trimmed_mean(points(1, 2, 3, 4, 5), 0.1)
    assert trimmed_count(10, 0.1) == 1


def test_krum_scores_sum_squared_distances_to_the_n_minus_f_minus_2_nearest() -> None:
    # n = 5, f = 1 -> 2 nearest.  Points 0, 1, 2, 3, 100; squared distances:
    # 0: 1, 4, 9, 10000 -> 5      1: 1, 1, 4, 9801 -> 2      2: 4, 1, 1, 9604 -> 2
    # 3: 9, 4, 1, 9409 -> 5       100: 9409 + 9604 = 19013
    updates = points(0, 1, 2, 3, 100)
    np.testing.assert_allclose(krum_scores(updates, 1), [5, 2, 2, 5, 19013], rtol=1e-12)
    assert krum_select(updates, 1) == 1  # tie between 1 and 2 goes to the lower index
    np.testing.assert_array_equal(krum(updates, 1)["x"], [1.0])


def test_krum_distances_span_every_tensor_of_the_update() -> None:
    def update(a: tuple[float, float], b: float) -> dict[str, np.ndarray]:
        return {"a": np.array(a, dtype=np.float64), "b": np.array([b], dtype=np.float64)}

    updates = [
        update((0, 0), 0),
        update((1, 0), 0),
        update((0, 1), 1),
        update((1, 1), 1),
        update((10, 10), -10),
    ]
    # u0-u1: 1; u0-u2: 1+1 = 2; u0-u3: 1+1+1 = 3; u1-u2: 3; u1-u3: 2; u2-u3: 1
    # to u4: u0 300, u1 281, u2 302, u3 283; f = 1 -> 2 nearest
    np.testing.assert_allclose(pairwise_squared_distances(updates)[0], [0, 1, 2, 3, 300], rtol=1e-12)
    np.testing.assert_allclose(krum_scores(updates, 1), [3, 3, 3, 3, 564], rtol=1e-12)


def test_multi_krum_averages_the_m_best_scored_updates() -> None:
    updates = points(0, 1, 2, 3, 100)
    # scores [5, 2, 2, 5, 19013]; m = n - f = 4 -> indices 1, 2, 0, 3 -> mean 1.5
    assert multi_krum_select(updates, 1) == [1, 2, 0, 3]
    np.testing.assert_array_equal(multi_krum(updates, 1)["x"], [1.5])
    np.testing.assert_array_equal(multi_krum(updates, 1, selected=2)["x"], [1.5])  # mean(1, 2)


@pytest.mark.parametrize(("clients", "byzantine"), [(4, 1), (6, 2), (2, 0)])
def test_krum_requires_more_than_2f_plus_2_updates(clients: int, byzantine: int) -> None:
    with pytest.raises(ValidationFailed, match=r"n > 2f \+ 2"):
        krum_select(points(*range(clients)), byzantine)


@pytest.mark.parametrize("byzantine", [-1, 1.5, True])
def test_krum_bound_must_be_a_non_negative_integer(byzantine: object) -> None:
    with pytest.raises(ValidationFailed, match="non-negative integer"):
        krum_select(points(*range(9)), byzantine)  # type: ignore[arg-type]


@pytest.mark.parametrize("selected", [0, 6, 2.5])
def test_multi_krum_selection_size_must_fit(selected: object) -> None:
    with pytest.raises(ValidationFailed, match=r"in \[1, 5\]"):
        multi_krum_select(points(0, 1, 2, 3, 4), 1, selected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ([], "no updates"),
        ([{"x": np.ones(2)}, {"x": np.ones(3)}], "update 1: tensor 'x' has shape"),
        ([{"x": np.ones(2)}, {"y": np.ones(2)}], "update 1 is missing"),
        ([{"x": np.ones(2)}, {"x": np.array([1.0, np.nan])}], "update 1: tensor 'x' has NaN"),
        ([{"x": np.ones(2)}, {"x": np.ones(2, np.float32)}], "dtype float32; expected float64"),
    ],
)
def test_robust_rules_refuse_inconsistent_or_non_finite_updates(
    updates: list[dict[str, np.ndarray]], message: str
) -> None:
    for rule in (coordinate_median, lambda u: trimmed_mean(u, 0.0), lambda u: pairwise_squared_distances(u)):
        with pytest.raises(InvalidWeights, match=message):
            rule(updates)


def test_update_norm_spans_all_tensors() -> None:
    assert update_norm({"a": np.array([3.0, 0.0]), "b": np.array([[4.0]], np.float32)}) == 5.0


def test_clipping_scales_long_updates_to_the_maximum_norm_and_keeps_short_ones() -> None:
    long = {"a": np.array([3.0, 0.0], np.float32), "b": np.array([4.0], np.float32)}  # norm 5
    short = {"a": np.array([0.3, 0.0], np.float32), "b": np.array([0.4], np.float32)}  # norm 0.5
    clipped, kept = clip_updates([long, short], max_norm=1.0)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0], rtol=1e-7)
    np.testing.assert_allclose(clipped["b"], [0.8], rtol=1e-7)
    assert clipped["a"].dtype == np.float32
    assert kept["a"] is short["a"]
    np.testing.assert_array_equal(long["a"], [3.0, 0.0])  # the input is not modified


@pytest.mark.parametrize("max_norm", [0, -1, math.inf, math.nan])
def test_clipping_needs_a_positive_finite_maximum(max_norm: float) -> None:
    with pytest.raises(ValidationFailed, match="positive finite"):
        clip_update({"a": np.ones(2)}, max_norm)


def test_clipping_a_non_finite_update_is_refused() -> None:
    with pytest.raises(InvalidWeights, match="NaN"):
        clip_update({"a": np.array([np.inf])}, 1.0)


def test_reject_by_norm_drops_updates_far_above_the_median_norm() -> None:
    # norms 1, 2, 3, 100 (and a NaN update, left out of the median): median 2.5, threshold 3 * 2.5 = 7.5
    updates = [*points(1, -2, 3, 100), {"x": np.array([np.nan])}]
    screening = reject_by_norm(updates, factor=3)
    assert screening.kept == (0, 1, 2)
    assert [r.index for r in screening.rejected] == [3, 4]
    assert screening.median_norm == 2.5 and screening.threshold == 7.5
    assert "exceeds 3 x the median norm 2.5" in screening.rejected[0].reason
    assert "NaN" in screening.rejected[1].reason


def test_reject_by_norm_with_only_non_finite_updates_rejects_all() -> None:
    screening = reject_by_norm([{"x": np.array([np.nan])}], factor=2)
    assert screening.kept == () and screening.threshold is None


@pytest.mark.parametrize("factor", [0.5, 0, math.inf, math.nan, True])
def test_reject_by_norm_factor_must_be_at_least_one(factor: float) -> None:
    with pytest.raises(ValidationFailed, match=">= 1"):
        reject_by_norm(points(1, 2), factor)
