"""Converters between framework models and weight maps (PyTorch, Keras 3).

The rest of nsfl only sees :data:`~libs.weights.tensors.WeightMap`; these
functions are the one place that knows how a framework names and stores its
tensors.  ``torch`` and ``keras`` are imported inside the functions, never at
module level: a coordinator or an aggregator must not pay several seconds of
framework import (or need the framework installed) to handle weights, and the
import-linter contract on ``libs`` keeps it that way.

PyTorch: a ``state_dict`` maps dotted names to tensors, including buffers.
Non-float buffers (BatchNorm's ``num_batches_tracked``) keep their integer
dtype.  bfloat16 tensors are upcast to float32 (lossless; numpy has no native
bfloat16, see ``tensors.py``) and cast back by ``copy_`` when loaded.

Keras: variables have paths such as ``sequential/dense_1/kernel`` whose layer
names come from a per-process counter, so the same architecture built in two
processes may name its layers differently.  Names are therefore
``f"{index:04d}/{path}"``: the index keeps the model's own order (names sort in
that order) and is what loading matches on; the path is for people.  Loading
checks the count and every shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from libs.errors import InvalidWeights
from libs.weights.tensors import WeightMap, dtype_name
from libs.weights.validation import raise_if_problems


def _checked(name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    try:
        dtype_name(array.dtype)
    except InvalidWeights as exc:
        raise InvalidWeights(f"tensor {name!r}: {exc.message}") from None
    return array


# ---------------------------------------------------------------------- PyTorch


def from_torch_state_dict(state_dict: Mapping[str, Any], *, copy: bool = True) -> WeightMap:
    """A weight map from a ``state_dict`` (parameters and buffers).

    With ``copy=False`` the arrays of CPU tensors share memory with the model,
    so they change when it trains; the default takes a snapshot.
    """
    import torch

    weights: WeightMap = {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise InvalidWeights(f"state_dict entry {name!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        shared = tensor.device.type == "cpu"
        try:
            array = tensor.cpu().numpy()
        except TypeError as exc:
            raise InvalidWeights(
                f"tensor {name!r}: dtype {tensor.dtype} cannot be converted: {exc}"
            ) from None
        weights[name] = _checked(name, array.copy() if copy and shared else array)
    return dict(sorted(weights.items()))


def to_torch_state_dict(weights: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Tensors for ``Module.load_state_dict``; they share memory with writable arrays."""
    import torch

    state: dict[str, Any] = {}
    for name, array in weights.items():
        native = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
        if not native.flags.writeable:  # torch refuses to alias read-only memory
            native = native.copy()
        state[name] = torch.from_numpy(native)
    return state


def load_into_torch_module(module: Any, weights: Mapping[str, np.ndarray]) -> None:
    """Copy ``weights`` into ``module``; names and shapes must match its ``state_dict``."""
    import torch

    expected = module.state_dict()
    problems = []
    if missing := expected.keys() - weights.keys():
        problems.append(f"missing tensors {', '.join(repr(n) for n in sorted(missing))}")
    if extra := weights.keys() - expected.keys():
        problems.append(f"unexpected tensors {', '.join(repr(n) for n in sorted(extra))}")
    for name, tensor in expected.items():
        if name not in weights:
            continue
        array = weights[name]
        if tuple(array.shape) != tuple(tensor.shape):
            problems.append(
                f"tensor {name!r}: wrong shape {tuple(array.shape)} vs {tuple(tensor.shape)} expected"
            )
        if (array.dtype.kind == "f") != tensor.dtype.is_floating_point:
            problems.append(f"tensor {name!r}: dtype {array.dtype} cannot be loaded into {tensor.dtype}")
    raise_if_problems(problems, f"weights do not fit the {type(module).__name__} model")
    with torch.no_grad():
        module.load_state_dict(to_torch_state_dict(weights), strict=True)


# ------------------------------------------------------------------------ Keras


def _keras_names(variables: list[Any]) -> list[str]:
    width = max(4, len(str(len(variables) - 1)))
    return [f"{index:0{width}d}/{variable.path}" for index, variable in enumerate(variables)]


def from_keras_model(model: Any) -> WeightMap:
    """A weight map of ``model.weights`` (trainable and not), named ``index/path``."""
    variables = list(model.weights)
    return {
        name: _checked(name, np.asarray(variable.numpy()))
        for name, variable in zip(_keras_names(variables), variables, strict=True)
    }


def _index_of(name: str) -> int | None:
    prefix, _, _ = name.partition("/")
    return int(prefix) if prefix.isdigit() else None


def load_into_keras_model(model: Any, weights: Mapping[str, np.ndarray]) -> None:
    """Assign ``weights`` to ``model.weights``, matched by index; shapes must match."""
    variables = list(model.weights)
    by_index = {_index_of(name): (name, array) for name, array in weights.items()}
    problems = []
    if None in by_index or len(by_index) != len(weights):
        problems.append("names must be unique and start with the variable's index, like '0003/dense/bias'")
    if len(weights) != len(variables):
        problems.append(f"{len(weights)} tensors for a model with {len(variables)} variables")
    for index, variable in enumerate(variables):
        if index not in by_index:
            problems.append(f"no tensor for variable {index} ({variable.path})")
            continue
        name, array = by_index[index]
        if tuple(array.shape) != tuple(variable.shape):
            problems.append(
                f"tensor {name!r}: wrong shape {tuple(array.shape)} vs {tuple(variable.shape)} expected"
            )
    raise_if_problems(problems, f"weights do not fit the {type(model).__name__} model")
    for index, variable in enumerate(variables):
        variable.assign(by_index[index][1])
