"""Streaming FedAvg: fold each client delta into a running weighted sum as it arrives.

Algorithm (McMahan et al. 2017, "Communication-Efficient Learning of Deep
Networks from Decentralized Data", Algorithm 1: the server's
``w_{t+1} = sum_k (n_k / n) w^k_{t+1}``, written over deltas):

    S = sum_i w_i * delta_i,   W = sum_i w_i,   mean = S / W

with ``w_i`` the client's weight (its sample count n_k for FedAvg, 1 for an
unweighted mean).  The sum is associative, so each delta is folded in and
dropped as soon as it arrives (DESIGN §5 step 4): the coordinator holds the
model plus this one running sum, whatever the number of clients.

Validation before mutation.  :meth:`WeightedSum.add` checks the whole update
(names, shapes, dtypes, finiteness, and that folding it cannot overflow the
sum) before it touches the sum, so a rejected update
(:class:`~libs.errors.UpdateRejected`, with the reason) leaves the sum
bit-for-bit unchanged.  The overflow guard keeps, per group of tensors, the
bound ``sum_i w_i * ||delta_i||_2`` on the largest magnitude in the sum (no
coordinate exceeds the L2 norm) and refuses an update that would take it past
a quarter of the dtype's largest value.

Precision versus memory.  The sum is kept in the model's dtype (at least
float32, see :func:`~libs.aggregation.types.working_dtype`), not in float64:
a float64 sum of a float32 model would double the coordinator's memory.  The
price is rounding: after n folds a coordinate's relative error is at most
about n * 2**-24 (6e-5 for a thousand clients, worst case; typically
sqrt(n) times 6e-8), far below the noise of the stochastic gradients that
produced the deltas.  ``accumulator_dtype=np.float64`` buys float64 anyway.

Speed (target: at least half the throughput of a plain in-place numpy add).
The fold is an axpy, ``S += w * delta``: for float32/float64 it is BLAS
``?axpy`` through SciPy (one pass over memory, in place, no temporary); other
dtypes multiply into a small reusable scratch chunk and ``np.add`` in place.
The finiteness check is a BLAS dot product ``delta . delta``: NaN and
infinity propagate into it, it writes nothing, and it yields the update's
norm, returned for logging and norm screening.  Tensors of at most
``_SMALL_TENSOR`` elements (biases, norm scales) are packed into contiguous
groups, so a model with hundreds of them pays a few BLAS calls, not
hundreds.  BLAS runs on one thread (see :func:`_one_blas_thread`).

Assumptions: deltas are ``trained - global`` against the model the reference
describes; weights are positive finite numbers; one thread uses the object
(the coordinator's event loop).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
from numpy.typing import DTypeLike
from scipy.linalg import get_blas_funcs
from threadpoolctl import ThreadpoolController

from libs.aggregation.types import TensorSpec, WeightMap, working_dtype
from libs.aggregation.validation import check_matches, check_model
from libs.errors import UpdateRejected, ValidationFailed

# Elements per BLAS call: keeps the element count inside a 32-bit BLAS integer.
_BLAS_CHUNK = 1 << 28
# Elements per step of the numpy fallback: its scratch buffer stays in cache.
_SCRATCH_CHUNK = 1 << 18
# Tensors of at most this many elements are packed together ...
_SMALL_TENSOR = 1 << 12
# ... into groups of at most this many elements, gathered through one scratch buffer.
_PACK_ELEMENTS = 1 << 18
# Headroom below the dtype's largest finite value that the overflow guard keeps.
_OVERFLOW_MARGIN = 0.25
# Plausible weights (sample counts, or fractions of one): beyond these the weight is a
# bug or a lie, and W or w * delta would leave float32's range.
_MIN_WEIGHT, _MAX_WEIGHT = 1e-12, 1e12

_BLAS_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_Axpy = Callable[..., Any]


@functools.cache
def _blas_libraries() -> tuple[Any, ...]:
    """Controllers of the BLAS libraries loaded in this process (numpy's and SciPy's), found once."""
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run the block with every BLAS library limited to one thread, then restore.

    Both passes of :meth:`WeightedSum.add` are memory-bound, so extra threads
    gain little; on an oversubscribed or CPU-limited host (a coordinator pod
    whose limit is below the node's core count) OpenBLAS threads waiting for a
    core were measured up to 100x slower than one thread.  Costs about 4 us.
    """
    libraries = _blas_libraries()
    previous = [library.get_num_threads() for library in libraries]
    for library in libraries:
        library.set_num_threads(1)
    try:
        yield
    finally:
        for library, count in zip(libraries, previous, strict=True):
            library.set_num_threads(count)


def _blas_axpy(sum_dtype: np.dtype, delta_dtype: np.dtype) -> _Axpy | None:
    """BLAS ``saxpy``/``daxpy`` when both dtypes are the same native float32 or float64."""
    if sum_dtype != delta_dtype or sum_dtype not in _BLAS_DTYPES:
        return None
    return get_blas_funcs("axpy", dtype=sum_dtype)


