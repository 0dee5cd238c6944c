"""From the job spec's ``aggregation`` name and parameters to what the coordinator runs.

:func:`make_aggregator` resolves a spec name (``fedavg``, ``fedprox``,
``scaffold``, ``fedavgm``, ``fedadam``, ``fedyogi``, ``fedadagrad``,
``median``, ``trimmedmean``, ``krum``, ``multikrum``) and its parameters into
an :class:`Aggregator`, a small frozen description that answers the
coordinator's questions:

* does it *stream* (the FedAvg family: fold each update into a
  :class:`~libs.aggregation.accumulator.WeightedSum` as it arrives, memory
  about twice the model) or need *all updates* of the round at once (the
  robust rules, which sort or compare updates: memory n times the model)?
* how are updates weighted: by sample count (FedAvg, McMahan et al. 2017) or
  uniformly (SCAFFOLD's server means; robust rules, because a Byzantine
  client could report any sample count)?
* which server optimiser applies the aggregate, with which parameters?
* what must clients be told (FedProx's mu) or keep (SCAFFOLD's control
  variates)?
* how many clients a round needs at least for the rule to be defined
  (Krum's n > 2f + 2; a trimmed mean that trims at least one per side).

Parameter names are the job spec's (camelCase); the resolved set, defaults
included, is in :attr:`Aggregator.parameters` so the stored spec shows what
ran.  Defaults and their sources are in :mod:`.server_optimizers`,
:mod:`.robust` and :mod:`.client_side`; the registry adds: FedProx
``mu = 0.01`` (Li et al. 2020 tune mu in {0.001, 0.01, 0.1, 1}),
``trimFraction = 0.1`` (tolerates up to 10% Byzantine clients: Yin et al.
2018 need beta >= the Byzantine fraction), ``byzantineClients = 1`` (the
smallest bound that makes Krum robust at all) and Multi-Krum ``selected =
n - f`` (Blanchard et al. 2017), left ``None`` until a round knows n.
"""

from __future__ import annotations

import difflib
import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from libs.aggregation import robust
from libs.aggregation.accumulator import WeightedSum
from libs.aggregation.parameters import Parameter, ParameterValue, non_negative, resolve_parameters
from libs.aggregation.server_optimizers import OPTIMIZER_PARAMETERS, ServerOptimizer, make_server_optimizer
from libs.aggregation.types import WeightMap
from libs.errors import ValidationFailed


class Mode(enum.Enum):
    """When updates are aggregated."""

    STREAMING = "streaming"  # folded into a running sum as each arrives
    ALL_UPDATES = "all_updates"  # kept until the round closes, then aggregated together


class Weighting(enum.Enum):
    """How much each client's update counts."""

    SAMPLES = "samples"  # by the client's reported sample count
    UNIFORM = "uniform"  # every accepted update alike


Rule = Callable[[Sequence[WeightMap], Mapping[str, ParameterValue]], WeightMap]


@dataclass(frozen=True)
class _Entry:
    mode: Mode
    weighting: Weighting
    optimizer: str
    extra: Mapping[str, Parameter] = field(default_factory=dict)
    client_parameters: tuple[str, ...] = ()
    control_variates: bool = False
    rule: Rule | None = None


def _int(value: ParameterValue) -> int:
    assert value is not None, "non-nullable parameters are resolved to numbers"
    return int(value)


def _float(value: ParameterValue) -> float:
    assert value is not None, "non-nullable parameters are resolved to numbers"
    return float(value)


_BYZANTINE = Parameter(1, "a whole number >= 0", lambda value: value >= 0, integer=True)
_ROBUST_RATE = {"learningRate": OPTIMIZER_PARAMETERS["fedavg"]["learningRate"]}

_ALGORITHMS: Mapping[str, _Entry] = {
    "fedavg": _Entry(Mode.STREAMING, Weighting.SAMPLES, "fedavg"),
    "fedprox": _Entry(
        Mode.STREAMING, Weighting.SAMPLES, "fedavg", {"mu": non_negative(0.01)}, client_parameters=("mu",)
    ),
    "scaffold": _Entry(Mode.STREAMING, Weighting.UNIFORM, "fedavg", control_variates=True),
    "fedavgm": _Entry(Mode.STREAMING, Weighting.SAMPLES, "fedavgm"),
    "fedadam": _Entry(Mode.STREAMING, Weighting.SAMPLES, "fedadam"),
    "fedyogi": _Entry(Mode.STREAMING, Weighting.SAMPLES, "fedyogi"),
    "fedadagrad": _Entry(Mode.STREAMING, Weighting.SAMPLES, "fedadagrad"),
    "median": _Entry(
        Mode.ALL_UPDATES,
        Weighting.UNIFORM,
        "fedavg",
        rule=lambda updates, p: robust.coordinate_median(updates),
    ),
    "trimmedmean": _Entry(
        Mode.ALL_UPDATES,
        Weighting.UNIFORM,
        "fedavg",
        {"trimFraction": Parameter(0.1, "in [0, 0.5)", lambda value: 0 <= value < 0.5)},
        rule=lambda updates, p: robust.trimmed_mean(updates, _float(p["trimFraction"])),
    ),
    "krum": _Entry(
        Mode.ALL_UPDATES,
        Weighting.UNIFORM,
        "fedavg",
        {"byzantineClients": _BYZANTINE},
        rule=lambda updates, p: robust.krum(updates, _int(p["byzantineClients"])),
    ),
    "multikrum": _Entry(
        Mode.ALL_UPDATES,
        Weighting.UNIFORM,
        "fedavg",
        {
            "byzantineClients": _BYZANTINE,
            "selected": Parameter(
                None, "a whole number >= 1", lambda value: value >= 1, integer=True, nullable=True
            ),
        },
        rule=lambda updates, p: robust.multi_krum(
            updates,
            _int(p["byzantineClients"]),
            None if p["selected"] is None else int(p["selected"]),
        ),
    ),
}

