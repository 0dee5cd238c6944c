"""The round in progress, as the pieces of the round core share it.

The round core is three pieces by responsibility, each in its own module:
:mod:`coordinator.dispatch` selects the round's clients and offers them their
tasks (and prepares the next round ahead), :mod:`coordinator.uploads` is the
gate every task's calls go through (its ticket, the model, its upload or its
failure), and :mod:`coordinator.round_runner` runs a round from its start to
its close.  What they share is here, in one object they are each given: the
job's plan (its task parameters change from round to round), the round's
book, model and update sink, the live tickets by token, and the event that
wakes the runner when a round's book changed.

No I/O and no clock: values in, values out (checked by an import contract).
"""

from __future__ import annotations

import asyncio

from coordinator.aggregating import UpdateSink
from coordinator.job_plan import JobPlan
from coordinator.model_state import GlobalModel
from coordinator.rounds import RoundBook, Ticket


class CurrentRound:
    """The round in progress and the tasks it knows (this round's, and those offered ahead)."""

    def __init__(self, plan: JobPlan) -> None:
        self.plan = plan
        self.book: RoundBook | None = None
        self.model: GlobalModel | None = None
        self.sink: UpdateSink | None = None  # where a train round's accepted updates are folded
        self.evaluate_first = False  # the round's tasks evaluate the model before training on it
        self.tickets: dict[str, Ticket] = {}  # by token: every task that may still call
        self.changed = asyncio.Event()  # the book changed: the runner checks whether the round closes
        self.fold_lock = asyncio.Lock()  # an update is folded whole before the round may close

    def ticket_for(self, token: str) -> Ticket | None:
        """The live task ``token`` was issued for (this round's, or one offered ahead), if any."""
        return self.tickets.get(token)

    def model_for(self, sha256: str) -> GlobalModel | None:
        """The round's model, if it is the one with this SHA-256."""
        model = self.model
        return model if model is not None and model.sha256 == sha256 else None

    def issue(self, book: RoundBook, client_id: str, attempt: int) -> Ticket:
        """A new task of ``book`` for ``client_id``, known by its token from now on."""
        ticket = book.issue(client_id, attempt)
        self.tickets[ticket.token] = ticket
        return ticket

    def forget(self, book: RoundBook) -> None:
        """``book``'s tasks are over (closed or withdrawn): their tokens no longer open anything."""
        for ticket in book.tickets.values():
            self.tickets.pop(ticket.token, None)
