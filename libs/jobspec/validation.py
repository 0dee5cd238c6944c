"""Validating a job spec and returning it with every default written in.

:func:`validate_spec` is the one entry used by REST, the CLI, the scheduler
and the operator.  It runs in three passes and reports everything it finds
in one :class:`~libs.errors.ValidationFailed`, so a user fixes a spec in one
go rather than one error per submission:

1. *shape*: the input must be plain JSON data (string keys; strings, finite
   numbers, booleans, null, arrays, objects), at most :data:`MAX_DEPTH`
   levels deep and :data:`MAX_NODES` values in all.  YAML can produce dates,
   NaN or billion-laugh expansions that JSON Schema would accept inside
   free-form ``parameters`` but the store could not hold, and bounding the
   size first keeps the later passes cheap.  A shape problem stops here.
2. *schema*: every jsonschema error, in plain words (see ``messages``).
3. *cross-field rules* on a copy with defaults applied (see ``rules``);
   a rule's problem is dropped when the schema already reported that path.

The error's message joins the problems sorted by path
(``spec.rounds: must be between 1 and 100000, got 0; spec.foo: unknown
field ...``) and ``details["errors"]`` lists them as ``{path, message}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from libs.errors import ValidationFailed
from libs.jobspec.defaults import apply_defaults
from libs.jobspec.messages import Problem, format_path, json_type_name, problems_from_error
from libs.jobspec.rules import cross_field_problems
from libs.jobspec.schema import validator

MAX_DEPTH = 32
MAX_NODES = 100_000
_MAX_SHAPE_PROBLEMS = 20


def validate_spec(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A new, fully defaulted copy of ``raw``, or :class:`ValidationFailed` naming every problem."""
    if not isinstance(raw, Mapping):
        raise invalid([Problem(format_path([]), f"must be an object, got {json_type_name(raw)}")])
    spec, problems = _plain_copy(raw)
    if problems:
        raise invalid(problems)
    schema_problems = {p for error in validator().iter_errors(spec) for p in problems_from_error(error)}
    filled = apply_defaults(_plain_copy(spec)[0])
    reported = {p.path for p in schema_problems}
    rule_problems = {p for p in cross_field_problems(filled, spec) if p.path not in reported}
    if schema_problems or rule_problems:
        raise invalid(schema_problems | rule_problems)
    return filled


def invalid(problems: Any) -> ValidationFailed:
    """One :class:`ValidationFailed` for ``problems``, sorted by path."""
    ordered = sorted(set(problems))
    return ValidationFailed(
        "; ".join(str(p) for p in ordered),
        details={"errors": [p.as_dict() for p in ordered]},
    )


def _plain_copy(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """A copy of ``raw`` as plain dicts and lists, and what keeps it from being JSON data.

    Iterative, so hostile nesting cannot exhaust the interpreter's stack.
    """
    root: dict[str, Any] = {}
    problems: list[Problem] = []
    nodes = 0
    # (source, target container, path); each source is copied into its target.
    stack: list[tuple[Any, Any, tuple[str | int, ...]]] = [(raw, root, ())]
    while stack and len(problems) < _MAX_SHAPE_PROBLEMS:
        source, target, path = stack.pop()
        if len(path) >= MAX_DEPTH:
            problems.append(Problem(format_path(path), f"nested too deeply (at most {MAX_DEPTH} levels)"))
            continue
        items = list(source.items()) if isinstance(source, Mapping) else list(enumerate(source))
        nodes += len(items)
        if nodes > MAX_NODES:
            problems.append(Problem(format_path([]), f"too large (at most {MAX_NODES} values in all)"))
            break
        for key, value in items:
            if isinstance(source, Mapping) and not isinstance(key, str):
                problems.append(Problem(format_path(path), f"keys must be strings, got {key!r}"))
                continue
            child_path = (*path, key)
            problem = _scalar_problem(value)
            if problem:
                problems.append(Problem(format_path(child_path), problem))
                continue
            if isinstance(value, Mapping):
                copied: Any = {}
                stack.append((value, copied, child_path))
            elif isinstance(value, list | tuple):
                copied = [None] * len(value)
                stack.append((value, copied, child_path))
            else:
                copied = value
            target[key] = copied
    return root, problems


def _scalar_problem(value: Any) -> str | None:
    if value is None or isinstance(value, str | bool | int | Mapping | list | tuple):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"must be a finite number, got {value}"
    return (
        f"must be JSON data (string, number, boolean, null, array or object), got {type(value).__name__}"
        " (quote it if it is meant as text)"
    )
