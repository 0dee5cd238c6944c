"""Local differential privacy on the client: clip and noise the update before it leaves the machine.

When the job sets ``privacy.dp.mode: local`` the coordinator sends the DP
settings with each task (:class:`~libs.tasks.spec.LocalDp`) (see :mod:`task_executor.client_algorithms`), and the
executor, after the user's code, clips the delta to L2 norm ``clipNorm`` and
adds ``N(0, (noiseMultiplier * clipNorm)²)`` to every coordinate
(:func:`libs.privacy.privatize_locally`).  Only float tensors are
privatised; integer buffers (BatchNorm's step counters) are left exact.

The client accounts for itself: each upload of a noised update is one step
of the Gaussian mechanism with replace-one sensitivity ``2C``
(:mod:`libs.privacy.local`), counted in the job's state folder on this
client, so the ε it reports (``privacy/epsilon`` in the task's metrics, at
``targetDelta``) covers every round this client ever uploaded in, retries
included.  The count is written *before* the upload: data that left the
machine is spent, accepted or not.

The noise comes from the operating system's entropy, never from a seed a
server or a peer could know.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from libs.errors import ValidationFailed
from libs.files import write_json_atomic
from libs.privacy import privatize_locally
from libs.privacy.local import local_accountant
from libs.tasks.spec import LocalDp
from libs.weights.tensors import WeightMap

LEDGER = "local-dp.json"


def local_epsilon(config: LocalDp, uploads: int) -> float:
    """The ε this client has spent after ``uploads`` noised updates (at ``config.target_delta``)."""
    if uploads == 0:
        return 0.0
    if config.noise_multiplier == 0:
        return math.inf
    return local_accountant(config.noise_multiplier, config.target_delta).epsilon_after(uploads)


def read_uploads(state_dir: Path | None) -> int:
    """How many noised updates this client has uploaded for the job so far."""
    if state_dir is None:
        return 0
    try:
        return int(json.loads((state_dir / LEDGER).read_text(encoding="utf-8"))["uploads"])
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValidationFailed(f"the local DP ledger in {state_dir} is unreadable: {exc}") from None


def write_uploads(state_dir: Path, uploads: int) -> None:
    """Record the count atomically (a crash leaves the old or the new count, never half a file)."""
    write_json_atomic(state_dir / LEDGER, {"uploads": uploads}, durable=False, indent=None)


def privatize(
    delta: Mapping[str, np.ndarray], config: LocalDp, rng: np.random.Generator
) -> tuple[WeightMap, float, bool]:
    """``(noised delta, norm before clipping, whether it was clipped)``; non-float tensors pass unchanged."""
    floats = {name: array for name, array in delta.items() if array.dtype.kind == "f"}
    private = privatize_locally(
        floats, clip_norm=config.clip_norm, noise_multiplier=config.noise_multiplier, rng=rng
    )
    result = {name: private.update.get(name, array) for name, array in delta.items()}
    return result, private.norm, private.clipped
