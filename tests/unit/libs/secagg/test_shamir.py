"""Any t of n Shamir shares rebuild the secret; fewer never pass for it."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.errors import ValidationFailed
from libs.secagg.shamir import SHARE_BYTES, Share, combine_shares, split_secret


@st.composite
def sharings(draw: st.DrawFn) -> tuple[bytes, int, list[int], random.Random]:
    n = draw(st.integers(2, 12))
    t = draw(st.integers(1, n))
    holders = draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True))
    return draw(st.binary(min_size=32, max_size=32)), t, holders, random.Random(draw(st.integers(0, 2**32)))


@settings(max_examples=60, deadline=None)
@given(sharings())
def test_any_threshold_subset_rebuilds_the_secret(case: tuple[bytes, int, list[int], random.Random]) -> None:
    secret, t, holders, chooser = case
    shares = split_secret(secret, t, holders, os.urandom)
    subset = chooser.sample(list(shares.values()), t)
    assert combine_shares(subset, t) == secret
    assert combine_shares(list(shares.values()), t) == secret


@settings(max_examples=60, deadline=None)
@given(sharings())
def test_fewer_than_threshold_shares_are_detected(case: tuple[bytes, int, list[int], random.Random]) -> None:
    secret, t, holders, chooser = case
    if t < 2:
        return
    shares = split_secret(secret, t, holders, os.urandom)
    subset = chooser.sample(list(shares.values()), t - 1)
    with pytest.raises(ValidationFailed):
        combine_shares(subset, t)
    with pytest.raises(ValidationFailed):  # a caller that understates t gets garbage, which the tag catches
        combine_shares(subset, t - 1)


def test_a_corrupted_share_is_detected() -> None:
    shares = list(split_secret(bytes(range(32)), 3, [1, 2, 3, 4, 5]).values())
    bad = Share(shares[0].x, (shares[0].value ^ 1).to_bytes(SHARE_BYTES, "big"))
    with pytest.raises(ValidationFailed):
        combine_shares([bad, shares[1], shares[2]], 3)


def test_duplicate_shares_and_bad_parameters_are_refused() -> None:
    shares = list(split_secret(bytes(32), 2, [1, 2, 3]).values())
    with pytest.raises(ValidationFailed):
        combine_shares([shares[0], shares[0]], 2)
    with pytest.raises(ValidationFailed):
        split_secret(bytes(31), 2, [1, 2, 3])
    with pytest.raises(ValidationFailed):
        split_secret(bytes(32), 4, [1, 2, 3])
    with pytest.raises(ValidationFailed):
        split_secret(bytes(32), 2, [1, 1, 3])
