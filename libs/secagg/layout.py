"""Flattening a model (a map of named arrays) into one vector and back.

Secure aggregation masks one integer vector per client, so a ``WeightMap`` is
laid out in a canonical order (tensor names sorted) that every client and the
server derive from the global model alone.  The layout is checked on both
ways: a missing, extra or reshaped tensor is an error, never a silent
misalignment of someone else's parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from libs.errors import ValidationFailed

WeightMap = dict[str, np.ndarray]  # defined locally on purpose: libs.secagg does not import libs.weights
Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one tensor of the model."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class ParameterLayout:
    """The canonical order of a model's tensors in the flat vector."""

    tensors: tuple[TensorSpec, ...]

    @classmethod
    def of(cls, weights: Mapping[str, np.ndarray]) -> ParameterLayout:
        """The layout of ``weights`` (names sorted; floating dtypes only)."""
        specs = []
        for name in sorted(weights):
            array = np.asarray(weights[name])
            if not np.issubdtype(array.dtype, np.floating):
                raise ValidationFailed(f"tensor {name!r} is {array.dtype}, not a floating type")
            specs.append(TensorSpec(name, tuple(int(d) for d in array.shape), array.dtype.str))
        return cls(tuple(specs))

    @property
    def size(self) -> int:
        """The number of parameters (the vector length)."""
        return sum(spec.size for spec in self.tensors)

    def flatten(self, weights: Mapping[str, np.ndarray]) -> Float64Array:
        """One float64 vector of all tensors, in layout order."""
        expected = {spec.name for spec in self.tensors}
        if set(weights) != expected:
            missing = sorted(expected - set(weights))
            extra = sorted(set(weights) - expected)
            raise ValidationFailed(f"model does not match the layout (missing {missing}, extra {extra})")
        out = np.empty(self.size, dtype=np.float64)
        offset = 0
        for spec in self.tensors:
            array = np.asarray(weights[spec.name])
            if tuple(array.shape) != spec.shape:
                raise ValidationFailed(f"tensor {spec.name!r} has shape {array.shape}, expected {spec.shape}")
            out[offset : offset + spec.size] = array.reshape(-1)
            offset += spec.size
        return out

    def unflatten(self, vector: np.ndarray) -> WeightMap:
        """The model behind a flat vector, each tensor in its own shape and dtype."""
        if vector.shape != (self.size,):
            raise ValidationFailed(f"vector has shape {vector.shape}, expected ({self.size},)")
        weights: WeightMap = {}
        offset = 0
        for spec in self.tensors:
            chunk = vector[offset : offset + spec.size]
            weights[spec.name] = chunk.reshape(spec.shape).astype(np.dtype(spec.dtype))
            offset += spec.size
        return weights
