"""The PyTorch runtime: ``torch.nn.Module`` <-> weight map through the module's ``state_dict``.

``torch`` is imported inside the methods only; by the time they run, the user
script (or the warm worker) has imported it already, so the import is free.
Names are the ``state_dict`` keys, which are stable across processes, so the
``reference`` names need no mapping here.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from libs.weights.frameworks import from_torch_state_dict, load_into_torch_module
from libs.weights.tensors import WeightMap


class PyTorchRuntime:
    name = "pytorch"

    def owns(self, model: object) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(model, torch.nn.Module)

    def weights_of(self, model: Any, reference: Mapping[str, np.ndarray] | None = None) -> WeightMap:
        return from_torch_state_dict(model.state_dict(), copy=True)

    def load(self, model: Any, weights: Mapping[str, np.ndarray]) -> None:
        load_into_torch_module(model, weights)

    def seed(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)


RUNTIME = PyTorchRuntime()
