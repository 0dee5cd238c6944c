"""``TaskContext``: what a function-mode entry receives instead of SDK calls.

In function mode the entry file is a module exposing plain functions::

    def train(ctx: TaskContext) -> tuple[model_or_weights, int | None, Mapping[str, float]]: ...
    def evaluate(ctx: TaskContext) -> Mapping[str, float] | tuple[Mapping[str, float], int]: ...
    def init(ctx: TaskContext) -> model_or_weights: ...   # only for jobs without an initial model

The runner calls the one the task's kind names.  Functions rather than a
script are what a long-lived executor can call round after round without
re-running module code (imports, data loading), which is why the context
carries :attr:`TaskContext.cache` and why everything a round differs in (the
global weights, the round number, the parameters) comes in through ``ctx``
rather than through module state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from libs.weights.tensors import WeightMap
from task_executor.errors import SdkError
from task_executor.runtimes import runtime_for_model
from task_executor.session import TaskSession


@dataclass(frozen=True)
class TaskContext:
    """One task's inputs for a function-mode entry."""

    kind: str
    round: int
    job_id: str
    client_id: str
    weights: WeightMap | None
    """The round's global model (None for ``init``): load it with :meth:`load_into`."""
    parameters: Mapping[str, Any]
    datasets: Mapping[str, str]
    dataset_samples: Mapping[str, int]
    cache: dict[str, Any]
    """Outlives the task in the same process; see ``nsfl.cache``."""
    _session: TaskSession = field(repr=False, compare=False)

    @classmethod
    def for_session(cls, session: TaskSession) -> TaskContext:
        spec = session.spec
        return cls(
            kind=spec.kind,
            round=spec.round,
            job_id=spec.job_id,
            client_id=spec.client_id,
            weights=session.global_weights,
            parameters=spec.parameters,
            datasets=spec.datasets,
            dataset_samples=spec.dataset_samples,
            cache=session.cache,
            _session=session,
        )

    def dataset_path(self, name: str) -> str:
        """Like ``nsfl.get_dataset_path``: a clear ``UnknownDataset`` for a name the task lacks."""
        return self._session.dataset_path(name)

    def parameter(self, name: str, default: Any = None) -> Any:
        return self.parameters.get(name, default)

    def load_into(self, model: Any) -> None:
        """Copy the global weights into a torch Module or Keras Model."""
        if self.weights is None:
            raise SdkError("an init task has no global model to load; build the model and return it")
        runtime_for_model(model).load(model, self.weights)
