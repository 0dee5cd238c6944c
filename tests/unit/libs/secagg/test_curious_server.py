"""What the server receives reveals no single client's input.

The server's whole transcript is inspected: every masked input looks uniform
and uncorrelated with the input behind it, it differs from the masked input
of another input under the same keys by exactly the difference of the inputs
(so the mask is the only thing hiding it, and the server never holds it), and
no client ever hands over both kinds of share for one peer.
"""

from __future__ import annotations

import numpy as np
import pytest

from libs.secagg.messages import MaskedInput, UnmaskRequest, UnmaskResponse
from libs.secagg.protocol import add_pairwise_masks
from libs.secagg.shamir import Share, combine_shares
from libs.secagg.simulation import DropPoint, TranscriptEntry, make_setup, simulate_round
from tests.unit.libs.secagg.harness import random_inputs, run_until_masked, seeded_bytes

BITS = 32
LENGTH = 20_000


def _masked_by_sender(transcript: tuple[TranscriptEntry, ...]) -> dict[str, np.ndarray]:
    return {e.sender: e.message.unpack() for e in transcript if isinstance(e.message, MaskedInput)}


def _uniform_statistics(vector: np.ndarray) -> tuple[float, float]:
    """Mean of ``vector / 2^k`` (0.5 if uniform) and the KS distance to the uniform law."""
    scaled = np.sort(vector.astype(np.float64) / 2.0**BITS)
    ranks = np.arange(1, len(scaled) + 1) / len(scaled)
    return float(scaled.mean()), float(np.max(np.abs(scaled - ranks)))


def test_masked_inputs_look_uniform_and_uncorrelated_with_the_inputs() -> None:
    setup = make_setup(5, 3, vector_length=LENGTH, ring_bits=BITS, random_bytes=seeded_bytes(11))
    # Inputs far from uniform: small values in a narrow band, strongly structured.
    inputs = [np.arange(LENGTH, dtype=np.uint64) * np.uint64(i + 1) % np.uint64(1000) for i in range(5)]
    result = simulate_round(setup, inputs, random_bytes=seeded_bytes(12))
    masked = _masked_by_sender(result.transcript)
    assert len(masked) == 5
    for cid, y in masked.items():
        x = inputs[setup.participants.index(cid)]
        mean, ks_distance = _uniform_statistics(y)
        assert abs(mean - 0.5) < 0.01
        assert ks_distance < 0.02  # the 0.1% critical value for n = 20000 is about 0.0138
        correlation = np.corrcoef(x.astype(np.float64), y.astype(np.float64))[0, 1]
        assert abs(correlation) < 0.04


def test_masked_inputs_under_the_same_keys_differ_exactly_by_the_input_difference() -> None:
    setup = make_setup(4, 3, vector_length=500, ring_bits=BITS, random_bytes=seeded_bytes(21))
    first, second = random_inputs(setup, 1), random_inputs(setup, 2)
    masked_first = _masked_by_sender(simulate_round(setup, first, random_bytes=seeded_bytes(22)).transcript)
    masked_second = _masked_by_sender(simulate_round(setup, second, random_bytes=seeded_bytes(22)).transcript)
    ring = np.uint64((1 << BITS) - 1)
    for i, cid in enumerate(setup.participants):
        difference = (masked_first[cid] - masked_second[cid]) & ring
        assert np.array_equal(difference, (first[i] - second[i]) & ring)
        # The mask (y - x) is identical in both runs, and nothing the server got equals it.
        mask = (masked_first[cid] - first[i]) & ring
        assert np.array_equal(mask, (masked_second[cid] - second[i]) & ring)
        assert abs(_uniform_statistics(mask)[0] - 0.5) < 0.05


def test_the_transcript_never_holds_both_shares_of_one_client() -> None:
    setup = make_setup(8, 5, vector_length=10, random_bytes=seeded_bytes(31))
    drops = {"client-2": DropPoint.AFTER_SHARING, "client-5": DropPoint.AFTER_SHARING}
    result = simulate_round(setup, random_inputs(setup, 31), dropouts=drops)
    assert result.total is not None
    key_owners: set[int] = set()
    mask_owners: set[int] = set()
    for entry in result.transcript:
        if isinstance(entry.message, UnmaskResponse):
            key_owners |= {e.owner for e in entry.message.masking_key_shares}
            mask_owners |= {e.owner for e in entry.message.self_mask_shares}
    assert key_owners == {2, 5}  # only the dropped clients' masking keys
    assert mask_owners == {1, 3, 4, 6, 7, 8}  # only the survivors' self masks
    assert not key_owners & mask_owners
    senders_of_inputs = set(_masked_by_sender(result.transcript))
    assert {"client-2", "client-5"}.isdisjoint(senders_of_inputs)


def test_a_server_that_calls_a_live_client_dropped_still_faces_its_self_mask() -> None:
    """The double mask at work: the server got y_u but claims u dropped to learn s_u.

    Honest peers hand over s_u shares, so the server strips every pairwise mask
    of u -- and is left with x_u + PRG(b_u), still uniform and uncorrelated.
    """
    n, t = 5, 3
    state, inputs = run_until_masked(n, t, vector_length=LENGTH, ring_bits=BITS)
    victim = 1
    session = state.setup.session_id
    request = UnmaskRequest(session, dropped=(victim,), survivors=(2, 3, 4, 5))
    responses = [state.clients[f"client-{i}"].unmask(request) for i in (2, 3, 4)]
    shares = [Share(i, r.masking_key_shares[0].share) for i, r in zip((2, 3, 4), responses, strict=True)]
    victim_key = combine_shares(shares, t)  # the server now knows s_1^SK

    y = state.masked["client-1"].unpack()
    peers = {e.index: e.masking_public_key for e in state.directory.entries}
    stripped = y.copy()
    # Remove the victim's own pairwise masks: what it added is what add_pairwise_masks adds as itself.
    minus = np.zeros_like(y)
    add_pairwise_masks(minus, victim, victim_key, peers, session, BITS)
    stripped = (stripped - minus) & np.uint64((1 << BITS) - 1)
    mean, ks_distance = _uniform_statistics(stripped)
    assert abs(mean - 0.5) < 0.01 and ks_distance < 0.02
    correlation = np.corrcoef(inputs[0].astype(np.float64), stripped.astype(np.float64))[0, 1]
    assert abs(correlation) < 0.04
    assert not np.array_equal(stripped, inputs[0])


@pytest.mark.parametrize("survivors", [(1, 2, 3, 4, 5), (2, 3, 4, 5)])
def test_no_single_response_lets_the_server_rebuild_a_secret(survivors: tuple[int, ...]) -> None:
    """Fewer than t responses give fewer than t shares: reconstruction fails its check."""
    state, _ = run_until_masked(5, 3)
    dropped = tuple(i for i in range(1, 6) if i not in survivors)
    request = UnmaskRequest(state.setup.session_id, dropped, survivors)
    responses = {i: state.clients[f"client-{i}"].unmask(request) for i in survivors[:2]}
    owner = survivors[-1]
    shares = [
        Share(i, next(e.share for e in r.self_mask_shares if e.owner == owner)) for i, r in responses.items()
    ]
    with pytest.raises(Exception, match="do not reconstruct"):
        combine_shares(shares, 2)
