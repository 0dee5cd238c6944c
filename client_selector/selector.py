"""The selector's state and the operations on it, free of gRPC.

:class:`Selector` owns the in-memory registry (client id → record), the open
sessions and the waiting offers, and writes records through
:class:`~client_selector.registry_store.RegistryStore`.  The gRPC servicer
parses requests, calls one method here and maps the result back.

Concurrency: everything runs on one event loop.  Each operation changes the
in-memory records synchronously (no ``await`` between reading a record and
writing it back), so concurrent calls cannot interleave inside a change.
Registrations and losses also hold one lock while they persist, so their
writes reach the store in order; two jobs selecting at the same time see each
other's reservations (in memory) and can never over-reserve a client.  If a
write fails, the in-memory change stays and the caller gets the error.

Reservations (selections and releases) are persisted behind the call, not in
it (:class:`~client_selector.record_writer.RecordWriter` batches and orders
the writes): the change is made in memory at once and the store converges to
memory in order.  A reservation lost with a crashed selector is soft state:
it would have expired by itself, and a retry by the same job renews rather
than duplicates it.

Registry hygiene: the sweeper expires clients that stayed away longer than
the retention period (from memory and the store, under the lock, so the
persister never writes an expired record back), and :meth:`Selector.connect`
refuses a new client id from a peer host that already registered
``max_clients_per_source`` of them, before anything is changed or stored.

One selector per store: it keeps the registry in memory and the streams are
bound to its process, so a second replica on the same store would not see
the first one's clients.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from client_selector.record_writer import RecordWriter
from client_selector.registry import (
    ClientId,
    ClientRecord,
    JobId,
    Registration,
    disconnected,
    expires_at,
    is_alive,
    is_expired,
    liveness,
    over_source_cap,
    prune_expired,
    register,
    release,
    reserve,
    reserved_by,
    seen,
)
from client_selector.registry_store import RegistryStore
from client_selector.selection import Requirement, Selection, select_clients
from client_selector.sessions import OfferAnswer, PendingOffers, Session
from libs.errors import AlreadyExists, NsflError, PermissionDenied, Unavailable

log = logging.getLogger(__name__)

DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600.0
DEFAULT_MAX_CLIENTS_PER_SOURCE = 100


@dataclass(frozen=True)
class SelectionRequest:
    job_id: JobId
    round: int
    count: int
    redundancy: float
    requirement: Requirement
    random: bool = False
    untrained_first: bool = False
    reservation_seconds: float = 0.0  # 0: the configured default
    seed: int = 0  # 0: unseeded
    dry_run: bool = False  # answer without reserving (the scheduler's admission check)


@dataclass(frozen=True)
class ClientView:
    """A record with what is derived from it at one instant, for ListClients."""

    record: ClientRecord
    liveness: str
    reserved_by: tuple[JobId, ...]
    expires_at: float  # when the entry is expired if the client stays away (Unix seconds)


class Selector:
    """The registry, the sessions and the relay of offers (see the module doc)."""

    def __init__(
        self,
        store: RegistryStore,
        *,
        heartbeat_timeout: float,
        reservation_seconds: float,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        max_clients_per_source: int = DEFAULT_MAX_CLIENTS_PER_SOURCE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.heartbeat_timeout = heartbeat_timeout
        self._reservation_seconds = reservation_seconds
        self.retention_seconds = retention_seconds
        self.max_clients_per_source = max_clients_per_source
        self._clock = clock
        self._records: dict[ClientId, ClientRecord] = {}
        self._sessions: dict[ClientId, Session] = {}
        self._offers = PendingOffers()
        self._writer = RecordWriter(store, self._records_get)
        self._lock = self._writer.lock
        self._closing = False

    async def load(self) -> int:
        """Read the persisted registry; every loaded client is lost until it registers again."""
        records = await self._store.load_all()
        self._records = {r.client_id: r for r in records}
        return len(records)

    # --- task manager side -------------------------------------------------------------------

    async def connect(self, registration: Registration, source: str = "") -> Session:
        """Register a client on a new stream from peer host ``source``, closing its older stream, if any."""
        client_id = registration.client_id
        async with self._lock:
            if self._closing:
                raise Unavailable("the client selector is shutting down; reconnect later")
            self._check_source_cap(client_id, source)
            old = self._sessions.get(client_id)
            if old is not None:
                log.info(
                    "client %s connected again; closing its older stream",
                    client_id,
                    extra={"client": client_id},
                )
                self._close(
                    old,
                    AlreadyExists(
                        f"client {client_id} connected again on another stream; this one is closed"
                    ),
                )
            session = Session(client_id)
            self._sessions[client_id] = session
            self._records[client_id] = register(
                self._records.get(client_id), registration, self._clock(), source
            )
            try:
                await self._writer.save(self._records[client_id])
            except BaseException:
                self._drop(session)
                raise
        log.info(
            "client %s registered (runtimes %s, %d datasets, %d slots)",
            client_id,
            ",".join(registration.runtimes),
            len(registration.datasets),
            registration.max_parallel_tasks,
            extra={"client": client_id},
        )
        return session

    def _check_source_cap(self, client_id: ClientId, source: str) -> None:
        problem = over_source_cap(self._records.values(), client_id, source, self.max_clients_per_source)
        if problem is not None:
            log.warning("refused client %s: %s", client_id, problem, extra={"client": client_id})
            raise PermissionDenied(problem)

    async def update_registration(self, session: Session, registration: Registration) -> None:
        """A later Register on the same stream: new declarations, same session."""
        if self._sessions.get(session.client_id) is not session:
            return
        async with self._lock:
            self._records[session.client_id] = register(
                self._records[session.client_id], registration, self._clock()
            )
            await self._writer.save(self._records[session.client_id])

    def touch(self, session: Session, running_tasks: int | None = None) -> None:
        """A message arrived on ``session``: the client is seen now."""
        if self._sessions.get(session.client_id) is session and not session.closed:
            self._records[session.client_id] = seen(
                self._records[session.client_id], self._clock(), running_tasks
            )

    def answer(self, session: Session, task_id: str, answer: OfferAnswer) -> bool:
        return self._offers.answer(session, task_id, answer)

    async def disconnect(self, session: Session, why: str) -> None:
        """The stream ended (or was closed): the client is lost unless a newer stream replaced it."""
        self._close(session, None)
        if self._drop(session):
            log.info("client %s lost: %s", session.client_id, why, extra={"client": session.client_id})
            async with self._lock:
                await self._writer.save(self._records[session.client_id])

    async def sweep(self) -> None:
        """Mark clients whose heartbeats stopped as lost and prune expired reservations."""
        now = self._clock()
        for client_id, session in list(self._sessions.items()):
            if not is_alive(self._records[client_id], now, self.heartbeat_timeout):
                self._close(
                    session,
                    Unavailable(
                        f"no message from client {client_id} for {self.heartbeat_timeout:g}s; register again"
                    ),
                )
                await self.disconnect(session, f"no heartbeat for {self.heartbeat_timeout:g}s")
        pruned_ids = []
        for client_id, record in list(self._records.items()):
            pruned = prune_expired(record, now)
            if pruned is not record:
                self._records[client_id] = pruned
                pruned_ids.append(client_id)
        if pruned_ids:
            async with self._lock:
                await self._save_current(c for c in pruned_ids if c in self._records)
        await self._expire(now)

    async def _expire(self, now: float) -> None:
        """Remove clients that stayed away past the retention period, from memory and the store."""
        async with self._lock:
            for client_id, record in list(self._records.items()):
                if client_id in self._sessions or not is_expired(record, now, self.retention_seconds):
                    continue
                del self._records[client_id]
                await self._writer.delete(client_id)
                log.info(
                    "client %s expired: not seen for %gs (client_retention_seconds)",
                    client_id,
                    self.retention_seconds,
                    extra={"client": client_id},
                )

    # --- coordinator side --------------------------------------------------------------------

    async def select(self, request: SelectionRequest) -> Selection:
        """Choose and reserve clients for a job; never waits for clients to appear."""
        seconds = request.reservation_seconds or self._reservation_seconds
        rng = random.Random(request.seed) if request.seed else random.Random()
        # In memory, without an await: atomic on the event loop (see the module docstring).
        now = self._clock()
        selection = select_clients(
            list(self._records.values()),
            request.requirement,
            count=request.count,
            redundancy=request.redundancy,
            random=request.random,
            untrained_first=request.untrained_first,
            job_id=request.job_id,
            rng=rng,
            now=now,
            heartbeat_timeout=self.heartbeat_timeout,
        )
        chosen = [client_id for client_id, _ in selection.chosen]
        if request.dry_run:
            return selection
        for client_id in chosen:
            self._records[client_id] = reserve(
                self._records[client_id], request.job_id, request.round, now, seconds
            )
        self._save_later(chosen)
        log.info(
            "selection for round %d: %s; chosen: %s",
            request.round,
            selection.reason,
            ", ".join(chosen) or "none",
            extra={"job": request.job_id, "round": request.round},
        )
        for client_id, why in selection.chosen:
            log.debug("picked %s: %s", client_id, why, extra={"job": request.job_id, "client": client_id})
        return selection

    async def release(self, job_id: JobId, client_ids: Sequence[ClientId] = ()) -> int:
        """Drop ``job_id``'s reservations on ``client_ids`` (all clients when empty); how many."""
        now = self._clock()
        targets = client_ids or list(self._records)
        released = [
            c
            for c in dict.fromkeys(targets)
            if c in self._records and job_id in reserved_by(self._records[c], now)
        ]
        for client_id in released:
            self._records[client_id] = release(self._records[client_id], job_id)
        self._save_later(released)
        return len(released)

    async def offer(
        self,
        client_id: ClientId,
        task_id: str,
        item: object,
        answer_timeout: float,
        on_timeout: object | None = None,
    ) -> OfferAnswer:
        """Push ``item`` down the client's stream and wait up to ``answer_timeout`` s for its answer.

        ``on_timeout`` is pushed after an unanswered offer (a cancel), so a task
        manager that accepts too late does not run a task nobody waits for.
        """
        session = self._sessions.get(client_id)
        if session is None or session.closed:
            state = "lost (not connected)" if client_id in self._records else "not registered"
            return OfferAnswer(False, f"client {client_id} is {state}")
        future = self._offers.open(task_id, session)
        try:
            problem = session.push(item)
            if problem is not None:
                return OfferAnswer(False, problem)
            try:
                return await asyncio.wait_for(future, timeout=max(0.0, answer_timeout))
            except TimeoutError:
                if on_timeout is not None:
                    session.push(on_timeout)
                return OfferAnswer(
                    False, f"client {client_id} did not answer the offer within {answer_timeout:g}s"
                )
        finally:
            self._offers.discard(task_id)

    def cancel(
        self, client_ids: Sequence[ClientId], make_item: Callable[[ClientId], object]
    ) -> tuple[list[ClientId], list[ClientId]]:
        """Push a cancel to ``client_ids`` (every connected client when empty): (sent, not sent)."""
        targets = list(dict.fromkeys(client_ids)) if client_ids else sorted(self._sessions)
        sent, missed = [], []
        for client_id in targets:
            session = self._sessions.get(client_id)
            if session is not None and session.push(make_item(client_id)) is None:
                sent.append(client_id)
            else:
                missed.append(client_id)
        return sent, missed

    def list_clients(self, include_lost: bool) -> list[ClientView]:
        now = self._clock()
        views = [
            ClientView(
                r,
                liveness(r, now, self.heartbeat_timeout),
                reserved_by(r, now),
                expires_at(r, self.retention_seconds),
            )
            for _, r in sorted(self._records.items())
        ]
        return [v for v in views if include_lost or v.liveness != "lost"]

    def record(self, client_id: ClientId) -> ClientRecord | None:
        return self._records.get(client_id)

    async def close(self) -> None:
        """Close every stream (task managers will reconnect) and persist the last seen times."""
        self._closing = True
        await self._writer.flush()
        for session in list(self._sessions.values()):
            self._close(session, Unavailable("the client selector is shutting down; reconnect later"))
            self._drop(session)
        async with self._lock:
            await self._save_current(list(self._records))

    # --- internals ---------------------------------------------------------------------------

    def _close(self, session: Session, error: NsflError | None) -> None:
        session.close(error)
        self._offers.fail_session(session, f"client {session.client_id} disconnected before answering")

    def _drop(self, session: Session) -> bool:
        """Forget ``session`` if it is still the client's current one; True if it was."""
        self._close(session, None)
        if self._sessions.get(session.client_id) is not session:
            return False
        del self._sessions[session.client_id]
        self._records[session.client_id] = disconnected(self._records[session.client_id])
        return True

    def _records_get(self, client_id: ClientId) -> ClientRecord | None:
        return self._records.get(client_id)

    def _save_later(self, client_ids: Iterable[ClientId]) -> None:
        self._writer.save_later(client_ids)

    async def _save_current(self, client_ids: Iterable[ClientId]) -> None:
        for client_id in client_ids:
            await self._writer.save(self._records[client_id])