ALGORITHMS: tuple[str, ...] = tuple(_ALGORITHMS)
"""Every aggregation name the job spec accepts."""


def parameter_schema(name: str) -> Mapping[str, Parameter]:
    """The parameters ``name`` accepts (its server optimiser's plus its own)."""
    entry = _entry(name)
    optimizer = _ROBUST_RATE if entry.mode is Mode.ALL_UPDATES else OPTIMIZER_PARAMETERS[entry.optimizer]
    return {**optimizer, **entry.extra}


@dataclass(frozen=True)
class Aggregator:
    """What the coordinator needs to know and build for one aggregation algorithm."""

    name: str
    mode: Mode
    weighting: Weighting
    optimizer: str
    parameters: Mapping[str, ParameterValue]
    client_parameters: Mapping[str, ParameterValue]
    control_variates: bool

    @property
    def streams(self) -> bool:
        """True when updates are folded in as they arrive (see :class:`Mode`)."""
        return self.mode is Mode.STREAMING

    @property
    def minimum_clients(self) -> int:
        """The fewest updates a round needs for this rule to be defined."""
        if self.name in ("krum", "multikrum"):
            return 2 * _int(self.parameters["byzantineClients"]) + 3
        if self.name == "trimmedmean" and _float(self.parameters["trimFraction"]) > 0:
            return math.ceil(1 / _float(self.parameters["trimFraction"]))
        return 1

    def make_optimizer(self) -> ServerOptimizer:
        """A fresh server optimiser for this algorithm."""
        names = OPTIMIZER_PARAMETERS[self.optimizer]
        return make_server_optimizer(self.optimizer, {k: v for k, v in self.parameters.items() if k in names})

    def make_accumulator(self, reference: Mapping[str, np.ndarray]) -> WeightedSum:
        """A running sum for a streaming algorithm's round."""
        if not self.streams:
            raise ValidationFailed(
                f"{self.name} aggregates all updates at once; it has no streaming accumulator"
            )
        return WeightedSum(reference)

    def combine(self, updates: Sequence[WeightMap], weights: Sequence[float] | None = None) -> WeightMap:
        """Aggregate a whole round's updates into one delta.

        Robust rules ignore ``weights`` (see :class:`Weighting`); streaming
        algorithms return the weighted mean, the same as folding the updates
        one by one (``weights`` default to 1 each).
        """
        entry = _ALGORITHMS[self.name]
        if entry.rule is not None:
            return entry.rule(updates, self.parameters)
        if not updates:
            raise ValidationFailed("no updates to aggregate")
        if weights is not None and len(weights) != len(updates):
            raise ValidationFailed(f"{len(updates)} updates but {len(weights)} weights")
        total = WeightedSum(updates[0])
        for index, update in enumerate(updates):
            total.add(
                update, 1.0 if weights is None or self.weighting is Weighting.UNIFORM else weights[index]
            )
        return total.mean()


def _entry(name: str) -> _Entry:
    if name not in _ALGORITHMS:
        close = difflib.get_close_matches(str(name), ALGORITHMS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValidationFailed(
            f"unknown aggregation {name!r} (allowed: {', '.join(ALGORITHMS)}){hint}",
            details={"aggregation": str(name), "allowed": list(ALGORITHMS)},
        )
    return _ALGORITHMS[name]


def make_aggregator(name: str, params: Mapping[str, object] | None = None) -> Aggregator:
    """Describe aggregation ``name`` with ``params`` merged over its defaults.

    Raises :class:`ValidationFailed` for an unknown name (listing the allowed
    ones), an unknown parameter, or a value outside its rule.
    """
    entry = _entry(name)
    values = resolve_parameters(name, params, parameter_schema(name))
    return Aggregator(
        name=name,
        mode=entry.mode,
        weighting=entry.weighting,
        optimizer=entry.optimizer,
        parameters=values,
        client_parameters={key: values[key] for key in entry.client_parameters},
        control_variates=entry.control_variates,
    )
