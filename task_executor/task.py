"""The files an executor shares with its task manager: ``task.json`` in, ``result.json`` out.

Both shapes are fixed by docs/contracts.md ("Task manager <-> task
executor").  ``task.json`` is parsed once into a frozen :class:`TaskSpec` and
checked field by field, so a malformed file fails at once with a message
naming the field, before any download or user code runs; the rest of the
executor never touches the raw JSON.  Unknown keys are tolerated (a newer
task manager may add some) but listed in the log.

``result.json`` is written atomically (temporary file, then rename) because
the task manager may read it the moment the process exits, or after a kill.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

from libs.files import write_json_atomic
from task_executor.errors import InvalidTask

log = logging.getLogger(__name__)

TASK_FILE = "task.json"
RESULT_FILE = "result.json"

Kind = Literal["train", "evaluate", "init"]
KINDS: tuple[Kind, ...] = ("train", "evaluate", "init")
RUNTIMES = ("pytorch", "tensorflow")
MODES = ("script", "function")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_KNOWN_KEYS = frozenset({
    "task_id", "job_id", "namespace", "round", "attempt", "kind", "runtime", "client_id",
    "coordinator_endpoint", "model_sha256", "task_token", "entry", "parameters", "datasets",
    "dataset_samples", "timeout_seconds", "deadline_unix", "state_dir", "evaluate_first",
    "secure_aggregation", "model_file", "model_follows",
})  # fmt: skip


class ResultJson(TypedDict):
    """The wire shape of ``result.json``."""

    state: Literal["succeeded", "failed", "withdrawn"]
    reason: str
    num_samples: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Entry:
    """What to run: a script, or a module of functions (``mode="function"``)."""

    script: Path
    mode: Literal["script", "function"]
    working_dir: Path


@dataclass(frozen=True)
class TaskSpec:
    """One task, as the task manager described it in ``task.json``."""

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


def is_sha256(text: str) -> bool:
    """Whether ``text`` names a model the way the contract does: 64 lower-case hex digits."""
    return bool(_SHA256.match(text))


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


def _optional(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if raw.get(key) is None:
        return default
    return _require(raw, key, kind)


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


def _state_dir(raw: Mapping[str, Any]) -> Path | None:
    value = _optional(raw, "state_dir", str, None)
    if value is None:
        return None
    path = Path(value)
    if not path.is_absolute():
        raise InvalidTask(f"task.json: state_dir must be an absolute path, got {value!r}")
    return path


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
    model_sha256 = _optional(raw, "model_sha256", str, "")
    model_follows = kind == "train" and _optional(raw, "model_follows", bool, False)
    if kind != "init" and not is_sha256(model_sha256) and not (model_follows and not model_sha256):
        raise InvalidTask(
            f"task.json: {'an' if kind[0] in 'aeiou' else 'a'} {kind} task needs model_sha256 "
            f"(64 lower-case hex digits), got {model_sha256!r}"
        )
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


def _model_file(raw: Mapping[str, Any]) -> str | None:
    name = _optional(raw, "model_file", str, None)
    if name is not None and (not name or "/" in name or name in (".", "..")):
        raise InvalidTask(f"task.json: model_file must name a file in the task folder, got {name!r}")
    return name


def read_task(task_dir: Path) -> TaskSpec:
    """Read and check ``<task_dir>/task.json``."""
    path = task_dir / TASK_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidTask(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidTask(f"{path} is not UTF-8 text: {exc.reason}") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InvalidTask(f"{path} is not valid JSON: {exc}") from None
    return parse_task(raw)


def write_result(task_dir: Path, result: ResultJson) -> None:
    """Write ``result.json`` atomically, so a reader never sees half of it."""
    write_json_atomic(task_dir / RESULT_FILE, result, durable=False)  # read at once; a power loss ends the round anyway
