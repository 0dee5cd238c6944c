"""Adapter: telling whoever launched the coordinator how the job is going.

Two sinks, both optional beside the status file: the ``status.json`` in the
coordinator's work directory (written atomically: a reader sees the old or
the new file, never half of one) and the scheduler's
``JobControl.ReportProgress``.  A scheduler that is briefly unreachable must
not stop training, so scheduler reports are best effort with a short deadline;
the status file and the store stay the source of truth.

Why the sinks are written behind the job, not in its way: :meth:`ProgressReporter.update`
records the new status in memory and returns; one background task writes
``status.json`` (in a thread, with its fsync) and sends the scheduler its
reports, in order, one at a time.  A round then never waits for a disk flush
or a scheduler round trip, which on a small model is most of what a round
costs.  Updates that arrive while a write is under way are folded into the
next write (the file always ends up with the latest status), reports are
never dropped nor reordered, and :meth:`ProgressReporter.close` delivers
everything still pending, so the final state is on disk and with the
scheduler before the process exits.

While the job runs, the sinks are paced: after a write, the next one waits
until :data:`PACE_SECONDS` have passed, and what arrives meanwhile is folded
into it (:class:`PendingReport`: the newest round, every round record and
checkpoint in between).  With short rounds (a few dozen milliseconds on a
small model) that is one file write and one scheduler report for several
rounds instead of one each: on a small host a report per round cost the
scheduler about 5 ms of CPU (a store read and three writes) and the
coordinator about 2 ms, taken from the clients training beside them.  A
change of state (started, finished, failed, stopped) is not paced, and
:meth:`ProgressReporter.flush` and :meth:`ProgressReporter.close` deliver
everything pending at once.

The history grows by one record per round: its records are encoded once
(:mod:`coordinator.growing_json`).  A record reported a second time (with its
evaluation, :mod:`coordinator.piggyback`) replaces nothing in the history: it
is the same record.  The file is flushed to disk (fsync) when the job's state
changes, not for every round: a round's progress is kept by its checkpoint.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from coordinator.growing_json import GrowingListEncoder, encode_object
from coordinator.offload import behind_the_round, run_sized
from libs.files import write_text_atomic
from libs.protos import scheduler_pb2, scheduler_pb2_grpc
from libs.records import CheckpointRecord, CoordinatorStatus, RoundRecord
from libs.wire import Wire

log = logging.getLogger(__name__)


PACE_SECONDS = 0.25


class PendingReport:
    """What the scheduler has not been told yet, folded into one ``ProgressReport``.

    Updates in the same state fold together: the newest state fields win, the newest round record
    goes as ``round_json`` and the other records (earlier rounds, and rounds revised since they were
    reported) as ``revised_rounds_json``, one per round, the newest version of each; checkpoints are
    kept in order, the newest as ``checkpoint_json`` and those before it as
    ``earlier_checkpoints_json``.  Nothing is dropped.
    """

    def __init__(self, state: str) -> None:
        self.state = state
        self.fields: CoordinatorStatus = {}
        self.round_record: RoundRecord | None = None
        self.records: dict[int, RoundRecord] = {}
        self.checkpoints: list[CheckpointRecord] = []

    def fold(self, fields: CoordinatorStatus, round_record: RoundRecord | None,
             revised: Sequence[RoundRecord], checkpoint: CheckpointRecord | None) -> None:
        self.fields.update(fields)
        for record in revised:
            self.records[int(record.get("round", 0))] = record
        if round_record is not None:
            if self.round_record is not None and self.round_record is not round_record:
                self.records[int(self.round_record.get("round", 0))] = self.round_record
            self.round_record = round_record
            self.records.pop(int(round_record.get("round", 0)), None)
        if checkpoint is not None:
            self.checkpoints.append(checkpoint)

    def message(self, job_id: str, token: str) -> scheduler_pb2.ProgressReport:
        fields = self.fields
        checkpoints = [json.dumps(c) for c in self.checkpoints]
        return scheduler_pb2.ProgressReport(
            job_id=job_id, coordinator_token=token, state=self.state, reason=str(fields.get("reason", "")),
            round=int(fields.get("round", 0)), rounds=int(fields.get("rounds", 0)),
            round_json=json.dumps(self.round_record) if self.round_record is not None else "",
            checkpoint_json=checkpoints[-1] if checkpoints else "",
            earlier_checkpoints_json=checkpoints[:-1],
            revised_rounds_json=[json.dumps(self.records[n]) for n in sorted(self.records)],
        )


class ProgressReporter:
    def __init__(self, status_file: Path, *, job_id: str, scheduler: str | None = None,
                 token: str = "", wire: Wire | None = None) -> None:
        self.status_file = status_file
        self.job_id = job_id
        self.status: CoordinatorStatus = {"job_id": job_id, "state": "STARTING", "reason": "", "round": 0,
                                       "rounds": 0, "endpoint": "", "history": [], "checkpoints": []}
        self._token = token
        if scheduler and wire is None:
            raise ValueError("reporting to a scheduler needs the coordinator's wire")
        # Only the scheduler's identity (control/scheduler) may answer; it takes reports of this job only.
        self._channel = wire.channel(scheduler, wire.control("scheduler")) if scheduler and wire else None
        self._stub = scheduler_pb2_grpc.JobControlStub(self._channel) if self._channel else None
        self._lists = {"history": GrowingListEncoder(unsettled=2), "checkpoints": GrowingListEncoder(unsettled=0)}
        self._written_state = ""
        self._reports: collections.deque[PendingReport] = collections.deque()
        self._dirty = False
        self._urgent = asyncio.Event()  # a state change, a flush: write without waiting for the pace
        self._paced_until = 0.0  # the event loop's time before which a RUNNING write waits
        self._writer: asyncio.Task[None] | None = None

    async def update(self, *, round_record: RoundRecord | None = None,
                     checkpoint: CheckpointRecord | None = None, revised: Sequence[RoundRecord] = (),
                     **fields: Any) -> None:
        """Record the new status; the file and the scheduler get it shortly after (see the module docstring).

        ``revised`` are records of earlier rounds (already in the history) that changed since they
        were reported: they go to the scheduler with this report, not in reports of their own.
        """
        # The driver's fields are status.json's (and an algorithm's own status fields, kept as they come).
        self.status.update(cast(CoordinatorStatus,
                                {k: list(v) if isinstance(v, list) else v for k, v in fields.items()}))
        self.status["updated_unix"] = time.time()
        history = self.status["history"]
        if round_record is not None and not any(record is round_record for record in history):
            history.append(round_record)
        if checkpoint is not None:
            self.status["checkpoints"].append(checkpoint)
        self._dirty = True
        state = str(self.status["state"])
        if state != "RUNNING":
            self._urgent.set()
        if self._stub is not None:
            if not self._reports or self._reports[-1].state != state:
                self._reports.append(PendingReport(state))
            status = self.status  # holds these three from the start
            reported: CoordinatorStatus = {"reason": status["reason"], "round": status["round"],
                                           "rounds": status["rounds"]}
            self._reports[-1].fold(reported, round_record, revised, checkpoint)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_behind(), name="progress-writer")

    async def _write_behind(self) -> None:
        await behind_the_round()  # updates arriving meanwhile are folded into this write
        loop = asyncio.get_running_loop()
        while self._dirty or self._reports:
            if not self._urgent.is_set() and (pause := self._paced_until - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):  # until the pace allows, or something urgent
                    await asyncio.wait_for(self._urgent.wait(), pause)
            self._urgent.clear()
            self._paced_until = loop.time() + PACE_SECONDS
            if self._dirty:
                self._dirty = False
                text = encode_object(self.status, self._lists)
                # Flushed to disk when the state changed; a round's progress is in its checkpoint.
                state = str(self.status["state"])
                durable = state != self._written_state or state != "RUNNING"
                self._written_state = state
                try:
                    # Without its fsync a small file is written faster than a thread is handed the job.
                    size = len(text) if not durable else sys.maxsize
                    await run_sized(size, write_text_atomic, self.status_file, text, durable=durable)
                except OSError as exc:
                    log.error("could not write %s: %s", self.status_file, exc)
            batches, self._reports = self._reports, collections.deque()  # what comes meanwhile waits
            for batch in batches:
                await self._send(batch.message(self.job_id, self._token))

    async def _send(self, report: scheduler_pb2.ProgressReport) -> None:
        assert self._stub is not None
        try:
            await self._stub.ReportProgress(report, timeout=5)
        except Exception as exc:  # best effort: see the module docstring
            log.warning("could not report progress to the scheduler: %s", exc)

    async def flush(self) -> None:
        """Wait until everything updated so far is written and reported."""
        self._urgent.set()
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def close(self) -> None:
        await self.flush()
        if self._channel is not None:
            await self._channel.close()
