"""The job spec as a frozen, typed value: :class:`JobSpec`.

A spec travels as JSON (REST bodies, the store's ``jobs`` documents, the
coordinator's ``job.json``, a ``FederatedJob``'s ``.spec``), but every
component reads it through this one type, so a field's name, type and
default are stated once.  Two ways in:

- :meth:`JobSpec.parse` validates untrusted input (``validate_spec``: the
  schema plus the cross-field rules) and builds the value;
- :meth:`JobSpec.from_document` builds it from a spec that was validated
  before it was stored.  It writes the schema's defaults in first
  (``defaults.apply_defaults``), so a document stored before a field
  existed still reads with that field's schema default.

No default is typed here: every field is read from the defaulted document,
where the schema (or ``defaults``, for the few that depend on other fields)
put it.  A field without a default is ``None`` when absent.

:meth:`JobSpec.to_document` gives back the stored JSON form (the defaulted
document, field for field), so what the store holds does not change: the
typed tree is a reading of the document, never a second source of truth.
Free-form parts (``parameters``, ``aggregation.params``, ``optimizer``,
labels) stay mappings of JSON values, read-only.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from libs.errors import ValidationFailed
from libs.jobspec.defaults import apply_defaults
from libs.jobspec.validation import validate_spec

JsonObject = Mapping[str, Any]  # a read-only JSON object whose values are free-form JSON


def _frozen(value: Any) -> JsonObject:
    return MappingProxyType(copy.deepcopy(dict(value or {})))


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class ModelRef:
    """``modelRef``: a registered model; ``version`` None means the latest."""

    name: str
    version: int | None


@dataclass(frozen=True)
class CheckpointRef:
    """``checkpointRef``: a checkpoint of an earlier job; ``round`` None means the latest."""

    job: str
    round: int | None


@dataclass(frozen=True)
class Scripts:
    """``scripts``: a bundle shipped with the job."""

    entry: str
    mode: str
    bundle: str | None


@dataclass(frozen=True)
class ClientResources:
    """``selector.resources``: what a client must offer a task; None asks nothing."""

    cpus: float | None = None
    memory_mb: int | None = None
    gpus: int | None = None


@dataclass(frozen=True)
class ClientRequirement:
    """Who may take part: what the selector matches clients against (runtime, datasets, selector, clients)."""

    runtime: str
    datasets: tuple[str, ...]
    labels: Mapping[str, str]
    resources: ClientResources
    clients: tuple[str, ...]


@dataclass(frozen=True)
class Aggregation:
    """``aggregation``: the algorithm's name and its free-form parameters."""

    name: str
    params: JsonObject


@dataclass(frozen=True)
class DifferentialPrivacy:
    """``privacy.dp``."""

    mode: str  # central | local
    clip_norm: float
    noise_multiplier: float
    target_delta: float
    target_epsilon: float | None


@dataclass(frozen=True)
class SecureAggregation:
    """``privacy.secureAggregation``: ``threshold`` is a fraction (< 1) or a count."""

    mode: str  # one-mask | double-mask
    threshold: float
    bits: int


@dataclass(frozen=True)
class Privacy:
    dp: DifferentialPrivacy | None = None
    secure_aggregation: SecureAggregation | None = None


@dataclass(frozen=True)
class ExtenderHooks:
    """``extenders``: the file in the bundle and the function named for each hook."""

    file: str
    broadcast: str | None
    aggregate: str | None
    finish: str | None

    def named(self) -> dict[str, str]:
        """The hooks the job names, as ``{hook: function}``."""
        hooks = {"broadcast": self.broadcast, "aggregate": self.aggregate, "finish": self.finish}
        return {hook: name for hook, name in hooks.items() if name is not None}


@dataclass(frozen=True)
class Output:
    model_name: str | None
    keep_checkpoints: int


@dataclass(frozen=True)
class CoordinatorResources:
    """``resources``: the coordinator's requests and limits, as Kubernetes quantities."""

    requests: Mapping[str, str]
    limits: Mapping[str, str]


