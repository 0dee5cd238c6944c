"""An in-process fake of the ``Coordinator`` service for the executor's tests.

The executor is a synchronous gRPC client, so the fake runs on grpc's
synchronous server (a thread pool) on a free loopback port: a test calls the
runner directly, with no event loop to share.  The fake serves models by
SHA-256 exactly as the contract says (header, then chunks from the requested
offset), can be told to corrupt a model or to break a stream once, and
records every upload it receives.  It serves mutual TLS with a certificate
from the test PKI (the coordinator of ``ns/job`` unless told another
identity) and records who called (the identity of each caller's certificate).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography import x509

from libs.pki.authority import identity_of
from libs.pki.identity import Identity
from libs.protos import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from libs.rpc import SERVER_OPTIONS
from libs.weights.streaming import frames_for
from libs.weights.tensors import WeightMap, decode, encode, sha256_hex
from libs.wire.tls import ServerCertificates, TlsFiles
from tests.fixtures.pki import TestPki


@dataclass
class Upload:
    header: coordinator_pb2.UpdateHeader
    payload: bytes
    via: str = "stream"  # "stream": UploadUpdate; "submit": SubmitUpdate

    def weights(self) -> WeightMap:
        return decode(self.payload, copy=True)


@dataclass
class FakeCoordinator(coordinator_pb2_grpc.CoordinatorServicer):
    """Serves the two RPCs an executor calls; the others are not implemented."""

    models: dict[str, bytes] = field(default_factory=dict)
    uploads: list[Upload] = field(default_factory=list)
    downloads: list[coordinator_pb2.DownloadRequest] = field(default_factory=list)
    plans: list[coordinator_pb2.TaskPlanRequest] = field(default_factory=list)  # GetTaskPlan calls
    awaits: list[coordinator_pb2.AwaitModelRequest] = field(default_factory=list)  # AwaitModel calls
    await_reply: coordinator_pb2.AwaitModelReply = field(default_factory=coordinator_pb2.AwaitModelReply)
    corrupt: bool = False  # serve bytes that do not match the announced SHA-256
    break_after: int | None = None  # end the next stream with an error after this many payload bytes
    verdict: tuple[bool, str] = (True, "")
    submit: bool = True  # False: SubmitUpdate answers UNIMPLEMENTED, as an older coordinator does
    chunk_size: int = 64
    endpoint: str = ""  # set by FakeServer
    callers: list[str] = field(default_factory=list)  # the caller's identity URI, per call
    # The wire settings (tls_* and trust_domain) of an executor that talks to this fake: client c1's.
    client_wire: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _record_caller(self, context: grpc.ServicerContext) -> None:
        pems = context.auth_context().get("x509_pem_cert") or []
        caller = identity_of(x509.load_pem_x509_certificate(pems[0])).uri if pems else "anonymous"
        with self._lock:
            self.callers.append(caller)

    def GetTaskPlan(self, request: coordinator_pb2.TaskPlanRequest, context: Any) -> coordinator_pb2.TaskPlan:
        self._record_caller(context)
        with self._lock:
            self.plans.append(request)
        return coordinator_pb2.TaskPlan(secure_aggregation=False)

    def AwaitModel(
        self, request: coordinator_pb2.AwaitModelRequest, context: Any
    ) -> coordinator_pb2.AwaitModelReply:
        self._record_caller(context)
        with self._lock:
            self.awaits.append(request)
        return self.await_reply

    def publish(self, weights: WeightMap) -> str:
        payload = encode(weights)
        sha = sha256_hex(payload)
        self.models[sha] = payload
        return sha

    def DownloadModel(
        self, request: Any, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.TransferFrame]:
        self._record_caller(context)
        with self._lock:
            self.downloads.append(request)
            broken_at, self.break_after = self.break_after, None
        payload = self.models.get(request.sha256)
        if payload is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.sha256}")
            return
        if self.corrupt:
            payload = payload[:-1] + bytes([payload[-1] ^ 0xFF])
        sent = 0
        for frame in frames_for(payload, request.sha256, chunk_size=self.chunk_size, offset=request.offset):
            if broken_at is not None and frame.WhichOneof("frame") == "chunk" and sent >= broken_at:
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset (simulated)")
            sent += len(frame.chunk.data)
            yield frame

    def UploadUpdate(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        self._record_caller(context)
        header = None
        chunks: list[bytes] = []
        for frame in request_iterator:
            if frame.WhichOneof("frame") == "header":
                header = frame.header
            else:
                assert frame.chunk.offset == sum(len(c) for c in chunks)
                chunks.append(frame.chunk.data)
        assert header is not None
        payload = b"".join(chunks)
        assert len(payload) == header.blob.total_size
        assert not payload or sha256_hex(payload) == header.blob.sha256
        with self._lock:
            self.uploads.append(Upload(header, payload, via="stream"))
        accepted, reason = self.verdict
        return coordinator_pb2.UploadResult(accepted=accepted, reason=reason, received=len(payload))

    def SubmitUpdate(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._record_caller(context)
        if not self.submit:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "a coordinator from before SubmitUpdate")
        header, payload = request.header, request.payload
        assert len(payload) == header.blob.total_size
        assert not payload or sha256_hex(payload) == header.blob.sha256
        with self._lock:
            self.uploads.append(Upload(header, payload, via="submit"))
        accepted, reason = self.verdict
        return coordinator_pb2.UploadResult(accepted=accepted, reason=reason, received=len(payload))

    def _unimplemented(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the executor's fake")

    GetUploadOffset = ReportTaskStatus = GetStatus = Stop = _unimplemented


class FakeServer:
    """The fake on ``127.0.0.1:<free port>``; ``endpoint`` is what task.json names.

    With ``tls`` (the files of ``identity`` from the test PKI) it serves mutual TLS; without, plaintext.
    """

    def __init__(self, fake: FakeCoordinator, tls: TlsFiles | None = None) -> None:
        self.fake = fake
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4), options=SERVER_OPTIONS)
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(fake, self._server)
        if tls is None:
            port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            port = self._server.add_secure_port("127.0.0.1:0", ServerCertificates(tls).credentials())
        self.endpoint = fake.endpoint = f"127.0.0.1:{port}"
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None).wait()


def serving_files(pki: TestPki, identity: Identity | None = None) -> TlsFiles:
    """The TLS files a fake coordinator serves: ``identity``'s (the coordinator of ns/job by default)."""
    files = pki.files(identity or pki.identity("coordinator", "ns", "job"))
    return TlsFiles(ca=files.ca, cert=files.cert, key=files.key)


def serve_fake(fake: FakeCoordinator, pki: TestPki, identity: Identity | None = None) -> FakeServer:
    """Serve ``fake`` over mutual TLS as ``identity``, for executors with client c1's certificate."""
    fake.client_wire = pki.settings(pki.identity("client", "c1"))
    return FakeServer(fake, serving_files(pki, identity))
