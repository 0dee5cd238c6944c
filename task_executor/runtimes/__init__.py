"""The ``Runtime`` protocol: what the executor needs from a deep-learning framework.

A runtime turns a framework model into a framework-neutral
:data:`~libs.weights.tensors.WeightMap` and back, and seeds the framework's
random generators.  Two adapters implement it, :mod:`.pytorch` and
:mod:`.tensorflow` (Keras 3); each imports its framework only inside its own
functions, so nothing else in the executor (nor the SDK) ever imports torch
or tensorflow, and a PyTorch task never pays TensorFlow's import.

:func:`runtime_for_model` finds the adapter that owns a model *without
importing any framework*: a model can only be a ``torch.nn.Module`` if torch
is already in ``sys.modules`` (the script made it), so each adapter looks
there first.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from libs.weights.tensors import WeightMap
from task_executor.errors import SdkError

_MODULES = {"pytorch": "task_executor.runtimes.pytorch", "tensorflow": "task_executor.runtimes.tensorflow"}


class Runtime(Protocol):
    """One framework's side of the executor (see the module docstring)."""

    name: str

    def owns(self, model: object) -> bool:
        """Whether ``model`` is this framework's model (without importing the framework)."""
        ...

    def weights_of(self, model: Any, reference: Mapping[str, np.ndarray] | None = None) -> WeightMap:
        """A snapshot of ``model``'s weights; names follow ``reference`` when given."""
        ...

    def load(self, model: Any, weights: Mapping[str, np.ndarray]) -> None:
        """Copy ``weights`` into ``model`` (names and shapes must fit)."""
        ...

    def seed(self, seed: int) -> None:
        """Seed the framework's random generators."""
        ...


def runtime_named(name: str) -> Runtime:
    """The adapter for a ``task.json`` runtime name (``pytorch`` or ``tensorflow``)."""
    if name not in _MODULES:
        raise SdkError(f"unknown runtime {name!r}; known: {', '.join(sorted(_MODULES))}")
    runtime: Runtime = importlib.import_module(_MODULES[name]).RUNTIME
    return runtime


# What a framework imports on first use rather than on ``import``: a warm worker imports it up front
# (``warm_up``), so neither the first round of every job nor a collection of the garbage pays it.
_LAZY_PARTS = {
    "pytorch": ("torch", ("torch._dynamo",)),  # the first optimizer step imports it (seconds)
    "tensorflow": ("tensorflow", ("keras",)),
}


def warm_up(name: str) -> None:
    """Import what runtime ``name``'s tasks would import on first use, if its framework is loaded.

    The task manager's warm worker calls it (``warm_up_entry``) before it starts forking: imports
    only, nothing that starts a thread.  A worker that did not preload the framework loads nothing.
    """
    if name not in _MODULES:
        return
    framework, parts = _LAZY_PARTS[name]
    if framework not in sys.modules:
        return
    importlib.import_module(_MODULES[name])
    for part in parts:
        importlib.import_module(part)


def runtime_for_model(model: object) -> Runtime:
    """The adapter that owns ``model``; :class:`SdkError` if none does."""
    for name in _MODULES:
        runtime = runtime_named(name)
        if runtime.owns(model):
            return runtime
    raise SdkError(
        f"a {type(model).__module__}.{type(model).__qualname__} is neither a torch.nn.Module "
        "nor a keras.Model; pass the model object itself"
    )
