"""Benchmark: one secure-aggregation round (Bonawitz et al. 2017) beside plain FedAvg.

Usage::

    python bench/secure_aggregation.py                       # n = 10, 50, 100; 1M parameters
    python bench/secure_aggregation.py --clients 10 --params 100000 --bits 48

For each client count ``n`` (threshold ``t = n // 2 + 1``, double-mask mode,
ring ``Z_{2^bits}``), in one process:

* **plain FedAvg**: each client's update is a float32 vector sent as is
  (``4 * params`` bytes); the server folds ``w_i * x_i`` into a float64 sum
  and divides by ``Σ w_i``.  Client time is serialising its vector.
* **secure aggregation**: every client runs all its steps for real --
  ``advertise_keys``, ``share_keys`` (Shamir sharing, X25519 + HKDF,
  ChaCha20-Poly1305 per peer), encoding plus ``mask_input`` (``n - 1``
  pairwise AES-CTR masks of ``params + 1`` elements and its self mask), and
  ``unmask``.  Each client's steps are timed on their own (``perf_counter``
  around that client's calls only), so the per-client figure is one client's
  work, not the simulation's total; mean and max over the ``n`` clients are
  shown.  Server time is the sum of every ``receive_*``/``close_*`` call and
  ``finish`` (Shamir reconstruction, mask removal).  Bytes per client are the
  encoded sizes of the four messages a client sends.
* **secure aggregation, 10% dropped**: a second server receives the same
  messages except the masked inputs of ``n // 10`` clients, which "drop"
  after sharing.  It must rebuild their masking keys and regenerate
  ``dropped * survivors`` pairwise masks -- the expensive case for the server.
  The surviving clients answer it from copies of their state taken after
  masking, so their work is not repeated.

Both unmasked sums are checked against the plain sum of the encoded inputs,
exactly.  Clients run one after the other on this machine; real clients run
in parallel on their own hosts, so the round's latency is about one client's
time plus the server's.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass

import numpy as np

from libs.secagg.client import SecAggClient
from libs.secagg.messages import RoundSetup
from libs.secagg.prg import UInt64Array
from libs.secagg.server import SecAggServer
from libs.secagg.simulation import make_setup


@dataclass
class Timer:
    seconds: float = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds += time.perf_counter() - self._start


def plain_fedavg(n: int, params: int, seed: int) -> tuple[float, float, int]:
    """(client seconds, server seconds, bytes per client) for plain weighted FedAvg."""
    rng = np.random.default_rng(seed)
    client, server = Timer(), Timer()
    total = np.zeros(params, dtype=np.float64)
    total_weight = 0.0
    for _ in range(n):
        update = rng.normal(0, 0.01, params).astype(np.float32)
        weight = float(rng.integers(1, 1000))
        with client:
            payload = update.tobytes()
        with server:
            received = np.frombuffer(payload, dtype=np.float32)
            total += weight * received
            total_weight += weight
    with server:
        total /= total_weight
    return client.seconds / n, server.seconds, len(payload)


def secure_round(n: int, params: int, bits: int, seed: int) -> dict[str, float]:
    """Run one round with all n clients; time each client, the server, and a 10%-dropout server."""
    setup: RoundSetup = make_setup(
        n, n // 2 + 1, vector_length=params + 1, ring_bits=bits, clip_range=1.0, max_weight=1000.0
    )
    codec = setup.codec()
    rng = np.random.default_rng(seed)
    clients = {cid: SecAggClient(cid) for cid in setup.participants}
    timers = {cid: Timer() for cid in setup.participants}
    sent = dict.fromkeys(setup.participants, 0)
    server, dropping_server = SecAggServer(setup), SecAggServer(setup)
    server_time, dropping_time = Timer(), Timer()
    dropped = set(setup.participants[: n // 10])

    for cid, client in clients.items():
        with timers[cid]:
            advertisement = client.advertise_keys(setup, setup.model_sha256)
        sent[cid] += len(advertisement.to_bytes())
        with server_time:
            server.receive_keys(cid, advertisement)
        with dropping_time:
            dropping_server.receive_keys(cid, advertisement)
    with server_time:
        directory = server.close_advertising()
    with dropping_time:
        dropping_server.close_advertising()

    for cid, client in clients.items():
        with timers[cid]:
            shares = client.share_keys(directory)
        sent[cid] += len(shares.to_bytes())
        with server_time:
            server.receive_shares(cid, shares)
        with dropping_time:
            dropping_server.receive_shares(cid, shares)
    with server_time:
        deliveries = server.close_sharing()
    with dropping_time:
        dropping_server.close_sharing()

    expected = np.zeros(params + 1, dtype=np.uint64)
    expected_dropping = np.zeros(params + 1, dtype=np.uint64)
    copies: dict[str, SecAggClient] = {}
    for cid, client in clients.items():
        update = rng.normal(0, 0.01, params)
        weight = float(rng.integers(1, 1000))
        with timers[cid]:
            encoded: UInt64Array = codec.encode(update, weight=weight, rng=rng)
            masked = client.mask_input(deliveries[cid], encoded)
            wire = masked.to_bytes()
        sent[cid] += len(wire)
        expected += encoded
        with server_time:
            server.receive_masked_input(cid, type(masked).from_bytes(wire))
        if cid not in dropped:
            expected_dropping += encoded
            with dropping_time:
                dropping_server.receive_masked_input(cid, masked)
            copies[cid] = copy.deepcopy(client)

    with server_time:
        request = server.close_masked_input()
    with dropping_time:
        dropping_request = dropping_server.close_masked_input()
    assert request is not None and dropping_request is not None
    for cid, client in clients.items():
        with timers[cid]:
            response = client.unmask(request)
        sent[cid] += len(response.to_bytes())
        with server_time:
            server.receive_unmasking(cid, response)
    for cid, twin in copies.items():
        response = twin.unmask(dropping_request)
        with dropping_time:
            dropping_server.receive_unmasking(cid, response)
    with server_time:
        result = server.finish()
    with dropping_time:
        dropping_result = dropping_server.finish()

    mask = np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(2**64 - 1)
    assert np.array_equal(result.total, expected & mask), "secure sum differs from the plain sum"
    assert np.array_equal(dropping_result.total, expected_dropping & mask), "dropout sum differs"
    client_seconds = [t.seconds for t in timers.values()]
    return {
        "client_mean": float(np.mean(client_seconds)),
        "client_max": float(np.max(client_seconds)),
        "server": server_time.seconds,
        "server_dropping": dropping_time.seconds,
        "bytes": float(np.mean(list(sent.values()))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(
        f"secure aggregation (double-mask, t = n//2+1, ring 2^{args.bits}) vs plain FedAvg, "
        f"{args.params:,} parameters"
    )
    header = (
        f"{'n':>4} | {'plain client s':>14} {'plain server s':>14} {'plain B/client':>14} | "
        f"{'secagg client s mean/max':>24} {'server s':>9} {'server s 10% drop':>17} {'B/client':>11}"
    )
    print(header)
    print("-" * len(header))
    for n in args.clients:
        plain_client, plain_server, plain_bytes = plain_fedavg(n, args.params, args.seed)
        started = time.perf_counter()
        figures = secure_round(n, args.params, args.bits, args.seed)
        wall = time.perf_counter() - started
        print(
            f"{n:>4} | {plain_client:>14.4f} {plain_server:>14.3f} {plain_bytes:>14,} | "
            f"{figures['client_mean']:>11.3f} / {figures['client_max']:<10.3f} {figures['server']:>9.3f} "
            f"{figures['server_dropping']:>17.3f} {figures['bytes']:>11,.0f}   (simulation wall {wall:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
