"""The gate every received update passes before it is aggregated.

A client's update comes from another machine and goes straight into a running
sum: one NaN, or one tensor of the wrong shape, would poison the round for
everyone.  :func:`validate_update` therefore refuses anything that does not
have exactly the reference model's names, shapes and dtypes, or that holds a
non-finite float, and says which tensor is wrong and how -- every problem at
once, so a client author fixes them in one go.  The coordinator logs that
message as the rejection reason.

Non-finite values are counted in blocks so that checking a multi-GiB update
needs a few MiB of temporaries, not a boolean array the size of the model.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from libs.errors import InvalidWeights

_BLOCK = 1 << 20  # elements per block when scanning, so temporaries stay small
_LISTED = 10


def _listed(names: Collection[str]) -> str:
    ordered = sorted(names)
    more = f" and {len(ordered) - 5} more" if len(ordered) > 5 else ""
    return ", ".join(repr(name) for name in ordered[:5]) + more


def raise_if_problems(problems: list[str], what: str) -> None:
    """One :class:`InvalidWeights` listing ``problems`` (the first ten in the message, all in details)."""
    if problems:
        more = f"; and {len(problems) - _LISTED} more problems" if len(problems) > _LISTED else ""
        raise InvalidWeights(
            f"{what}: {'; '.join(problems[:_LISTED])}{more}", details={"problems": problems[:100]}
        )


def non_finite_counts(array: np.ndarray) -> tuple[int, int]:
    """How many NaN and how many infinite values a float array holds (scanned in blocks)."""
    flat = array.reshape(-1)
    nan = inf = 0
    for start in range(0, flat.size, _BLOCK):
        block = flat[start : start + _BLOCK]
        if not np.isfinite(block).all():
            nan += int(np.isnan(block).sum())
            inf += int(np.isinf(block).sum())
    return nan, inf


def layout_problems(weights: Mapping[str, Any], reference: Mapping[str, np.ndarray]) -> list[str]:
    """Missing and unexpected names, and each tensor whose shape or dtype differs."""
    problems = []
    if missing := reference.keys() - weights.keys():
        problems.append(f"missing tensors {_listed(missing)}")
    if extra := weights.keys() - reference.keys():
        problems.append(f"unexpected tensors {_listed(extra)}")
    for name, expected in reference.items():
        array = weights.get(name)
        if array is None:
            continue
        if not isinstance(array, np.ndarray):
            problems.append(f"tensor {name!r}: a {type(array).__name__}, expected a numpy array")
            continue
        if array.shape != expected.shape:
            problems.append(f"tensor {name!r}: wrong shape {array.shape} vs {expected.shape} expected")
        if array.dtype != expected.dtype:
            problems.append(f"tensor {name!r}: wrong dtype {array.dtype} vs {expected.dtype} expected")
    return problems


def check_compatible(weights: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> None:
    """Same names, shapes and dtypes as ``reference``, else :class:`InvalidWeights`."""
    raise_if_problems(layout_problems(weights, reference), "weights do not match the model")


def validate_update(
    update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], *, require_float: bool = True
) -> None:
    """Refuse an update unless it has the reference's names, shapes and dtypes,
    its float tensors are all finite, and (with ``require_float``) every tensor
    is a float.  The :class:`InvalidWeights` lists every problem found."""
    problems = layout_problems(update, reference)
    for name, array in update.items():
        if name not in reference or not isinstance(array, np.ndarray):
            continue
        if array.dtype.kind != "f":
            if require_float:
                problems.append(f"tensor {name!r}: dtype {array.dtype} is not a float type")
            continue
        nan, inf = non_finite_counts(array)
        if nan or inf:
            problems.append(f"tensor {name!r}: non-finite values ({nan} NaN, {inf} infinite)")
    raise_if_problems(problems, "invalid update")
