"""The checks of ``aggregation.params`` and ``optimizer`` that belong to the coordinator, not to a rule.

:class:`~coordinator.algorithms.JobAlgorithm` hands each aggregation rule its
own parameters (:func:`libs.aggregation.make_aggregator`), but two groups of
keys are the coordinator's business and are checked here first, apart from
the job's life on the coordinator:

- :data:`COORDINATOR_PARAMETERS` (``maxUpdateNorm``, ``rejectNormFactor``,
  ``totalClients``), valid beside any rule and taken out of the rule's
  parameters (their meaning is in the :mod:`coordinator.algorithms` docstring);
- the job's ``optimizer`` keys, which must be ones the rule's server
  optimiser takes, merged with ``aggregation.params`` (a key set in both,
  differently, is refused rather than one silently winning).

A bad value is a :class:`~libs.errors.ValidationFailed` naming the key, which
fails the job before its first round.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.aggregation import Aggregator
from libs.aggregation.server_optimizers import OPTIMIZER_PARAMETERS
from libs.errors import ValidationFailed

COORDINATOR_PARAMETERS = ("maxUpdateNorm", "rejectNormFactor", "totalClients")


@dataclass(frozen=True)
class Screening:
    """The coordinator-level parameters of a job's aggregation; None where not set."""

    max_norm: float | None = None
    reject_factor: float | None = None
    total_clients: int | None = None


def coordinator_parameters(name: str, given: Mapping[str, Any]) -> Screening:
    """The coordinator-level keys of ``given`` (aggregation ``name``'s params), checked."""
    values: dict[str, Any] = {}
    for key in COORDINATOR_PARAMETERS:
        if key not in given:
            continue
        value = given[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValidationFailed(f"{name}: parameter {key!r} must be a finite number, got {value!r}")
        values[key] = value
    if values.get("maxUpdateNorm", 1) <= 0:
        raise ValidationFailed(
            f"{name}: parameter 'maxUpdateNorm' must be > 0, got {values['maxUpdateNorm']}"
        )
    if values.get("rejectNormFactor", 1) < 1:
        raise ValidationFailed(
            f"{name}: parameter 'rejectNormFactor' must be >= 1, got {values['rejectNormFactor']}"
        )
    total = values.get("totalClients")
    if total is not None and (float(total) != int(total) or total < 1 or name != "scaffold"):
        raise ValidationFailed(f"{name}: parameter 'totalClients' is SCAFFOLD's N, a whole number >= 1")
    return Screening(
        max_norm=None if "maxUpdateNorm" not in values else float(values["maxUpdateNorm"]),
        reject_factor=None if "rejectNormFactor" not in values else float(values["rejectNormFactor"]),
        total_clients=None if total is None else int(total),
    )


def merge_optimizer(
    name: str, probe: Aggregator, optimizer: Mapping[str, Any], params: Mapping[str, Any]
) -> dict[str, Any]:
    """The job's ``optimizer`` keys checked against the algorithm's server optimiser, merged with ``params``."""
    allowed = sorted(OPTIMIZER_PARAMETERS[probe.optimizer] if probe.streams else ("learningRate",))
    for key in optimizer:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValidationFailed(
                f"optimizer: unknown parameter {key!r} for aggregation {name} (its server optimizer "
                f"{probe.optimizer} takes {', '.join(allowed)}){hint}",
                details={"parameter": str(key), "allowed": allowed},
            )
    for key in set(optimizer) & set(params):
        if optimizer[key] != params[key]:
            raise ValidationFailed(
                f"{key!r} is set both in optimizer ({optimizer[key]}) and in aggregation.params "
                f"({params[key]}); set it once"
            )
    return {**optimizer, **params}
