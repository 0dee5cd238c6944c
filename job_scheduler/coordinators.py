"""A job's coordinator through its life: launch, watch, stop, end, and what it reports.

Every action follows the same order: persist the transition (with the
launch number and the hash of a fresh token in the same write), then act on
the platform.  A scheduler killed between the two finds, on restart, a job
whose persisted launch ``n`` the platform has not seen, and launches it
then; a coordinator that did start is found alive (the platform's name is
deterministic) and adopted.  So nothing is lost and nothing runs twice.

Callers hold the job's lock (:class:`~job_scheduler.job_store.JobLocks`)
around each method, so this process never launches and stops the same job
at once.

The coordinator's token is random per launch and only its SHA-256 is kept
(in the job document, so it survives a scheduler restart): a report is
accepted only from the coordinator this scheduler launched last.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from job_scheduler.documents import (
    parse_job_id,
    spec_of,
    state_of,
    token_digest,
    with_checkpoint,
    with_checkpoints,
    with_round,
)
from job_scheduler.job_store import Change, JobStore
from job_scheduler.outcomes import decide_exit, decide_report
from job_scheduler.platform import CoordinatorInfo, LaunchRequest, Platform
from job_scheduler.reports import Report
from job_scheduler.states import JobEvent, JobState, next_state
from libs.errors import NotFound, NsflError, PermissionDenied, Unavailable
from libs.objects import output_key
from libs.objects.protocol import ObjectStore
from libs.records import (
    STATES_BY_EXIT_CODE,
    CoordinatorStatus,
    FinalModel,
    JobDocument,
    LastExit,
    job_key,
)
from libs.store import Document

log = logging.getLogger(__name__)

FINAL_MODEL = "model.safetensors"

FAILURE_LOG_LINES = 15


@dataclass(frozen=True)
class LaunchConfig:
    """What every coordinator is told, besides its job."""

    selector_address: str
    store_url: str
    object_store_url: str
    stop_timeout_seconds: float = 120.0
    start_timeout_seconds: float = 300.0


class Coordinators:
    def __init__(
        self,
        jobs: JobStore,
        platform: Platform,
        objects: ObjectStore,
        config: LaunchConfig,
        scheduler_address: Callable[[], str],
    ) -> None:
        self._jobs = jobs
        self._platform = platform
        self._objects = objects
        self._config = config
        self._scheduler_address = scheduler_address
        self._stop_sent: dict[str, int] = {}  # job key -> the launch this process asked to stop

    # --- launching ----------------------------------------------------------------------------

    async def start(self, key: str, event: JobEvent, reason: str) -> Document:
        """ADMIT, CLIENTS_READY or RELAUNCH: persist launch n+1 with a new token, then launch it."""
        token = secrets.token_urlsafe(32)
        digest = token_digest(token)

        def change(data: JobDocument) -> JobDocument:
            coordinator = data["coordinator"].copy()
            coordinator["launches"] = int(coordinator.get("launches", 0)) + 1
            coordinator["tokenSha256"] = digest
            coordinator["launchedAt"] = data["updatedAt"]
            if event is JobEvent.RELAUNCH:
                coordinator["restarts"] = int(coordinator.get("restarts", 0)) + 1
            return {**data, "coordinator": coordinator, "startFromScratch": False}

        document, transition = await self._jobs.apply(key, event, reason, change=change)
        if not transition.changed:
            return document
        return await self._launch(document, token)

    async def launch_again(self, document: Document) -> Document:
        """The persisted launch never reached the platform (a crash came between): launch it now."""
        token = secrets.token_urlsafe(32)
        digest = token_digest(token)
        now = self._jobs.clock()
        document = await self._jobs.change(
            document.key,
            lambda d: {**d, "coordinator": {**d["coordinator"], "tokenSha256": digest, "launchedAt": now}},
        )
        log.info(
            "job %s: launch %d was persisted but not started; starting it",
            document.key,
            document.data["coordinator"]["launches"],
        )
        return await self._launch(document, token)

    async def _launch(self, document: Document, token: str) -> Document:
        data = document.data
        request = LaunchRequest(
            namespace=data["namespace"], name=data["name"], spec=spec_of(data),
            launch=int(data["coordinator"]["launches"]), token=token,
            scheduler_address=self._scheduler_address(), selector_address=self._config.selector_address,
            store_url=self._config.store_url, object_store_url=self._config.object_store_url,
        )  # fmt: skip
        try:
            launched = await self._platform.launch(request)
        except Unavailable as exc:
            # The platform cannot be reached (an API server hiccup): the launch stays persisted,
            # the watch finds it missing and launches it again; failing the job would be wrong.
            log.warning(
                "job %s: the platform is unavailable; the launch will be retried: %s",
                document.key,
                exc.message,
            )
        except (OSError, NsflError) as exc:
            log.exception("job %s: launching the coordinator failed", document.key)
            document, _ = await self._jobs.apply(
                document.key, JobEvent.FAIL, f"could not launch the coordinator: {exc}"
            )
        else:
            if launched.name != data["coordinator"].get("name"):  # a Pod is named per launch
                document = await self._jobs.change(
                    document.key, lambda d: {**d, "coordinator": {**d["coordinator"], "name": launched.name}}
                )
        return document

    # --- stopping -----------------------------------------------------------------------------

    async def request_stop(self, document: Document) -> None:
        """Ask the job's coordinator to stop at a safe point (it saves a checkpoint and exits 3)."""
        data = document.data
        if await self._platform.stop(data["namespace"], data["name"]):
            self._stop_sent[document.key] = int(data["coordinator"]["launches"])

    # --- watching -----------------------------------------------------------------------------

    async def watch(self, document: Document, now: float) -> None:
        """One look at an active job's coordinator (STARTING, RUNNING, STOPPING), and what follows."""
        data = document.data
        state = state_of(data)
        info = await self._platform.find(data["namespace"], data["name"])
        launches = int(data["coordinator"].get("launches", 0))
        if info is None or info.launch < launches:
            if state is JobState.STOPPING:
                await self._jobs.apply(
                    document.key, JobEvent.STOPPED, "stopped before its coordinator started"
                )
            else:
                await self.launch_again(document)
        elif info.running:
            await self._watch_running(document, state, info, now)
        else:
            await self._ended(document, state, info)

    async def _watch_running(
        self, document: Document, state: JobState, info: CoordinatorInfo, now: float
    ) -> None:
        key = document.key
        if info.endpoint and info.endpoint != document.data["coordinator"].get("endpoint"):
            document = await self._jobs.change(
                key, lambda d: {**d, "coordinator": {**d["coordinator"], "endpoint": info.endpoint}}
            )
        if state is JobState.STARTING:
            await self._watch_starting(document, info, now)
        if state is not JobState.STOPPING:
            return
        if self._stop_sent.get(key) != info.launch:
            await self.request_stop(document)
        elif now - float(document.data.get("stopRequestedAt") or now) > self._config.stop_timeout_seconds:
            log.warning(
                "job %s: the coordinator did not stop within %.0fs; killing it",
                key,
                self._config.stop_timeout_seconds,
            )
            await self._platform.kill(document.data["namespace"], document.data["name"])

    async def _watch_starting(self, document: Document, info: CoordinatorInfo, now: float) -> None:
        """Record the start the coordinator wrote in its status, or kill one stuck starting up.

        A coordinator that neither reports nor exits (it hangs opening a store,
        say) would otherwise hold its slot forever; killed, it counts as a crash
        and is relaunched or fails with its log's last lines.
        """
        if info.status.get("state") == JobState.RUNNING:
            await self._jobs.apply(document.key, JobEvent.LAUNCHED, "the coordinator started")
            return
        launched_at = float(document.data["coordinator"].get("launchedAt") or now)
        if now - launched_at > self._config.start_timeout_seconds:
            log.warning(
                "job %s: the coordinator did not start within %.0fs; killing it",
                document.key,
                self._config.start_timeout_seconds,
            )
            await self._platform.kill(document.data["namespace"], document.data["name"])

    async def _ended(self, document: Document, state: JobState, info: CoordinatorInfo) -> None:
        data = document.data
        namespace, name = data["namespace"], data["name"]
        tail = ""
        if info.exit_code not in STATES_BY_EXIT_CODE:
            tail = await self._platform.logs(namespace, name, FAILURE_LOG_LINES)
        decision = decide_exit(
            state,
            info.exit_code,
            status_reason=str(info.status.get("reason", "")),
            restarts=int(data["coordinator"].get("restarts", 0)),
            max_retries=spec_of(data).max_retries,
            log_tail=tail,
            platform_reason=info.platform_reason,
        )
        last_exit: LastExit = {
            "launch": info.launch,
            "code": info.exit_code,
            "state": info.status.get("state"),
            "at": self._jobs.clock(),
        }
        if not decision.steps:
            return
        self._stop_sent.pop(document.key, None)
        log.info("job %s: coordinator launch %d ended (%s)", document.key, info.launch, info.exit_code)
        if decision.relaunch:
            await self._jobs.change(
                document.key, lambda d: {**d, "coordinator": {**d["coordinator"], "lastExit": last_exit}}
            )
            await self.start(document.key, JobEvent.RELAUNCH, decision.steps[0].reason)
            return
        finish = await self._final_status(namespace, name, info.status, decision.steps[-1].event)

        def change(d: JobDocument) -> JobDocument:
            return finish({**d, "coordinator": {**d["coordinator"], "lastExit": last_exit, "endpoint": ""}})

        await self._jobs.apply_steps(document.key, decision.steps, change=change)

    async def _final_status(
        self, namespace: str, name: str, status: CoordinatorStatus, event: JobEvent
    ) -> Change:
        """The status a job ends with: its checkpoints, and for FINISH its final model and last round."""
        checkpoints = await self._jobs.checkpoint_records(namespace, name)
        final_model: FinalModel | None = None
        if event is JobEvent.FINISH:
            try:
                info = await self._objects.stat(output_key(namespace, name, FINAL_MODEL))
                final_model = {"key": info.key, "sha256": info.sha256, "size": info.size}
            except NotFound:
                log.warning("job %s/%s finished without a final model in the object store", namespace, name)

        def change(data: JobDocument) -> JobDocument:
            data = with_checkpoints(data, checkpoints)
            if event is JobEvent.FINISH:
                rounds = int(status.get("rounds") or data["status"].get("rounds") or 0)
                data = with_round(data, int(status.get("round") or rounds), rounds, None)
                data["status"]["finalModel"] = final_model
            return data

        return change

    # --- reports ------------------------------------------------------------------------------

    async def report(self, report: Report) -> tuple[bool, str]:
        """Apply a coordinator's report; ``(False, why)`` for one that comes too late to matter."""
        namespace, name = parse_job_id(report.job_id)
        document = await self._jobs.get(namespace, name)
        expected = str(document.data.get("coordinator", {}).get("tokenSha256", ""))
        if not expected or not hmac.compare_digest(expected, token_digest(report.token)):
            raise PermissionDenied(f"the coordinator token does not match job {report.job_id}")
        state = state_of(document.data)
        steps = decide_report(
            state,
            report.state,
            has_round=report.round_record is not None,
            reason=report.reason,
            round_number=report.round,
        )
        if not steps:
            return True, ""
        try:
            first = next_state(state, steps[0].event, reason=steps[0].reason, now=self._jobs.clock())
        except NsflError as exc:
            log.info("job %s: dropped a %s report in state %s", report.job_id, report.state, state.value)
            return False, exc.message
        for revised in report.revised_rounds:
            await self._jobs.record_round(namespace, name, int(revised["round"]), revised)
        if report.round_record is not None:
            await self._jobs.record_round(namespace, name, report.round, report.round_record)
        checkpoint = report.checkpoint
        terminal = (
            await self._final_status(
                namespace, name, {"round": report.round, "rounds": report.rounds}, steps[-1].event
            )
            if report.state != JobState.RUNNING
            else None
        )

        def change(data: JobDocument) -> JobDocument:
            data = with_round(data, report.round, report.rounds, report.round_record, report.revised_rounds)
            for stored in (*report.earlier_checkpoints, *([checkpoint] if checkpoint is not None else [])):
                data = with_checkpoint(data, stored)
            return terminal(data) if terminal is not None else data

        key = job_key(namespace, name)
        if report.state == JobState.RUNNING and not first.changed:
            # A report between rounds (a checkpoint, the final model) changes no state, only the status.
            await self._jobs.change(key, change)
        else:
            await self._jobs.apply_steps(key, steps, change=change)
        return True, ""
