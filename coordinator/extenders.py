"""Extenders: a job's own Python hooks, called by the coordinator at fixed points of a round.

A job names a file and up to three functions in it (``spec.extenders``)::

    extenders: {file: hooks.py, broadcast: send_extra, aggregate: my_mean, finish: after_round}

Where the file comes from.  The path is relative to the *extenders root*, a
directory the coordinator is configured with (``--extenders-root`` or
``NSFL_COORDINATOR_EXTENDERS_ROOT``), where the job's script bundle has been
unpacked; the resolved path must stay inside that root (no ``..``, no
symlink out of it), and a coordinator without a root refuses a job with
extenders.  The file is loaded once, when the job starts, with
``importlib`` under a private module name (it is not put on ``sys.path``).

The hooks run inside the coordinator's process, with its permissions: they
are the job owner's code, trusted like the job's training script is trusted on
the clients.  Each one is called with one frozen context object and returns
plain values; they must not keep references to the arrays they are given
beyond the call.

* ``broadcast(ctx: BroadcastContext) -> None | {"parameters": {...}, "files": {name: bytes}}``
  before each train round is offered.  ``parameters`` (JSON values) are merged
  over the job's ``parameters`` for that round's tasks (``nsfl.get_parameter``);
  ``files`` travel with the round's global model and a script reads one with
  ``nsfl.get_broadcast_file(name)`` (names like ``vocab.txt``; at most
  :data:`MAX_BROADCAST_BYTES` in all).
* ``aggregate(ctx: AggregateContext) -> {tensor name: array}``: replaces the
  built-in aggregation rule.  ``ctx.updates`` holds every accepted update of
  the round (so the coordinator keeps them all: memory grows with the number
  of clients); the result is the round's aggregated delta, with exactly the
  model's names, shapes and dtypes and finite values, which the server
  optimiser then applies as usual.
* ``finish(ctx: FinishContext) -> None | {metric name: number}``: after each
  round's server step (``ctx.final`` tells the last round).  The metrics
  returned are stored in the round's record under ``extender``.

An exception in a hook, or a return value that breaks its contract, fails the
*round* with ``extender <hook> failed: <message>`` (the full traceback goes to
the coordinator's log); the round is retried under the job's ``maxRetries``
like any failed round, and the job FAILS with that message after the last
attempt.  The coordinator process itself carries on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import numbers
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from coordinator.errors import ExtenderFailed
from libs.aggregation.attachments import FILE_NAME
from libs.errors import NsflError, PathOutsideRoot, ValidationFailed
from libs.jobspec.spec import ExtenderHooks
from libs.weights.tensors import WeightMap, validate_update

log = logging.getLogger(__name__)

HOOKS = ("broadcast", "aggregate", "finish")
MAX_BROADCAST_BYTES = 64 << 20
MAX_FINISH_METRICS = 64


@dataclass(frozen=True)
class BroadcastContext:
    job_id: str
    round: int
    weights: Mapping[str, np.ndarray]  # the global model the round starts from (read-only arrays)
    parameters: Mapping[str, Any]  # the job's parameters


@dataclass(frozen=True)
class ClientUpdate:
    client_id: str
    delta: Mapping[str, np.ndarray]  # trained - global (read-only arrays)
    num_samples: int


@dataclass(frozen=True)
class AggregateContext:
    job_id: str
    round: int
    weights: Mapping[str, np.ndarray]
    updates: Sequence[ClientUpdate]


@dataclass(frozen=True)
class FinishContext:
    job_id: str
    round: int
    rounds: int
    final: bool
    previous: Mapping[str, np.ndarray]  # the global model before this round
    weights: Mapping[str, np.ndarray]  # after the server step
    delta: Mapping[str, np.ndarray]  # the round's aggregated delta
    participants: Mapping[str, int]  # client id -> sample count


@dataclass(frozen=True)
class Broadcast:
    """What a broadcast hook asked to send with one round."""

    parameters: dict[str, Any]
    files: dict[str, bytes]


def resolve_hook_file(root: Path | None, relative: str) -> Path:
    """The hooks' file: ``relative`` inside ``root``; :class:`PathOutsideRoot` if it escapes."""
    if root is None:
        raise ValidationFailed(
            "this job names extenders, but the coordinator has no extenders root "
            "(set --extenders-root or NSFL_COORDINATOR_EXTENDERS_ROOT to where job bundles are unpacked)"
        )
    base = root.resolve()
    candidate = Path(relative)
    if candidate.is_absolute():
        raise PathOutsideRoot(f"extenders.file must be relative to the bundle's root, got {relative!r}")
    path = (base / candidate).resolve()
    if not path.is_relative_to(base):
        raise PathOutsideRoot(f"extenders.file {relative!r} resolves outside the extenders root")
    if not path.is_file():
        raise ValidationFailed(f"extenders.file {relative!r} is not a file under the extenders root")
    return path


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_module(path: Path, job_id: str) -> ModuleType:
    """Execute the hooks' file as a private module; a failure is a :class:`ValidationFailed`."""
    digest = hashlib.sha256(f"{job_id}:{path}".encode()).hexdigest()[:12]
    name = f"nsfl_extenders_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValidationFailed(f"extenders.file {path.name} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        log.error("loading extenders from %s failed:\n%s", path, traceback.format_exc())
        raise ValidationFailed(f"extenders.file {path.name} failed to load: {_describe(exc)}") from None
    sys.modules.pop(name, None)  # never importable by name from elsewhere
    return module


