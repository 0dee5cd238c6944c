"""The scheduler's loops: admit waiting jobs, watch running coordinators, recover after a restart.

**Admission** (every ``admission_interval`` seconds, or at once when woken
by a submit, start, stop or finished job).  QUEUED and PENDING jobs are
offered to :func:`~job_scheduler.admission.pick_next` in turn.  For each
pick the selector is asked, without reserving, whether enough clients match
(``minClients``): if so the job goes STARTING and its coordinator is
launched; if not, a QUEUED job goes PENDING with a deadline of
``pendingTimeoutSeconds``, and a PENDING job past its deadline FAILS with
``InsufficientClients <matched>/<needed>: <why>``.  Either way the next pick
is tried, so a job short of clients never holds up the others.  A PENDING
job that cannot be tried because every slot is taken only fails at its
deadline if clients are still short: waiting for capacity is not its fault.
A restarted job whose previous coordinator is still exiting waits in QUEUED
(one coordinator per job, always); one that lingers longer than
``stop_timeout`` after the restart is killed.

**Watching** (every ``watch_interval`` seconds).  For each STARTING,
RUNNING or STOPPING job, :meth:`Coordinators.watch` looks at its
coordinator: adopt it, launch a launch that never happened, resend a stop,
or act on its exit (FINISHED, FAILED, STOPPED, or a crash that is relaunched
up to ``maxRetries``).  Jobs that are DELETING, or ended with
``deleteRequested``, are deleted.

**Recovery** is one watch pass before the first admission: everything the
scheduler needs is in the store and on the platform, never only in its
memory, so a restarted scheduler finds QUEUED and PENDING jobs back in
admission, adopts live coordinators, relaunches dead ones, completes stops
and deletions.

One job's failure (a store hiccup, a platform error) is logged and that job
is tried again next time; it never stops the loop for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from job_scheduler.admission import Candidate, Limits, Occupancy, pick_next
from job_scheduler.cleanup import JobCleanup
from job_scheduler.coordinators import Coordinators
from job_scheduler.documents import spec_of, state_of
from job_scheduler.job_store import JobLocks, JobStore
from job_scheduler.platform import Platform
from job_scheduler.selector_client import ClientAvailability
from job_scheduler.states import TERMINAL, JobEvent, JobState
from libs.store import Document

log = logging.getLogger(__name__)

WAITING = (JobState.QUEUED, JobState.PENDING)
HOLDING = (JobState.STARTING, JobState.RUNNING, JobState.STOPPING)


class Supervisor:
    def __init__(
        self,
        jobs: JobStore,
        coordinators: Coordinators,
        cleanup: JobCleanup,
        platform: Platform,
        availability: ClientAvailability,
        locks: JobLocks,
        limits: Limits,
        *,
        admission_interval: float = 0.2,
        watch_interval: float = 0.5,
        stop_timeout: float = 120.0,
    ) -> None:
        self._jobs = jobs
        self._coordinators = coordinators
        self._cleanup = cleanup
        self._platform = platform
        self._availability = availability
        self._locks = locks
        self._limits = limits
        self._admission_interval = admission_interval
        self._watch_interval = watch_interval
        self._stop_timeout = stop_timeout
        self._last_namespace = ""
        self._wake = asyncio.Event()

    @property
    def clock(self) -> Callable[[], float]:
        return self._jobs.clock

    def wake(self) -> None:
        """Run admission now rather than at the next tick."""
        self._wake.set()

    async def run(self) -> None:
        """Recover, then admit and watch until cancelled."""
        await self.recover()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._forever(self.admit_once, self._admission_interval, wakeable=True))
            group.create_task(self._forever(self.watch_once, self._watch_interval, wakeable=False))

    async def recover(self) -> None:
        found = Counter(state_of(d.data).value for d in await self._jobs.find())
        log.info("recovering from the store: %s", dict(found) or "no jobs")
        await self.watch_once()

    # --- admission ----------------------------------------------------------------------------

    async def admit_once(self) -> None:
        waiting = {d.key: d for d in await self._jobs.in_states(WAITING) if not d.data.get("deleteRequested")}
        if not waiting:
            return
        occupancy = Occupancy.of(d.data["namespace"] for d in await self._jobs.in_states(HOLDING))
        pool = [
            Candidate(
                key,
                d.data["namespace"],
                int(d.data.get("priority", 0)),
                float(d.data.get("queuedAt") or d.data.get("createdAt") or 0.0),
            )
            for key, d in waiting.items()
        ]
        tried: set[str] = set()
        while (pick := pick_next(pool, occupancy, self._limits, self._last_namespace)) is not None:
            pool.remove(pick)
            tried.add(pick.key)
            if await self._guarded(pick.key, self._try_admit):
                occupancy = occupancy.plus(pick.namespace)
                self._last_namespace = pick.namespace
        now = self.clock()
        for key, document in waiting.items():
            deadline = document.data.get("pendingDeadline")
            if (
                key not in tried
                and state_of(document.data) is JobState.PENDING
                and deadline
                and now >= deadline
            ):
                await self._guarded(key, self._expire_if_short)

    async def _try_admit(self, document: Document) -> bool:
        """Admit the job if enough clients match; otherwise PENDING, or FAILED past its deadline."""
        data = document.data
        state = state_of(data)
        if state not in WAITING:
            return False
        previous = await self._platform.find(data["namespace"], data["name"])
        if previous is not None and previous.running:
            # A restarted job whose last coordinator has not exited yet: wait, and end it if it lingers.
            if self.clock() - float(data.get("queuedAt") or 0) > self._stop_timeout:
                log.warning("job %s: its previous coordinator lingers; killing it", document.key)
                await self._platform.kill(data["namespace"], data["name"])
            return False
        spec = spec_of(data)
        availability = await self._availability.check(document.key, spec)
        if availability.satisfied:
            if data.get("startFromScratch"):
                await self._cleanup.forget_progress(data["namespace"], data["name"])
            event = JobEvent.ADMIT if state is JobState.QUEUED else JobEvent.CLIENTS_READY
            reason = f"admitted: {availability.matched} matching clients"
            await self._coordinators.start(document.key, event, reason)
            return True
        now = self.clock()
        if state is JobState.QUEUED:
            deadline = now + spec.pending_timeout_seconds
            await self._jobs.apply(
                document.key,
                JobEvent.ADMIT,
                availability.reason,
                clients_ready=False,
                change=lambda d: {**d, "pendingDeadline": deadline},
            )
        elif now >= float(data.get("pendingDeadline") or now):
            await self._jobs.apply(document.key, JobEvent.PENDING_TIMEOUT, availability.reason)
            log.info("job %s failed: %s", document.key, availability.reason)
        elif availability.reason != data.get("reason"):
            await self._jobs.change(document.key, lambda d: {**d, "reason": availability.reason})
        return False

    async def _expire_if_short(self, document: Document) -> bool:
        data = document.data
        if state_of(data) is not JobState.PENDING or self.clock() < float(data.get("pendingDeadline") or 0):
            return False
        availability = await self._availability.check(document.key, spec_of(data))
        if not availability.satisfied:
            await self._jobs.apply(document.key, JobEvent.PENDING_TIMEOUT, availability.reason)
            log.info("job %s failed: %s", document.key, availability.reason)
        return False

    # --- watching -----------------------------------------------------------------------------

    async def watch_once(self) -> None:
        for document in await self._jobs.in_states((*HOLDING, JobState.DELETING)):
            await self._guarded(document.key, self._watch)
        for document in await self._jobs.find({"deleteRequested": True}):
            if state_of(document.data) in TERMINAL:
                await self._guarded(document.key, self._delete)

    async def _watch(self, document: Document) -> bool:
        state = state_of(document.data)
        if state is JobState.DELETING:
            await self._delete(document)
        elif state in HOLDING:
            await self._coordinators.watch(document, self.clock())
            if state_of((await self._jobs.try_get(document.key) or document).data) not in HOLDING:
                self.wake()  # its slot is free
        return False

    async def _delete(self, document: Document) -> bool:
        data = document.data
        state = state_of(data)
        if state in TERMINAL:
            await self._jobs.apply(document.key, JobEvent.DELETE, "deleted on request")
        elif state is not JobState.DELETING:
            return False
        await self._cleanup.remove(data["namespace"], data["name"])
        return False

    # --- plumbing -----------------------------------------------------------------------------

    async def _guarded(self, key: str, action: Callable[[Document], Awaitable[bool]]) -> bool:
        """Run ``action`` on a fresh read of the job, under its lock; log and go on if it fails."""
        try:
            async with self._locks(key):
                document = await self._jobs.try_get(key)
                if document is None:
                    return False
                return await action(document)
        except Exception:
            log.exception("job %s: will try again", key)
            return False

    async def _forever(self, tick: Callable[[], Awaitable[None]], interval: float, *, wakeable: bool) -> None:
        while True:
            try:
                await tick()
            except Exception:
                log.exception("%s failed; trying again", getattr(tick, "__name__", "a supervisor pass"))
            if wakeable:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that arrives as the wait ends, and the scheduler would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self._wake.wait()
                self._wake.clear()
            else:
                await asyncio.sleep(interval)
