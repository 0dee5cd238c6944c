"""Local DP accounting: one upload is the Gaussian mechanism at sensitivity 2C."""

from __future__ import annotations

import pytest

from libs.privacy import PrivacyAccountant
from libs.privacy.local import local_accountant, local_noise_multiplier


def test_a_local_upload_counts_as_half_the_noise_multiplier_without_sampling() -> None:
    accountant = local_accountant(2.0, 1e-5)
    assert local_noise_multiplier(2.0) == 1.0
    assert (accountant.noise_multiplier, accountant.sampling_rate) == (1.0, 1.0)
    assert accountant.epsilon_after(3) == pytest.approx(PrivacyAccountant(1.0, 1.0, 1e-5).epsilon_after(3))


def test_local_epsilon_grows_with_every_upload() -> None:
    accountant = local_accountant(4.0, 1e-5)
    spent = [accountant.epsilon_after(steps) for steps in (1, 2, 5)]
    assert 0 < spent[0] < spent[1] < spent[2]
