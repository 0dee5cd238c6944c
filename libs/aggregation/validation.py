"""Checks that a weight map is well formed and matches a layout.

Every algorithm here assumes its inputs agree on tensor names, shapes and
dtypes and hold only finite numbers; these checks make the assumption
explicit and produce a message a user can act on ("tensor 'fc.weight' has
shape [3, 4]; expected [4, 3]").

The same check raises different errors depending on whose fault the problem
is, so each function takes the error class to raise:

* :class:`~libs.errors.UpdateRejected` for a client's update: the round goes
  on without it and the reason is logged against the client;
* :class:`~libs.errors.InvalidWeights` for the model itself, for optimiser
  state restored from a checkpoint, and for inputs handed to the pure
  aggregation functions (the caller was meant to screen updates first).

The checks cost one pass over the data at most; they never copy it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from libs.aggregation.types import TensorSpec, layout_of
from libs.errors import InvalidWeights, NsflError

_NAMES_SHOWN = 5


def describe_names(names: Iterable[str]) -> str:
    """A short, stable rendering of a set of tensor names for messages."""
    ordered = sorted(names)
    shown = ", ".join(repr(name) for name in ordered[:_NAMES_SHOWN])
    more = len(ordered) - _NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def check_model(weights: object, *, what: str = "model") -> dict[str, TensorSpec]:
    """Check that ``weights`` is a non-empty map of named floating-point arrays; return its layout.

    Raises :class:`InvalidWeights`.  Finiteness is not checked here: a
    reference model only fixes the layout.
    """
    if not isinstance(weights, Mapping):
        raise InvalidWeights(f"{what} must be a mapping of tensor names to arrays")
    if not weights:
        raise InvalidWeights(f"{what} has no tensors")
    for name, array in weights.items():
        if not isinstance(name, str):
            raise InvalidWeights(f"{what} has a tensor name that is not a string: {name!r}")
        if not isinstance(array, np.ndarray):
            raise InvalidWeights(f"{what}: tensor {name!r} is not a numpy array")
        if not np.issubdtype(array.dtype, np.floating):
            raise InvalidWeights(
                f"{what}: tensor {name!r} has dtype {array.dtype}; only floating-point tensors are aggregated"
            )
    return layout_of(weights)


def check_matches(
    layout: Mapping[str, TensorSpec],
    weights: object,
    *,
    what: str,
    error: type[NsflError],
) -> None:
    """Check that ``weights`` has exactly the tensors of ``layout`` with the same shapes and dtypes."""
    if not isinstance(weights, Mapping):
        raise error(f"{what} must be a mapping of tensor names to arrays")
    missing = layout.keys() - weights.keys()
    if missing:
        raise error(f"{what} is missing tensor(s) {describe_names(missing)}")
    unexpected = weights.keys() - layout.keys()
    if unexpected:
        raise error(f"{what} has unexpected tensor(s) {describe_names(str(n) for n in unexpected)}")
    for name, spec in layout.items():
        array = weights[name]
        if not isinstance(array, np.ndarray):
            raise error(f"{what}: tensor {name!r} is not a numpy array")
        if array.shape != spec.shape:
            raise error(f"{what}: tensor {name!r} has shape {list(array.shape)}; expected {list(spec.shape)}")
        if array.dtype != spec.dtype:
            raise error(f"{what}: tensor {name!r} has dtype {array.dtype}; expected {spec.dtype}")


def check_finite(weights: Mapping[str, np.ndarray], *, what: str, error: type[NsflError]) -> None:
    """Check that every value of every tensor is finite (no NaN, no infinity)."""
    for name, array in weights.items():
        if not np.isfinite(array).all():
            raise error(f"{what}: tensor {name!r} has NaN or infinite values")


def check_updates(
    updates: Sequence[Mapping[str, np.ndarray]], *, what: str = "update"
) -> dict[str, TensorSpec]:
    """Check a list of updates for the all-at-once aggregators; return their common layout.

    The first update fixes the layout; every update must match it and be
    finite.  Raises :class:`InvalidWeights` naming the offending index: by the
    time a list reaches an aggregator, each update should already have passed
    the per-client checks, so a failure here is the caller's bug.
    """
    if isinstance(updates, Mapping) or not isinstance(updates, Sequence):
        raise InvalidWeights(f"{what}s must be a sequence of weight maps")
    if not updates:
        raise InvalidWeights(f"no {what}s to aggregate")
    layout = check_model(updates[0], what=f"{what} 0")
    for index, update in enumerate(updates):
        label = f"{what} {index}"
        check_matches(layout, update, what=label, error=InvalidWeights)
        check_finite(update, what=label, error=InvalidWeights)
    return layout
