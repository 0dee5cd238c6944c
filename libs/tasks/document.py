"""``task.json``: the :class:`~libs.tasks.spec.TaskSpec` as the task manager writes it and the executor reads it.

The shape is fixed by docs/contracts.md ("Task manager <-> task executor").
:func:`task_json` is what the task manager writes; :func:`parse_task` is what
the executor reads, checked field by field, so a malformed file fails at once
with a message naming the field, before any download or user code runs.
Unknown keys are tolerated (a newer task manager may add some) but listed in
the log.  One module holds both directions, so the writer and the reader
cannot drift apart (a test round-trips every field).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from libs.tasks.spec import KINDS, MODES, RUNTIMES, AlgorithmSettings, Entry, InvalidTask, LocalDp, TaskSpec

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_KNOWN_KEYS = frozenset({
    "task_id", "job_id", "namespace", "round", "attempt", "kind", "runtime", "client_id",
    "coordinator_endpoint", "model_sha256", "task_token", "entry", "parameters", "algorithm", "datasets",
    "dataset_samples", "timeout_seconds", "deadline_unix", "state_dir", "evaluate_first",
    "secure_aggregation", "model_file", "model_follows",
})  # fmt: skip


def is_sha256(text: str) -> bool:
    """Whether ``text`` names a model the way the contract does: 64 lower-case hex digits."""
    return bool(_SHA256.match(text))


# -- writing ---------------------------------------------------------------------------------------
def algorithm_json(settings: AlgorithmSettings) -> dict[str, Any]:
    """The ``algorithm`` object of ``task.json``: only the settings that are set."""
    document: dict[str, Any] = {}
    if settings.aggregation:
        document["aggregation"] = settings.aggregation
    if settings.fedprox_mu is not None:
        document["fedprox_mu"] = settings.fedprox_mu
    if settings.scaffold_run is not None:
        document["scaffold_run"] = settings.scaffold_run
    if settings.local_dp is not None:
        dp = settings.local_dp
        document["local_dp"] = {
            "clip_norm": dp.clip_norm, "noise_multiplier": dp.noise_multiplier, "target_delta": dp.target_delta,
        }  # fmt: skip
    return document


def task_json(spec: TaskSpec) -> dict[str, Any]:
    """The ``task.json`` document of ``spec`` (optional fields only when set)."""
    document: dict[str, Any] = {
        "task_id": spec.task_id,
        "job_id": spec.job_id,
        "namespace": spec.namespace,
        "round": spec.round,
        "attempt": spec.attempt,
        "kind": spec.kind,
        "runtime": spec.runtime,
        "client_id": spec.client_id,
        "coordinator_endpoint": spec.coordinator_endpoint,
        "model_sha256": spec.model_sha256,
        "task_token": spec.task_token,
        "entry": {"script": str(spec.entry.script), "mode": spec.entry.mode, "working_dir": str(spec.entry.working_dir)},
        "parameters": dict(spec.parameters),
        "datasets": dict(spec.datasets),
        "dataset_samples": dict(spec.dataset_samples),
        "timeout_seconds": spec.timeout_seconds,
        "deadline_unix": spec.deadline_unix,
    }
    if algorithm := algorithm_json(spec.algorithm):
        document["algorithm"] = algorithm
    if spec.evaluate_first:  # evaluation of the previous round's model rides on this train task
        document["evaluate_first"] = True
    if spec.secure_aggregation is not None:  # saves the executor a GetTaskPlan per round
        document["secure_aggregation"] = spec.secure_aggregation
    if spec.state_dir is not None:  # kept per (job, client) across rounds, e.g. SCAFFOLD's control variate
        document["state_dir"] = str(spec.state_dir)
    if spec.model_file is not None:
        document["model_file"] = spec.model_file
    if spec.model_follows:  # offered ahead: the model comes from AwaitModel once the round starts
        document["model_follows"] = True
    return document


# -- reading ---------------------------------------------------------------------------------------
def _require(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    if key not in raw:
        raise InvalidTask(f"task.json: {where}{key!r} is missing")
    value = raw[key]
    # bool is an int subclass; a boolean is never a valid round or count here.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise InvalidTask(
            f"task.json: {where}{key!r} must be {_type_names(kind)}, got {type(value).__name__}"
        )
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _type_names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))


def _optional(
    raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str = ""
) -> Any:
    if raw.get(key) is None:
        return default
    return _require(raw, key, kind, where)


def _string_map(raw: Mapping[str, Any], key: str, value_kind: type) -> dict[str, Any]:
    value = _optional(raw, key, dict, {})
    for name, item in value.items():
        if not isinstance(item, value_kind) or isinstance(item, bool):
            raise InvalidTask(
                f"task.json: {key}[{name!r}] must be {value_kind.__name__}, got {type(item).__name__}"
            )
    return dict(value)


def _positive_number(raw: Mapping[str, Any], key: str) -> float | None:
    value = _optional(raw, key, (int, float), None)
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InvalidTask(f"task.json: {key!r} must be a positive number, got {value}")
    return None if value is None else float(value)


def _parse_entry(raw: Mapping[str, Any]) -> Entry:
    entry = _require(raw, "entry", dict)
    script = Path(_require(entry, "script", str, "entry."))
    if not script.is_absolute():
        raise InvalidTask(f"task.json: entry.script must be an absolute path, got {str(script)!r}")
    mode = entry.get("mode", "script")
    if mode not in MODES:
        raise InvalidTask(f"task.json: entry.mode must be one of {', '.join(MODES)}, got {mode!r}")
    working_dir = Path(entry.get("working_dir") or script.parent)
    if not working_dir.is_absolute():
        raise InvalidTask(f"task.json: entry.working_dir must be an absolute path, got {str(working_dir)!r}")
    return Entry(script=script, mode=mode, working_dir=working_dir)


def parse_algorithm(raw: Mapping[str, Any]) -> AlgorithmSettings:
    """The ``algorithm`` object of ``task.json`` (absent: nothing asked of the client)."""
    algorithm = _optional(raw, "algorithm", dict, {})
    where = "algorithm."
    mu = _optional(algorithm, "fedprox_mu", (int, float), None, where)
    dp = _optional(algorithm, "local_dp", dict, None, where)
    local_dp = None
    if dp is not None:
        where = "algorithm.local_dp."
        local_dp = LocalDp(
            clip_norm=float(_require(dp, "clip_norm", (int, float), where)),
            noise_multiplier=float(_require(dp, "noise_multiplier", (int, float), where)),
            target_delta=float(_optional(dp, "target_delta", (int, float), 1e-5, where)),
        )
    return AlgorithmSettings(
        aggregation=_optional(algorithm, "aggregation", str, "", "algorithm."),
        fedprox_mu=None if mu is None else float(mu),
        scaffold_run=_optional(algorithm, "scaffold_run", str, None, "algorithm."),
        local_dp=local_dp,
    )


def _state_dir(raw: Mapping[str, Any]) -> Path | None:
    value = _optional(raw, "state_dir", str, None)
    if value is None:
        return None
    path = Path(value)
    if not path.is_absolute():
        raise InvalidTask(f"task.json: state_dir must be an absolute path, got {value!r}")
    return path


def _model_file(raw: Mapping[str, Any]) -> str | None:
    name = _optional(raw, "model_file", str, None)
    if name is not None and (not name or "/" in name or name in (".", "..")):
        raise InvalidTask(f"task.json: model_file must name a file in the task folder, got {name!r}")
    return name


def _check_identity(raw: Mapping[str, Any]) -> tuple[str, str]:
    job_id = _require(raw, "job_id", str)
    namespace, _, name = job_id.partition("/")
    if not (_DNS_LABEL.match(namespace) and _DNS_LABEL.match(name)):
        raise InvalidTask(
            f"task.json: job_id must read '<namespace>/<name>' (DNS-1123 labels), got {job_id!r}"
        )
    if raw.get("namespace") not in (None, namespace):
        raise InvalidTask(f"task.json: namespace {raw['namespace']!r} does not match job_id {job_id!r}")
    client_id = _require(raw, "client_id", str)
    if not _CLIENT_ID.match(client_id):
        raise InvalidTask(f"task.json: client_id {client_id!r} is not a valid client id")
    return job_id, namespace


def _check_model(raw: Mapping[str, Any], kind: str) -> tuple[str, bool]:
    """The task's model SHA-256 and whether it follows (offered ahead), as its kind allows."""
    model_sha256 = _optional(raw, "model_sha256", str, "")
    model_follows = kind == "train" and _optional(raw, "model_follows", bool, False)
    if kind != "init" and not is_sha256(model_sha256) and not (model_follows and not model_sha256):
        raise InvalidTask(
            f"task.json: {'an' if kind[0] in 'aeiou' else 'a'} {kind} task needs model_sha256 "
            f"(64 lower-case hex digits), got {model_sha256!r}"
        )
    return model_sha256, model_follows


