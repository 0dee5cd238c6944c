"""Server optimisers: how the aggregated delta moves the global model (DESIGN §5 step 5).

Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR), Algorithm 2,
treats the mean client delta of round t as a pseudo-gradient

    Delta_t = (1/|S|) sum_{i in S} (x_i - x_t)        (here: any weighted mean)

with the sign convention of this package: ``x_{t+1} = x_t + eta * update``
(a delta already points downhill, so there is no minus sign).  The variants:

* FedAvg:      x_{t+1} = x_t + eta * Delta_t   (eta = 1 is McMahan et al. 2017)
* FedAvgM:     m_t = beta * m_{t-1} + Delta_t;  x_{t+1} = x_t + eta * m_t
               (server momentum, Hsu et al. 2019, "Measuring the Effects of
               Non-Identical Data Distribution", with their eta = 1)
* FedAdagrad:  v_t = v_{t-1} + Delta_t^2
* FedAdam:     v_t = beta2 * v_{t-1} + (1 - beta2) * Delta_t^2
* FedYogi:     v_t = v_{t-1} - (1 - beta2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2)

  where the three adaptive ones share
               m_t = beta1 * m_{t-1} + (1 - beta1) * Delta_t
               x_{t+1} = x_t + eta * m_t / (sqrt(v_t) + tau)

  with m_{-1} = 0 and v_{-1} = tau^2 (Algorithm 2 asks for v_{-1} >= tau^2),
  and, as in Algorithm 2, no bias correction of m or v.

Defaults (all overridable): beta1 = 0.9, beta2 = 0.99 are the values Reddi
et al. fix for every experiment (§5); tau = 1e-3 is the value they report
working across nearly all tasks.  The server learning rate is tuned per task
in the paper (a grid of powers of ten; Appendix D) and has no universal
value: we default the adaptive methods to eta = 1e-2, the conservative end
of the values that performed best there (Flower uses 1e-2 for FedYogi, 1e-1
for FedAdam/FedAdagrad) -- with tau = 1e-3 the per-coordinate step of Adam
is then at most about 1e-2 per round.  FedAvg and FedAvgM default to
eta = 1 (plain averaging; Hsu et al.'s update) and FedAvgM to beta = 0.9.
The job's ``serverLearningRate`` overrides ``learningRate``.

State and checkpoints.  Each optimiser's whole state is ``step`` plus its
moment maps (``momentum``; or ``m`` and ``v``), returned by ``state()`` as
copies and restored by ``load_state()``; numpy's element-wise arithmetic is
deterministic, so a restored optimiser continues bit-for-bit as the original
would have.  Moments live in the model's dtype, at least float32.

Assumptions: ``weights`` and ``delta`` share one layout and are finite; the
moments' layout is fixed by the first step and must not change afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol, TypeAlias

import numpy as np

from libs.aggregation.parameters import Parameter, ParameterValue, decay, positive, resolve_parameters
from libs.aggregation.types import TensorSpec, WeightMap, working_dtype
from libs.aggregation.validation import check_finite, check_matches, check_model, describe_names
from libs.errors import InvalidWeights, ValidationFailed

OptimizerState: TypeAlias = dict[str, WeightMap | float | int]
"""What ``state()`` returns and ``load_state()`` takes: ``step`` and named moment maps."""


class ServerOptimizer(Protocol):
    """Applies one round's aggregated delta to the global model."""

    @property
    def name(self) -> str:
        """The algorithm's name (``fedavg``, ``fedadam`` ...)."""
        ...

    def step(self, weights: WeightMap, delta: WeightMap) -> WeightMap:
        """The next global model (new arrays); ``weights`` and ``delta`` are not modified."""
        ...

    def state(self) -> OptimizerState:
        """A copy of everything needed to resume exactly."""
        ...

    def load_state(self, state: Mapping[str, WeightMap | float | int]) -> None:
        """Restore what :meth:`state` returned (possibly through a checkpoint)."""
        ...


