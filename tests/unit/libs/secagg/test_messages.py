"""Every message survives both encodings; malformed input is refused before use."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.errors import ValidationFailed
from libs.secagg.messages import (
    DirectoryEntry,
    KeyAdvertisement,
    KeyDirectory,
    MaskedInput,
    RoundSetup,
    SealedShares,
    ShareDelivery,
    ShareEntry,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from libs.secagg.simulation import make_setup
from libs.secagg.wire import WireMessage

SESSION = bytes(range(32))
KEY_A, KEY_B = bytes(range(1, 33)), bytes(range(2, 34))

EXAMPLES: list[WireMessage] = [
    make_setup(5, 3, vector_length=101, clip_range=0.5, max_weight=250.0),
    KeyAdvertisement(SESSION, KEY_A, KEY_B),
    KeyAdvertisement(SESSION, KEY_A, KEY_B, signature=b"\x01" * 64),
    KeyDirectory(SESSION, (DirectoryEntry(1, KEY_A, KEY_B), DirectoryEntry(2, KEY_B, KEY_A, b"sig"))),
    ShareKeys(SESSION, (SealedShares(2, b"ciphertext"), SealedShares(3, b""))),
    ShareDelivery(SESSION, (SealedShares(1, b"x" * 200),)),
    MaskedInput.pack(SESSION, 32, np.arange(10, dtype=np.uint64)),
    UnmaskRequest(SESSION, (2, 4), (1, 3, 5)),
    UnmaskResponse(
        SESSION, (ShareEntry(2, bytes(66)),), (ShareEntry(1, bytes(66)), ShareEntry(3, bytes(66)))
    ),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_messages_round_trip_through_bytes_and_dicts(message: WireMessage) -> None:
    assert type(message).from_bytes(message.to_bytes()) == message
    assert type(message).from_dict(message.to_dict()) == message


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_truncated_or_padded_bytes_are_refused(message: WireMessage) -> None:
    data = message.to_bytes()
    with pytest.raises(ValidationFailed):
        type(message).from_bytes(data[:-1])
    with pytest.raises(ValidationFailed):
        type(message).from_bytes(data + b"\x00")


def test_a_message_of_another_type_or_format_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="expected a KeyDirectory"):
        KeyDirectory.from_bytes(EXAMPLES[1].to_bytes())
    with pytest.raises(ValidationFailed):
        KeyDirectory.from_bytes(b"\x80\x04pickle")


def test_dicts_with_unknown_missing_or_mistyped_fields_are_refused() -> None:
    plain = EXAMPLES[1].to_dict()
    with pytest.raises(ValidationFailed, match="unknown"):
        KeyAdvertisement.from_dict({**plain, "extra": 1})
    with pytest.raises(ValidationFailed, match="missing"):
        KeyAdvertisement.from_dict({k: v for k, v in plain.items() if k != "signature"})
    with pytest.raises(ValidationFailed):
        KeyAdvertisement.from_dict({**plain, "session_id": "not bytes"})
    with pytest.raises(ValidationFailed):
        UnmaskRequest.from_dict({"session_id": SESSION, "dropped": [True], "survivors": []})


def test_field_checks_run_on_decoding() -> None:
    with pytest.raises(ValidationFailed):
        KeyAdvertisement(SESSION, KEY_A[:31], KEY_B)
    with pytest.raises(ValidationFailed):
        UnmaskRequest(SESSION, (2, 2), (1,))
    setup = EXAMPLES[0].to_dict()
    with pytest.raises(ValidationFailed):
        RoundSetup.from_dict({**setup, "threshold": 1})
    with pytest.raises(ValidationFailed):
        RoundSetup.from_dict({**setup, "participants": ["a", "a", "b"]})


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(16, 64), seed=st.integers(0, 2**32))
def test_masked_vectors_pack_into_whole_bytes_per_element(bits: int, seed: int) -> None:
    vector = np.random.default_rng(seed).integers(0, 1 << bits, 37, dtype=np.uint64, endpoint=False)
    message = MaskedInput.pack(SESSION, bits, vector)
    assert len(message.vector) == 37 * ((bits + 7) // 8)
    assert np.array_equal(MaskedInput.from_bytes(message.to_bytes()).unpack(), vector)


def test_a_masked_vector_outside_the_ring_is_refused() -> None:
    message = MaskedInput(SESSION, 20, b"\xff\xff\xff" * 4)
    with pytest.raises(ValidationFailed, match="outside the ring"):
        message.unpack()
