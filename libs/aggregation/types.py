"""The value types every aggregation algorithm shares.

A model, a client delta, a control variate and an optimiser moment are all the
same shape of value: a mapping from tensor name to a floating-point numpy
array, called a :data:`WeightMap`.  ``libs.weights`` owns serialisation of
these maps; this package only computes with them, so it defines the alias
locally instead of importing that package (the layering stays one-way).

A :class:`TensorSpec` is what must agree between two maps for arithmetic on
them to make sense (shape and dtype); a *layout* is the spec of every tensor
in a map, taken from a reference model and checked against every update.

:func:`working_dtype` fixes one numeric policy for the whole package:
arithmetic and running state are kept in at least float32.  float16 has a
10-bit mantissa and overflows at 65504, so a float16 running sum of sample-
weighted deltas would lose most of its bits or overflow after a few clients;
float32 and float64 models keep their own dtype, which bounds memory at one
extra copy of the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

WeightMap: TypeAlias = dict[str, np.ndarray]
"""Tensor name -> floating-point array (a model, a delta, or optimiser state)."""


@dataclass(frozen=True)
class TensorSpec:
    """What two tensors must share to be added: their shape and dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def describe(self) -> str:
        return f"{self.dtype.name}{list(self.shape)}"


Layout: TypeAlias = Mapping[str, TensorSpec]
"""The spec of every tensor of a model, by name."""


def layout_of(weights: Mapping[str, np.ndarray]) -> dict[str, TensorSpec]:
    """The layout of ``weights`` (no validation; see :mod:`libs.aggregation.validation`)."""
    return {name: TensorSpec(tuple(array.shape), array.dtype) for name, array in weights.items()}


def working_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype arithmetic on a tensor of ``dtype`` is done in: at least float32."""
    return np.promote_types(dtype, np.float32)


def zeros_like_layout(layout: Layout, *, dtype: np.dtype | None = None) -> WeightMap:
    """A map of zero tensors with ``layout`` (in ``dtype`` if given, else each tensor's own)."""
    return {name: np.zeros(spec.shape, dtype=dtype or spec.dtype) for name, spec in layout.items()}
