"""Properties that must hold for any input: averaging, robustness to planted outliers."""

from __future__ import annotations

from typing import Literal

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from libs.aggregation.accumulator import WeightedSum
from libs.aggregation.robust import coordinate_median, krum_select, multi_krum_select, trimmed_mean

FAST = settings(max_examples=60, deadline=None)

DTYPES = st.sampled_from([np.float16, np.float32, np.float64])
SHAPES = hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4)


@st.composite
def update_maps(draw: st.DrawFn, dtype: type[np.floating]) -> dict[str, np.ndarray]:
    names = draw(st.lists(st.sampled_from(["w", "b", "gamma", "beta"]), min_size=1, max_size=3, unique=True))
    width: Literal[16, 32, 64] = 16 if dtype == np.float16 else 32 if dtype == np.float32 else 64
    elements = st.floats(-1e3, 1e3, width=width, allow_subnormal=False)
    return {name: draw(hnp.arrays(dtype, draw(SHAPES), elements=elements)) for name in names}


@FAST
@given(data=st.data(), dtype=DTYPES, weights=st.lists(st.floats(1e-3, 1e6), min_size=1, max_size=8))
def test_fedavg_of_identical_updates_is_that_update_for_any_weights(
    data: st.DataObject, dtype: type[np.floating], weights: list[float]
) -> None:
    update = data.draw(update_maps(dtype))
    total = WeightedSum(update)
    for weight in weights:
        total.add(update, weight)
    mean = total.mean()
    # Each fold rounds once or twice in the sum's dtype (>= float32), the final cast once more.
    rtol = 1e-3 if dtype == np.float16 else (len(weights) + 3) * float(np.finfo(dtype).eps)
    for name, array in update.items():
        assert mean[name].dtype == array.dtype
        np.testing.assert_allclose(mean[name], array, rtol=rtol, atol=0)


HONEST = st.floats(-10, 10, allow_subnormal=False)
ANY_FINITE = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def honest_and_outliers(draw: st.DrawFn, extra_honest: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """f arbitrary outliers and at least f + extra_honest honest updates, all with d coordinates."""
    d = draw(st.integers(1, 4))
    f = draw(st.integers(0, 3))
    h = draw(st.integers(f + extra_honest, f + extra_honest + 4))
    honest = [np.array(draw(st.lists(HONEST, min_size=d, max_size=d)), np.float32) for _ in range(h)]
    outliers = [np.array(draw(st.lists(ANY_FINITE, min_size=d, max_size=d)), np.float32) for _ in range(f)]
    return honest, outliers


def _shuffled(
    data: st.DataObject, honest: list[np.ndarray], outliers: list[np.ndarray]
) -> list[dict[str, np.ndarray]]:
    everyone = [{"x": u} for u in honest + outliers]
    return data.draw(st.permutations(everyone))


def _within_honest_range(result: np.ndarray, honest: list[np.ndarray]) -> None:
    stacked = np.stack(honest)
    assert (result >= stacked.min(axis=0)).all() and (result <= stacked.max(axis=0)).all()


@FAST
@given(data=st.data(), groups=honest_and_outliers(extra_honest=1))
def test_median_stays_within_the_honest_range_despite_f_arbitrary_outliers(
    data: st.DataObject, groups: tuple[list[np.ndarray], list[np.ndarray]]
) -> None:
    honest, outliers = groups
    _within_honest_range(coordinate_median(_shuffled(data, honest, outliers))["x"], honest)


@FAST
@given(data=st.data(), groups=honest_and_outliers(extra_honest=2))
def test_trimmed_mean_stays_within_the_honest_range_when_it_trims_at_least_f(
    data: st.DataObject, groups: tuple[list[np.ndarray], list[np.ndarray]]
) -> None:
    honest, outliers = groups
    n, f = len(honest) + len(outliers), len(outliers)
    beta = 0.0 if f == 0 else (f + 0.5) / n  # floor(beta * n) == f, and beta < 1/2 as h >= f + 2
    _within_honest_range(trimmed_mean(_shuffled(data, honest, outliers), beta)["x"], honest)


FAR = st.floats(100, 1e6).flatmap(lambda v: st.sampled_from([v, -v]))


@FAST
@given(data=st.data(), d=st.integers(1, 4), f=st.integers(0, 3), spare=st.integers(0, 4))
def test_krum_never_selects_a_planted_outlier_within_its_bound(
    data: st.DataObject, d: int, f: int, spare: int
) -> None:
    # n > 2f + 2: at least f + 3 honest updates, all coordinates in [-1, 1]; every
    # outlier coordinate is at least 100 away from zero (so 99 from any honest one).
    honest = [
        np.array(data.draw(st.lists(st.floats(-1, 1), min_size=d, max_size=d))) for _ in range(f + 3 + spare)
    ]
    outliers = [np.array(data.draw(st.lists(FAR, min_size=d, max_size=d))) for _ in range(f)]
    order = data.draw(st.permutations(range(len(honest) + f)))
    everyone = [{"x": (honest + outliers)[i]} for i in order]
    planted = {position for position, i in enumerate(order) if i >= len(honest)}
    assert krum_select(everyone, f) not in planted
    assert not planted & set(multi_krum_select(everyone, f, selected=len(honest)))
