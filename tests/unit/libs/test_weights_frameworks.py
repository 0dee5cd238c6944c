"""PyTorch and Keras converters of libs.weights.frameworks (small models only)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from libs.errors import InvalidWeights
from libs.weights.frameworks import (
    from_keras_model,
    from_torch_state_dict,
    load_into_keras_model,
    load_into_torch_module,
    to_torch_state_dict,
)
from libs.weights.tensors import decode, encode

torch = pytest.importorskip("torch")


def torch_model(seed: int) -> Any:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU(), torch.nn.Linear(3, 2)
    )


def test_a_torch_state_dict_becomes_sorted_numpy_with_int_buffers_kept() -> None:
    model = torch_model(0)
    weights = from_torch_state_dict(model.state_dict())
    assert list(weights) == sorted(model.state_dict())
    assert weights["1.num_batches_tracked"].dtype == np.int64
    assert weights["0.weight"].dtype == np.float32
    np.testing.assert_array_equal(weights["0.weight"], model[0].weight.detach().numpy())


def test_the_torch_snapshot_does_not_follow_later_training_unless_asked() -> None:
    model = torch_model(0)
    snapshot = from_torch_state_dict(model.state_dict())
    live = from_torch_state_dict(model.state_dict(), copy=False)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    np.testing.assert_array_equal(live["0.weight"], model[0].weight.detach().numpy())
    assert not np.array_equal(snapshot["0.weight"], live["0.weight"])


def test_torch_weights_survive_encoding_and_load_into_another_module() -> None:
    source, target = torch_model(0), torch_model(1)
    load_into_torch_module(target, decode(encode(from_torch_state_dict(source.state_dict()))))
    for name, tensor in source.state_dict().items():
        assert torch.equal(tensor, target.state_dict()[name]), name


def test_bfloat16_torch_tensors_are_upcast_to_float32() -> None:
    weights = from_torch_state_dict({"w": torch.ones(2, dtype=torch.bfloat16)})
    assert weights["w"].dtype == np.float32
    assert to_torch_state_dict(weights)["w"].dtype == torch.float32


def test_loading_mismatched_weights_into_torch_names_every_problem() -> None:
    weights = from_torch_state_dict(torch_model(0).state_dict())
    weights["0.weight"] = np.zeros((4, 3), np.float32)
    weights["1.num_batches_tracked"] = np.zeros((), np.float32)
    del weights["3.bias"]
    weights["extra"] = np.zeros(1, np.float32)
    with pytest.raises(InvalidWeights) as caught:
        load_into_torch_module(torch_model(0), weights)
    message = caught.value.message
    assert "missing tensors '3.bias'" in message
    assert "unexpected tensors 'extra'" in message
    assert "tensor '0.weight': wrong shape (4, 3) vs (3, 4) expected" in message
    assert "tensor '1.num_batches_tracked': dtype float32 cannot be loaded into torch.int64" in message


def test_read_only_decoded_arrays_become_torch_tensors_without_warnings() -> None:
    weights = decode(encode({"w": np.arange(3, dtype=np.float32)}))
    assert torch.equal(to_torch_state_dict(weights)["w"], torch.tensor([0.0, 1.0, 2.0]))


@pytest.fixture(scope="module")
def keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("keras")


def keras_model(keras: Any, units: int = 3) -> Any:
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(units),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )


def test_keras_weights_keep_model_order_and_load_into_a_model_built_elsewhere(keras: Any) -> None:
    source, target = keras_model(keras), keras_model(keras)
    weights = from_keras_model(source)
    assert list(weights) == sorted(weights)
    assert list(weights)[0].startswith("0000/") and list(weights)[0].endswith("/kernel")
    assert len(weights) == len(source.weights) == 8  # BatchNorm's moving statistics included
    load_into_keras_model(target, decode(encode(weights)))
    for left, right in zip(source.weights, target.weights, strict=True):
        np.testing.assert_array_equal(left.numpy(), right.numpy())


def test_loading_mismatched_weights_into_keras_is_refused_before_any_assignment(keras: Any) -> None:
    target = keras_model(keras)
    before = [variable.numpy().copy() for variable in target.weights]
    with pytest.raises(InvalidWeights, match=r"wrong shape \(4, 5\) vs \(4, 3\) expected"):
        load_into_keras_model(target, from_keras_model(keras_model(keras, units=5)))
    for variable, old in zip(target.weights, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), old)
