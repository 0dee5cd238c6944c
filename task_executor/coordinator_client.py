"""The executor's side of the ``Coordinator`` service: download the global model, upload the update.

A synchronous gRPC client on purpose: the executor does one thing at a time
(download, run the user's code, upload), runs in a process forked from a warm
worker, and must not start an event loop that a user script with its own
asyncio code could trip over.

Download (docs/contracts.md): a ``BlobHeader`` then chunks, collected by
:func:`~libs.weights.streaming.receive_frames_sync` (the coordinator's own
receiver, over a synchronous stream), which bounds the size before
allocating, writes each chunk once and checks the SHA-256 at the end.  The
header must name the model the task was offered, so a coordinator that
published another model is caught before any byte is stored.  If the stream
breaks (or the coordinator is briefly unavailable) the download is asked for
once more, from the offset already received: a task has a deadline, and a
second failure means the round is better served by another client.

Upload: an ``UpdateHeader`` frame, then the payload in chunks of
``chunk_bytes``; an update of at most 1 MiB goes in one ``SubmitUpdate``
message instead.  It is not retried: a retry after an upload the coordinator
did accept would be refused as a duplicate, and the task manager reports the
failure either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

import grpc

from libs.errors import DeadlineExceeded, Unavailable
from libs.protos import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from libs.rpc import call_errors, error_from_rpc
from libs.weights.streaming import (
    SUBMIT_MAX_BYTES,
    BlobReceiver,
    TransferInterrupted,
    iter_chunks,
    receive_frames_sync,
)
from libs.weights.tensors import MEDIA_TYPE, Buffer
from task_executor.channels import channel_to
from task_executor.settings import ExecutorSettings
from task_executor.task import TaskSpec

log = logging.getLogger(__name__)


# The generated *_pb2_grpc modules have no type stubs; naming the stub class
# through a typed variable keeps the calls below type-checked where it matters.
_STUB: Callable[[grpc.Channel], Any] = coordinator_pb2_grpc.CoordinatorStub

_NO_SUBMIT: set[str] = set()  # endpoints of coordinators without SubmitUpdate (older ones)


def update_header(
    spec: TaskSpec,
    *,
    num_samples: int,
    metrics: Mapping[str, float],
    payload_sha256: str,
    payload_size: int,
) -> coordinator_pb2.UpdateHeader:
    """The first frame of an upload: every tag of the task, the sample count, metrics and blob."""
    return coordinator_pb2.UpdateHeader(
        job_id=spec.job_id,
        round=spec.round,
        client_id=spec.client_id,
        attempt=spec.attempt,
        task_id=spec.task_id,
        task_token=spec.task_token,
        kind=spec.kind,
        num_samples=num_samples,
        metrics=dict(metrics),
        blob=common_pb2.BlobHeader(
            sha256=payload_sha256,
            total_size=payload_size,
            media_type=MEDIA_TYPE if payload_size else "",
            offset=0,
        ),
        base_sha256=spec.model_sha256,
    )


class CoordinatorClient:
    """The two calls an executor makes, each bounded by the task's deadline.

    Over the process's kept channel to the endpoint (:mod:`task_executor.channels`), which
    :meth:`close` leaves open for the next task of a long-lived executor.
    """

    def __init__(
        self, endpoint: str, job_id: str, settings: ExecutorSettings, deadline_unix: float | None = None
    ) -> None:
        self._endpoint = endpoint
        self._channel = channel_to(endpoint, job_id, settings)
        self._stub = _STUB(self._channel)
        self._settings = settings
        self._deadline = deadline_unix

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: the channel is kept for the process's next call."""

    def _timeout(self) -> float:
        if self._deadline is None:
            return self._settings.rpc_timeout_seconds
        remaining = self._deadline - time.time()
        if remaining <= 0:
            raise DeadlineExceeded("the task's deadline has passed")
        return remaining

    def download_model(self, spec: TaskSpec) -> bytearray:
        """The round's global model as verified safetensors bytes (resumed once if the stream breaks)."""
        receiver: BlobReceiver | None = None
        for attempt in (1, 2):
            request = coordinator_pb2.DownloadRequest(
                job_id=spec.job_id,
                round=spec.round,
                sha256=spec.model_sha256,
                offset=0 if receiver is None else receiver.received,
                task_token=spec.task_token,
            )
            call = self._stub.DownloadModel(request, timeout=self._timeout())
            try:
                with call_errors():  # a failure before the header (after it: TransferInterrupted)
                    return receive_frames_sync(
                        call,
                        max_size=self._settings.max_model_bytes,
                        resume=receiver,
                        expected_sha256=spec.model_sha256,
                    )
            except TransferInterrupted as exc:
                if attempt == 2:
                    raise
                receiver = exc.receiver
                log.warning(
                    "model download broke (%s); resuming from byte %d", exc.message, receiver.received
                )
            except Unavailable as exc:
                if attempt == 2:
                    raise
                log.warning("coordinator unavailable for the download (%s); trying once more", exc.message)
            finally:
                call.cancel()
        raise AssertionError("unreachable: the second attempt returns or raises")

    def await_model(self, spec: TaskSpec) -> coordinator_pb2.AwaitModelReply:
        """For a task offered ahead: wait until its round starts; the model, or why it will not come."""
        request = coordinator_pb2.AwaitModelRequest(
            job_id=spec.job_id, task_id=spec.task_id, task_token=spec.task_token, round=spec.round
        )
        with call_errors():
            reply: coordinator_pb2.AwaitModelReply = self._stub.AwaitModel(request, timeout=self._timeout())
        return reply

    def upload(self, header: coordinator_pb2.UpdateHeader, payload: Buffer) -> coordinator_pb2.UploadResult:
        """Send the header then ``payload`` in chunks; the coordinator's verdict.

        An update of at most ``SUBMIT_MAX_BYTES`` goes in one ``SubmitUpdate`` message instead (no
        stream to set up); a coordinator from before that call is sent streams from then on.
        """
        if len(memoryview(payload)) <= SUBMIT_MAX_BYTES and self._endpoint not in _NO_SUBMIT:
            submission = coordinator_pb2.UpdateSubmission(header=header, payload=bytes(payload))
            try:
                result: coordinator_pb2.UploadResult = self._stub.SubmitUpdate(
                    submission, timeout=self._timeout()
                )
                return result
            except grpc.RpcError as exc:
                if not (isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.UNIMPLEMENTED):
                    raise error_from_rpc(exc) from None
                _NO_SUBMIT.add(self._endpoint)
        chunk_bytes = self._settings.chunk_bytes

        def frames() -> Iterator[coordinator_pb2.UploadFrame]:
            yield coordinator_pb2.UploadFrame(header=header)
            for offset, piece in iter_chunks(payload, chunk_bytes):
                frame = coordinator_pb2.UploadFrame()
                frame.chunk.offset = offset
                frame.chunk.data = bytes(piece)
                yield frame

        with call_errors():
            streamed: coordinator_pb2.UploadResult = self._stub.UploadUpdate(
                frames(), timeout=self._timeout()
            )
        return streamed
