"""The TensorFlow runtime: a Keras 3 ``Model`` <-> weight map.

Keras names a variable by a layer path that comes from a per-process counter
(``dense_3/kernel`` in one process is ``dense/kernel`` in another), and
:mod:`libs.weights.frameworks` therefore names tensors ``index/path`` and
loads by index.  The coordinator, though, checks an update's *names* against
the global model's, so :meth:`TensorFlowRuntime.weights_of` renames the
extracted tensors to the reference's names index by index: a delta computed
on one client then carries the names of the model the coordinator published.

``keras`` is imported inside the methods only, and ``owns`` looks at
``sys.modules`` so a PyTorch task never imports TensorFlow.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from libs.weights.frameworks import from_keras_model, load_into_keras_model
from libs.weights.tensors import WeightMap
from task_executor.errors import SdkError


def _index(name: str) -> str:
    return name.partition("/")[0]


def renamed_like(weights: WeightMap, reference: Mapping[str, np.ndarray]) -> WeightMap:
    """``weights`` under the reference's names, matched by their index prefix.

    Left as they are when the two do not pair up one to one: the later shape
    check then reports the real mismatch instead of a renaming artefact.
    """
    by_index = {_index(name): name for name in reference}
    if len(by_index) != len(reference) or {_index(name) for name in weights} != set(by_index):
        return weights
    return dict(sorted((by_index[_index(name)], array) for name, array in weights.items()))


class TensorFlowRuntime:
    name = "tensorflow"

    def owns(self, model: object) -> bool:
        keras = sys.modules.get("keras")
        return keras is not None and isinstance(model, keras.Model)

    def weights_of(self, model: Any, reference: Mapping[str, np.ndarray] | None = None) -> WeightMap:
        weights = from_keras_model(model)
        return weights if reference is None else renamed_like(weights, reference)

    def load(self, model: Any, weights: Mapping[str, np.ndarray]) -> None:
        if weights and not model.weights:
            # The usual cause: a Sequential without an Input has no variables until its first call.
            raise SdkError(
                f"the Keras model {model.name!r} has no weights yet; build it first "
                "(give it a keras.Input, or call model.build(input_shape)) before nsfl.load_weights"
            )
        load_into_keras_model(model, weights)

    def seed(self, seed: int) -> None:
        import keras

        keras.utils.set_random_seed(seed)


RUNTIME = TensorFlowRuntime()
