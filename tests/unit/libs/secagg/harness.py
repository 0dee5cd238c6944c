"""Helpers that drive SecAgg clients by hand, for tests that play a misbehaving server."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from libs.secagg.client import SecAggClient
from libs.secagg.messages import KeyDirectory, MaskedInput, Mode, RoundSetup, ShareDelivery
from libs.secagg.prg import UInt64Array
from libs.secagg.server import SecAggServer
from libs.secagg.simulation import make_setup


def seeded_bytes(seed: int) -> Callable[[int], bytes]:
    """A reproducible stand-in for os.urandom (tests only: not a cryptographic source)."""
    return random.Random(seed).randbytes


def random_inputs(setup: RoundSetup, seed: int) -> list[UInt64Array]:
    rng = np.random.default_rng(seed)
    high = 1 << setup.ring_bits
    return [
        rng.integers(0, high, setup.vector_length, dtype=np.uint64, endpoint=False)
        for _ in setup.participants
    ]


@dataclass
class MaskedRound:
    """A double-mask round driven up to the masked inputs, with everything the server holds."""

    setup: RoundSetup
    clients: dict[str, SecAggClient]
    server: SecAggServer
    directory: KeyDirectory
    deliveries: dict[str, ShareDelivery]
    masked: dict[str, MaskedInput]


def run_until_masked(
    n: int, t: int, inputs_seed: int = 0, *, key_seed: int = 1, vector_length: int = 16, ring_bits: int = 32
) -> tuple[MaskedRound, list[UInt64Array]]:
    """Every client advertises, shares and masks; the server has not closed the input stage."""
    randomness = seeded_bytes(key_seed)
    setup = make_setup(
        n, t, vector_length=vector_length, ring_bits=ring_bits, mode=Mode.DOUBLE_MASK, random_bytes=randomness
    )
    inputs = random_inputs(setup, inputs_seed)
    clients = {cid: SecAggClient(cid, random_bytes=randomness) for cid in setup.participants}
    server = SecAggServer(setup)
    for cid, client in clients.items():
        server.receive_keys(cid, client.advertise_keys(setup, setup.model_sha256))
    directory = server.close_advertising()
    for cid, client in clients.items():
        server.receive_shares(cid, client.share_keys(directory))
    deliveries = server.close_sharing()
    masked = {}
    for (cid, client), vector in zip(clients.items(), inputs, strict=True):
        masked[cid] = client.mask_input(deliveries[cid], vector)
    return MaskedRound(setup, clients, server, directory, deliveries, masked), inputs
