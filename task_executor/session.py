"""The state of one running task as the ``nsfl`` SDK sees it.

The runner creates a :class:`TaskSession` with the task's spec and the
round's global weights, and :func:`activated` makes it the *current* session
for the duration of the user code; the SDK functions in :mod:`.sdk` are thin
wrappers over the current session's methods.  Keeping the state in an object
rather than in SDK module globals is what lets the runner (and the tests)
run several tasks one after another in one process, and lets a future
long-lived executor hand each round a fresh session while :data:`CACHE`
carries over.

What the user code commits is collected here and read back by the runner as
an :class:`Outcome`; no I/O happens in this module.  For an ``init`` task,
:meth:`TaskSession.load_weights` captures the model's freshly initialised
weights and raises :class:`InitCaptured`, a ``BaseException`` so that a
script's own ``except Exception`` cannot swallow it, which ends the script
there: nothing after ``load_weights`` (training) should shape the initial
model every client will start from.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, SupportsFloat

from libs.weights.tensors import WeightMap
from task_executor.errors import NoActiveTask, SdkError, UnknownDataset
from task_executor.runtimes import Runtime, runtime_for_model
from task_executor.task import TaskSpec

log = logging.getLogger(__name__)

MAX_METRICS = 64
METRIC_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")

CACHE: dict[str, Any] = {}
"""Survives from task to task in one process (``nsfl.cache``): a place for
parsed data sets, so a long-lived executor reads them once, not every round."""


class InitCaptured(BaseException):
    """Private to the executor: ends an ``init`` script once its weights are captured."""


@dataclass
class Outcome:
    """What the user code committed."""

    weights: WeightMap | None = None
    num_samples: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def _as_number(value: object) -> float | None:
    """A metric value as a float: Python and numpy numbers, and one-element tensors
    (whatever converts with ``float()``), but never a bool or a numeric string."""
    if isinstance(value, bool | str | bytes) or not isinstance(value, SupportsFloat):
        return None
    try:
        return float(value)
    except (
        TypeError,
        ValueError,
        RuntimeError,
    ):  # torch raises RuntimeError for a tensor of several elements
        return None


def check_metrics(metrics: object) -> dict[str, float]:
    """Metrics as a plain ``{name: float}``; :class:`SdkError` naming each problem otherwise."""
    if not isinstance(metrics, Mapping):
        raise SdkError(f"metrics must be a mapping of names to numbers, got {type(metrics).__name__}")
    checked: dict[str, float] = {}
    problems = []
    for name, value in metrics.items():
        if not isinstance(name, str) or not METRIC_NAME.match(name):
            problems.append(f"name {name!r} must match {METRIC_NAME.pattern}")
            continue
        number = _as_number(value)
        if number is None:
            problems.append(f"{name!r} is a {type(value).__name__}, expected a real number")
        elif not math.isfinite(number):
            problems.append(f"{name!r} is {number}, expected a finite number")
        else:
            checked[name] = number
    if problems:
        raise SdkError(f"invalid metrics: {'; '.join(problems[:10])}")
    return checked


def check_num_samples(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise SdkError(f"num_samples must be a positive integer, got {value!r}")
    return int(value)


class TaskSession:
    """One task's SDK state: what it grants (datasets, parameters, weights) and what it got back."""

    def __init__(
        self, spec: TaskSpec, global_weights: WeightMap | None, cache: dict[str, Any] | None = None
    ) -> None:
        self.spec = spec
        self.global_weights = global_weights
        self.cache = CACHE if cache is None else cache
        self.outcome = Outcome()
        self.runtime: Runtime | None = None

    # ---------------------------------------------------------------- grants

    def dataset_path(self, name: str) -> str:
        try:
            return self.spec.datasets[name]
        except KeyError:
            available = ", ".join(repr(known) for known in sorted(self.spec.datasets)) or "none"
            raise UnknownDataset(
                f"this task has no dataset {name!r}; available: {available} "
                "(the job's datasets must also be declared in this client's task manager config)"
            ) from None

    def parameter(self, name: str, default: Any = None) -> Any:
        return self.spec.parameters.get(name, default)

    def default_samples(self) -> int:
        if self.spec.total_samples < 1:
            raise SdkError("the task declares no sample count for its datasets; pass num_samples= explicitly")
        return self.spec.total_samples

    # ---------------------------------------------------------------- model

    def runtime_of(self, model: object) -> Runtime:
        """The model's runtime, which must be the job's."""
        runtime = runtime_for_model(model)
        if runtime.name != self.spec.runtime:
            raise SdkError(
                f"the job's runtime is {self.spec.runtime} but the model is a {runtime.name} model; "
                "use the framework the job declares"
            )
        return runtime

    def load_weights(self, model: object) -> bool:
        runtime = self.runtime_of(model)
        self.runtime = runtime
        if self.spec.kind == "init":
            self.outcome.weights = runtime.weights_of(model)
            raise InitCaptured
        if self.global_weights is None:
            return False
        runtime.load(model, self.global_weights)
        return True

    def commit_weights(self, model: object, num_samples: int | None = None) -> None:
        runtime = self.runtime_of(model)
        if self.spec.kind == "evaluate":
            log.warning("nsfl.commit_weights ignored: an evaluation task uploads metrics only")
            return
        if self.runtime is None:
            raise SdkError(
                "call nsfl.load_weights(model) before nsfl.commit_weights(model): "
                "the update is computed against the round's global model"
            )
        count = self.default_samples() if num_samples is None else check_num_samples(num_samples)
        self.commit_weight_map(runtime.weights_of(model, self.global_weights), count)

    def commit_weight_map(self, weights: WeightMap, num_samples: int) -> None:
        """Record trained weights already converted to a weight map (function mode)."""
        self.outcome.weights = weights
        self.outcome.num_samples = check_num_samples(num_samples)

    def commit_metrics(self, metrics: Mapping[str, SupportsFloat], num_samples: int | None = None) -> None:
        merged = {**self.outcome.metrics, **check_metrics(metrics)}
        if len(merged) > MAX_METRICS:
            raise SdkError(f"a task may commit at most {MAX_METRICS} metrics, this one has {len(merged)}")
        self.outcome.metrics = merged
        if num_samples is not None:
            self.outcome.num_samples = check_num_samples(num_samples)


_current: TaskSession | None = None


def current() -> TaskSession:
    """The session of the task being run; :class:`NoActiveTask` outside one."""
    if _current is None:
        raise NoActiveTask(
            "no nsfl task is running in this process: nsfl.* calls work in a script "
            "run by the task executor (python -m task_executor <task_dir>)"
        )
    return _current


@contextlib.contextmanager
def activated(session: TaskSession) -> Iterator[TaskSession]:
    """Make ``session`` the current one while the user code runs."""
    global _current
    previous, _current = _current, session
    try:
        yield session
    finally:
        _current = previous
