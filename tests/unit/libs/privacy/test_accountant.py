"""The RDP accountant matches a reference implementation and accounts consistently.

The reference is opacus' RDP analysis (``opacus.accountants.analysis.rdp``),
which implements the same Mironov-Talwar-Zhang formulas and the same
Balle et al. 2020 conversion as dp-accounting's ``RdpAccountant``.  That one
file needs only numpy and scipy, so it is loaded on its own: importing the
opacus package would import torch, which costs ~10 s of the test budget.  The
comparison is skipped only if opacus is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from pathlib import Path
from types import ModuleType

import pytest

from libs.errors import ValidationFailed
from libs.privacy.accountant import PrivacyAccountant
from libs.privacy.rdp import DEFAULT_ORDERS, compute_rdp, epsilon_from_rdp, rdp_of_sampled_gaussian

SETTINGS = [
    # (noise multiplier, sampling rate, steps, delta)
    (1.1, 0.01, 1000, 1e-5),
    (0.8, 0.1, 100, 1e-6),
    (2.0, 1.0, 50, 1e-5),
    (0.5, 0.004, 5000, 1e-5),
    (5.0, 0.3, 10, 1e-3),
    (1.0, 0.05, 300, 1e-5),
    (0.7, 0.02, 2000, 1e-6),
]


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    package = importlib.util.find_spec("opacus")  # finds the package without importing it (or torch)
    if package is None or not package.submodule_search_locations:
        pytest.skip("opacus (the reference RDP accountant) is not installed")
    path = Path(list(package.submodule_search_locations)[0]) / "accountants" / "analysis" / "rdp.py"
    spec = importlib.util.spec_from_file_location("opacus_rdp_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), SETTINGS)
def test_epsilon_matches_the_reference_accountant_within_one_percent(
    reference: ModuleType, sigma: float, q: float, steps: int, delta: float
) -> None:
    accountant = PrivacyAccountant(sigma, q, delta)
    accountant.step(steps)
    orders = list(DEFAULT_ORDERS)
    with warnings.catch_warnings():  # opacus warns when the best order is at an end of the list
        warnings.simplefilter("ignore")
        expected, _ = reference.get_privacy_spent(
            orders=orders,
            rdp=reference.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders),
            delta=delta,
        )
    assert accountant.epsilon() == pytest.approx(float(expected), rel=0.01)


@pytest.mark.parametrize("order", [1.5, 2.0, 3.5, 8.0, 32.0, 512.0])
def test_rdp_per_order_matches_the_reference(reference: ModuleType, order: float) -> None:
    for sigma, q in [(1.1, 0.01), (0.6, 0.2), (3.0, 0.5)]:
        expected = float(reference.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=[order])[0])
        assert rdp_of_sampled_gaussian(q, sigma, order) == pytest.approx(expected, rel=1e-6)


def test_full_batch_rdp_is_the_gaussian_closed_form() -> None:
    assert compute_rdp(1.0, 2.0, 10, [3.0, 7.0]) == pytest.approx([10 * 3 / 8, 10 * 7 / 8])


def test_epsilon_grows_with_steps_and_falls_with_noise() -> None:
    epsilons = []
    for steps in (0, 1, 10, 100, 1000):
        accountant = PrivacyAccountant(1.0, 0.01, 1e-5)
        accountant.step(steps)
        epsilons.append(accountant.epsilon())
    assert epsilons[0] == 0.0
    assert epsilons == sorted(epsilons) and epsilons[-1] > epsilons[1]
    quiet, loud = PrivacyAccountant(4.0, 0.01, 1e-5), PrivacyAccountant(0.8, 0.01, 1e-5)
    quiet.step(100)
    loud.step(100)
    assert quiet.epsilon() < loud.epsilon()


@pytest.mark.parametrize("target", [0.5, 1.0, 3.0, 8.0])
def test_steps_until_is_the_last_step_within_the_budget(target: float) -> None:
    accountant = PrivacyAccountant(1.1, 0.02, 1e-5)
    accountant.step(7)
    remaining = accountant.steps_until(target)
    if remaining:
        assert accountant.epsilon_after(7 + remaining) <= target
    assert accountant.epsilon_after(7 + remaining + 1) > target
    assert accountant.steps == 7


def test_steps_until_an_exhausted_budget_is_zero() -> None:
    accountant = PrivacyAccountant(0.5, 0.5, 1e-5)
    accountant.step(100)
    assert accountant.steps_until(1.0) == 0


def test_state_round_trips_through_json_and_refuses_another_mechanism() -> None:
    accountant = PrivacyAccountant(1.1, 0.01, 1e-5)
    accountant.step(123)
    state = json.loads(json.dumps(accountant.state()))
    resumed = PrivacyAccountant.from_state(state)
    assert resumed.steps == 123 and resumed.epsilon() == accountant.epsilon()
    other = PrivacyAccountant(1.2, 0.01, 1e-5)
    with pytest.raises(ValidationFailed, match="noise_multiplier"):
        other.load_state(state)
    with pytest.raises(ValidationFailed):
        accountant.load_state({**state, "steps": -1})
    with pytest.raises(ValidationFailed):
        accountant.load_state({**state, "version": 99})


def test_conversion_is_the_balle_et_al_bound() -> None:
    order, rdp, delta = 10.0, 1.5, 1e-5
    expected = rdp + math.log1p(-1 / order) - math.log(delta * order) / (order - 1)
    epsilon, best_order = epsilon_from_rdp([order], [rdp], delta)
    assert epsilon == pytest.approx(expected) and best_order == order


@pytest.mark.parametrize(
    ("sigma", "q", "delta"), [(0.0, 0.1, 1e-5), (1.0, 0.0, 1e-5), (1.0, 1.5, 1e-5), (1.0, 0.1, 0.0)]
)
def test_bad_parameters_are_refused(sigma: float, q: float, delta: float) -> None:
    with pytest.raises(ValidationFailed):
        PrivacyAccountant(sigma, q, delta)
