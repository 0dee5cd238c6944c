"""One task, as every hop after the selector knows it: :class:`TaskSpec`.

A task offer is born in the coordinator (its ``Offer``), crosses the wire as
``TaskOffer`` (``libs/protos/selector.proto``), becomes the task manager's
``Offer`` while it is considered, and, once accepted, this one frozen
:class:`TaskSpec`: the task manager builds it from the offer and its host's
facts (entry paths, dataset paths, the job's state folder) and writes it as
``task.json`` (:mod:`libs.tasks.document`), the executor reads it back into
the same type, and a task offered ahead takes its round's model, parameters
and algorithm settings from the ``AwaitModel`` answer through one function
(:func:`libs.tasks.serde.for_round`).  docs/contracts.md draws the whole path.

The task's parameters are the job's, for the user's code, as free-form JSON
values; what the client must know of the job's algorithm travels apart, typed
(:class:`AlgorithmSettings`), so a parameter can never be mistaken for a
setting, nor a setting reach the user's code.

Pure values: no file, no wire, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from libs.errors import ValidationFailed

Kind = Literal["train", "evaluate", "init"]
KINDS: tuple[Kind, ...] = ("train", "evaluate", "init")
RUNTIMES = ("pytorch", "tensorflow")
EntryMode = Literal["script", "function"]
MODES: tuple[EntryMode, ...] = ("script", "function")


class InvalidTask(ValidationFailed):
    """``task.json`` (or a task's settings) is missing, not JSON, or breaks the contract (docs/contracts.md)."""


@dataclass(frozen=True)
class LocalDp:
    """Local differential privacy: clip the delta to ``clip_norm``, add N(0, (noise_multiplier·clip_norm)²)."""

    clip_norm: float
    noise_multiplier: float
    target_delta: float = 1e-5

    def __post_init__(self) -> None:
        if not (
            math.isfinite(self.clip_norm) and self.clip_norm > 0
            and math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0
            and 0 < self.target_delta < 1
        ):  # fmt: skip
            raise InvalidTask(
                "the task's local DP settings are out of range: clip_norm "
                f"{self.clip_norm}, noise_multiplier {self.noise_multiplier}, target_delta {self.target_delta}"
            )


@dataclass(frozen=True)
class AlgorithmSettings:
    """What a client must know of the job's algorithm; the default asks nothing (plain FedAvg)."""

    aggregation: str = ""
    """The job's aggregation rule, when the client has a part in it (e.g. ``fedprox``)."""
    fedprox_mu: float | None = None
    """FedProx: the proximal term's ``mu`` (the script may pass its own to ``nsfl.fedprox``)."""
    scaffold_run: str | None = None
    """SCAFFOLD: the server's run id, which tags the client's control variate; None: not SCAFFOLD."""
    local_dp: LocalDp | None = None
    """Local differential privacy applied to the delta before it leaves the client; None: none."""


@dataclass(frozen=True)
class Entry:
    """What to run: a script, or a module of functions (``mode="function"``)."""

    script: Path
    mode: EntryMode
    working_dir: Path


@dataclass(frozen=True)
class TaskSpec:
    """One accepted task: the offer's facts and the host's (see the module docstring)."""

    task_id: str
    job_id: str
    namespace: str
    round: int
    attempt: int
    kind: Kind
    runtime: str
    client_id: str
    coordinator_endpoint: str
    model_sha256: str
    task_token: str
    entry: Entry
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """The job's parameters for the user's code (``nsfl.get_parameter``), any JSON values."""
    algorithm: AlgorithmSettings = AlgorithmSettings()
    datasets: Mapping[str, str] = field(default_factory=dict)
    dataset_samples: Mapping[str, int] = field(default_factory=dict)
    timeout_seconds: float | None = None
    deadline_unix: float | None = None
    state_dir: Path | None = None
    """A folder private to this job on this client that outlives the task (SCAFFOLD's c_i)."""
    evaluate_first: bool = False
    """A train task that first evaluates the global model it is given (the previous round's result)
    and uploads those metrics with its update (:mod:`task_executor.evaluation`)."""
    secure_aggregation: bool | None = None
    """Whether the update travels over ``SecureAggregate``, as the offer said; None when it did not
    say (an older coordinator), and the executor asks ``GetTaskPlan``."""
    model_file: str | None = None
    """The name of a file in the task folder holding the global model, which came with the offer
    (small models); None: the executor downloads the model from the coordinator."""
    model_follows: bool = False
    """A train task offered ahead (coordinator.lookahead): ``model_sha256`` is empty, and the
    executor asks ``AwaitModel`` for the round's model (and the task's final parameters)."""

    @property
    def total_samples(self) -> int:
        """The sample count of the task's datasets (the default weight of an update)."""
        return sum(self.dataset_samples.values())
