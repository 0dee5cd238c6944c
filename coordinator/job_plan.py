"""What a job asks of each of its rounds, read once from its spec (validated upstream by libs.jobspec)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobPlan:
    """What the runner needs from the job spec (read once, validated upstream)."""

    job_id: str
    namespace: str
    runtime: str
    entry: str
    mode: str
    parameters: dict[str, Any]
    datasets: list[str]
    clients_per_round: int
    min_clients: int
    round_timeout: float
    task_timeout: float
    redundancy: float
    requirement: dict[str, Any]
    random: bool
    untrained_first: bool
