"""Adapter: the job scheduler's ``JobControl`` service as the API server needs it.

Every change to a job goes through the scheduler, which owns job state
(DESIGN §2); reads of jobs, rounds and checkpoints go to the store directly
(see ``job_store``).  Routes depend on the :class:`JobScheduler` protocol,
not on gRPC, so the wire stays in this module; the tests run the real
adapter against a fake ``JobControl`` server on a loopback port.

Every user RPC carries the end user's namespaces in the ``nsfl-namespaces``
metadata (:func:`namespaces_metadata`): a comma-separated list of the
namespaces the bearer token allows, or ``*`` for a token over all of them.
The REST routes already refused a namespace the token cannot see; the
scheduler checks the header again against the job's namespace, so a bug
here cannot widen what a user reaches (issue 12: only the API server may
call these RPCs, and only for its caller).  The channel is the process's
one :class:`~libs.wire.Wire`, and TLS checks that the scheduler's identity
answers.

Jobs travel as JSON text in both directions (``scheduler.proto``); a reply
that is not a JSON object is the scheduler's bug and surfaces as a 500 with
the detail in the log.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol, cast

from api_server.auth import ALL_NAMESPACES, Caller
from api_server.job_views import JobView
from api_server.upstream import upstream_errors
from libs.errors import CATALOGUE, NsflError
from libs.jobspec import JobSpec
from libs.protos import scheduler_pb2, scheduler_pb2_grpc
from libs.wire import Wire

log = logging.getLogger(__name__)

SCHEDULER = "the job scheduler"
NAMESPACES_METADATA = "nsfl-namespaces"
Metadata = tuple[tuple[str, str], ...]


def namespaces_metadata(caller: Caller) -> Metadata:
    """The ``nsfl-namespaces`` header for ``caller``: ``*``, or its namespaces sorted and comma-separated."""
    value = ALL_NAMESPACES if caller.all_namespaces else ",".join(sorted(caller.namespaces))
    return ((NAMESPACES_METADATA, value),)


class JobScheduler(Protocol):
    """The job operations the REST API forwards to the scheduler, each on behalf of ``caller``."""

    async def submit(self, caller: Caller, namespace: str, spec: JobSpec) -> JobView: ...

    async def update(
        self, caller: Caller, namespace: str, name: str, spec: JobSpec, *, expected_version: int
    ) -> JobView: ...

    async def start(self, caller: Caller, namespace: str, name: str, *, from_scratch: bool) -> JobView: ...

    async def stop(self, caller: Caller, namespace: str, name: str) -> JobView: ...

    async def delete(self, caller: Caller, namespace: str, name: str) -> JobView: ...

    async def logs(self, caller: Caller, namespace: str, name: str, *, tail_lines: int) -> str: ...

    async def ping(self) -> None:
        """Return once the scheduler can be reached (callers bound the wait with a timeout)."""
        ...

    async def close(self) -> None: ...


def _job_of(reply: scheduler_pb2.JobReply) -> JobView:
    try:
        job = json.loads(reply.job_json)
    except ValueError:
        job = None
    if not isinstance(job, dict):
        log.error("the job scheduler answered with a job that is not a JSON object: %.200r", reply.job_json)
        raise NsflError(CATALOGUE["Internal"].public_message)
    return cast(JobView, job)  # the scheduler's job_view of the stored job (job_scheduler.documents)


class GrpcJobScheduler:
    """:class:`JobScheduler` over a channel of ``wire`` that only the scheduler's identity can answer."""

    def __init__(self, address: str, *, wire: Wire, timeout: float) -> None:
        self._channel = wire.channel(address, wire.control("scheduler"))
        self._stub = scheduler_pb2_grpc.JobControlStub(self._channel)
        self._timeout = timeout

    @staticmethod
    def _ref(namespace: str, name: str) -> scheduler_pb2.JobRef:
        return scheduler_pb2.JobRef(namespace=namespace, name=name)

    async def submit(self, caller: Caller, namespace: str, spec: JobSpec) -> JobView:
        request = scheduler_pb2.SubmitJobRequest(
            namespace=namespace, spec_json=json.dumps(spec.to_document())
        )
        with upstream_errors(SCHEDULER):
            reply = await self._stub.SubmitJob(
                request, timeout=self._timeout, metadata=namespaces_metadata(caller)
            )
        return _job_of(reply)

    async def update(
        self, caller: Caller, namespace: str, name: str, spec: JobSpec, *, expected_version: int
    ) -> JobView:
        request = scheduler_pb2.UpdateJobRequest(
            ref=self._ref(namespace, name),
            spec_json=json.dumps(spec.to_document()),
            expected_version=expected_version,
        )
        with upstream_errors(SCHEDULER):
            reply = await self._stub.UpdateJob(
                request, timeout=self._timeout, metadata=namespaces_metadata(caller)
            )
        return _job_of(reply)

    async def start(self, caller: Caller, namespace: str, name: str, *, from_scratch: bool) -> JobView:
        request = scheduler_pb2.StartJobRequest(ref=self._ref(namespace, name), from_scratch=from_scratch)
        with upstream_errors(SCHEDULER):
            reply = await self._stub.StartJob(
                request, timeout=self._timeout, metadata=namespaces_metadata(caller)
            )
        return _job_of(reply)

    async def stop(self, caller: Caller, namespace: str, name: str) -> JobView:
        with upstream_errors(SCHEDULER):
            reply = await self._stub.StopJob(
                self._ref(namespace, name), timeout=self._timeout, metadata=namespaces_metadata(caller)
            )
        return _job_of(reply)

    async def delete(self, caller: Caller, namespace: str, name: str) -> JobView:
        with upstream_errors(SCHEDULER):
            reply = await self._stub.DeleteJob(
                self._ref(namespace, name), timeout=self._timeout, metadata=namespaces_metadata(caller)
            )
        return _job_of(reply)

    async def logs(self, caller: Caller, namespace: str, name: str, *, tail_lines: int) -> str:
        request = scheduler_pb2.JobLogsRequest(ref=self._ref(namespace, name), tail_lines=tail_lines)
        with upstream_errors(SCHEDULER):
            reply = await self._stub.GetJobLogs(
                request, timeout=self._timeout, metadata=namespaces_metadata(caller)
            )
        return str(reply.text)

    async def ping(self) -> None:
        await self._channel.channel_ready()

    async def close(self) -> None:
        await self._channel.close()
