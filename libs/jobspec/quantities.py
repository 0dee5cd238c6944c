"""Kubernetes resource quantities ('500m', '2', '512Mi') as exact decimals.

Only what the job spec needs: parsing a non-negative quantity so a request
can be compared with its limit before Kubernetes would refuse the Pod.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_NUMBER = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>.*)")
_MULTIPLIERS: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{
        suffix: Decimal(1024) ** power for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)
    },
}
_EXPONENT = re.compile(r"[eE][+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def parse_quantity(value: object) -> Decimal | None:
    """The quantity's value, or ``None`` when ``value`` is not a non-negative quantity."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _NUMBER.fullmatch(value)
    if match is None:
        return None
    number, suffix = match.group("number"), match.group("suffix")
    try:
        if suffix in _MULTIPLIERS:
            return Decimal(number) * _MULTIPLIERS[suffix]
        if _EXPONENT.fullmatch(suffix):
            return Decimal(value)
    except InvalidOperation:
        return None
    return None