def _step_count(value: object) -> int | None:
    """``value`` as a step count, or None.  A checkpoint may bring it back as a whole float (JSON)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    if not float(value).is_integer() or value < 0:
        return None
    return int(value)


class _MomentOptimizer:
    """Shared mechanics: input checks, lazy moment allocation, state round-trips.

    Subclasses name their moment maps in ``_moments`` and implement
    :meth:`_direction`, which updates the moments in place and returns the
    per-tensor ``update`` of ``x_{t+1} = x_t + eta * update``.
    """

    name: ClassVar[str]
    _moments: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, learning_rate: float) -> None:
        self.learning_rate = learning_rate
        self._step = 0
        self._state: dict[str, WeightMap] = {}  # moment name -> map; empty until the first step

    def step(self, weights: WeightMap, delta: WeightMap) -> WeightMap:
        layout = check_model(weights, what="global model")
        check_finite(weights, what="global model", error=InvalidWeights)
        check_matches(layout, delta, what="aggregated delta", error=InvalidWeights)
        check_finite(delta, what="aggregated delta", error=InvalidWeights)
        if self._moments and not self._state:
            self._state = {moment: self._initial(moment, layout) for moment in self._moments}
        self._check_state_layout(layout)
        result: WeightMap = {}
        for name, x in weights.items():
            dtype = working_dtype(x.dtype)
            update = self._direction(name, delta[name].astype(dtype, copy=False))
            step = np.multiply(update, dtype.type(self.learning_rate))
            result[name] = np.add(x, step, dtype=dtype).astype(x.dtype, copy=False)
        self._step += 1
        return result

    def state(self) -> OptimizerState:
        state: OptimizerState = {"step": self._step}
        for moment in self._moments:
            state[moment] = {name: array.copy() for name, array in self._state.get(moment, {}).items()}
        return state

    def load_state(self, state: Mapping[str, WeightMap | float | int]) -> None:
        expected = {"step", *self._moments}
        if not isinstance(state, Mapping) or set(state) != expected:
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValidationFailed(f"{self.name} state must have exactly {sorted(expected)}, got {got}")
        step = _step_count(state["step"])
        if step is None:
            raise ValidationFailed(
                f"{self.name} state: 'step' must be a non-negative integer, got {state['step']!r}"
            )
        maps: dict[str, WeightMap] = {}
        for moment in self._moments:
            value = state[moment]
            if not isinstance(value, Mapping):
                raise ValidationFailed(f"{self.name} state: {moment!r} must be a map of tensors")
            maps[moment] = {name: np.array(array, copy=True) for name, array in value.items()}
        self._check_loaded(step, maps)
        self._step = step
        self._state = maps if any(maps.values()) else {}

    def _check_loaded(self, step: int, maps: dict[str, WeightMap]) -> None:
        if not self._moments:
            return
        empty = [moment for moment, values in maps.items() if not values]
        if empty and len(empty) != len(maps):
            raise InvalidWeights(f"{self.name} state: {empty} empty while other moments are not")
        if empty and step > 0:
            raise InvalidWeights(f"{self.name} state: step {step} but no moments")
        if empty:
            return
        first = self._moments[0]
        layout = check_model(maps[first], what=f"{self.name} state {first!r}")
        for moment, values in maps.items():
            check_matches(layout, values, what=f"{self.name} state {moment!r}", error=InvalidWeights)
            check_finite(values, what=f"{self.name} state {moment!r}", error=InvalidWeights)
        if "v" in maps and any((array < 0).any() for array in maps["v"].values()):
            raise InvalidWeights(f"{self.name} state 'v' has negative values")

    def _check_state_layout(self, layout: Mapping[str, TensorSpec]) -> None:
        for moment, values in self._state.items():
            if values.keys() != layout.keys():
                changed = values.keys() ^ layout.keys()
                raise InvalidWeights(
                    f"{self.name} state {moment!r} does not match the model: tensor(s) {describe_names(changed)}"
                )
            for name, spec in layout.items():
                array = values[name]
                if array.shape != spec.shape or array.dtype != working_dtype(spec.dtype):
                    raise InvalidWeights(
                        f"{self.name} state {moment!r}: tensor {name!r} is {array.dtype}{list(array.shape)}; "
                        f"the model needs {working_dtype(spec.dtype)}{list(spec.shape)}"
                    )

    def _initial(self, moment: str, layout: Mapping[str, TensorSpec]) -> WeightMap:
        """Moments start at zero, in the working dtype."""
        return {name: np.zeros(spec.shape, dtype=working_dtype(spec.dtype)) for name, spec in layout.items()}

    def _direction(self, name: str, delta: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class FedAvg(_MomentOptimizer):
    """x + eta * Delta (McMahan et al. 2017 with eta = 1)."""

    name = "fedavg"

    def _direction(self, name: str, delta: np.ndarray) -> np.ndarray:
        return delta


class FedAvgM(_MomentOptimizer):
    """Server momentum (Hsu et al. 2019): m = beta * m + Delta; x + eta * m."""

    name = "fedavgm"
    _moments = ("momentum",)

    def __init__(self, *, learning_rate: float, momentum: float) -> None:
        super().__init__(learning_rate=learning_rate)
        self.momentum = momentum

    def _direction(self, name: str, delta: np.ndarray) -> np.ndarray:
        m = self._state["momentum"][name]
        np.multiply(m, m.dtype.type(self.momentum), out=m)
        np.add(m, delta, out=m)
        return m


class _Adaptive(_MomentOptimizer):
    """Reddi et al. 2021, Algorithm 2: x + eta * m / (sqrt(v) + tau); subclasses update v."""

    _moments = ("m", "v")

    def __init__(self, *, learning_rate: float, beta1: float, tau: float, beta2: float = 0.0) -> None:
        super().__init__(learning_rate=learning_rate)
        self.beta1, self.beta2, self.tau = beta1, beta2, tau  # FedAdagrad has no beta2

    def _initial(self, moment: str, layout: Mapping[str, TensorSpec]) -> WeightMap:
        if moment == "v":  # v_{-1} = tau^2, the smallest value Algorithm 2 allows
            return {
                name: np.full(spec.shape, self.tau**2, dtype=working_dtype(spec.dtype))
                for name, spec in layout.items()
            }
        return super()._initial(moment, layout)

    def _direction(self, name: str, delta: np.ndarray) -> np.ndarray:
        m, v = self._state["m"][name], self._state["v"][name]
        kind = m.dtype.type
        np.multiply(m, kind(self.beta1), out=m)
        m += kind(1 - self.beta1) * delta
        self._update_v(v, np.square(delta))
        return m / (np.sqrt(v) + kind(self.tau))

    def _update_v(self, v: np.ndarray, squared: np.ndarray) -> None:
        raise NotImplementedError


class FedAdagrad(_Adaptive):
    """v = v + Delta^2."""

    name = "fedadagrad"

    def _update_v(self, v: np.ndarray, squared: np.ndarray) -> None:
        v += squared


class FedAdam(_Adaptive):
    """v = beta2 * v + (1 - beta2) * Delta^2."""

    name = "fedadam"

    def _update_v(self, v: np.ndarray, squared: np.ndarray) -> None:
        kind = v.dtype.type
        np.multiply(v, kind(self.beta2), out=v)
        v += kind(1 - self.beta2) * squared


class FedYogi(_Adaptive):
    """v = v - (1 - beta2) * Delta^2 * sign(v - Delta^2)."""

    name = "fedyogi"

    def _update_v(self, v: np.ndarray, squared: np.ndarray) -> None:
        kind = v.dtype.type
        v -= kind(1 - self.beta2) * squared * np.sign(v - squared)


_ADAPTIVE_RATE = 1e-2
OPTIMIZER_PARAMETERS: Mapping[str, Mapping[str, Parameter]] = {
    "fedavg": {"learningRate": positive(1.0)},
    "fedavgm": {"learningRate": positive(1.0), "momentum": decay(0.9)},
    "fedadagrad": {"learningRate": positive(_ADAPTIVE_RATE), "beta1": decay(0.9), "tau": positive(1e-3)},
    "fedadam": {
        "learningRate": positive(_ADAPTIVE_RATE),
        "beta1": decay(0.9),
        "beta2": decay(0.99),
        "tau": positive(1e-3),
    },
    "fedyogi": {
        "learningRate": positive(_ADAPTIVE_RATE),
        "beta1": decay(0.9),
        "beta2": decay(0.99),
        "tau": positive(1e-3),
    },
}
"""Each server optimiser's hyper-parameters (job-spec names) with their defaults and rules."""


