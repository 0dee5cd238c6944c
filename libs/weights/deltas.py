"""Arithmetic on weight maps: deltas, norms, clipping.

A client uploads ``delta = trained - global`` rather than its trained model:
deltas are what aggregation averages, what differential privacy clips and
noises, and what secure aggregation masks.  These functions are pure (weight
maps in, new weight maps out; inputs are never modified, although an output
may share an unchanged array with an input) and check first that their
arguments have the same names, shapes and dtypes.

Float tensors are combined in float64 and rounded once to their own dtype,
block by block: ``base + scale * delta`` in float32 would round twice, and a
blockwise float64 temporary keeps the extra memory to a few MiB whatever the
model size.  For a plain difference this gives exactly the correctly rounded
float32 (or float16) result.  The delta keeps the tensor's float dtype, so it
validates against the model with :func:`~libs.weights.tensors.validate_update`.

Non-float tensors (BatchNorm's ``num_batches_tracked`` counter, boolean masks)
are not learned but still travel with a model.  Their deltas are exact
modular differences (wrapping integer subtraction, XOR for booleans), applied
exactly and without ``scale``: scaling a counter or a mask means nothing, and
``apply_delta(base, compute_delta(trained, base))`` restores ``trained`` bit
for bit.  Norms and clipping look only at float tensors, so a counter never
dominates a clipping norm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from libs.errors import InvalidWeights
from libs.weights.tensors import WeightMap
from libs.weights.validation import check_compatible

_BLOCK = 1 << 20  # elements per float64 temporary (8 MiB)


def _flat(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).reshape(-1)


def _combine(base: np.ndarray | None, other: np.ndarray, scale: float) -> np.ndarray:
    """``base + scale * other`` (or ``scale * other`` without a base) computed
    in float64, rounded once to ``other.dtype``."""
    out = np.empty(other.shape, other.dtype)
    flat_base = None if base is None else _flat(base)
    flat_other, flat_out = _flat(other), out.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow becomes inf, which validation refuses
        for start in range(0, flat_out.size, _BLOCK):
            stop = start + _BLOCK
            block = flat_other[start:stop].astype(np.float64)
            if scale != 1.0:
                block *= scale
            if flat_base is not None:
                block += flat_base[start:stop]
            flat_out[start:stop] = block
    return out


def _exact(base: np.ndarray, other: np.ndarray, *, subtract: bool) -> np.ndarray:
    """Modular difference or sum of non-float tensors (XOR for booleans)."""
    out = np.empty(base.shape, base.dtype)
    if base.dtype.kind == "b":
        return np.logical_xor(base, other, out=out)
    return (np.subtract if subtract else np.add)(base, other, out=out)


def compute_delta(trained: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray]) -> WeightMap:
    """``trained - base``, tensor by tensor, keeping each tensor's dtype."""
    check_compatible(trained, base)
    return {
        name: _combine(trained[name], base[name], -1.0)
        if base[name].dtype.kind == "f"
        else _exact(trained[name], base[name], subtract=True)
        for name in sorted(base)
    }


def apply_delta(
    base: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray], scale: float = 1.0
) -> WeightMap:
    """``base + scale * delta`` for float tensors; non-float tensors take their delta exactly."""
    check_compatible(delta, base)
    return {
        name: _combine(base[name], delta[name], scale)
        if base[name].dtype.kind == "f"
        else _exact(base[name], delta[name], subtract=False)
        for name in sorted(base)
    }


def l2_norm(weights: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of all float tensors taken together, accumulated in float64."""
    total = 0.0
    for array in weights.values():
        if array.dtype.kind != "f":
            continue
        flat = _flat(array)
        for start in range(0, flat.size, _BLOCK):
            block = flat[start : start + _BLOCK].astype(np.float64)
            total += float(np.dot(block, block))
    return math.sqrt(total)


def clip_by_norm(weights: Mapping[str, np.ndarray], max_norm: float) -> WeightMap:
    """Scale the float tensors down so their joint L2 norm is at most ``max_norm``."""
    if not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"max_norm must be a positive number, got {max_norm}")
    norm = l2_norm(weights)
    if not math.isfinite(norm):
        raise InvalidWeights(f"cannot clip weights whose norm is {norm}: they hold non-finite values")
    if norm <= max_norm:
        return dict(sorted(weights.items()))
    factor = max_norm / norm
    return {
        name: _combine(None, array, factor) if array.dtype.kind == "f" else array
        for name, array in sorted(weights.items())
    }


def zeros_like(weights: Mapping[str, np.ndarray]) -> WeightMap:
    """A weight map of zeros with the same names, shapes and dtypes."""
    return {name: np.zeros_like(array) for name, array in sorted(weights.items())}