@dataclass(frozen=True)
class JobSpec:
    """One validated job spec (see the module docstring); build it with :meth:`parse` or :meth:`from_document`."""

    name: str
    namespace: str
    description: str | None
    labels: Mapping[str, str]
    priority: int
    runtime: str
    model_path: str | None
    model_ref: ModelRef | None
    checkpoint_ref: CheckpointRef | None
    initial_model: str | None
    task_entry: str | None
    scripts: Scripts | None
    mode: str
    parameters: JsonObject
    datasets: tuple[str, ...]
    rounds: int
    clients_per_round: int
    min_clients: int
    round_timeout_seconds: int
    task_timeout_seconds: int
    evaluate_every: int
    checkpoint_every: int
    server_learning_rate: float
    pending_timeout_seconds: int
    max_retries: int
    clients: tuple[str, ...]
    selector_labels: Mapping[str, str]
    selector_resources: ClientResources
    random: bool
    untrained_first: bool
    redundancy: float
    aggregation: Aggregation
    optimizer: Mapping[str, float]
    privacy: Privacy
    extenders: ExtenderHooks | None
    output: Output
    resources: CoordinatorResources
    _document: JsonObject = field(repr=False, compare=False)

    # -- building --------------------------------------------------------------------------
    @classmethod
    def parse(cls, raw: Mapping[str, Any], *, namespace: str = "") -> JobSpec:
        """Validate untrusted ``raw`` (``ValidationFailed`` naming every problem) and build the spec.

        ``namespace``, when given, is where the job is submitted: it fills the spec's own or must
        equal it (a request cannot put a job into a namespace other than the one it addresses).
        """
        if namespace and isinstance(raw, Mapping):
            raw = _in_namespace(raw, namespace)
        return cls._from_defaulted(validate_spec(raw))

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> JobSpec:
        """The spec a stored document holds (validated when it was stored); schema defaults filled in."""
        return cls._from_defaulted(apply_defaults(copy.deepcopy(dict(document))))

    @classmethod
    def _from_defaulted(cls, spec: dict[str, Any]) -> JobSpec:
        selector = spec.get("selector") or {}
        resources = spec.get("resources") or {}
        return cls(
            name=str(spec["name"]), namespace=str(spec["namespace"]), description=spec.get("description"),
            labels=_frozen(spec["labels"]), priority=int(spec["priority"]), runtime=str(spec["runtime"]),
            model_path=spec.get("modelPath"), model_ref=_model_ref(spec.get("modelRef")),
            checkpoint_ref=_checkpoint_ref(spec.get("checkpointRef")), initial_model=spec.get("initialModel"),
            task_entry=spec.get("taskEntry"), scripts=_scripts(spec.get("scripts")), mode=str(spec["mode"]),
            parameters=_frozen(spec["parameters"]), datasets=tuple(spec["datasets"]), rounds=int(spec["rounds"]),
            clients_per_round=int(spec["clientsPerRound"]), min_clients=int(spec["minClients"]),
            round_timeout_seconds=int(spec["roundTimeoutSeconds"]),
            task_timeout_seconds=int(spec["taskTimeoutSeconds"]), evaluate_every=int(spec["evaluateEvery"]),
            checkpoint_every=int(spec["checkpointEvery"]), server_learning_rate=float(spec["serverLearningRate"]),
            pending_timeout_seconds=int(spec["pendingTimeoutSeconds"]), max_retries=int(spec["maxRetries"]),
            clients=tuple(spec.get("clients") or ()), selector_labels=_frozen(selector.get("labels")),
            selector_resources=_client_resources(selector.get("resources")), random=bool(spec["random"]),
            untrained_first=bool(spec["untrainedFirst"]), redundancy=float(spec["redundancy"]),
            aggregation=Aggregation(str(spec["aggregation"]["name"]), _frozen(spec["aggregation"]["params"])),
            optimizer=_frozen(spec["optimizer"]), privacy=_privacy(spec.get("privacy")),
            extenders=_extenders(spec.get("extenders")),
            output=Output(spec["output"].get("modelName"), int(spec["output"]["keepCheckpoints"])),
            resources=CoordinatorResources(_frozen(resources.get("requests")), _frozen(resources.get("limits"))),
            _document=_frozen(spec),
        )  # fmt: skip

    # -- reading ----------------------------------------------------------------------------
    def to_document(self) -> dict[str, Any]:
        """The stored JSON form: the validated spec with every default written in (a fresh copy)."""
        return copy.deepcopy(dict(self._document))

    @property
    def job_id(self) -> str:
        """``<namespace>/<name>``."""
        return f"{self.namespace}/{self.name}"

    @property
    def entry(self) -> str:
        """What the task runs: the installed ``taskEntry`` or the bundle's ``scripts.entry``."""
        if self.task_entry is not None:
            return self.task_entry
        return self.scripts.entry if self.scripts is not None else ""

    @property
    def requirement(self) -> ClientRequirement:
        """Who may take part, as the selector matches it (admission and every round ask the same)."""
        return ClientRequirement(
            runtime=self.runtime, datasets=self.datasets, labels=self.selector_labels,
            resources=self.selector_resources, clients=self.clients,
        )  # fmt: skip

    @property
    def secure_aggregation(self) -> SecureAggregation | None:
        return self.privacy.secure_aggregation

    @property
    def dp(self) -> DifferentialPrivacy | None:
        return self.privacy.dp