def _squared_norm(flat: np.ndarray) -> float:
    """``||flat||^2``: NaN or infinite if ``flat`` holds NaN or infinity, else finite.

    float32/float64 take one BLAS dot product (NaN and infinity propagate into
    it; it writes nothing).  If that overflows, or for other dtypes, the sum
    of squares is redone in float64 chunk by chunk, which cannot overflow for
    float16/float32 values.
    """
    if flat.dtype in _BLAS_DTYPES:
        squared = float(np.dot(flat, flat))
        if math.isfinite(squared):
            return squared
    squared = 0.0
    for start in range(0, flat.size, _SCRATCH_CHUNK):
        part = flat[start : start + _SCRATCH_CHUNK].astype(np.float64)
        squared += float(np.dot(part, part))
    return squared


@dataclass
class _Unit:
    """Tensors folded by one axpy: one large tensor, or small ones packed together.

    ``total`` is one contiguous 1-D buffer; each tensor's sum is a view into it.
    """

    names: tuple[str, ...]
    total: np.ndarray
    axpy: _Axpy | None
    limit: float
    bound: float = 0.0  # >= max |total|: the sum of weight * ||delta part||_2 folded so far


def _plan_units(layout: Mapping[str, TensorSpec], sum_dtypes: Mapping[str, np.dtype]) -> list[_Unit]:
    """Each large tensor alone; small ones packed by dtype pair, at most _PACK_ELEMENTS per unit."""
    units: list[_Unit] = []
    packs: dict[tuple[np.dtype, np.dtype], tuple[list[str], int]] = {}

    def close(names: list[str], size: int, sum_dtype: np.dtype, delta_dtype: np.dtype) -> None:
        units.append(
            _Unit(
                names=tuple(names),
                total=np.zeros(size, dtype=sum_dtype),
                axpy=_blas_axpy(sum_dtype, delta_dtype),
                limit=_OVERFLOW_MARGIN * float(np.finfo(sum_dtype).max),
            )
        )

    for name, spec in layout.items():
        key = (sum_dtypes[name], spec.dtype)
        size = math.prod(spec.shape)
        if size > _SMALL_TENSOR:
            close([name], size, *key)
            continue
        names, packed = packs.get(key, ([], 0))
        if packed + size > _PACK_ELEMENTS:
            close(names, packed, *key)
            names, packed = [], 0
        packs[key] = ([*names, name], packed + size)
    for key, (names, packed) in packs.items():
        close(names, packed, *key)
    return units


def _scratch(pool: dict[np.dtype, np.ndarray], dtype: np.dtype, size: int) -> np.ndarray:
    """A reusable buffer of at least ``size`` elements of ``dtype`` from ``pool``."""
    buffer = pool.get(dtype)
    if buffer is None or buffer.size < size:
        buffer = pool[dtype] = np.empty(size, dtype=dtype)
    return buffer


