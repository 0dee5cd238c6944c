"""Cross-field rules of the job spec: what one JSON Schema keyword cannot say.

The schema could state "exactly one of" with ``oneOf``, but Kubernetes
structural schemas reject ``oneOf`` over properties and jsonschema's
``oneOf`` messages name no field.  So those rules live here, each a small
function that reads the defaulted spec (``spec``) and, where a default
matters, what the user wrote (``raw``), and yields :class:`Problem`\\ s:

- at most one initial model source among ``modelPath``, ``modelRef`` and
  ``checkpointRef``; none means ``initialModel: client`` (one selected client
  initialises the model and every client starts round 1 from its weights),
  and ``initialModel`` must not be combined with a source;
- exactly one task source: ``taskEntry`` or ``scripts``;
- ``scripts.mode`` agrees with ``mode`` when both are given;
- ``minClients <= clientsPerRound`` and ``taskTimeoutSeconds <= roundTimeoutSeconds``;
- an explicit ``clients`` list names at least ``clientsPerRound`` clients;
- secure aggregation: ``threshold`` is a fraction in (0, 1) or a whole count
  ``>= 2`` and ``<= minClients`` (a round closing with ``minClients`` updates
  must still unmask), and the aggregation does not need individual updates
  (median, trimmed mean, krum and multi-krum do; the server only sees the sum);
- differential privacy: a ``targetEpsilon`` needs ``noiseMultiplier > 0``;
- ``extenders`` need ``scripts`` (their file is in the bundle) and name at
  least one hook;
- coordinator ``resources``: each request is at most its limit;
- object-store keys (``modelPath``, ``scripts.bundle``) follow the rest of
  the object store's key rules (``libs.objects.keys``) that a pattern cannot
  say: no segment longer than 255 bytes or starting with the reserved
  ``.nsfl-``.  Keys are relative to the job's namespace, so a spec can never
  name another namespace's objects.

Every rule checks types before comparing: the rules also run on specs the
schema rejected, so all problems are reported at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from libs.jobspec.defaults import MODEL_SOURCES
from libs.jobspec.messages import Problem, format_path, show
from libs.jobspec.quantities import parse_quantity

ROBUST_AGGREGATIONS = ("median", "trimmedmean", "krum", "multikrum")
# Mirrors libs.objects.keys (not imported: the spec must not depend on a storage backend's module).
RESERVED_KEY_PREFIX = ".nsfl-"
MAX_KEY_SEGMENT = 255
TASK_SOURCES = ("taskEntry", "scripts")
HOOKS = ("broadcast", "aggregate", "finish")

Rule = Callable[[Mapping[str, Any], Mapping[str, Any]], Iterator[Problem]]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _default_note(raw: Mapping[str, Any], name: str) -> str:
    return "" if name in raw else ", the default"


def model_source(spec: Mapping[str, Any], raw: Mapping[str, Any]) -> Iterator[Problem]:
    given = [source for source in MODEL_SOURCES if source in raw]
    if len(given) > 1:
        yield Problem(
            format_path([]),
            f"set at most one initial model source, got {' and '.join(given)} "
            "(modelPath, modelRef or checkpointRef; none lets a client initialise the model)",
        )
    if given and "initialModel" in raw:
        yield Problem(
            format_path(["initialModel"]),
            f"cannot be combined with {given[0]}; remove one of them",
        )


def task_source(spec: Mapping[str, Any], raw: Mapping[str, Any]) -> Iterator[Problem]:
    given = [source for source in TASK_SOURCES if source in raw]
    if len(given) != 1:
        got = "both" if given else "neither"
        yield Problem(
            format_path([]),
            "set exactly one of taskEntry (a task installed on the clients) or scripts "
            f"(a bundle shipped with the job), got {got}",
        )


def mode_agrees(spec: Mapping[str, Any], raw: Mapping[str, Any]) -> Iterator[Problem]:
    mode, scripts_mode = raw.get("mode"), _mapping(raw.get("scripts")).get("mode")
    if isinstance(mode, str) and isinstance(scripts_mode, str) and mode != scripts_mode:
        yield Problem(
            format_path(["scripts", "mode"]),
            f"{scripts_mode!r} disagrees with spec.mode {mode!r}; set only one of them",
        )


def client_counts(spec: Mapping[str, Any], raw: Mapping[str, Any]) -> Iterator[Problem]:
    per_round, minimum = _int(spec.get("clientsPerRound")), _int(spec.get("minClients"))
    if per_round is None:
        return
    note = _default_note(raw, "clientsPerRound")
    if minimum is not None and minimum > per_round:
        yield Problem(
            format_path(["minClients"]),
            f"must not exceed clientsPerRound ({per_round}{note}), got {minimum}",
        )
    clients = spec.get("clients")
    if isinstance(clients, list) and 0 < len(clients) < per_round:
        yield Problem(
            format_path(["clients"]),
            f"lists {len(clients)} client{'s' if len(clients) != 1 else ''} but clientsPerRound is "
            f"{per_round}{note}; list more clients or lower clientsPerRound",
        )


def timeouts(spec: Mapping[str, Any], raw: Mapping[str, Any]) -> Iterator[Problem]:
    task, round_ = _int(spec.get("taskTimeoutSeconds")), _int(spec.get("roundTimeoutSeconds"))
    if task is not None and round_ is not None and task > round_:
        note = _default_note(raw, "roundTimeoutSeconds")
        yield Problem(
            format_path(["taskTimeoutSeconds"]),
            f"must not exceed roundTimeoutSeconds ({round_}{note}), got {task}",
        )


def secure_aggregation(spec: Mapping[str, Any], raw: Mapping[str, Any]) -> Iterator[Problem]:
    secure = _mapping(_mapping(spec.get("privacy")).get("secureAggregation"))
    if not secure:
        return
    threshold = _number(secure.get("threshold"))
    path = format_path(["privacy", "secureAggregation", "threshold"])
    minimum = _int(spec.get("minClients"))
    if threshold is not None and threshold >= 1:
        if not threshold.is_integer() or threshold < 2:
            yield Problem(
                path,
                "must be a fraction of the selected clients (greater than 0 and less than 1) or a "
                f"whole number of clients (at least 2), got {show(secure.get('threshold'))}",
            )
        elif minimum is not None and threshold > minimum:
            yield Problem(
                path,
                f"must not exceed minClients ({minimum}), or a round that closes with minClients "
                f"updates could not be unmasked; got {int(threshold)}",
            )
    name = _mapping(spec.get("aggregation")).get("name")
    if name in ROBUST_AGGREGATIONS:
        yield Problem(
            format_path(["aggregation", "name"]),
            f"{name} needs each client's update, which secure aggregation hides from the server; "
            "choose a mean-based aggregation or remove privacy.secureAggregation",
        )


def differential_privacy(spec: Mapping[str, Any], raw: Mapping[str, Any]) -> Iterator[Problem]:
    dp = _mapping(_mapping(spec.get("privacy")).get("dp"))
    if "targetEpsilon" in dp and _number(dp.get("noiseMultiplier")) == 0:
        yield Problem(
            format_path(["privacy", "dp", "noiseMultiplier"]),
            "must be greater than 0 when targetEpsilon is set: without noise no privacy budget holds",
        )


def extenders(spec: Mapping[str, Any], raw: Mapping[str, Any]) -> Iterator[Problem]:
    hooks = spec.get("extenders")
    if not isinstance(hooks, Mapping):
        return
    if "scripts" not in spec:
        yield Problem(
            format_path(["extenders"]), "needs scripts: the hooks' file is read from the job's bundle"
        )
    if not any(hook in hooks for hook in HOOKS):
        yield Problem(format_path(["extenders"]), f"name at least one hook: {', '.join(HOOKS)}")


def resources(spec: Mapping[str, Any], raw: Mapping[str, Any]) -> Iterator[Problem]:
    wanted = _mapping(spec.get("resources"))
    requests, limits = _mapping(wanted.get("requests")), _mapping(wanted.get("limits"))
    for name in ("cpu", "memory"):
        request, limit = parse_quantity(requests.get(name)), parse_quantity(limits.get(name))
        if request is not None and limit is not None and request > limit:
            yield Problem(
                format_path(["resources", "requests", name]),
                f"must not exceed the limit {show(limits[name])}, got {show(requests[name])}",
            )


def object_keys(spec: Mapping[str, Any], raw: Mapping[str, Any]) -> Iterator[Problem]:
    keys = {
        ("modelPath",): spec.get("modelPath"),
        ("scripts", "bundle"): _mapping(spec.get("scripts")).get("bundle"),
    }
    for path, key in keys.items():
        if not isinstance(key, str):
            continue
        segments = key.split("/")
        if any(segment.startswith(RESERVED_KEY_PREFIX) for segment in segments):
            yield Problem(
                format_path(path), f"must not use the reserved segment prefix {RESERVED_KEY_PREFIX!r}"
            )
        if any(len(segment.encode("utf-8")) > MAX_KEY_SEGMENT for segment in segments):
            yield Problem(
                format_path(path), f"must not have a segment longer than {MAX_KEY_SEGMENT} characters"
            )


RULES: tuple[Rule, ...] = (
    model_source,
    task_source,
    mode_agrees,
    client_counts,
    timeouts,
    secure_aggregation,
    differential_privacy,
    extenders,
    resources,
    object_keys,
)


def cross_field_problems(spec: Mapping[str, Any], raw: Mapping[str, Any]) -> list[Problem]:
    """Every cross-field problem of ``spec`` (defaults applied) written by the user as ``raw``."""
    return [problem for rule in RULES for problem in rule(spec, raw)]