def _json_parameters(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise TypeError("'parameters' must be a mapping with string keys")
    try:
        return dict(json.loads(json.dumps(dict(value), allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"'parameters' must hold JSON values only: {exc}") from None


def _files(value: object) -> dict[str, bytes]:
    if not isinstance(value, Mapping):
        raise TypeError("'files' must be a mapping of file names to bytes")
    files: dict[str, bytes] = {}
    for name, data in value.items():
        if not isinstance(name, str) or not FILE_NAME.match(name):
            raise TypeError(f"file name {name!r} must match {FILE_NAME.pattern}")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"file {name!r} must be bytes, got {type(data).__name__}")
        files[name] = bytes(data)
    total = sum(len(data) for data in files.values())
    if total > MAX_BROADCAST_BYTES:
        raise TypeError(f"the files hold {total} bytes, more than the limit of {MAX_BROADCAST_BYTES}")
    return files


def _metrics(value: object) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"finish must return None or a mapping of metric names to numbers, got {type(value).__name__}"
        )
    if len(value) > MAX_FINISH_METRICS:
        raise TypeError(f"finish returned {len(value)} metrics, more than {MAX_FINISH_METRICS}")
    metrics = {}
    for name, number in value.items():
        if not isinstance(name, str) or isinstance(number, bool) or not isinstance(number, numbers.Real):
            raise TypeError(f"metric {name!r} must be a number named by a string")
        if not math.isfinite(float(number)):
            raise TypeError(f"metric {name!r} is {number}, not a finite number")
        metrics[name] = float(number)
    return metrics


class Extenders:
    """The hooks one job named, loaded and ready to call."""

    def __init__(self, job_id: str, hooks: Mapping[str, Callable[[Any], Any]]) -> None:
        self.job_id = job_id
        self._hooks = dict(hooks)

    @classmethod
    def load(cls, config: ExtenderHooks, job_id: str, root: Path | None) -> Extenders:
        """Load the hooks the job's ``extenders`` name (:class:`ValidationFailed` if one is missing)."""
        module = load_module(resolve_hook_file(root, config.file), job_id)
        hooks = {}
        for hook, name in config.named().items():
            function = getattr(module, name, None)
            if not callable(function):
                raise ValidationFailed(f"extenders.{hook}: {config.file} has no function {name!r}")
            hooks[hook] = function
        return cls(job_id, hooks)

    def has(self, hook: str) -> bool:
        return hook in self._hooks

    def _call(self, hook: str, context: object) -> Any:
        try:
            return self._hooks[hook](context)
        except (Exception, SystemExit) as exc:
            log.error("extender %s failed:\n%s", hook, traceback.format_exc())
            raise ExtenderFailed(hook, _describe(exc)) from None

    def broadcast(self, context: BroadcastContext) -> Broadcast:
        result = self._call("broadcast", context)
        if result is None:
            return Broadcast({}, {})
        try:
            if not isinstance(result, Mapping) or set(result) - {"parameters", "files"}:
                raise TypeError("broadcast must return None or a mapping with 'parameters' and/or 'files'")
            return Broadcast(
                _json_parameters(result.get("parameters") or {}), _files(result.get("files") or {})
            )
        except TypeError as exc:
            raise ExtenderFailed("broadcast", str(exc)) from None

    def aggregate(self, context: AggregateContext) -> WeightMap:
        result = self._call("aggregate", context)
        if not isinstance(result, Mapping):
            raise ExtenderFailed(
                "aggregate", f"must return a mapping of tensor names to arrays, got {type(result).__name__}"
            )
        delta = {str(name): np.asarray(array) for name, array in result.items()}
        try:
            validate_update(delta, context.weights)
        except NsflError as exc:
            raise ExtenderFailed(
                "aggregate", f"the aggregated delta does not fit the model: {exc.message}"
            ) from None
        return delta

    def finish(self, context: FinishContext) -> dict[str, float]:
        result = self._call("finish", context)
        if result is None:
            return {}
        try:
            return _metrics(result)
        except TypeError as exc:
            raise ExtenderFailed("finish", str(exc)) from None