def make_server_optimizer(name: str, params: Mapping[str, object] | None = None) -> ServerOptimizer:
    """The server optimiser ``name`` configured by ``params`` (defaults for what is left out).

    Raises :class:`ValidationFailed` for an unknown name or parameter, or a
    parameter outside its rule.
    """
    if name not in OPTIMIZER_PARAMETERS:
        raise ValidationFailed(
            f"unknown server optimizer {name!r} (allowed: {', '.join(sorted(OPTIMIZER_PARAMETERS))})",
            details={"optimizer": name, "allowed": sorted(OPTIMIZER_PARAMETERS)},
        )
    values = resolve_parameters(name, params, OPTIMIZER_PARAMETERS[name])
    return _build(name, values)


def _build(name: str, values: Mapping[str, ParameterValue]) -> ServerOptimizer:
    def number(key: str) -> float:
        value = values[key]
        assert value is not None  # the schema makes every optimiser parameter non-nullable
        return float(value)

    rate = number("learningRate")
    if name == "fedavg":
        return FedAvg(learning_rate=rate)
    if name == "fedavgm":
        return FedAvgM(learning_rate=rate, momentum=number("momentum"))
    if name == "fedadagrad":
        return FedAdagrad(learning_rate=rate, beta1=number("beta1"), tau=number("tau"))
    adaptive = {"fedadam": FedAdam, "fedyogi": FedYogi}[name]
    return adaptive(learning_rate=rate, beta1=number("beta1"), beta2=number("beta2"), tau=number("tau"))
