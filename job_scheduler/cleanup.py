"""Forgetting a job's data: before a restart from scratch, and when the job is deleted.

Records go before objects: a coordinator (or the API server) only ever
finds a checkpoint or a round through its record, so deleting the record
first means nobody is ever pointed at an object that is already gone.  The
job document goes last, so a scheduler that crashes halfway finds the job
still DELETING on restart and finishes the clean-up; every step is
idempotent.
"""

from __future__ import annotations

import logging

from job_scheduler.job_store import JobStore
from job_scheduler.platform import Platform
from libs.objects import checkpoint_prefix, job_prefixes, round_prefix
from libs.objects.protocol import ObjectStore
from libs.records import job_key

log = logging.getLogger(__name__)


class JobCleanup:
    def __init__(self, jobs: JobStore, objects: ObjectStore, platform: Platform) -> None:
        self._jobs = jobs
        self._objects = objects
        self._platform = platform

    async def forget_progress(self, namespace: str, name: str) -> None:
        """Delete checkpoints and rounds (records and objects), so the next run starts from scratch."""
        rounds, checkpoints = await self._jobs.forget_records(namespace, name)
        removed = 0
        for prefix in (checkpoint_prefix(namespace, name), round_prefix(namespace, name)):
            removed += await self._objects.delete_prefix(prefix)
        log.info(
            "job %s/%s: forgot %d rounds, %d checkpoints, %d objects",
            namespace,
            name,
            rounds,
            checkpoints,
            removed,
        )

    async def remove(self, namespace: str, name: str) -> None:
        """Delete everything of the job: records, objects, work files and logs, then the job itself."""
        await self._jobs.forget_records(namespace, name)
        for prefix in job_prefixes(namespace, name):
            await self._objects.delete_prefix(prefix)
        await self._platform.remove(namespace, name)
        key = job_key(namespace, name)
        await self._jobs.delete(key)
        log.info("job %s deleted", key)
