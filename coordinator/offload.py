"""Running model arithmetic on the event loop or in a thread, by size.

Folding an update into the running sum, the server step and the broadcast
are numpy work proportional to the model's size.  For a large model they
belong in a thread, or the event loop (serving every download and upload of
the round) would stall for their duration.  For a small one the thread hop
itself (waking a worker, handing the GIL back and forth, waking the loop)
costs more than the work, several times over on a busy host, and it sits
on the path between one round and the next.  So: inline up to
:data:`INLINE_BYTES`, in a thread above.

Work behind the rounds (a round's checkpoint and progress reports) waits
:data:`BEHIND_SECONDS` before it starts (:func:`behind_the_round`): a round
ends and the next one is dispatched within a few milliseconds (select, offer,
clients start), and on a small host a store write or a scheduler call in that
window competes with it for the CPU.  Started a moment later, the same work
runs while the clients train and the coordinator has nothing else to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

INLINE_BYTES = 1 << 20
BEHIND_SECONDS = 0.02

P = ParamSpec("P")
R = TypeVar("R")


async def run_sized(nbytes: int, function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``function(*args, **kwargs)``, here when ``nbytes`` is small, else in a worker thread."""
    if nbytes <= INLINE_BYTES:
        return function(*args, **kwargs)
    return await asyncio.to_thread(function, *args, **kwargs)


async def behind_the_round() -> None:
    """Let the next round's dispatch go first (see the module docstring)."""
    await asyncio.sleep(BEHIND_SECONDS)
