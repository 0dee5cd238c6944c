"""Server optimisers against Reddi et al. 2021 Algorithm 2, computed by hand with the published defaults.

Two rounds on the model x0 = [1, -2] with pseudo-gradients
Delta_1 = [0.1, -0.2] and Delta_2 = [-0.05, 0.3]; defaults eta = 0.01,
beta1 = 0.9, beta2 = 0.99, tau = 1e-3, v_{-1} = tau^2 = 1e-6, m_{-1} = 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from libs.aggregation.server_optimizers import (
    OPTIMIZER_PARAMETERS,
    ServerOptimizer,
    make_server_optimizer,
)
from libs.errors import InvalidWeights, ValidationFailed

X0 = np.array([1.0, -2.0])
DELTAS = (np.array([0.1, -0.2]), np.array([-0.05, 0.3]))


def run(optimizer: ServerOptimizer, x: np.ndarray, deltas: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    weights = {"x": x}
    seen = []
    for delta in deltas:
        weights = optimizer.step(weights, {"x": delta})
        seen.append(weights["x"])
    return seen


def test_fedavg_adds_the_scaled_mean_delta() -> None:
    # x1 = x0 + 1.0 * D1 = [1.1, -2.2]; x2 = x1 + D2 = [1.05, -1.9]
    first, second = run(make_server_optimizer("fedavg"), X0, DELTAS)
    np.testing.assert_allclose(first, [1.1, -2.2], rtol=1e-15)
    np.testing.assert_allclose(second, [1.05, -1.9], rtol=1e-15)
    halved = run(make_server_optimizer("fedavg", {"learningRate": 0.5}), X0, DELTAS[:1])
    np.testing.assert_allclose(halved[0], [1.05, -2.1], rtol=1e-15)


def test_fedavgm_accumulates_server_momentum() -> None:
    # beta = 0.9, eta = 1: m1 = D1; x1 = x0 + m1 = [1.1, -2.2]
    # m2 = 0.9 * [0.1, -0.2] + [-0.05, 0.3] = [0.04, 0.12]; x2 = [1.14, -2.08]
    first, second = run(make_server_optimizer("fedavgm"), X0, DELTAS)
    np.testing.assert_allclose(first, [1.1, -2.2], rtol=1e-15)
    np.testing.assert_allclose(second, [1.14, -2.08], rtol=1e-14)


def test_fedadagrad_matches_algorithm_2() -> None:
    # m1 = 0.1 * D1 = [0.01, -0.02]; v1 = 1e-6 + D1^2 = [0.010001, 0.040001]
    # x1 = x0 + 0.01 * m1 / (sqrt(v1) + 1e-3)
    # m2 = 0.9 * m1 + 0.1 * D2 = [0.004, 0.012]; v2 = v1 + D2^2 = [0.012501, 0.130001]
    first, second = run(make_server_optimizer("fedadagrad"), X0, DELTAS)
    np.testing.assert_allclose(first, [1.00099004999875, -2.000995012499922], rtol=1e-12)
    np.testing.assert_allclose(second, [1.001344635185699, -2.000663114179035], rtol=1e-12)


def test_fedadam_matches_algorithm_2() -> None:
    # m1 = [0.01, -0.02]; v1 = 0.99 * 1e-6 + 0.01 * D1^2 = [1.0099e-4, 4.0099e-4]
    # x1 = 1 + 0.01 * 0.01 / (sqrt(1.0099e-4) + 1e-3) = 1.0090502831...
    # m2 = [0.004, 0.012]; v2 = 0.99 * v1 + 0.01 * D2^2 = [1.2498010e-4, 1.2969801e-3]
    first, second = run(make_server_optimizer("fedadam"), X0, DELTAS)
    np.testing.assert_allclose(first, [1.0090502831185222, -2.0095126051675587], rtol=1e-12)
    np.testing.assert_allclose(second, [1.012334503698122, -2.0062705544668704], rtol=1e-12)


def test_fedyogi_matches_algorithm_2() -> None:
    # v0 = 1e-6 < D1^2 so sign(v0 - D1^2) = -1 and v grows: v1 = 1e-6 + 0.01 * D1^2 = [1.01e-4, 4.01e-4]
    # v1 < D2^2 = [0.0025, 0.09] again: v2 = v1 + 0.01 * D2^2 = [1.26e-4, 1.301e-3]
    first, second = run(make_server_optimizer("fedyogi"), X0, DELTAS)
    np.testing.assert_allclose(first, [1.0090498756211208, -2.0095124921972505], rtol=1e-12)
    np.testing.assert_allclose(second, [1.0123218667124239, -2.006275318880905], rtol=1e-12)


def test_fedyogi_shrinks_v_when_it_exceeds_the_squared_delta() -> None:
    # v = 1.0 > D^2 = 0.01: v' = 1.0 - 0.01 * 0.01 = 0.9999 (the Adam rule would give 0.9901)
    optimizer = make_server_optimizer("fedyogi")
    optimizer.load_state({"step": 1, "m": {"x": np.zeros(1)}, "v": {"x": np.ones(1)}})
    optimizer.step({"x": np.zeros(1)}, {"x": np.array([0.1])})
    v = optimizer.state()["v"]
    assert isinstance(v, dict)
    np.testing.assert_allclose(v["x"], [0.9999], rtol=1e-15)


def test_optimizers_keep_the_model_dtype_and_do_not_modify_inputs() -> None:
    for name in OPTIMIZER_PARAMETERS:
        weights: dict[str, np.ndarray] = {"w": np.ones((2, 2), np.float32), "h": np.ones(3, np.float16)}
        delta: dict[str, np.ndarray] = {
            "w": np.full((2, 2), 0.5, np.float32),
            "h": np.full(3, 0.5, np.float16),
        }
        before = {k: v.copy() for k, v in weights.items()}
        result = make_server_optimizer(name).step(weights, delta)
        assert {k: v.dtype for k, v in result.items()} == {"w": np.float32, "h": np.float16}, name
        for key in weights:
            np.testing.assert_array_equal(weights[key], before[key])
            assert result[key] is not weights[key]


def test_moments_are_kept_in_at_least_float32() -> None:
    optimizer = make_server_optimizer("fedadam")
    optimizer.step({"h": np.ones(3, np.float16)}, {"h": np.full(3, 0.5, np.float16)})
    state = optimizer.state()
    assert isinstance(state["m"], dict) and state["m"]["h"].dtype == np.float32


def _roundtrip(state: Mapping[str, object]) -> dict[str, object]:
    """What a checkpoint does to a state: arrays to bytes and back, numbers to numbers."""
    restored: dict[str, object] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            restored[key] = {
                name: np.frombuffer(array.tobytes(), dtype=array.dtype).reshape(array.shape).copy()
                for name, array in value.items()
            }
        else:
            restored[key] = value
    return restored


@pytest.mark.parametrize("name", sorted(OPTIMIZER_PARAMETERS))
def test_resuming_from_a_checkpoint_continues_bit_for_bit(name: str) -> None:
    rng = np.random.default_rng(3)
    deltas = [{"w": rng.standard_normal((3, 4)).astype(np.float32)} for _ in range(6)]
    original = make_server_optimizer(name)
    weights = {"w": rng.standard_normal((3, 4)).astype(np.float32)}
    for delta in deltas[:3]:
        weights = original.step(weights, delta)
    resumed = make_server_optimizer(name)
    resumed.load_state(_roundtrip(original.state()))  # type: ignore[arg-type]
    resumed_weights = {k: v.copy() for k, v in weights.items()}
    for delta in deltas[3:]:
        weights = original.step(weights, delta)
        resumed_weights = resumed.step(resumed_weights, delta)
        assert weights["w"].tobytes() == resumed_weights["w"].tobytes()
    assert original.state()["step"] == resumed.state()["step"] == 6


def test_state_is_a_copy() -> None:
    optimizer = make_server_optimizer("fedadam")
    optimizer.step({"x": np.ones(2)}, {"x": np.ones(2)})
    state = optimizer.state()
    assert isinstance(state["m"], dict)
    state["m"]["x"][:] = 1e9
    assert optimizer.state()["m"]["x"][0] != 1e9  # type: ignore[index]


def test_a_step_count_stored_as_a_whole_float_is_accepted() -> None:
    optimizer = make_server_optimizer("fedavg")
    optimizer.load_state({"step": 4.0})
    assert optimizer.state() == {"step": 4}


def test_a_fresh_state_round_trips() -> None:
    optimizer = make_server_optimizer("fedyogi")
    assert optimizer.state() == {"step": 0, "m": {}, "v": {}}
    optimizer.load_state({"step": 0, "m": {}, "v": {}})
    optimizer.step({"x": np.ones(1)}, {"x": np.ones(1)})


@pytest.mark.parametrize(
    ("state", "error", "message"),
    [
        ({"step": 0}, ValidationFailed, "exactly"),
        ({"step": 0, "m": {}, "v": {}, "extra": 1}, ValidationFailed, "exactly"),
        ({"step": -1, "m": {}, "v": {}}, ValidationFailed, "non-negative"),
        ({"step": 1.5, "m": {}, "v": {}}, ValidationFailed, "non-negative integer"),
        ({"step": "1", "m": {}, "v": {}}, ValidationFailed, "non-negative integer"),
        ({"step": float("nan"), "m": {}, "v": {}}, ValidationFailed, "non-negative integer"),
        ({"step": 0, "m": [], "v": {}}, ValidationFailed, "map of tensors"),
        ({"step": 2, "m": {}, "v": {}}, InvalidWeights, "no moments"),
        ({"step": 1, "m": {"x": np.zeros(1)}, "v": {}}, InvalidWeights, "empty"),
        ({"step": 1, "m": {"x": np.zeros(1)}, "v": {"x": -np.ones(1)}}, InvalidWeights, "negative"),
        ({"step": 1, "m": {"x": np.zeros(1)}, "v": {"x": np.ones(2)}}, InvalidWeights, "shape"),
        ({"step": 1, "m": {"x": np.full(1, np.nan)}, "v": {"x": np.ones(1)}}, InvalidWeights, "NaN"),
    ],
)
def test_invalid_states_are_refused(state: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make_server_optimizer("fedadam").load_state(state)  # type: ignore[arg-type]


def test_state_for_another_model_is_refused_at_the_next_step() -> None:
    optimizer = make_server_optimizer("fedavgm")
    optimizer.load_state({"step": 1, "momentum": {"other": np.zeros(2)}})
    with pytest.raises(InvalidWeights, match="does not match the model"):
        optimizer.step({"x": np.ones(2)}, {"x": np.ones(2)})
    optimizer.load_state({"step": 1, "momentum": {"x": np.zeros(2, np.float32)}})
    with pytest.raises(InvalidWeights, match="float64"):
        optimizer.step({"x": np.ones(2)}, {"x": np.ones(2)})


@pytest.mark.parametrize(
    ("weights", "delta", "message"),
    [
        ({"x": np.ones(2)}, {"x": np.ones(3)}, "shape"),
        ({"x": np.ones(2)}, {"y": np.ones(2)}, "missing"),
        ({"x": np.ones(2)}, {"x": np.array([1.0, np.nan])}, "NaN"),
        ({"x": np.array([np.inf, 1.0])}, {"x": np.ones(2)}, "NaN"),
    ],
)
def test_step_refuses_mismatched_or_non_finite_inputs_and_keeps_its_state(
    weights: dict[str, np.ndarray], delta: dict[str, np.ndarray], message: str
) -> None:
    optimizer = make_server_optimizer("fedadam")
    with pytest.raises(InvalidWeights, match=message):
        optimizer.step(weights, delta)
    assert optimizer.state() == {"step": 0, "m": {}, "v": {}}


def test_unknown_optimizer_lists_the_allowed_ones() -> None:
    with pytest.raises(ValidationFailed, match="fedadagrad, fedadam, fedavg, fedavgm, fedyogi"):
        make_server_optimizer("sgd")


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("fedadam", {"lr": 0.1}, "unknown parameter 'lr'"),
        ("fedadam", {"learning_rate": 0.1}, "did you mean 'learningRate'"),
        ("fedadagrad", {"beta2": 0.9}, "unknown parameter 'beta2'"),
        ("fedadam", {"beta1": 1.0}, r"in \[0, 1\)"),
        ("fedyogi", {"tau": 0}, "> 0"),
        ("fedavg", {"learningRate": -1}, "> 0"),
        ("fedavg", {"learningRate": float("nan")}, "finite"),
        ("fedavg", {"learningRate": True}, "must be a number"),
        ("fedavg", {"learningRate": "1"}, "must be a number"),
        ("fedavgm", {"momentum": None}, "not null"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(
    name: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationFailed, match=message):
        make_server_optimizer(name, params)


def test_published_defaults() -> None:
    defaults = {
        name: {k: p.default for k, p in table.items()} for name, table in OPTIMIZER_PARAMETERS.items()
    }
    assert defaults["fedadam"] == {"learningRate": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
    assert defaults["fedyogi"] == {"learningRate": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
    assert defaults["fedadagrad"] == {"learningRate": 0.01, "beta1": 0.9, "tau": 1e-3}
    assert defaults["fedavgm"] == {"learningRate": 1.0, "momentum": 0.9}
    assert defaults["fedavg"] == {"learningRate": 1.0}
