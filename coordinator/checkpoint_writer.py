"""Checkpoints written behind the rounds, not in their way.

A checkpoint every round (``checkpointEvery: 1``, the default) is an object
written and checked on disk plus a record in the store, each with its fsync:
milliseconds that the next round used to wait for.  :class:`CheckpointWriter`
takes the checkpoint's content at once (:func:`~coordinator.checkpoints.pack`
encodes the weights, the optimizer state and the history into one payload,
so later rounds cannot change it) and stores it in the background, one after
the other, in round order; each one is reported (``on_saved``) once it is
stored and verified, which is when it becomes visible, as before.

What a crash costs: the checkpoint being written when the coordinator dies
is lost, so a resumed job may run its last round again; it still runs exactly
its ``rounds`` rounds.  A checkpoint that fails to store fails the job at the
next checkpoint or at :meth:`CheckpointWriter.drain`, which the driver calls
before the job's last checkpoint and on every way out.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

from coordinator.checkpoints import CheckpointStore, ServerState, pack
from coordinator.growing_json import GrowingListEncoder
from coordinator.model_state import WeightMap
from coordinator.offload import behind_the_round
from libs.records import CheckpointRecord, RoundRecord


class CheckpointWriter:
    def __init__(self, store: CheckpointStore, on_saved: Callable[[CheckpointRecord], Awaitable[None]]) -> None:
        self._store = store
        self._on_saved = on_saved
        self._pending: collections.deque[tuple[int, bytes]] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._history = GrowingListEncoder(unsettled=2)  # each record encoded once (coordinator.growing_json)

    def submit(self, round_number: int, weights: WeightMap, optimizer_state: ServerState,
               history: list[RoundRecord]) -> None:
        """Snapshot the checkpoint (its ``extra`` holds the job's history) now; store and report it later."""
        self._raise_failure()
        extra_json = '{"history": ' + self._history.encode(history) + "}"
        payload = pack(round_number, weights, optimizer_state, {}, extra_json=extra_json)
        self._pending.append((round_number, payload))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write(), name="checkpoint-writer")

    async def drain(self) -> None:
        """Wait until every submitted checkpoint is stored and reported; raise if one failed."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
        self._raise_failure()

    async def _write(self) -> None:
        await behind_the_round()
        while self._pending:
            round_number, payload = self._pending.popleft()
            try:
                record = await self._store.save_packed(round_number, payload)
                await self._on_saved(record)
            except Exception as exc:  # surfaced by the next submit() or drain()
                self._failure = exc
                self._pending.clear()
                return

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
