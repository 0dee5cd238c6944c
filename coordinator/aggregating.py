"""Bridge from the job spec to the pure algorithms of ``libs.aggregation``.

Two roles per round:

* a :class:`RoundAggregator` takes each accepted client delta with its
  sample count.  The FedAvg family folds it into a running weighted sum at
  once (memory: the sum plus the update in flight, whatever the client
  count, DESIGN §5.4); robust rules (median, trimmed mean, Krum) need every
  update of the round, so they keep them and decide at the end.
* a :class:`ServerStep` turns the round's aggregate into the next global
  model (server learning rate, or a server optimiser such as FedAdam) and
  carries the optimiser state that checkpoints save and restore.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from libs.aggregation.accumulator import WeightedSum
from libs.aggregation.server_optimizers import make_server_optimizer

WeightMap = dict[str, np.ndarray]


class RoundAggregator(Protocol):
    def add(self, delta: Mapping[str, np.ndarray], weight: float) -> Any: ...

    def result(self) -> WeightMap: ...


class StreamingMean:
    """Sample-weighted FedAvg mean of the deltas, folded as they arrive."""

    def __init__(self, reference: Mapping[str, np.ndarray]) -> None:
        self._sum = WeightedSum(reference)

    def add(self, delta: Mapping[str, np.ndarray], weight: float) -> Any:
        return self._sum.add(delta, weight)

    def result(self) -> WeightMap:
        return self._sum.mean()


class ServerStep:
    """x_{t+1} = optimiser(x_t, Δ_t); FedAvg is x_t + η·Δ_t."""

    def __init__(self, name: str, params: Mapping[str, Any], learning_rate: float) -> None:
        # ``serverLearningRate`` defaults to 1.0 (FedAvg as published); the adaptive optimisers
        # keep their own published default unless the job sets a rate for them explicitly.
        merged = dict(params)
        if "learningRate" not in merged and (name in ("fedavg", "fedavgm") or learning_rate != 1.0):
            merged["learningRate"] = learning_rate
        self.optimizer = make_server_optimizer(name, merged)

    def apply(self, weights: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]) -> WeightMap:
        stepped: WeightMap = self.optimizer.step(dict(weights), dict(delta))
        return stepped

    def state(self) -> dict[str, Any]:
        return dict(self.optimizer.state())

    def load_state(self, state: Mapping[str, Any]) -> None:
        if state:
            self.optimizer.load_state(dict(state))


SERVER_OPTIMIZERS = {"fedavg": "fedavg", "fedprox": "fedavg", "scaffold": "fedavg", "fedavgm": "fedavgm",
                     "fedadam": "fedadam", "fedyogi": "fedyogi", "fedadagrad": "fedadagrad"}


def server_step_for(spec: Mapping[str, Any]) -> ServerStep:
    aggregation = spec.get("aggregation") or {}
    name = aggregation.get("name", "fedavg")
    optimizer_name = SERVER_OPTIMIZERS.get(name, "fedavg")
    return ServerStep(optimizer_name, dict(spec.get("optimizer") or {}), float(spec.get("serverLearningRate", 1.0)))


def aggregator_factory(spec: Mapping[str, Any]) -> Any:
    def make(model: Any) -> RoundAggregator:
        return StreamingMean(model.weights)

    return make
