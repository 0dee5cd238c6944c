"""Aggregation and server-optimisation algorithms: numpy in, numpy out.

Pure algorithms for the coordinator's round (DESIGN §4 "algorithm", §5 steps
4-5) and for the client SDK; no I/O, no clocks, no randomness.  The
coordinator's loop does the waiting and storing and calls in here.

Modules (each docstring gives the algorithm, its source and assumptions):

* :mod:`.types` -- :data:`WeightMap` (name -> float array) and layouts;
* :mod:`.validation` -- layout and finiteness checks with actionable messages;
* :mod:`.accumulator` -- :class:`WeightedSum`, streaming FedAvg;
* :mod:`.server_optimizers` -- FedAvg, FedAvgM, FedAdagrad, FedAdam, FedYogi;
* :mod:`.robust` -- median, trimmed mean, Krum, Multi-Krum, norm clipping/screening;
* :mod:`.client_side` -- FedProx and SCAFFOLD maths;
* :mod:`.parameters` -- strict hyper-parameter tables;
* :mod:`.registry` -- job-spec names to an :class:`Aggregator` description;
* :mod:`.attachments` -- reserved tensor names for what travels beside a
  model or a delta (SCAFFOLD's control variates, broadcast files).

Sign convention everywhere: a delta is ``trained - global`` and the server
step is ``x_{t+1} = x_t + eta * update``.
"""

from libs.aggregation.accumulator import WeightedSum
from libs.aggregation.client_side import (
    ScaffoldDeltas,
    ScaffoldServerState,
    prox_gradient,
    prox_penalty,
    scaffold_client_control,
    scaffold_client_deltas,
    scaffold_corrected_gradient,
    scaffold_server_update,
    zero_control,
)
from libs.aggregation.registry import ALGORITHMS, Aggregator, Mode, Weighting, make_aggregator
from libs.aggregation.robust import (
    NormScreening,
    RejectedUpdate,
    clip_update,
    clip_updates,
    coordinate_median,
    krum,
    krum_scores,
    krum_select,
    multi_krum,
    multi_krum_select,
    reject_by_norm,
    trimmed_mean,
    update_norm,
)
from libs.aggregation.server_optimizers import OptimizerState, ServerOptimizer, make_server_optimizer
from libs.aggregation.types import TensorSpec, WeightMap

__all__ = [
    "ALGORITHMS",
    "Aggregator",
    "Mode",
    "NormScreening",
    "OptimizerState",
    "RejectedUpdate",
    "ScaffoldDeltas",
    "ScaffoldServerState",
    "ServerOptimizer",
    "TensorSpec",
    "WeightMap",
    "WeightedSum",
    "Weighting",
    "clip_update",
    "clip_updates",
    "coordinate_median",
    "krum",
    "krum_scores",
    "krum_select",
    "make_aggregator",
    "make_server_optimizer",
    "multi_krum",
    "multi_krum_select",
    "prox_gradient",
    "prox_penalty",
    "reject_by_norm",
    "scaffold_client_control",
    "scaffold_client_deltas",
    "scaffold_corrected_gradient",
    "scaffold_server_update",
    "trimmed_mean",
    "update_norm",
    "zero_control",
]