def _in_namespace(raw: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    given = raw.get("namespace", namespace)
    if given != namespace:
        message = f"is {given!r}, which differs from the request's namespace {namespace!r}; omit it or make them agree"
        raise ValidationFailed(
            f"spec.namespace: {message}", details={"errors": [{"path": "spec.namespace", "message": message}]}
        )
    return {**raw, "namespace": namespace}


def _model_ref(value: Mapping[str, Any] | None) -> ModelRef | None:
    return None if value is None else ModelRef(str(value["name"]), _optional_int(value.get("version")))


def _checkpoint_ref(value: Mapping[str, Any] | None) -> CheckpointRef | None:
    return None if value is None else CheckpointRef(str(value["job"]), _optional_int(value.get("round")))


def _scripts(value: Mapping[str, Any] | None) -> Scripts | None:
    if value is None:
        return None
    return Scripts(entry=str(value["entry"]), mode=str(value["mode"]), bundle=value.get("bundle"))


def _client_resources(value: Mapping[str, Any] | None) -> ClientResources:
    value = value or {}
    return ClientResources(
        cpus=_optional_float(value.get("cpus")),
        memory_mb=_optional_int(value.get("memoryMb")),
        gpus=_optional_int(value.get("gpus")),
    )


def _privacy(value: Mapping[str, Any] | None) -> Privacy:
    value = value or {}
    dp, secure = value.get("dp"), value.get("secureAggregation")
    return Privacy(
        dp=None if dp is None else DifferentialPrivacy(
            mode=str(dp["mode"]), clip_norm=float(dp["clipNorm"]), noise_multiplier=float(dp["noiseMultiplier"]),
            target_delta=float(dp["targetDelta"]), target_epsilon=_optional_float(dp.get("targetEpsilon")),
        ),
        secure_aggregation=None if secure is None else SecureAggregation(
            mode=str(secure["mode"]), threshold=float(secure["threshold"]), bits=int(secure["bits"]),
        ),
    )  # fmt: skip


def _extenders(value: Mapping[str, Any] | None) -> ExtenderHooks | None:
    if value is None:
        return None
    return ExtenderHooks(
        file=str(value["file"]), broadcast=value.get("broadcast"), aggregate=value.get("aggregate"),
        finish=value.get("finish"),
    )  # fmt: skip
