"""Attachments ride in the model's payload under reserved names and come apart exactly."""

from __future__ import annotations

import numpy as np
import pytest

from libs.aggregation.attachments import (
    CONTROL_DELTA,
    FILE,
    PREFIX,
    SERVER_CONTROL,
    file_bytes,
    file_tensor,
    is_reserved,
    join,
    split,
)
from libs.errors import InvalidWeights
from libs.weights.tensors import decode, encode


def model() -> dict[str, np.ndarray]:
    return {"fc.weight": np.ones((2, 3), np.float32), "fc.bias": np.zeros(2, np.float32)}


def test_joined_attachments_survive_encoding_and_split_back_from_the_model() -> None:
    control = {name: np.full_like(array, 0.5) for name, array in model().items()}
    files = {"vocab.txt": file_tensor(b"a\nb\n")}
    joined = join(model(), {SERVER_CONTROL: control, FILE: files})

    weights, attachments = split(decode(encode(joined)))

    assert sorted(weights) == ["fc.bias", "fc.weight"]
    assert sorted(attachments) == [FILE, SERVER_CONTROL]
    np.testing.assert_array_equal(attachments[SERVER_CONTROL]["fc.weight"], control["fc.weight"])
    assert file_bytes(attachments[FILE]["vocab.txt"]) == b"a\nb\n"


def test_a_map_without_attachments_splits_into_itself() -> None:
    weights, attachments = split(model())
    assert weights.keys() == model().keys() and attachments == {}


def test_a_model_tensor_may_not_use_the_reserved_prefix() -> None:
    with pytest.raises(InvalidWeights, match="must not start with"):
        join({f"{PREFIX}x": np.zeros(1, np.float32)}, {})
    assert is_reserved(f"{PREFIX}{CONTROL_DELTA}/w") and not is_reserved("w")


def test_an_unknown_attachment_kind_is_refused_both_ways() -> None:
    with pytest.raises(InvalidWeights, match="unknown attachment kind"):
        join(model(), {"secret": {"w": np.zeros(1, np.float32)}})
    with pytest.raises(InvalidWeights, match="no known kind"):
        split({f"{PREFIX}secret/w": np.zeros(1, np.float32)})


def test_a_file_must_travel_as_a_flat_byte_tensor() -> None:
    with pytest.raises(InvalidWeights, match="1-D uint8"):
        file_bytes(np.zeros((2, 2), np.uint8))
    assert file_bytes(file_tensor(b"")) == b""
