"""The round's global model: encoded once, whichever route serves it (coordinator.model_state)."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator import model_state
from coordinator.model_state import INLINE_MODEL_BYTES, GlobalModel
from libs.aggregation.attachments import SERVER_CONTROL, split
from libs.weights.tensors import decode, encode, sha256_hex

WEIGHTS = {"fc.bias": np.arange(2, dtype=np.float32), "fc.weight": np.ones((2, 3), np.float32)}


@pytest.fixture
def encodings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times a model is encoded (the number of tensors of each encoding)."""
    counted: list[int] = []

    def counting(weights: dict[str, np.ndarray]) -> bytes:
        counted.append(len(weights))
        return encode(weights)

    monkeypatch.setattr(model_state, "encode", counting)
    return counted


def test_every_route_serves_the_bytes_of_one_encoding(encodings: list[int]) -> None:
    model = GlobalModel.from_weights(dict(WEIGHTS), 3)
    assert model.size == len(encode(WEIGHTS)) and encodings == [], "the size needs no encoding"
    inline, download, again = model.inline, model.payload, model.inline
    assert inline is download is again and model.sha256 == sha256_hex(encode(WEIGHTS))
    assert encodings == [2]
    assert not model.weights["fc.weight"].flags.writeable, "the arrays are views into the served bytes"


def test_a_model_only_named_by_its_record_is_hashed_without_being_encoded(encodings: list[int]) -> None:
    model = GlobalModel.from_weights(dict(WEIGHTS), 3)
    assert model.sha256 == sha256_hex(encode(WEIGHTS)) and encodings == []
    assert model.payload == encode(WEIGHTS) and encodings == [2] and model.sha256 == sha256_hex(model.payload)


def test_a_model_published_with_attachments_is_encoded_at_once_and_keeps_its_own_weights(
    encodings: list[int],
) -> None:
    control = {"fc.bias": np.zeros(2, np.float32)}
    base = GlobalModel.from_weights(dict(WEIGHTS), 3)
    published = base.with_attachments({SERVER_CONTROL: control})
    assert encodings == [3], "the published bytes only: the base is never encoded"
    control["fc.bias"] += 1  # c moves at the round's end; the published bytes do not
    weights, attachments = split(decode(published.payload))
    assert not attachments[SERVER_CONTROL]["fc.bias"].any() and weights.keys() == WEIGHTS.keys()
    assert published.weights.keys() == WEIGHTS.keys() and published.sha256 == sha256_hex(published.payload)
    assert published.sha256 != base.sha256


def test_only_a_small_model_travels_inline() -> None:
    large = GlobalModel.from_weights({"w": np.zeros(INLINE_MODEL_BYTES // 4 + 1, np.float32)}, 1)
    assert large.inline == b"" and large.size > INLINE_MODEL_BYTES
