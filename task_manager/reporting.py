"""Telling a job's coordinator that a task failed: ``ReportTaskStatus(TASK_FAILED, reason)``.

Why the task manager reports and not only the executor: an executor that was
killed (timeout, runaway, crash, shutdown) cannot speak for itself, and the
coordinator counts a reported failure as a dropped client at once instead of
waiting for the round's deadline.

Each report opens a short-lived outbound channel to the coordinator
endpoint the offer named (clients have no inbound ports), with a deadline
per call and a couple of retries for a coordinator that is briefly
unreachable.  A report that still fails is logged and dropped: the round's
deadline is the coordinator's safety net.

The channel expects the offered job's coordinator at the other end
(:meth:`libs.wire.Wire.coordinator_of`): an endpoint whose certificate is
another job's coordinator, a client's, or from another CA fails the TLS
handshake, so a forged ``coordinator_endpoint`` never receives the task's
token or status.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import grpc.aio

from libs.errors import NsflError
from libs.protos import common_pb2, coordinator_pb2_grpc
from libs.wire import Wire
from task_manager import serde
from task_manager.tasks import Offer
from task_manager.worker.launch_channel import LOG_FILE

log = logging.getLogger(__name__)

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def failure_reason(headline: str, result_reason: str, log_tail: str) -> str:
    """The reason a coordinator gets: what happened, the executor's own words, the end of its log."""
    reason = f"{headline}: {result_reason}" if result_reason else headline
    if log_tail.strip():
        reason += f"\nlast lines of {LOG_FILE}:\n{log_tail}"
    return reason


class CoordinatorReporter:
    def __init__(
        self,
        client_id: str,
        wire: Wire,
        *,
        call_timeout: float = 5.0,
        attempts: int = 3,
        retry_delay: float = 0.5,
    ) -> None:
        self.client_id = client_id
        self.wire = wire
        self.call_timeout = call_timeout
        self.attempts = attempts
        self.retry_delay = retry_delay

    async def report_failed(self, offer: Offer, reason: str, *, attempts: int | None = None) -> bool:
        """Report the task as failed; True once the coordinator acknowledged it."""
        status = serde.offer_status(offer, common_pb2.TASK_FAILED, reason, self.client_id, with_token=True)
        tries = attempts or self.attempts
        try:
            coordinator = self.wire.coordinator_of(offer.job_id)
        except NsflError as exc:
            log.warning("cannot report the failure of task %s: %s", offer.task_id, exc.message)
            return False
        for attempt in range(1, tries + 1):
            channel = self.wire.channel(offer.coordinator_endpoint, coordinator)
            try:
                stub = coordinator_pb2_grpc.CoordinatorStub(channel)
                await stub.ReportTaskStatus(status, timeout=self.call_timeout)
                log.info("reported task %s as failed to its coordinator", offer.task_id)
                return True
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
                if code in RETRYABLE and attempt < tries:
                    await asyncio.sleep(self.retry_delay * attempt)
                    continue
                log.warning(
                    "could not report the failure of task %s to its coordinator at %s: %s",
                    offer.task_id,
                    offer.coordinator_endpoint,
                    exc.details() if code else exc,
                )
                return False
            finally:
                await channel.close()
        return False
