"""How the selector's in-memory registry reaches the store, in order, some of it behind the caller.

The :class:`~client_selector.selector.Selector` changes its records in memory
and has them written here.  Two kinds of write:

- **now**, under :attr:`RecordWriter.lock` (registrations, losses, expiry,
  close): the caller awaits the write, and the lock keeps writes of the same
  client in the order their changes were made;
- **later** (:meth:`RecordWriter.save_later`: selections and releases): a job
  selects and releases its clients every round, and three store commits with
  their fsyncs inside each call were most of a small model's round.  The
  client is marked dirty, and one background task writes each dirty client's
  *current* record, under the same lock, after ``PERSIST_DELAY_SECONDS``, so
  a client selected and released several times meanwhile is written once.
  A failed write is logged: the record stands in memory and is written by
  the next change or at close.

Kept apart from the selector because it is the one place that knows about
ordering and batching of writes; the selector only says which client changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from client_selector.registry import ClientId, ClientRecord
from client_selector.registry_store import RegistryStore

log = logging.getLogger(__name__)

PERSIST_DELAY_SECONDS = 0.25


class RecordWriter:
    """Writes client records to the store now (under :attr:`lock`) or behind the caller."""

    def __init__(self, store: RegistryStore, current: Callable[[ClientId], ClientRecord | None]) -> None:
        self._store = store
        self._current = current  # the client's record in memory now; None once it expired
        self.lock = asyncio.Lock()
        self._dirty: dict[ClientId, None] = {}  # clients whose record changed since it was written
        self._persister: asyncio.Task[None] | None = None
        self._flush_now = asyncio.Event()

    async def save(self, record: ClientRecord) -> None:
        """Write ``record`` now; the caller holds :attr:`lock`."""
        await self._store.save(record)

    async def delete(self, client_id: ClientId) -> None:
        """Remove a client from the store now (the caller holds :attr:`lock`); never written back."""
        self._dirty.pop(client_id, None)
        await self._store.delete(client_id)

    def save_later(self, client_ids: Iterable[ClientId]) -> None:
        """Have the clients' current records written behind the caller."""
        for client_id in client_ids:
            self._dirty[client_id] = None
        if self._dirty and (self._persister is None or self._persister.done()):
            self._persister = asyncio.create_task(self._persist(), name="selector-persister")

    async def flush(self) -> None:
        """Write what is dirty without the delay and wait for it (at close)."""
        self._flush_now.set()
        if self._persister is not None:
            await asyncio.gather(self._persister, return_exceptions=True)

    async def _persist(self) -> None:
        # Gather a moment's changes first: a job selects and releases the same clients every round.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flush_now.wait(), PERSIST_DELAY_SECONDS)
        while self._dirty:
            client_id = next(iter(self._dirty))
            del self._dirty[client_id]
            async with self.lock:
                record = self._current(client_id)
                if record is None:
                    continue
                try:
                    await self._store.save(record)
                except Exception as exc:  # in memory it stands; persisted by the next change or close
                    log.warning("could not persist the reservations of client %s: %s", client_id, exc)