def parse_task(raw: object) -> TaskSpec:
    """Check a decoded ``task.json`` against the contract and build its :class:`TaskSpec`."""
    if not isinstance(raw, dict):
        raise InvalidTask(f"task.json must hold a JSON object, got {type(raw).__name__}")
    job_id, namespace = _check_identity(raw)
    kind = _require(raw, "kind", str)
    if kind not in KINDS:
        raise InvalidTask(f"task.json: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    runtime = _require(raw, "runtime", str)
    if runtime not in RUNTIMES:
        raise InvalidTask(f"task.json: runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    round_number = _require(raw, "round", int)
    attempt = _optional(raw, "attempt", int, 0)
    if round_number < 0 or attempt < 0:
        raise InvalidTask("task.json: round and attempt must not be negative")
    model_sha256, model_follows = _check_model(raw, kind)
    samples = _string_map(raw, "dataset_samples", int)
    if any(count < 0 for count in samples.values()):
        raise InvalidTask("task.json: dataset_samples must not be negative")
    if unknown := sorted(set(raw) - _KNOWN_KEYS):
        log.warning("task.json has keys this executor does not know, ignored: %s", ", ".join(unknown))
    return TaskSpec(
        task_id=_require(raw, "task_id", str),
        job_id=job_id,
        namespace=namespace,
        round=round_number,
        attempt=attempt,
        kind=kind,
        runtime=runtime,
        client_id=raw["client_id"],
        coordinator_endpoint=_require(raw, "coordinator_endpoint", str),
        model_sha256=model_sha256,
        task_token=_require(raw, "task_token", str),
        entry=_parse_entry(raw),
        parameters=_optional(raw, "parameters", dict, {}),
        algorithm=parse_algorithm(raw),
        datasets=_string_map(raw, "datasets", str),
        dataset_samples=samples,
        timeout_seconds=_positive_number(raw, "timeout_seconds"),
        deadline_unix=_positive_number(raw, "deadline_unix"),
        state_dir=_state_dir(raw),
        evaluate_first=kind == "train" and _optional(raw, "evaluate_first", bool, False),
        secure_aggregation=_optional(raw, "secure_aggregation", bool, None),
        model_file=_model_file(raw),
        model_follows=model_follows,
    )
