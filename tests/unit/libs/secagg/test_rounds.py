"""Whole rounds over random sizes, thresholds and dropout points.

With at most n - t dropouts the unmasked sum equals the plain sum of the
inputs of the clients that sent one, exactly; with more the round aborts with
a reason and no sum.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from libs.secagg.messages import Mode
from libs.secagg.simulation import DropPoint, make_setup, plain_sum, simulate_round
from tests.unit.libs.secagg.harness import random_inputs, seeded_bytes

_POINTS = list(DropPoint)


def _random_case(seed: int) -> tuple[int, int, dict[str, DropPoint]]:
    chooser = random.Random(seed)
    n = chooser.randint(3, 12)
    t = chooser.randint(n // 2 + 1, n)
    dropped = chooser.sample(range(1, n + 1), chooser.randint(0, n - t + 1))  # n - t + 1 drops must abort
    return n, t, {f"client-{i}": chooser.choice(_POINTS) for i in dropped}


@pytest.mark.parametrize("seed", range(32))
def test_double_mask_round_sums_exactly_or_aborts_with_a_reason(seed: int) -> None:
    n, t, drops = _random_case(seed)
    bits = random.Random(seed).choice([16, 32, 48, 62, 64])
    setup = make_setup(n, t, vector_length=33, ring_bits=bits, random_bytes=seeded_bytes(seed))
    inputs = random_inputs(setup, seed)

    result = simulate_round(setup, inputs, dropouts=drops, random_bytes=seeded_bytes(seed + 1000))

    if n - len(drops) >= t:
        early = {DropPoint.BEFORE_KEYS, DropPoint.BEFORE_SHARING, DropPoint.AFTER_SHARING}
        contributed = [cid for cid in setup.participants if drops.get(cid) not in early]
        assert result.abort_reason is None
        assert result.contributors == tuple(contributed)
        expected = plain_sum([inputs[setup.participants.index(c)] for c in contributed], bits)
        assert result.total is not None and np.array_equal(result.total, expected)
    else:
        assert result.total is None
        assert result.abort_reason is not None and f"threshold {t}" in result.abort_reason


@pytest.mark.parametrize("point", _POINTS)
def test_dropouts_beyond_n_minus_t_abort_at_every_point(point: DropPoint) -> None:
    setup = make_setup(5, 3, vector_length=8, random_bytes=seeded_bytes(7))
    drops = dict.fromkeys(("client-1", "client-2", "client-3"), point)
    result = simulate_round(setup, random_inputs(setup, 7), dropouts=drops)
    assert result.total is None
    assert result.abort_reason is not None and "only 2 of 5" in result.abort_reason


def test_clients_dropping_at_every_point_at_once_still_sum_exactly() -> None:
    setup = make_setup(9, 5, vector_length=40, random_bytes=seeded_bytes(3))
    inputs = random_inputs(setup, 3)
    drops = {
        "client-2": DropPoint.BEFORE_KEYS,
        "client-4": DropPoint.BEFORE_SHARING,
        "client-6": DropPoint.AFTER_SHARING,
        "client-8": DropPoint.AFTER_MASKED_INPUT,
    }
    result = simulate_round(setup, inputs, dropouts=drops)
    survivors = [0, 2, 4, 6, 7, 8]  # client-8 sent its input before dropping: it is in the sum
    assert result.total is not None
    assert np.array_equal(result.total, plain_sum([inputs[i] for i in survivors], 32))


def test_one_mask_round_sums_exactly_when_nobody_drops() -> None:
    setup = make_setup(6, 6, vector_length=25, mode=Mode.ONE_MASK, random_bytes=seeded_bytes(5))
    inputs = random_inputs(setup, 5)
    result = simulate_round(setup, inputs)
    assert result.total is not None and np.array_equal(result.total, plain_sum(inputs, 32))
    assert {entry.stage for entry in result.transcript} == {"advertise-keys", "masked-input"}


@pytest.mark.parametrize("point", _POINTS)
def test_one_mask_round_aborts_on_any_dropout(point: DropPoint) -> None:
    setup = make_setup(4, 4, vector_length=5, mode=Mode.ONE_MASK, random_bytes=seeded_bytes(9))
    result = simulate_round(setup, random_inputs(setup, 9), dropouts={"client-3": point})
    if point is DropPoint.AFTER_MASKED_INPUT:  # nothing is asked after the input in one-mask mode
        assert result.total is not None
    else:
        assert result.total is None
        assert result.abort_reason is not None and "one-mask mode needs every client" in result.abort_reason
