"""Keras gradient taps: FedProx's proximal gradient and SCAFFOLD's correction, inside the optimiser.

Keras 3 has no per-variable gradient hooks; every training step, though,
ends in ``optimizer.apply(grads, variables)`` (``model.fit`` reaches it
through ``apply_gradients``).  The tap replaces ``apply`` on the model's
compiled optimiser *instance* with a wrapper that adds

* ``mu * (w - w_global)`` (FedProx) and/or
* ``c - c_i`` (SCAFFOLD's drift correction),

and, for SCAFFOLD, adds the raw gradients into running sums.  Sums and the
step counter are Keras variables updated with ``assign_add``, so they work
inside the compiled training function (a Python counter would only count the
trace).  The wrapper is installed on the instance before ``fit`` traces it,
which is why the SDK call must come after ``model.compile(...)``;
:meth:`KerasGradientTap.remove` puts the original method back.

Names: the round's global model names Keras variables ``index/path`` (see
:mod:`libs.weights.frameworks`), so a trainable variable is found by its
position in ``model.weights``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from libs.weights.tensors import WeightMap
from task_executor.errors import SdkError


def _by_index(reference: Mapping[str, np.ndarray]) -> dict[int, str]:
    by_index = {}
    for name in reference:
        prefix = name.partition("/")[0]
        if prefix.isdigit():
            by_index[int(prefix)] = name
    return by_index


class KerasGradientTap:
    """A wrapper around the compiled optimiser's ``apply``; :meth:`remove` restores it."""

    def __init__(
        self,
        model: Any,
        reference: Mapping[str, np.ndarray],
        *,
        mu: float = 0.0,
        shift: Mapping[str, np.ndarray] | None = None,
        record: bool = False,
        optimizer: Any = None,
    ) -> None:
        import keras

        optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
        if optimizer is None:
            raise SdkError(
                "the Keras model has no optimizer yet: call nsfl.fedprox / nsfl.scaffold after model.compile(...)"
            )
        positions = {id(variable): index for index, variable in enumerate(model.weights)}
        names = _by_index(reference)
        self._names: dict[int, str] = {}
        for variable in model.trainable_variables:
            index = positions.get(id(variable))
            if index is None or index not in names:
                raise SdkError(f"the trainable variable {variable.path} is not in the round's global model")
            self._names[id(variable)] = names[index]
        ops = keras.ops
        self._anchors = (
            {key: ops.convert_to_tensor(np.asarray(reference[name])) for key, name in self._names.items()}
            if mu
            else {}
        )
        self._offsets = {
            key: ops.convert_to_tensor(np.asarray(shift[name]))
            for key, name in self._names.items()
            if shift is not None and name in shift
        }
        self._sums = (
            {
                key: keras.Variable(np.zeros(reference[name].shape, reference[name].dtype), trainable=False)
                for key, name in self._names.items()
            }
            if record
            else {}
        )
        self._steps = keras.Variable(0, dtype="int64", trainable=False)
        self._optimizer = optimizer
        self._original = optimizer.apply
        mu_value = float(mu)

        def apply(grads: Any, trainable_variables: Any = None) -> Any:
            variables = (
                list(trainable_variables)
                if trainable_variables is not None
                else optimizer._trainable_variables
            )
            scale = optimizer.loss_scale_factor  # gradients arrive scaled by it, if set
            changed = []
            for gradient, variable in zip(grads, variables, strict=True):
                key = id(variable)
                if gradient is None or key not in self._names:
                    changed.append(gradient)
                    continue
                gradient = ops.convert_to_tensor(gradient)
                if key in self._sums:
                    self._sums[key].assign_add(gradient if scale is None else gradient / scale)
                extra = None
                if key in self._anchors:
                    extra = mu_value * (variable - self._anchors[key])
                if key in self._offsets:
                    extra = self._offsets[key] if extra is None else extra + self._offsets[key]
                if extra is not None and scale is not None:
                    extra = extra * scale
                changed.append(gradient if extra is None else gradient + ops.cast(extra, gradient.dtype))
            self._steps.assign_add(1)
            return self._original(changed, trainable_variables)

        optimizer.apply = apply

    @property
    def steps(self) -> int:
        return int(np.asarray(self._steps.numpy()))

    def gradient_mean(self) -> WeightMap:
        """The mean raw gradient per trainable variable over the steps taken (empty before any)."""
        steps = self.steps
        if not steps:
            return {}
        return {
            self._names[key]: (np.asarray(total.numpy()) / steps).astype(total.dtype, copy=False)
            for key, total in self._sums.items()
        }

    def remove(self) -> None:
        if self._optimizer.__dict__.get("apply") is not None:
            del self._optimizer.__dict__["apply"]


def install(
    model: Any,
    reference: Mapping[str, np.ndarray],
    *,
    mu: float = 0.0,
    shift: Mapping[str, np.ndarray] | None = None,
    record: bool = False,
    optimizer: Any = None,
) -> KerasGradientTap:
    """Tap the gradients ``model.fit`` applies through its compiled optimiser."""
    return KerasGradientTap(model, reference, mu=mu, shift=shift, record=record, optimizer=optimizer)
