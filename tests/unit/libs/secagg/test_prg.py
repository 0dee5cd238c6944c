"""The PRG expands seeds deterministically into uniform-looking ring elements."""

from __future__ import annotations

import time

import numpy as np
import pytest

from libs.errors import ValidationFailed
from libs.secagg.prg import add_mask, expand_seed


def test_same_seed_gives_same_mask_and_different_seeds_differ() -> None:
    first = expand_seed(bytes(range(32)), 1000, 32)
    assert np.array_equal(first, expand_seed(bytes(range(32)), 1000, 32))
    assert not np.array_equal(first, expand_seed(bytes(range(1, 33)), 1000, 32))


@pytest.mark.parametrize("bits", [16, 32, 48, 62, 64])
def test_mask_stays_in_the_ring_and_looks_uniform(bits: int) -> None:
    mask = expand_seed(bytes(32), 200_000, bits)
    assert mask.dtype == np.uint64
    if bits < 64:
        assert int(mask.max()) < 1 << bits
    top_bit = (mask >> np.uint64(bits - 1)) & np.uint64(1)
    assert abs(float(top_bit.mean()) - 0.5) < 0.01
    low_bit = mask & np.uint64(1)
    assert abs(float(low_bit.mean()) - 0.5) < 0.01


def test_a_shorter_mask_is_a_prefix_of_a_longer_one() -> None:
    assert np.array_equal(expand_seed(bytes(32), 10, 32), expand_seed(bytes(32), 100, 32)[:10])


def test_adding_then_subtracting_a_mask_restores_the_vector() -> None:
    vector = np.arange(1000, dtype=np.uint64)
    add_mask(vector, bytes(32), 64)
    assert not np.array_equal(vector, np.arange(1000, dtype=np.uint64))
    add_mask(vector, bytes(32), 64, sign=-1)
    assert np.array_equal(vector, np.arange(1000, dtype=np.uint64))


def test_a_million_element_mask_takes_milliseconds() -> None:
    expand_seed(bytes(32), 1_000_000, 32)  # warm up
    start = time.perf_counter()
    expand_seed(bytes(32), 1_000_000, 32)
    assert time.perf_counter() - start < 0.25  # ~5 ms on one core; generous for shared CI cores


@pytest.mark.parametrize(("seed", "bits"), [(bytes(31), 32), (bytes(32), 15), (bytes(32), 65)])
def test_bad_seed_or_ring_is_refused(seed: bytes, bits: int) -> None:
    with pytest.raises(ValidationFailed):
        expand_seed(seed, 10, bits)
