"""Adapter: telling whoever launched the coordinator how the job is going.

Two sinks, both optional beside the status file: the ``status.json`` in the
coordinator's work directory (written atomically: a reader sees the old or
the new file, never half of one) and the scheduler's
``JobControl.ReportProgress``.  A scheduler that is briefly unreachable must
not stop training, so scheduler reports are best effort with a short deadline;
the status file and the store stay the source of truth.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from libs.protos import scheduler_pb2, scheduler_pb2_grpc
from libs.rpc import open_channel

log = logging.getLogger(__name__)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True, default=str)
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

    async def update(self, *, round_record: dict[str, Any] | None = None,
                     checkpoint: dict[str, Any] | None = None, **fields: Any) -> None:
        self.status.update({k: list(v) if isinstance(v, list) else v for k, v in fields.items()})
        self.status["updated_unix"] = time.time()
        if round_record is not None:
            self.status["history"].append(round_record)
        if checkpoint is not None:
            self.status["checkpoints"].append(checkpoint)
        write_json_atomic(self.status_file, self.status)
        if self._stub is None:
            return
        report = scheduler_pb2.ProgressReport(
            job_id=self.job_id, coordinator_token=self._token, state=str(self.status["state"]),
            reason=str(self.status.get("reason", "")), round=int(self.status.get("round", 0)),
            rounds=int(self.status.get("rounds", 0)),
            round_json=json.dumps(round_record) if round_record else "",
            checkpoint_json=json.dumps(checkpoint) if checkpoint else "",
        )
        try:
            await self._stub.ReportProgress(report, timeout=5)
        except Exception as exc:  # best effort: see the module docstring
            log.warning("could not report progress to the scheduler: %s", exc)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
