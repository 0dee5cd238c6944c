"""Benchmark: stream an encoded weight map over gRPC on loopback, plaintext and mutual TLS, beside raw TCP.

Usage::

    python bench/weights_stream.py                  # 1 GiB; raw TCP, gRPC, gRPC with mTLS
    python bench/weights_stream.py --size 2.5GiB --chunk-size 2MiB
    python bench/weights_stream.py --tls off        # no mTLS run (--tls on: no plaintext gRPC run)

What it measures, in one run:

* **gRPC**: a server process holding the payload answers ``DownloadModel``
  with ``libs.weights.streaming.encoded_frames_for`` (or, with
  ``--server-frames protobuf``, ``frames_for`` through the generated
  servicer); a client process receives it with ``receive_frames`` over
  ``raw_download_model`` (or, with ``--client-frames protobuf``, the
  generated stub): preallocated buffer, incremental SHA-256 on a worker
  thread, size and hash checked at the end.  Both sides are built with
  ``libs.wire.Wire``, as every component is (its channel and server options).
* **gRPC with mTLS**: the same, over mutual TLS as nsfl runs it: a throwaway
  PKI (``libs.pki.directory.PkiDirectory`` in a temporary folder) issues the
  server a coordinator's certificate and the receiver a client's; the server
  runs the authorisation guard (a policy with one row, for this method), the
  receiver verifies the server's name.  Same payload, same options, so the
  difference from plaintext gRPC is what TLS (AES-GCM on both ends) and the
  guard cost.  Target: at most 15% lower throughput than plaintext.
* **raw TCP**: the same bytes from a server process with one ``sendall`` to a
  client process that ``recv_into``s a preallocated buffer: the ceiling for
  loopback on this machine (no framing, no hashing).

Each side runs in its own fresh process (spawned), so its peak RSS (the
kernel's high-water mark, ``VmHWM``) minus its RSS after imports is the memory
that side needed, reported as a multiple of the payload size.  A sender holds
the payload (1x) by construction; a receiver holds the result (1x).  CPU
seconds (user + system, all threads) of each side during the transfer are
reported too: on a shared machine they are steadier than wall-clock time.
``--repeat`` runs the transports alternately and keeps each one's best time.
``--tune-malloc`` starts every process with glibc allocator settings that stop
gRPC's per-message buffers from landing on fresh pages (see ``TUNED_MALLOC``);
it is a deployment setting (environment variables), not a code change.

The payload is an encoded weight map of float32 arrays (16 MiB each) filled
with random numbers.  It is built directly in its encoded buffer (arrays are
decoded as writable views and filled in place), so building it does not
itself double the sender's memory.  Throughput is measured at the receiver,
from the request to the verified last byte, and includes allocating the
receive buffer.  Before measuring, a throwaway process touches as much memory
as the run will use: on a virtual machine the first touch of guest memory is
several times slower than later ones, which would otherwise penalise
whichever transport runs first.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import resource
import socket
import sys
import tempfile
import time
from multiprocessing.queues import Queue
from pathlib import Path
from queue import Empty
from typing import Any

import grpc
import numpy as np
import psutil

from libs import rpc
from libs.pki.directory import PkiDirectory
from libs.pki.identity import Identity
from libs.protos import coordinator_pb2, coordinator_pb2_grpc
from libs.weights.streaming import (
    DEFAULT_CHUNK,
    encoded_frames_for,
    frames_for,
    raw_download_model,
    receive_frames,
)
from libs.weights.tensors import decode, encoded_size, iter_encoded, sha256_hex
from libs.wire import Wire, WireSettings
from libs.wire.authorization import Rule

MiB = 1024 * 1024
GiB = 1024 * MiB
_UNITS = {"": MiB, "b": 1, "k": 1024, "kib": 1024, "m": MiB, "mib": MiB, "g": GiB, "gib": GiB}
_ARRAY_ELEMENTS = 4 * MiB  # float32 elements per array: 16 MiB
# glibc returns freed heap memory to the kernel once more than 2x the last
# freed large block sits at the top of the heap, so gRPC's per-message buffers
# keep landing on fresh pages (measured: about one page fault per 8 KiB received).  Keeping
# 256 MiB and serving blocks under 32 MiB from the heap removes that churn.
TUNED_MALLOC = {"MALLOC_TRIM_THRESHOLD_": str(256 * MiB), "MALLOC_MMAP_THRESHOLD_": str(32 * MiB)}
DOWNLOAD_METHOD = "/nsfl.v1.Coordinator/DownloadModel"
BENCH_JOB = "bench/weights"
SERVER_IDENTITY = Identity.coordinator_of(BENCH_JOB)  # who serves DownloadModel in nsfl
CLIENT_IDENTITY = Identity.client("bench-receiver")
# The bench's servicer checks no task ticket, so its server gets a policy of its own: clients may download.
BENCH_POLICY = {DOWNLOAD_METHOD: Rule(frozenset({"client"}), "the bench's payload")}
KINDS = {"tcp": "raw TCP", "grpc": "gRPC", "mtls": "gRPC+mTLS"}


def parse_size(text: str) -> int:
    """``"1GiB"``, ``"512MiB"``, ``"2.5GiB"``; a bare number means MiB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1GiB, 512MiB, 2.5GiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def current_rss() -> int:
    return int(psutil.Process().memory_info().rss)


