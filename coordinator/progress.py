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

The history grows by one record per round: its records are encoded once
(:mod:`coordinator.growing_json`).  A record reported a second time (with its
evaluation, :mod:`coordinator.piggyback`) replaces nothing in the history: it
is the same record.  The file is flushed to disk (fsync) when the job's state
changes, not for every round: a round's progress is kept by its checkpoint.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from coordinator.growing_json import GrowingListEncoder, encode_object
from coordinator.offload import behind_the_round, run_sized
from libs.protos import scheduler_pb2, scheduler_pb2_grpc
from libs.rpc import open_channel

log = logging.getLogger(__name__)


def write_text_atomic(path: Path, text: str, *, durable: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


class ProgressReporter:
    def __init__(self, status_file: Path, *, job_id: str, scheduler: str | None = None,
                 token: str = "") -> None:
        self.status_file = status_file
        self.job_id = job_id
        self.status: dict[str, Any] = {"job_id": job_id, "state": "STARTING", "reason": "", "round": 0,
                                       "rounds": 0, "endpoint": "", "history": [], "checkpoints": []}
        self._token = token
        self._channel = open_channel(scheduler) if scheduler else None
        self._stub = scheduler_pb2_grpc.JobControlStub(self._channel) if self._channel else None
        self._lists = {"history": GrowingListEncoder(unsettled=2), "checkpoints": GrowingListEncoder(unsettled=0)}
        self._written_state = ""
        self._reports: collections.deque[scheduler_pb2.ProgressReport] = collections.deque()
        self._dirty = False
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def update(self, *, round_record: dict[str, Any] | None = None,
                     checkpoint: dict[str, Any] | None = None, revised: Sequence[Mapping[str, Any]] = (),
                     **fields: Any) -> None:
        """Record the new status; the file and the scheduler get it shortly after (see the module docstring).

        ``revised`` are records of earlier rounds (already in the history) that changed since they
        were reported: they go to the scheduler with this report, not in reports of their own.
        """
        self.status.update({k: list(v) if isinstance(v, list) else v for k, v in fields.items()})
        self.status["updated_unix"] = time.time()
        history = self.status["history"]
        if round_record is not None and not any(record is round_record for record in history):
            history.append(round_record)
        if checkpoint is not None:
            self.status["checkpoints"].append(checkpoint)
        self._dirty = True
        if self._stub is not None:
            self._reports.append(scheduler_pb2.ProgressReport(
                job_id=self.job_id, coordinator_token=self._token, state=str(self.status["state"]),
                reason=str(self.status.get("reason", "")), round=int(self.status.get("round", 0)),
                rounds=int(self.status.get("rounds", 0)),
                round_json=json.dumps(round_record) if round_record else "",
                checkpoint_json=json.dumps(checkpoint) if checkpoint else "",
                revised_rounds_json=[json.dumps(record) for record in revised],
            ))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_behind(), name="progress-writer")
        self._wake.set()

    async def _write_behind(self) -> None:
        await behind_the_round()  # updates arriving meanwhile are folded into this write
        while self._dirty or self._reports:
            self._wake.clear()
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
            while self._reports:
                await self._send(self._reports.popleft())

    async def _send(self, report: scheduler_pb2.ProgressReport) -> None:
        assert self._stub is not None
        try:
            await self._stub.ReportProgress(report, timeout=5)
        except Exception as exc:  # best effort: see the module docstring
            log.warning("could not report progress to the scheduler: %s", exc)

    async def flush(self) -> None:
        """Wait until everything updated so far is written and reported."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def close(self) -> None:
        await self.flush()
        if self._channel is not None:
            await self._channel.close()
