"""A stop request, as the round in progress sees it: the exception that unwinds it, and the wait that notices it.

Why a module of its own: the round runner (between attempts), the dispatch
(between selection retries) and the secure rounds (between stages) all give
up on the same request, and none of them should import another for it (that
was an import loop between the runner and the secure rounds).  The driver
catches :class:`StopRequested`, saves a checkpoint of the last completed
round, and ends the job STOPPED.
"""

from __future__ import annotations

import asyncio


class StopRequested(Exception):
    """The job was asked to stop; the round in progress was abandoned."""


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; whether ``stop`` was set meanwhile (or already)."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