def peak_rss() -> int:
    """This process's RSS high-water mark (VmHWM; fresh for each spawned process)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def build_payload(size: int) -> bytearray:
    """An encoded weight map of about ``size`` bytes of random float32 arrays."""
    elements = size // 4
    shapes: list[tuple[int, ...]] = [(_ARRAY_ELEMENTS // 1024, 1024)] * (elements // _ARRAY_ELEMENTS)
    if elements % _ARRAY_ELEMENTS:
        shapes.append((elements % _ARRAY_ELEMENTS,))
    # np.empty of this size is reserved but never touched: only the header is
    # taken from the encoding, then the arrays are filled in place through
    # writable views of the payload, so only the payload becomes resident.
    weights = {f"layers.{i:04d}.weight": np.empty(shape, np.float32) for i, shape in enumerate(shapes)}
    payload = bytearray(encoded_size(weights))
    pieces = iter_encoded(weights)
    header = next(pieces)
    payload[: len(header)] = header
    del weights, pieces
    rng = np.random.default_rng(0)
    for array in decode(payload).values():
        rng.random(out=array, dtype=np.float32)
    return payload


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def report(results: Queue[Any], role: str, baseline: int, cpu_start: float, **values: Any) -> None:
    results.put({"role": role, "memory": peak_rss() - baseline, "cpu": cpu_seconds() - cpu_start, **values})


# ------------------------------------------------------------------- raw TCP


def tcp_server(size: int, control: Queue[Any], results: Queue[Any]) -> None:
    baseline = current_rss()
    payload = build_payload(size)
    cpu_start = cpu_seconds()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        control.put({"port": listener.getsockname()[1], "size": len(payload)})
        connection, _ = listener.accept()
        with connection:
            connection.sendall(len(payload).to_bytes(8, "little"))
            connection.sendall(memoryview(payload))
            connection.recv(1)  # the client closes when it has everything
    report(results, "sender", baseline, cpu_start)


def tcp_client(port: int, results: Queue[Any]) -> None:
    baseline, cpu_start = current_rss(), cpu_seconds()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as connection:
        prefix = bytearray()
        while len(prefix) < 8:
            prefix += connection.recv(8 - len(prefix))
        size = int.from_bytes(prefix, "little")
        allocating = time.perf_counter()
        buffer = bytearray(size)
        allocated = time.perf_counter() - allocating
        view, received = memoryview(buffer), 0
        while received < size:
            count = connection.recv_into(view[received:])
            if not count:
                raise ConnectionError(f"connection closed after {received} of {size} bytes")
            received += count
        seconds = time.perf_counter() - started
    report(results, "receiver", baseline, cpu_start, seconds=seconds, size=size, allocating=allocated)


# ---------------------------------------------------------------------- gRPC


class BenchCoordinator(coordinator_pb2_grpc.CoordinatorServicer):
    """DownloadModel as a coordinator serves it: generated servicer, ``frames_for``."""

    def __init__(self, payload: bytearray, sha256: str, chunk_size: int) -> None:
        self.payload, self.sha256, self.chunk_size = payload, sha256, chunk_size

    @rpc.handle_errors
    async def DownloadModel(self, request: Any, context: Any) -> Any:
        for frame in frames_for(self.payload, self.sha256, self.chunk_size, offset=request.offset):
            yield frame


def encoded_download_handler(payload: bytearray, sha256: str, chunk_size: int) -> grpc.GenericRpcHandler:
    """DownloadModel registered with ``response_serializer=None``, yielding ``encoded_frames_for``."""

    async def download(request: Any, context: Any) -> Any:
        for frame in encoded_frames_for(payload, sha256, chunk_size, offset=request.offset):
            yield frame

    handler = grpc.unary_stream_rpc_method_handler(
        download, request_deserializer=coordinator_pb2.DownloadRequest.FromString, response_serializer=None
    )
    return grpc.method_handlers_generic_handler("nsfl.v1.Coordinator", {"DownloadModel": handler})


def make_pki(root: Path) -> None:
    """A throwaway CA, a coordinator's certificate for the sender and a client's for the receiver."""
    directory = PkiDirectory(root)
    directory.init(SERVER_IDENTITY.trust_domain)
    for identity in (SERVER_IDENTITY, CLIENT_IDENTITY):
        directory.issue(identity, hosts=["127.0.0.1"])


def bench_wire(pki: str | None, identity: Identity) -> Wire:
    """Plaintext on loopback (``pki`` None), or mutual TLS as ``identity`` from the PKI in ``pki``."""
    if pki is None:
        return Wire.from_settings(WireSettings(insecure=True))
    directory = PkiDirectory(Path(pki))
    files = directory.issued(identity)
    return Wire.from_settings(
        WireSettings(tls_ca=files.ca, tls_cert=files.cert, tls_key=files.key, tls_crl=directory.crl)
    )


def grpc_server(
    args: argparse.Namespace, pki: str | None, control: Queue[Any], results: Queue[Any], stop: Queue[Any]
) -> None:
    baseline = current_rss()
    payload = build_payload(args.size)
    sha256 = sha256_hex(payload)  # the content id is known when a model is published
    wire = bench_wire(pki, SERVER_IDENTITY)
    cpu_start = cpu_seconds()

    async def serve() -> None:
        server = wire.server(policy=BENCH_POLICY)
        if args.server_frames == "encoded":
            server.add_generic_rpc_handlers((encoded_download_handler(payload, sha256, args.chunk_size),))
        else:
            servicer = BenchCoordinator(payload, sha256, args.chunk_size)
            coordinator_pb2_grpc.add_CoordinatorServicer_to_server(servicer, server)
        port = wire.add_port(server, "127.0.0.1:0")
        await server.start()
        control.put({"port": port, "size": len(payload), "sha256": sha256})
        await asyncio.to_thread(stop.get)  # until the orchestrator says stop
        await server.stop(None)

    asyncio.run(serve())
    report(results, "sender", baseline, cpu_start)


def grpc_client(
    args: argparse.Namespace, pki: str | None, port: int, sha256: str, max_size: int, results: Queue[Any]
) -> None:
    baseline = current_rss()
    wire = bench_wire(pki, CLIENT_IDENTITY)

    async def download() -> tuple[float, float, int]:
        async with wire.channel(f"127.0.0.1:{port}", wire.coordinator_of(BENCH_JOB)) as channel:
            await channel.channel_ready()
            if args.client_frames == "raw":
                method = raw_download_model(channel)
            else:
                method = coordinator_pb2_grpc.CoordinatorStub(channel).DownloadModel
            cpu_start, started = cpu_seconds(), time.perf_counter()
            call = method(coordinator_pb2.DownloadRequest(job_id="bench", sha256=sha256))
            payload = await receive_frames(call, max_size=max_size)
            return time.perf_counter() - started, cpu_start, len(payload)

    seconds, cpu_start, size = asyncio.run(download())
    report(results, "receiver", baseline, cpu_start, seconds=seconds, size=size)


# --------------------------------------------------------------- orchestration


def warm_up(size: int) -> None:
    """Touch ``size`` bytes once so every measured process gets memory the VM has already backed."""
    block = bytearray(size)
    block[::4096] = b"\x01" * len(range(0, size, 4096))


def collect(queue: Queue[Any], processes: list[Any]) -> Any:
    """The next item from ``queue``; fails instead of hanging if a process died."""
    while True:
        try:
            return queue.get(timeout=1)
        except Empty:
            if dead := [process for process in processes if process.exitcode not in (None, 0)]:
                raise RuntimeError(f"{dead[0].name} exited with code {dead[0].exitcode}") from None


def run_pair(context: Any, kind: str, args: argparse.Namespace, pki: str) -> dict[str, dict[str, Any]]:
    """One transfer of ``kind`` ("tcp", "grpc" or "mtls") between a fresh sender and receiver process."""
    control, results, stop = context.Queue(), context.Queue(), context.Queue()
    tls = pki if kind == "mtls" else None
    if kind == "tcp":
        server = context.Process(target=tcp_server, args=(args.size, control, results), name="tcp-sender")
    else:
        server_args = (args, tls, control, results, stop)
        server = context.Process(target=grpc_server, args=server_args, name=f"{kind}-sender")
    server.start()
    ready = collect(control, [server])
    if kind == "tcp":
        client = context.Process(target=tcp_client, args=(ready["port"], results), name="tcp-receiver")
    else:
        client_args = (args, tls, ready["port"], ready["sha256"], ready["size"], results)
        client = context.Process(target=grpc_client, args=client_args, name=f"{kind}-receiver")
    client.start()
    received = collect(results, [server, client])
    client.join()
    stop.put("stop")
    sent = collect(results, [server])
    server.join()
    by_role = {item["role"]: item for item in (received, sent)}
    return {"sender": by_role["sender"], "receiver": by_role["receiver"]}


def best(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The fastest run's time, the least CPU and the most memory each side needed over the runs."""
    return {
        "receiver": {
            "seconds": min(run["receiver"]["seconds"] for run in runs),
            "cpu": min(run["receiver"]["cpu"] for run in runs),
            "memory": max(run["receiver"]["memory"] for run in runs),
        },
        "sender": {
            "cpu": min(run["sender"]["cpu"] for run in runs),
            "memory": max(run["sender"]["memory"] for run in runs),
        },
    }


