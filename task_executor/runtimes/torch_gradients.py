"""PyTorch gradient taps: FedProx's proximal gradient and SCAFFOLD's correction, as parameter hooks.

A tensor hook (``Parameter.register_hook``) sees each parameter's gradient
during ``loss.backward()`` and may return a replacement, which is what the
user's optimiser then uses.  So one SDK call changes local training without
touching the user's loss or optimiser:

* FedProx adds ``mu * (w - w_global)``, the gradient of ``(mu/2)||w - w_global||^2``;
* SCAFFOLD adds ``c - c_i`` (the drift correction of eq. (3)) and records the
  raw gradients, whose mean over the round's steps is the client's new
  control variate (see :mod:`task_executor.client_algorithms`).

Every backward pass counts as one local step (K); it is counted on the first
trainable parameter's hook.  ``torch`` is imported lazily like in the other
runtime adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from libs.weights.tensors import WeightMap
from task_executor.errors import SdkError


class TorchGradientTap:
    """Hooks on a module's trainable parameters; :meth:`remove` takes them off."""

    def __init__(
        self,
        model: Any,
        reference: Mapping[str, np.ndarray],
        *,
        mu: float = 0.0,
        shift: Mapping[str, np.ndarray] | None = None,
        record: bool = False,
    ) -> None:
        import torch

        self._torch = torch
        self._handles: list[Any] = []
        self._sums: dict[str, Any] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self.steps = 0
        parameters = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        unknown = [name for name, _ in parameters if name not in reference]
        if unknown:
            raise SdkError(f"the model's parameters {unknown[:3]} are not in the round's global model")
        for index, (name, parameter) in enumerate(parameters):
            anchor = self._tensor(reference[name], parameter) if mu else None
            offset = self._tensor(shift[name], parameter) if shift is not None and name in shift else None
            if record:
                self._sums[name] = torch.zeros_like(parameter, memory_format=torch.contiguous_format)
                self._dtypes[name] = reference[name].dtype
            hook = self._hook(name, parameter, mu, anchor, offset, counts=index == 0)
            self._handles.append(parameter.register_hook(hook))

    def _tensor(self, array: np.ndarray, like: Any) -> Any:
        return self._torch.from_numpy(np.array(array, copy=True)).to(device=like.device, dtype=like.dtype)

    def _hook(self, name: str, parameter: Any, mu: float, anchor: Any, offset: Any, *, counts: bool) -> Any:
        sums = self._sums

        def hook(grad: Any) -> Any:
            if counts:
                self.steps += 1
            if name in sums:
                sums[name].add_(grad.detach())
            out = grad
            if anchor is not None:
                out = out + mu * (parameter.detach() - anchor)
            if offset is not None:
                out = out + offset
            return out

        return hook

    def gradient_mean(self) -> WeightMap:
        """The mean raw gradient per recorded parameter over the steps taken (empty before any)."""
        if not self.steps:
            return {}
        return {
            name: (total / self.steps).detach().cpu().numpy().astype(self._dtypes[name], copy=False)
            for name, total in self._sums.items()
        }

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def install(
    model: Any,
    reference: Mapping[str, np.ndarray],
    *,
    mu: float = 0.0,
    shift: Mapping[str, np.ndarray] | None = None,
    record: bool = False,
    optimizer: Any = None,
) -> TorchGradientTap:
    """Tap ``model``'s gradients (``optimizer`` is not needed: hooks act on the parameters)."""
    return TorchGradientTap(model, reference, mu=mu, shift=shift, record=record)
