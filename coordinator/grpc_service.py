"""Adapter: the coordinator's gRPC servicer (executors and task managers call it).

Thin on purpose: it parses frames, asks one collaborator to decide, and maps
the answer to protobuf.  Its collaborators, all typed, come from the job it
serves (:class:`ServedJob`, which the :class:`~coordinator.driver.Driver`
is): the upload gate (:class:`~coordinator.uploads.Uploads`) for every task
RPC, the secure rounds (:class:`~coordinator.secure_rounds.SecureRounds`)
for ``SecureAggregate``, and the job itself for ``GetStatus`` and ``Stop``.
An update is received into one preallocated buffer (the size is known from
the header and bounded by the global model's size before anything is
buffered), checked against its SHA-256, decoded without copying, validated
against the global model, and folded into the round's running sum by the
upload gate.

Who may call what: the authorisation guard (:mod:`libs.wire.guard`) lets only
client identities call the task RPCs and only the scheduler (or this
coordinator) call ``GetStatus`` and ``Stop``.  What only this servicer can
check is the task: a task token is a bearer secret, so each task RPC also
requires that the calling client is the client the token's ticket was issued
to (:meth:`CoordinatorService._require_holder`).  A token used by another
enrolled client is refused with ``PERMISSION_DENIED`` before anything about
the task changes: the real client's upload, report or download is unaffected.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import grpc.aio

from coordinator.rounds import Ticket
from coordinator.secure_rounds import SecureRounds
from coordinator.uploads import Uploads
from libs.errors import InvalidState, NotFound, NsflError, PermissionDenied, ValidationFailed
from libs.protos import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from libs.rpc import handle_errors
from libs.weights.streaming import SUBMIT_MAX_BYTES, BlobReceiver, frames_for
from libs.wire import current_caller, require_caller_is_client

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/vnd.nsfl.safetensors"
HEADER_SLACK = 64 * 1024


class ServedJob(Protocol):
    """The job a coordinator serves, as its servicer sees it (the :class:`~coordinator.driver.Driver`)."""

    @property
    def job_id(self) -> str: ...

    @property
    def uploads(self) -> Uploads: ...

    @property
    def secure_aggregation(self) -> SecureRounds | None: ...

    def status_message(self) -> coordinator_pb2.CoordinatorStatus: ...

    def request_stop(self, reason: str) -> None: ...


class CoordinatorService(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, job: ServedJob) -> None:
        self.job = job  # its status, and stopping it
        self.job_id = job.job_id
        self.uploads = job.uploads  # every task RPC
        self.secure = job.secure_aggregation  # SecureAggregate, when the job uses it

    def _require_holder(self, token: str, claimed_client: str | None = None) -> Ticket | None:
        """Refuse a caller that is not the client of ``token``'s task (or not ``claimed_client``).

        The ticket, or None for a token this coordinator does not know (the round closed, or
        never issued): each RPC answers that case as it always has.  On an insecure server (tests
        only) there is no caller to check.
        """
        ticket = self.uploads.ticket_for(token)
        caller = current_caller()
        if ticket is not None and caller is not None and caller.client_id != ticket.client_id:
            log.warning("refused %s: it presented the token of task %s, which another client holds",
                        caller.uri, ticket.task_id)
            raise PermissionDenied(f"{caller.uri} does not hold this task: its token was issued to another client")
        if claimed_client is not None:  # a frame naming another client is refused, whatever its token
            require_caller_is_client(claimed_client)
        return ticket

    def _require_task(self, token: str, what: str) -> Ticket:
        ticket = self._require_holder(token)
        if ticket is None:
            raise PermissionDenied(f"unknown task token: {what} needs the token of an offered task")
        return ticket

    @handle_errors
    async def DownloadModel(self, request: coordinator_pb2.DownloadRequest,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[common_pb2.TransferFrame]:
        if request.job_id != self.job_id:
            raise NotFound(f"this coordinator runs job {self.job_id}, not {request.job_id!r}")
        self._require_task(request.task_token, "download")
        model = self.uploads.model_for(request.sha256)
        if model is None:
            raise NotFound(f"no global model with SHA-256 {request.sha256[:12]}... (the round moved on)")
        if not 0 <= request.offset <= model.size:
            raise ValidationFailed(f"offset {request.offset} is outside the model's {model.size} bytes")
        for frame in frames_for(model.payload, model.sha256, offset=request.offset, media_type=MEDIA_TYPE):
            yield frame

    @handle_errors
    async def UploadUpdate(self, request_iterator: AsyncIterator[coordinator_pb2.UploadFrame],
                           context: grpc.aio.ServicerContext) -> coordinator_pb2.UploadResult:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("header"):
            raise ValidationFailed("an upload must start with an UpdateHeader frame")

        async def receive(receiver: BlobReceiver) -> None:
            async for frame in request_iterator:
                if not frame.HasField("chunk"):
                    raise ValidationFailed("only chunk frames may follow the header")
                receiver.write(frame.chunk.offset, frame.chunk.data)

        return await self._take_update(first.header, receive)

    @handle_errors
    async def SubmitUpdate(self, request: coordinator_pb2.UpdateSubmission,
                           context: grpc.aio.ServicerContext) -> coordinator_pb2.UploadResult:
        if len(request.payload) > SUBMIT_MAX_BYTES:
            raise ValidationFailed(f"SubmitUpdate carries at most {SUBMIT_MAX_BYTES} bytes, got "
                                   f"{len(request.payload)}; send a larger update with UploadUpdate")

        async def receive(receiver: BlobReceiver) -> None:
            receiver.write(0, request.payload)

        return await self._take_update(request.header, receive)

    async def _take_update(self, header: coordinator_pb2.UpdateHeader,
                           receive: Callable[[BlobReceiver], Awaitable[None]]) -> coordinator_pb2.UploadResult:
        """Check an update's header, receive its payload (``receive``), hand it to the round."""
        # The caller first: another client's refused upload must not touch the task (begin_upload
        # marks it as arriving, and a failed payload rejects it).
        self._require_holder(header.task_token, claimed_client=header.client_id)
        try:
            ticket, model = self.uploads.begin_upload(header)
        except ValueError as exc:
            log.warning("rejected update from %s for %s: %s", header.client_id, header.task_id, exc)
            return coordinator_pb2.UploadResult(accepted=False, reason=str(exc))
        try:
            payload = None
            if header.blob.total_size > 0:
                limit = (model.size if model is not None else self.uploads.max_init_size) + HEADER_SLACK
                receiver = BlobReceiver(header.blob.total_size, header.blob.sha256, max_size=limit)
                await receive(receiver)
                payload = receiver.finish()
            accepted, reason = await self.uploads.finish_upload(ticket, header, payload)
        except NsflError as exc:
            reason = f"{exc.code}: {exc.message}"
            self.uploads.reject(ticket, reason)
            log.warning("rejected update for %s: %s", header.task_id, reason)
            return coordinator_pb2.UploadResult(accepted=False, reason=reason)
        finally:
            self.uploads.end_upload(ticket)
        return coordinator_pb2.UploadResult(accepted=accepted, reason=reason,
                                            received=header.blob.total_size)

    @handle_errors
    async def GetUploadOffset(self, request: coordinator_pb2.UploadOffsetRequest,
                              context: grpc.aio.ServicerContext) -> coordinator_pb2.UploadOffsetResponse:
        self._require_task(request.task_token, "an upload offset")
        # Updates are small next to a round's deadline; a broken upload is sent again whole.
        return coordinator_pb2.UploadOffsetResponse(offset=0)

    @handle_errors
    async def ReportTaskStatus(self, request: common_pb2.TaskStatus,
                               context: grpc.aio.ServicerContext) -> common_pb2.Ack:
        self._require_holder(request.task_token)  # another client must not drop this one's task
        self.uploads.report_task(request)
        return common_pb2.Ack(ok=True)

    @handle_errors
    async def GetTaskPlan(self, request: coordinator_pb2.TaskPlanRequest,
                          context: grpc.aio.ServicerContext) -> coordinator_pb2.TaskPlan:
        if request.job_id != self.job_id:
            raise NotFound(f"this coordinator runs job {self.job_id}, not {request.job_id!r}")
        self._require_task(request.task_token, "a task plan")
        return coordinator_pb2.TaskPlan(secure_aggregation=self.secure is not None)

    @handle_errors
    async def AwaitModel(self, request: coordinator_pb2.AwaitModelRequest,
                         context: grpc.aio.ServicerContext) -> coordinator_pb2.AwaitModelReply:
        if request.job_id != self.job_id:
            raise NotFound(f"this coordinator runs job {self.job_id}, not {request.job_id!r}")
        self._require_holder(request.task_token)
        remaining = context.time_remaining()  # answered before the caller gives up, not after
        timeout = math.inf if remaining is None else max(0.0, remaining - 0.05)
        return await self.uploads.await_model(request.task_id, request.task_token, request.round, timeout)

    @handle_errors
    async def SecureAggregate(self, request_iterator: AsyncIterator[coordinator_pb2.SecAggClientFrame],
                              context: grpc.aio.ServicerContext) -> AsyncIterator[coordinator_pb2.SecAggServerFrame]:
        secure = self.secure
        if secure is None:
            raise InvalidState(f"job {self.job_id} does not use secure aggregation")
        first = await anext(aiter(request_iterator), None)
        if first is not None and first.WhichOneof("frame") == "join":
            self._require_holder(first.join.task_token, claimed_client=first.join.client_id)
        async for frame in secure.serve(_chained(first, request_iterator)):
            yield frame

    @handle_errors
    async def GetStatus(self, request: coordinator_pb2.StatusRequest,
                        context: grpc.aio.ServicerContext) -> coordinator_pb2.CoordinatorStatus:
        return self.job.status_message()

    @handle_errors
    async def Stop(self, request: coordinator_pb2.StopRequest, context: grpc.aio.ServicerContext) -> common_pb2.Ack:
        self.job.request_stop(request.reason or "stop requested")
        return common_pb2.Ack(ok=True, message="stopping at the next safe point")


async def _chained(first: coordinator_pb2.SecAggClientFrame | None,
                   rest: AsyncIterator[coordinator_pb2.SecAggClientFrame],
                   ) -> AsyncIterator[coordinator_pb2.SecAggClientFrame]:
    """The stream as it came, its first frame (already read for the caller check) included."""
    if first is None:
        return
    yield first
    async for frame in rest:
        yield frame
