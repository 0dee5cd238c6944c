"""Accounting for local differential privacy: what one client's noised uploads reveal.

With local DP (:func:`~libs.privacy.noise.privatize_locally`) a client clips
its own update to L2 norm ``C`` and adds ``N(0, (σ C)²)`` per coordinate
before the update leaves the machine, so even the server sees only the noised
vector.  The neighbouring datasets here are two possible datasets of *this*
client (replace-one adjacency at the client level: the client holds some data
or some other data).  Two clipped updates can then lie ``2 C`` apart, twice
the sensitivity of central DP's add-or-remove-one-client, so one upload is the
Gaussian mechanism with an effective noise multiplier of ``σ / 2``.

Every upload counts as one step with no sampling amplification (``q = 1``):
the client knows it took part, and so does the server.  The coordinator and
the executor both account with :func:`local_accountant`, so a client's own
report and the job status agree.
"""

from __future__ import annotations

from libs.privacy.accountant import PrivacyAccountant

REPLACE_ONE_SENSITIVITY = 2.0
"""L2 distance between two updates clipped to ``C``, in units of ``C``."""


def local_noise_multiplier(noise_multiplier: float) -> float:
    """The noise multiplier the accountant uses for a local upload noised with ``σ``."""
    return noise_multiplier / REPLACE_ONE_SENSITIVITY


def local_accountant(noise_multiplier: float, delta: float) -> PrivacyAccountant:
    """An accountant for one client's uploads under local DP (one step per upload)."""
    return PrivacyAccountant(local_noise_multiplier(noise_multiplier), 1.0, delta)
