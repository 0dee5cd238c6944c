"""Adapter: the job scheduler's ``JobControl`` service as the API server needs it.

Every change to a job goes through the scheduler, which owns job state
(DESIGN §2); reads of jobs, rounds and checkpoints go to the store directly
(see ``job_store``).  Routes depend on the :class:`JobScheduler` protocol,
not on gRPC, so the wire stays in this module; the tests run the real
adapter against a fake ``JobControl`` server on a loopback port.

Jobs travel as JSON text in both directions (``scheduler.proto``); a reply
that is not a JSON object is the scheduler's bug and surfaces as a 500 with
the detail in the log.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from api_server.upstream import upstream_errors
from libs.errors import CATALOGUE, NsflError
from libs.protos import scheduler_pb2, scheduler_pb2_grpc
from libs.rpc import TlsFiles, open_channel

log = logging.getLogger(__name__)

SCHEDULER = "the job scheduler"


class JobScheduler(Protocol):
    """The job operations the REST API forwards to the scheduler."""

    async def submit(self, namespace: str, spec: dict[str, Any]) -> dict[str, Any]: ...

    async def update(
        self, namespace: str, name: str, spec: dict[str, Any], *, expected_version: int
    ) -> dict[str, Any]: ...

    async def start(self, namespace: str, name: str, *, from_scratch: bool) -> dict[str, Any]: ...

    async def stop(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def delete(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def logs(self, namespace: str, name: str, *, tail_lines: int) -> str: ...

    async def ping(self) -> None:
        """Return once the scheduler can be reached (callers bound the wait with a timeout)."""
        ...

    async def close(self) -> None: ...


def _job_of(reply: scheduler_pb2.JobReply) -> dict[str, Any]:
    try:
        job = json.loads(reply.job_json)
    except ValueError:
        job = None
    if not isinstance(job, dict):
        log.error("the job scheduler answered with a job that is not a JSON object: %.200r", reply.job_json)
        raise NsflError(CATALOGUE["Internal"].public_message)
    return job


class GrpcJobScheduler:
    """:class:`JobScheduler` over a gRPC channel (mutual TLS when ``tls`` is given)."""

    def __init__(self, address: str, *, timeout: float, tls: TlsFiles | None = None) -> None:
        self._channel = open_channel(address, tls)
        self._stub = scheduler_pb2_grpc.JobControlStub(self._channel)
        self._timeout = timeout

    @staticmethod
    def _ref(namespace: str, name: str) -> scheduler_pb2.JobRef:
        return scheduler_pb2.JobRef(namespace=namespace, name=name)

    async def submit(self, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
        request = scheduler_pb2.SubmitJobRequest(namespace=namespace, spec_json=json.dumps(spec))
        with upstream_errors(SCHEDULER):
            return _job_of(await self._stub.SubmitJob(request, timeout=self._timeout))

    async def update(
        self, namespace: str, name: str, spec: dict[str, Any], *, expected_version: int
    ) -> dict[str, Any]:
        request = scheduler_pb2.UpdateJobRequest(
            ref=self._ref(namespace, name), spec_json=json.dumps(spec), expected_version=expected_version
        )
        with upstream_errors(SCHEDULER):
            return _job_of(await self._stub.UpdateJob(request, timeout=self._timeout))

    async def start(self, namespace: str, name: str, *, from_scratch: bool) -> dict[str, Any]:
        request = scheduler_pb2.StartJobRequest(ref=self._ref(namespace, name), from_scratch=from_scratch)
        with upstream_errors(SCHEDULER):
            return _job_of(await self._stub.StartJob(request, timeout=self._timeout))

    async def stop(self, namespace: str, name: str) -> dict[str, Any]:
        with upstream_errors(SCHEDULER):
            return _job_of(await self._stub.StopJob(self._ref(namespace, name), timeout=self._timeout))

    async def delete(self, namespace: str, name: str) -> dict[str, Any]:
        with upstream_errors(SCHEDULER):
            return _job_of(await self._stub.DeleteJob(self._ref(namespace, name), timeout=self._timeout))

    async def logs(self, namespace: str, name: str, *, tail_lines: int) -> str:
        request = scheduler_pb2.JobLogsRequest(ref=self._ref(namespace, name), tail_lines=tail_lines)
        with upstream_errors(SCHEDULER):
            reply = await self._stub.GetJobLogs(request, timeout=self._timeout)
        return str(reply.text)

    async def ping(self) -> None:
        await self._channel.channel_ready()

    async def close(self) -> None:
        await self._channel.close()