HEADINGS = f"{'':<17} {'throughput':>10} {'time':>7} {'CPU s: sender':>14} {'receiver':>9} {'peak RSS: sender':>17} {'receiver':>9}"


def row(name: str, size: int, run: dict[str, dict[str, Any]], note: str = "") -> str:
    sender, receiver = run["sender"], run["receiver"]
    return (
        f"{name:<17} {size / receiver['seconds'] / 1e9:>5.2f} GB/s {receiver['seconds']:>6.2f}s"
        f" {sender['cpu']:>14.2f} {receiver['cpu']:>9.2f}"
        f" {sender['memory'] / size:>16.2f}x {receiver['memory'] / size:>8.2f}x{note}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=parse_size, default=GiB, help="payload size, e.g. 1GiB, 512MiB, 2.5GiB"
    )
    parser.add_argument(
        "--chunk-size", type=parse_size, default=DEFAULT_CHUNK, help="gRPC chunk size (default 2MiB)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="alternating runs of each transport; best one counts"
    )
    parser.add_argument(
        "--server-frames",
        choices=["encoded", "protobuf"],
        default="encoded",
        help="sender yields encoded_frames_for bytes (default) or frames_for messages via the generated servicer",
    )
    parser.add_argument(
        "--client-frames",
        choices=["raw", "protobuf"],
        default="raw",
        help="receiver takes undecoded frames via raw_download_model (default) or the generated stub",
    )
    parser.add_argument(
        "--tune-malloc",
        action="store_true",
        help=f"run every process with {' '.join(f'{k}={v}' for k, v in TUNED_MALLOC.items())}",
    )
    parser.add_argument(
        "--no-warm-up", dest="warm_up", action="store_false", help="skip touching memory first"
    )
    parser.add_argument(
        "--tls",
        choices=["both", "off", "on"],
        default="both",
        help="gRPC plaintext and with mutual TLS side by side (default), plaintext only, or mTLS only",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nsfl-bench-pki-") as pki:
        make_pki(Path(pki) / "ca")
        return measure(args, str(Path(pki) / "ca"))


def measure(args: argparse.Namespace, pki: str) -> int:
    if args.tune_malloc:
        os.environ.update(TUNED_MALLOC)  # spawned processes start with it, so glibc reads it at start
    context = multiprocessing.get_context("spawn")
    if args.warm_up:
        warmer = context.Process(target=warm_up, args=(3 * args.size,))
        warmer.start()
        warmer.join()

    kinds = {"both": ("tcp", "grpc", "mtls"), "off": ("tcp", "grpc"), "on": ("tcp", "mtls")}[args.tls]
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {kind: [] for kind in kinds}
    for _ in range(args.repeat):
        for kind in runs:
            runs[kind].append(run_pair(context, kind, args, pki))
    size = runs["tcp"][0]["receiver"]["size"]
    if any(run["receiver"]["size"] != size for kind in runs for run in runs[kind]):
        print("the transports delivered different sizes", file=sys.stderr)
        return 1

    loads = " ".join(f"{load:.2f}" for load in os.getloadavg())
    print(f"payload: {size / GiB:.2f} GiB ({size} bytes), an encoded weight map of float32 arrays; loopback")
    print(
        f"gRPC: chunks of {args.chunk_size / MiB:g} MiB, sender frames {args.server_frames}, receiver frames "
        f"{args.client_frames}; {args.repeat} alternating runs per transport; load average {loads} at the end"
        + ("; glibc malloc tuned (--tune-malloc)" if args.tune_malloc else "")
    )
    print("peak RSS: each process's high-water mark over its RSS after imports, as a multiple of the payload")
    if "mtls" in runs:
        print(f"mTLS: {SERVER_IDENTITY.uri} serving {CLIENT_IDENTITY.uri}, guard on, EC P-256 certificates")
    print(HEADINGS)
    for index in range(args.repeat):
        for kind in runs:
            run = runs[kind][index]
            note = f"  (allocating its buffer: {run['receiver']['allocating']:.2f}s)" if kind == "tcp" else ""
            print(row(f"{index + 1}: {KINDS[kind]}", size, run, note))
    bests = {kind: best(kind_runs) for kind, kind_runs in runs.items()}
    for kind, result in bests.items():
        print(row(f"best {KINDS[kind]}", size, result))
    tcp_seconds = bests["tcp"]["receiver"]["seconds"]
    for kind in ("grpc", "mtls"):
        if kind in bests:
            result = bests[kind]
            worst = max(result["sender"]["memory"], result["receiver"]["memory"]) / size
            print(
                f"{KINDS[kind]} / raw TCP throughput: {tcp_seconds / result['receiver']['seconds']:.0%} "
                f"(target >= 50%); peak memory {worst:.2f}x the payload on the worse side (target < 2x)"
            )
    if "grpc" in bests and "mtls" in bests:
        plain, secure = bests["grpc"], bests["mtls"]
        kept = plain["receiver"]["seconds"] / secure["receiver"]["seconds"]
        print(
            f"mTLS on vs off: {kept:.0%} of plaintext gRPC's throughput ({1 - kept:.1%} lower; target: at most 15%)"
        )
        print(
            f"  CPU s sender {plain['sender']['cpu']:.2f} -> {secure['sender']['cpu']:.2f}, receiver "
            f"{plain['receiver']['cpu']:.2f} -> {secure['receiver']['cpu']:.2f}; peak RSS sender "
            f"{plain['sender']['memory'] / size:.2f}x -> {secure['sender']['memory'] / size:.2f}x, receiver "
            f"{plain['receiver']['memory'] / size:.2f}x -> {secure['receiver']['memory'] / size:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
