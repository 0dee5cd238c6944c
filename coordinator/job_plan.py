"""What a job asks of each of its rounds: a view of its :class:`~libs.jobspec.JobSpec`.

The rounds read the spec through this view, in the units they work in
(seconds as floats, the selector's requirement), so the spec's fields are
named once, in ``libs.jobspec``.  The one thing the view holds of its own is
the round's task inputs: its ``parameters`` (the job's, plus what a broadcast
extender adds for that round, :meth:`coordinator.algorithms.JobAlgorithm.broadcast`)
and what clients must know of the job's algorithm (``algorithm``,
:meth:`~coordinator.algorithms.JobAlgorithm.client_settings`), which the driver
swaps in with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from libs.jobspec import JobSpec
from libs.jobspec.spec import ClientRequirement
from libs.tasks import AlgorithmSettings


@dataclass(frozen=True)
class JobPlan:
    """The rounds' view of the job spec, with the current round's task inputs."""

    spec: JobSpec
    parameters: dict[str, Any]
    algorithm: AlgorithmSettings = AlgorithmSettings()

    @classmethod
    def of(cls, spec: JobSpec) -> JobPlan:
        """The plan of ``spec`` before any round: the job's own parameters."""
        return cls(spec, dict(spec.parameters))

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def runtime(self) -> str:
        return self.spec.runtime

    @property
    def entry(self) -> str:
        return self.spec.entry

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def datasets(self) -> list[str]:
        return list(self.spec.datasets)

    @property
    def clients_per_round(self) -> int:
        return self.spec.clients_per_round

    @property
    def min_clients(self) -> int:
        return self.spec.min_clients

    @property
    def round_timeout(self) -> float:
        return float(self.spec.round_timeout_seconds)

    @property
    def task_timeout(self) -> float:
        return float(self.spec.task_timeout_seconds)

    @property
    def redundancy(self) -> float:
        return self.spec.redundancy

    @property
    def requirement(self) -> ClientRequirement:
        return self.spec.requirement

    @property
    def random(self) -> bool:
        return self.spec.random

    @property
    def untrained_first(self) -> bool:
        return self.spec.untrained_first
