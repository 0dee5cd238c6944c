"""The ``JobControl`` gRPC servicer: parse the request, call :class:`JobService`, answer.

Jobs travel as JSON (the stored document plus its ``version``), as the
proto says.  Errors map through :func:`libs.rpc.handle_errors`: a
``NotFound`` job is ``NOT_FOUND``, a state that forbids the operation is
``FAILED_PRECONDITION`` (409 at the API server), a lost compare-and-set is
``ABORTED``, a wrong coordinator token ``PERMISSION_DENIED``.

Who may call what is decided before a method runs (the guard of
:mod:`libs.wire` and its table: the user RPCs are the API server's,
``ReportProgress`` the job's own coordinator's).  Each user RPC then checks
the end user's namespaces the API server passes (:mod:`.namespaces`): a job
outside them is ``NOT_FOUND``, exactly as a job that does not exist.
``ReportProgress`` still checks the launch's token too: the certificate says
which job's coordinator calls, the token which launch of it.
"""

from __future__ import annotations

import json
from typing import Any, TypeAlias

import grpc.aio

from job_scheduler.documents import public
from job_scheduler.namespaces import NamespaceScope, scope_of
from job_scheduler.reports import parse_report
from job_scheduler.service import JobService
from libs.errors import NotFound
from libs.protos import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from libs.rpc import handle_errors
from libs.store import Document

Context: TypeAlias = grpc.aio.ServicerContext


def _job_json(document: Document) -> str:
    return json.dumps(public(document), sort_keys=True)


def _reply(document: Document) -> scheduler_pb2.JobReply:
    return scheduler_pb2.JobReply(job_json=_job_json(document))


def _scope(context: Context) -> NamespaceScope:
    return scope_of(context.invocation_metadata())


def _visible(context: Context, namespace: str, name: str) -> None:
    """``NotFound`` (the same as for a missing job) unless the end user may see ``namespace``."""
    if not _scope(context).allows(namespace):
        raise NotFound(f"job {namespace}/{name} not found", details={"namespace": namespace, "name": name})


class JobControlServicer(scheduler_pb2_grpc.JobControlServicer):
    """Thin adapter from the ``JobControl`` service to :class:`JobService`."""

    def __init__(self, service: JobService) -> None:
        self._service = service

    @handle_errors
    async def SubmitJob(self, request: scheduler_pb2.SubmitJobRequest, context: Context) -> Any:
        scope = _scope(context)
        return _reply(await self._service.submit(request.namespace, request.spec_json, scope=scope))

    @handle_errors
    async def GetJob(self, request: scheduler_pb2.JobRef, context: Context) -> Any:
        _visible(context, request.namespace, request.name)
        return _reply(await self._service.get(request.namespace, request.name))

    @handle_errors
    async def ListJobs(self, request: scheduler_pb2.ListJobsRequest, context: Context) -> Any:
        documents, token = await self._service.list(
            request.namespace, list(request.states), request.limit, request.page_token, scope=_scope(context)
        )
        return scheduler_pb2.ListJobsReply(jobs_json=[_job_json(d) for d in documents], next_page_token=token)

    @handle_errors
    async def UpdateJob(self, request: scheduler_pb2.UpdateJobRequest, context: Context) -> Any:
        ref = request.ref
        _visible(context, ref.namespace, ref.name)
        return _reply(
            await self._service.update(ref.namespace, ref.name, request.spec_json, request.expected_version)
        )

    @handle_errors
    async def StartJob(self, request: scheduler_pb2.StartJobRequest, context: Context) -> Any:
        ref = request.ref
        _visible(context, ref.namespace, ref.name)
        return _reply(await self._service.start(ref.namespace, ref.name, from_scratch=request.from_scratch))

    @handle_errors
    async def StopJob(self, request: scheduler_pb2.JobRef, context: Context) -> Any:
        _visible(context, request.namespace, request.name)
        return _reply(await self._service.stop(request.namespace, request.name))

    @handle_errors
    async def DeleteJob(self, request: scheduler_pb2.JobRef, context: Context) -> Any:
        _visible(context, request.namespace, request.name)
        return _reply(await self._service.delete(request.namespace, request.name))

    @handle_errors
    async def GetJobLogs(self, request: scheduler_pb2.JobLogsRequest, context: Context) -> Any:
        ref = request.ref
        _visible(context, ref.namespace, ref.name)
        text = await self._service.logs(ref.namespace, ref.name, request.tail_lines)
        return scheduler_pb2.JobLogsReply(text=text)

    @handle_errors
    async def ReportProgress(self, request: scheduler_pb2.ProgressReport, context: Context) -> Any:
        report = parse_report(
            request.job_id,
            request.coordinator_token,
            request.state,
            request.reason,
            request.round,
            request.rounds,
            request.round_json,
            request.checkpoint_json,
            request.revised_rounds_json,
            request.earlier_checkpoints_json,
        )
        ok, message = await self._service.report_progress(report)
        return common_pb2.Ack(ok=ok, message=message)
