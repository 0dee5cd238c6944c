"""The registry: spec names to aggregator descriptions, strict parameters, defaults written out."""

from __future__ import annotations

import numpy as np
import pytest

from libs.aggregation.accumulator import WeightedSum
from libs.aggregation.registry import ALGORITHMS, Mode, Weighting, make_aggregator, parameter_schema
from libs.aggregation.server_optimizers import FedAdam, FedAvg, FedAvgM
from libs.errors import ValidationFailed

SPEC_NAMES = (
    "fedavg",
    "fedprox",
    "scaffold",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "median",
    "trimmedmean",
    "krum",
    "multikrum",
)


def test_every_spec_name_is_registered() -> None:
    assert set(ALGORITHMS) == set(SPEC_NAMES)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_every_algorithm_builds_with_defaults(name: str) -> None:
    aggregator = make_aggregator(name)
    assert aggregator.name == name
    assert set(aggregator.parameters) == set(parameter_schema(name))
    assert all(value is not None for key, value in aggregator.parameters.items() if key != "selected")
    optimizer = aggregator.make_optimizer()
    assert optimizer.name == aggregator.optimizer


def test_fedavg_family_streams_and_robust_rules_need_all_updates() -> None:
    for name in ("fedavg", "fedprox", "scaffold", "fedavgm", "fedadam", "fedyogi", "fedadagrad"):
        assert make_aggregator(name).mode is Mode.STREAMING and make_aggregator(name).streams
    for name in ("median", "trimmedmean", "krum", "multikrum"):
        assert make_aggregator(name).mode is Mode.ALL_UPDATES and not make_aggregator(name).streams


def test_weighting_is_by_samples_except_scaffold_and_robust_rules() -> None:
    assert make_aggregator("fedavg").weighting is Weighting.SAMPLES
    assert make_aggregator("fedadam").weighting is Weighting.SAMPLES
    assert make_aggregator("scaffold").weighting is Weighting.UNIFORM
    assert make_aggregator("krum").weighting is Weighting.UNIFORM


def test_server_optimizer_follows_the_algorithm_and_its_parameters() -> None:
    adam = make_aggregator("fedadam", {"learningRate": 0.1, "beta2": 0.999}).make_optimizer()
    assert isinstance(adam, FedAdam)
    assert (adam.learning_rate, adam.beta1, adam.beta2, adam.tau) == (0.1, 0.9, 0.999, 1e-3)
    assert isinstance(make_aggregator("fedavgm").make_optimizer(), FedAvgM)
    median = make_aggregator("median", {"learningRate": 0.5}).make_optimizer()
    assert isinstance(median, FedAvg) and median.learning_rate == 0.5


def test_fedprox_tells_clients_mu_and_scaffold_needs_control_variates() -> None:
    prox = make_aggregator("fedprox", {"mu": 0.1})
    assert prox.client_parameters == {"mu": 0.1}
    assert make_aggregator("fedprox").client_parameters == {"mu": 0.01}
    assert make_aggregator("scaffold").control_variates
    assert (
        not make_aggregator("fedavg").control_variates and make_aggregator("fedavg").client_parameters == {}
    )


def test_defaults_are_written_out() -> None:
    assert make_aggregator("trimmedmean").parameters == {"learningRate": 1.0, "trimFraction": 0.1}
    assert make_aggregator("multikrum").parameters == {
        "learningRate": 1.0,
        "byzantineClients": 1,
        "selected": None,
    }
    assert make_aggregator("fedyogi").parameters == {
        "learningRate": 0.01,
        "beta1": 0.9,
        "beta2": 0.99,
        "tau": 1e-3,
    }


def test_unknown_name_lists_the_allowed_ones() -> None:
    with pytest.raises(ValidationFailed) as caught:
        make_aggregator("fedadm")
    assert "fedavg, fedprox, scaffold" in caught.value.message
    assert "did you mean 'fedadam'" in caught.value.message
    assert caught.value.details["allowed"] == list(SPEC_NAMES)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("krum", {"mu": 0.1}, "unknown parameter 'mu'"),
        ("median", {"beta1": 0.9}, "unknown parameter 'beta1'"),
        ("krum", {"byzantineClients": 1.5}, "whole number"),
        ("krum", {"byzantineClients": -1}, ">= 0"),
        ("multikrum", {"selected": 0}, ">= 1"),
        ("trimmedmean", {"trimFraction": 0.5}, r"in \[0, 0.5\)"),
        ("fedprox", {"mu": -1}, ">= 0"),
    ],
)
def test_bad_parameters_are_refused(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        make_aggregator(name, params)


def test_minimum_clients_per_rule() -> None:
    assert make_aggregator("krum", {"byzantineClients": 2}).minimum_clients == 7
    assert make_aggregator("multikrum").minimum_clients == 5
    assert make_aggregator("trimmedmean", {"trimFraction": 0.2}).minimum_clients == 5
    assert make_aggregator("trimmedmean", {"trimFraction": 0.0}).minimum_clients == 1
    assert make_aggregator("fedavg").minimum_clients == 1


def test_streaming_aggregators_make_an_accumulator_and_robust_ones_refuse() -> None:
    reference = {"x": np.zeros(2, np.float32)}
    assert isinstance(make_aggregator("fedadam").make_accumulator(reference), WeightedSum)
    with pytest.raises(ValidationFailed, match="all updates at once"):
        make_aggregator("median").make_accumulator(reference)


def test_combine_applies_each_rule() -> None:
    updates = [{"x": np.array([v], np.float64)} for v in (0.0, 1.0, 2.0, 3.0, 100.0)]
    weights = [1.0, 1.0, 1.0, 1.0, 96.0]
    # fedavg: (0 + 1 + 2 + 3 + 96 * 100) / 100 = 96.06
    np.testing.assert_allclose(make_aggregator("fedavg").combine(updates, weights)["x"], [96.06])
    # scaffold ignores sample weights: (0 + 1 + 2 + 3 + 100) / 5 = 21.2
    np.testing.assert_allclose(make_aggregator("scaffold").combine(updates, weights)["x"], [21.2])
    np.testing.assert_array_equal(make_aggregator("median").combine(updates, weights)["x"], [2.0])
    np.testing.assert_array_equal(
        make_aggregator("trimmedmean", {"trimFraction": 0.2}).combine(updates)["x"], [2.0]
    )
    np.testing.assert_array_equal(make_aggregator("krum").combine(updates)["x"], [1.0])
    np.testing.assert_array_equal(make_aggregator("multikrum", {"selected": 2}).combine(updates)["x"], [1.5])


def test_combine_checks_weights_match_updates() -> None:
    with pytest.raises(ValidationFailed, match="2 updates but 1 weights"):
        make_aggregator("fedavg").combine([{"x": np.ones(1)}, {"x": np.ones(1)}], [1.0])
    with pytest.raises(ValidationFailed, match="no updates"):
        make_aggregator("fedavg").combine([])