class WeightedSum:
    """A running ``sum_i w_i * delta_i`` over deltas shaped like ``reference``.

    ``reference`` only fixes the layout (names, shapes, dtypes); it is not
    kept.  Memory: the sum (one model in the accumulation dtype) plus two
    scratch buffers of at most ``_PACK_ELEMENTS`` and ``_SCRATCH_CHUNK``
    elements per dtype (1 MiB each for float32).
    """

    def __init__(
        self,
        reference: Mapping[str, np.ndarray],
        *,
        accumulator_dtype: DTypeLike | None = None,
    ) -> None:
        self._layout: dict[str, TensorSpec] = check_model(reference, what="reference model")
        forced = None if accumulator_dtype is None else np.dtype(accumulator_dtype)
        if forced is not None and not np.issubdtype(forced, np.floating):
            raise ValidationFailed(f"accumulator dtype must be a floating-point type, not {forced}")
        sum_dtypes: dict[str, np.dtype] = {}
        for name, spec in self._layout.items():
            sum_dtypes[name] = working_dtype(spec.dtype) if forced is None else forced
            if not np.can_cast(spec.dtype, sum_dtypes[name], casting="safe"):
                raise ValidationFailed(
                    f"accumulator dtype {forced} cannot hold tensor {name!r} of {spec.dtype}"
                )
        self._units = _plan_units(self._layout, sum_dtypes)
        self._sums: dict[str, np.ndarray] = {}  # per-tensor views into the units' buffers
        for unit in self._units:
            offset = 0
            for name in unit.names:
                spec = self._layout[name]
                size = math.prod(spec.shape)
                self._sums[name] = unit.total[offset : offset + size].reshape(spec.shape)
                offset += size
        # Two scratch pools, so a packed delta never shares memory with the fold's products.
        self._pack_scratch: dict[np.dtype, np.ndarray] = {}
        self._fold_scratch: dict[np.dtype, np.ndarray] = {}
        self._count = 0
        self._total_weight = 0.0

    @property
    def layout(self) -> Mapping[str, TensorSpec]:
        """The layout every delta must match."""
        return self._layout

    @property
    def count(self) -> int:
        """How many deltas were folded in."""
        return self._count

    @property
    def total_weight(self) -> float:
        """The sum of the weights of the deltas folded in."""
        return self._total_weight

    def add(self, delta: Mapping[str, np.ndarray], weight: float) -> float:
        """Fold ``weight * delta`` into the sum; return the delta's L2 norm.

        Raises :class:`UpdateRejected`, leaving the sum untouched, if ``weight``
        is not a number in [1e-12, 1e12], or ``delta`` does not match the
        layout, holds NaN or infinity, or is so large that the sum could
        overflow.
        """
        weight = self._checked_weight(weight)
        check_matches(self._layout, delta, what="update", error=UpdateRejected)
        # Overflow and NaN in the check's dot product are expected and handled: no warnings.
        with _one_blas_thread(), np.errstate(over="ignore", invalid="ignore"):
            norms = [self._check_unit(unit, delta, weight) for unit in self._units]
            # Every check passed: the sum changes only now, and nothing below can fail.
            for unit, norm in zip(self._units, norms, strict=True):
                self._fold(unit.total, self._gather(unit, delta), weight, unit.axpy)
                unit.bound += weight * norm
        self._count += 1
        self._total_weight += weight
        return math.sqrt(sum(norm * norm for norm in norms))

    def mean(self) -> WeightMap:
        """``S / W`` in the reference's dtypes (new arrays; the sum is kept and can grow further)."""
        if self._count == 0:
            raise ValidationFailed("no updates were added; their mean is undefined")
        result: WeightMap = {}
        for name, total in self._sums.items():
            divided = np.divide(total, total.dtype.type(self._total_weight))
            result[name] = divided.astype(self._layout[name].dtype, copy=False)
        return result

    @staticmethod
    def _checked_weight(weight: object) -> float:
        if isinstance(weight, bool) or not isinstance(weight, Real):
            raise UpdateRejected(
                f"weight must be a number, not {type(weight).__name__}", details={"reason": "weight"}
            )
        value = float(weight)
        if not (math.isfinite(value) and _MIN_WEIGHT <= value <= _MAX_WEIGHT):
            raise UpdateRejected(
                f"weight must be a positive number in [{_MIN_WEIGHT:g}, {_MAX_WEIGHT:g}], got {weight}",
                details={"reason": "weight"},
            )
        return value

    def _check_unit(self, unit: _Unit, delta: Mapping[str, np.ndarray], weight: float) -> float:
        """The norm of ``delta``'s part in ``unit``, or :class:`UpdateRejected`."""
        norm = math.sqrt(_squared_norm(self._gather(unit, delta)))
        if not math.isfinite(norm):
            name = next(n for n in unit.names if not np.isfinite(delta[n]).all())
            raise UpdateRejected(
                f"update: tensor {name!r} has NaN or infinite values",
                details={"tensor": name, "reason": "non-finite"},
            )
        if unit.bound + weight * norm > unit.limit:
            raise UpdateRejected(
                f"update: tensor(s) {', '.join(map(repr, unit.names[:3]))} too large to add without overflow",
                details={"tensor": unit.names[0], "reason": "overflow"},
            )
        return norm

    def _gather(self, unit: _Unit, delta: Mapping[str, np.ndarray]) -> np.ndarray:
        """``delta``'s part in ``unit`` as one 1-D array: a view for one tensor, else packed into scratch."""
        if len(unit.names) == 1:
            return delta[unit.names[0]].reshape(-1)  # a view unless the array is not contiguous
        first = delta[unit.names[0]]
        scratch = _scratch(self._pack_scratch, first.dtype, unit.total.size)
        return np.concatenate([delta[name] for name in unit.names], axis=None, out=scratch[: unit.total.size])

    def _fold(self, total: np.ndarray, flat: np.ndarray, weight: float, axpy: _Axpy | None) -> None:
        """``total += weight * flat`` in place, for 1-D ``total`` and ``flat`` of equal size."""
        if axpy is not None:
            for start in range(0, flat.size, _BLAS_CHUNK):
                target = total[start : start + _BLAS_CHUNK]
                result = axpy(flat[start : start + _BLAS_CHUNK], target, a=weight)
                if result is not target:  # f2py copied instead of working in place
                    target[...] = result
            return
        # Other dtypes (float16 deltas into a float32 sum): multiply into a cached chunk, add in place.
        scale = total.dtype.type(weight)
        buffer = _scratch(self._fold_scratch, total.dtype, min(flat.size, _SCRATCH_CHUNK))
        for start in range(0, flat.size, _SCRATCH_CHUNK):
            stop = min(start + _SCRATCH_CHUNK, flat.size)
            part = buffer[: stop - start]
            np.multiply(flat[start:stop], scale, out=part, dtype=total.dtype)
            np.add(total[start:stop], part, out=total[start:stop])
