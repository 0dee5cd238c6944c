"""Hyper-parameters of the algorithms: declared once, checked strictly, defaults made explicit.

Each algorithm declares its parameters as a table of :class:`Parameter`
(default, rule, integer or not).  :func:`resolve_parameters` merges what the
user gave over the defaults and returns the complete set, so the job spec can
store exactly what ran (DESIGN §4: "defaults are written into the stored
spec").  Names are camelCase because they come from the job spec.

Strict on purpose, like the settings loader: an unknown name is an error
naming the allowed ones (a typo such as ``learning_rate`` must not silently
fall back to a default), and so is a value that is not a finite number, a
boolean where a number is expected, or a number outside its rule.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real

from libs.errors import ValidationFailed

ParameterValue = float | int | None
"""A resolved hyper-parameter: a number, or ``None`` for "decided per round" (see Multi-Krum)."""


@dataclass(frozen=True)
class Parameter:
    """One hyper-parameter: its default, the rule its value must satisfy, and its kind."""

    default: ParameterValue
    rule: str  # how the rule reads in an error message, e.g. "in [0, 1)"
    accepts: Callable[[float], bool]
    integer: bool = False
    nullable: bool = False


def positive(default: float) -> Parameter:
    return Parameter(default, "> 0", lambda value: value > 0)


def non_negative(default: float) -> Parameter:
    return Parameter(default, ">= 0", lambda value: value >= 0)


def decay(default: float) -> Parameter:
    """An exponential-decay factor such as Adam's beta: 0 <= beta < 1."""
    return Parameter(default, "in [0, 1)", lambda value: 0 <= value < 1)


def _coerce(algorithm: str, name: str, spec: Parameter, value: object) -> ParameterValue:
    def fail(reason: str) -> ValidationFailed:
        return ValidationFailed(
            f"{algorithm}: parameter {name!r} {reason}",
            details={"algorithm": algorithm, "parameter": name},
        )

    if value is None:
        if spec.nullable:
            return None
        raise fail("must be a number, not null")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise fail(f"must be a number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise fail("must be a finite number")
    if spec.integer:
        if not isinstance(value, Integral) and not number.is_integer():
            raise fail(f"must be a whole number, got {value}")
        number = int(number)
    if not spec.accepts(number):
        raise fail(f"must be {spec.rule}, got {value}")
    return int(number) if spec.integer else number


def resolve_parameters(
    algorithm: str,
    given: Mapping[str, object] | None,
    schema: Mapping[str, Parameter],
) -> dict[str, ParameterValue]:
    """The complete parameters of ``algorithm``: ``given`` checked and merged over the defaults."""
    given = {} if given is None else given
    if not isinstance(given, Mapping):
        raise ValidationFailed(f"{algorithm}: parameters must be a mapping of names to values")
    allowed = sorted(schema)
    for name in given:
        if name not in schema:
            close = difflib.get_close_matches(str(name), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            listing = ", ".join(allowed) if allowed else "none"
            raise ValidationFailed(
                f"{algorithm}: unknown parameter {name!r} (allowed: {listing}){hint}",
                details={"algorithm": algorithm, "parameter": str(name), "allowed": allowed},
            )
    resolved: dict[str, ParameterValue] = {}
    for name, spec in schema.items():
        value = given[name] if name in given else spec.default
        resolved[name] = _coerce(algorithm, name, spec, value)
    return resolved
