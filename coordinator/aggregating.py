"""Where a round's accepted updates go (:class:`UpdateSink`), and the plain streaming FedAvg mean.

The upload gate (:mod:`coordinator.uploads`) hands every accepted client
delta to the round's :class:`UpdateSink` as it arrives, with its sample count,
the client's id and the update's attachments (SCAFFOLD's control-variate
delta, see :mod:`libs.aggregation.attachments`); under secure aggregation
:mod:`coordinator.secure_rounds` hands over the round's unmasked mean once,
without a client id.  The job's algorithm
(:mod:`coordinator.algorithms`: the aggregation rule from
``libs.aggregation.make_aggregator``, the server optimiser, SCAFFOLD,
differential privacy and extenders) builds one per round attempt: a
:class:`~coordinator.round_aggregation.RoundAggregation`.  The sink is the
role (what the round core needs), the round aggregation the job's
implementation of it.

:class:`StreamingMean` is the bare sample-weighted FedAvg mean (memory: the
running sum plus the update in flight, whatever the client count, DESIGN
§5.4), for tools and tests that need nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from libs.aggregation.accumulator import WeightedSum

WeightMap = dict[str, np.ndarray]


class UpdateSink(Protocol):
    """Takes a round's accepted updates one by one, then gives what they aggregate to."""

    def add(self, delta: Mapping[str, np.ndarray], weight: float, *, client_id: str = "",
            attachments: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> Any: ...

    def result(self) -> Any: ...


class StreamingMean:
    """Sample-weighted FedAvg mean of the deltas, folded as they arrive."""

    def __init__(self, reference: Mapping[str, np.ndarray]) -> None:
        self._sum = WeightedSum(reference)

    def add(self, delta: Mapping[str, np.ndarray], weight: float, *, client_id: str = "",
            attachments: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> Any:
        return self._sum.add(delta, weight)

    def result(self) -> WeightMap:
        return self._sum.mean()
