"""Open task-manager streams and the offers waiting for their answers.

A task manager has no inbound port, so everything the selector sends it
(task offers, cancels) goes down the one Connect stream it opened.  A
:class:`Session` is that stream seen from the selector's side: an outbound
queue that the stream's handler drains, and a close signal.  The queue holds
whatever the gRPC layer wants to write; this module never looks inside, so
it stays free of protobuf.

:class:`PendingOffers` routes a task manager's answer (a ``TaskStatus`` with
the offer's ``task_id``) to the ``OfferTask`` call waiting for it.  An
answer only counts when it arrives on the session the offer went down: a
different client cannot answer for another, and a stale stream cannot
answer for its replacement.  When a session closes, its waiting offers end
at once with ``accepted=False`` instead of running into their timeout.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from client_selector.registry import ClientId
from libs.errors import AlreadyExists, NsflError

MAX_OUTBOUND = 1000

_CLOSED = object()


@dataclass(frozen=True)
class OfferAnswer:
    accepted: bool
    reason: str


class Session:
    """One open Connect stream of a task manager."""

    def __init__(self, client_id: ClientId, max_outbound: int = MAX_OUTBOUND) -> None:
        self.client_id = client_id
        self.closed = False
        # Why the stream was closed from the selector's side (None: the peer ended it).
        self.close_error: NsflError | None = None
        self._max_outbound = max_outbound
        self._queue: asyncio.Queue[object] = asyncio.Queue()

    def push(self, item: object) -> str | None:
        """Queue ``item`` for the task manager; the reason it cannot be queued, or None."""
        if self.closed:
            return f"client {self.client_id} is not connected"
        if self._queue.qsize() >= self._max_outbound:
            return (
                f"client {self.client_id} has {self._max_outbound} messages waiting; it is not reading them"
            )
        self._queue.put_nowait(item)
        return None

    def close(self, error: NsflError | None = None) -> None:
        """End the stream (idempotent); ``error`` is what the task manager will be told."""
        if self.closed:
            return
        self.closed = True
        self.close_error = error
        self._queue.put_nowait(_CLOSED)

    async def next_outbound(self) -> object | None:
        """The next item to write, or None once the session is closed."""
        if self.closed:
            return None
        item = await self._queue.get()
        return None if item is _CLOSED or self.closed else item


class PendingOffers:
    """Offers pushed to task managers and waiting for an answer, by task id."""

    def __init__(self) -> None:
        self._waiting: dict[str, tuple[Session, asyncio.Future[OfferAnswer]]] = {}

    def open(self, task_id: str, session: Session) -> asyncio.Future[OfferAnswer]:
        if task_id in self._waiting:
            raise AlreadyExists(f"task {task_id} is already offered and waiting for its answer")
        future: asyncio.Future[OfferAnswer] = asyncio.get_running_loop().create_future()
        self._waiting[task_id] = (session, future)
        return future

    def discard(self, task_id: str) -> None:
        self._waiting.pop(task_id, None)

    def answer(self, session: Session, task_id: str, answer: OfferAnswer) -> bool:
        """Deliver an answer arriving on ``session``; False if no offer there waits for it."""
        waiting = self._waiting.get(task_id)
        if waiting is None or waiting[0] is not session or waiting[1].done():
            return False
        del self._waiting[task_id]
        waiting[1].set_result(answer)
        return True

    def fail_session(self, session: Session, reason: str) -> None:
        """End every offer waiting on ``session`` with ``accepted=False``."""
        for task_id, (owner, future) in list(self._waiting.items()):
            if owner is session:
                del self._waiting[task_id]
                if not future.done():
                    future.set_result(OfferAnswer(False, reason))
