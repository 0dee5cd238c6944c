"""Clipping bounds every update's L2 norm and leaves small updates alone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from libs.errors import ValidationFailed
from libs.privacy.clipping import clip_by_l2_norm, l2_norm

_arrays = st.one_of(
    hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=6), elements=st.floats(-1e4, 1e4, width=32)),
    hnp.arrays(np.float64, hnp.array_shapes(max_dims=2, max_side=8), elements=st.floats(-1e6, 1e6)),
)
_updates = st.dictionaries(st.text("abcdef", min_size=1, max_size=4), _arrays, min_size=1, max_size=4)


@settings(max_examples=100, deadline=None)
@given(update=_updates, clip_norm=st.floats(1e-3, 1e3))
def test_clipping_bounds_every_updates_norm(update: dict[str, np.ndarray], clip_norm: float) -> None:
    result = clip_by_l2_norm(update, clip_norm)
    assert l2_norm(result.update) <= clip_norm
    assert result.norm == pytest.approx(l2_norm(update))
    assert result.clipped == (result.norm > clip_norm)
    for name, array in update.items():
        assert result.update[name].shape == array.shape and result.update[name].dtype == array.dtype
        if not result.clipped:
            assert np.array_equal(result.update[name], array)


def test_clipping_keeps_the_direction_and_reaches_the_bound() -> None:
    update = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    result = clip_by_l2_norm(update, 1.0)
    assert result.clipped and result.norm == pytest.approx(5.0)
    np.testing.assert_allclose(result.update["a"], [0.6, 0.0])
    np.testing.assert_allclose(result.update["b"], [[0.8]])
    assert l2_norm(result.update) == pytest.approx(1.0)


def test_the_input_is_not_modified() -> None:
    update = {"a": np.array([3.0, 4.0])}
    clip_by_l2_norm(update, 1.0)
    assert np.array_equal(update["a"], [3.0, 4.0])


@pytest.mark.parametrize("clip_norm", [0.0, -1.0, float("inf"), float("nan")])
def test_a_bad_clip_norm_is_refused(clip_norm: float) -> None:
    with pytest.raises(ValidationFailed):
        clip_by_l2_norm({"a": np.ones(2)}, clip_norm)


def test_non_finite_updates_are_refused() -> None:
    with pytest.raises(ValidationFailed):
        clip_by_l2_norm({"a": np.array([np.inf])}, 1.0)
