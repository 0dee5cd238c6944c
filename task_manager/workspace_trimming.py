"""Keeping the workspace under its quota, in a thread, no more often than every few seconds.

A pass walks every task folder, and a job that sends a task every few hundred
milliseconds would otherwise have this host walk its whole workspace after
every round: passes are at least ``CLEANUP_INTERVAL_SECONDS`` apart, and a
request while one runs makes it run once more after.  Folders of active tasks
are never deleted (``protected``, read by the cleanup thread).
"""

from __future__ import annotations

import asyncio
import time

from task_manager.workspace import Workspace

CLEANUP_INTERVAL_SECONDS = 5.0


class WorkspaceTrimmer:
    def __init__(self, workspace: Workspace, quota_bytes: int) -> None:
        self._workspace = workspace
        self._quota = quota_bytes
        self.protected: set[str] = set()  # folder names of active tasks
        self._pass: asyncio.Task[list[str]] | None = None
        self._again = False
        self._last = float("-inf")
        self._running = False
        self.closing = False  # set when the daemon stops: a pass asked for now runs without its pause

    def schedule(self) -> None:
        if self._pass is not None and not self._pass.done():
            self._again = True
            return
        self._pass = asyncio.create_task(self._trim())

    async def close(self) -> None:
        """Finish a pass that is walking the workspace; one waiting out its interval is dropped."""
        self.closing = True
        if self._pass is not None:
            if not self._running:
                self._pass.cancel()
            await asyncio.gather(self._pass, return_exceptions=True)

    async def _trim(self) -> list[str]:
        deleted: list[str] = []
        while True:
            pause = self._last + CLEANUP_INTERVAL_SECONDS - time.monotonic()
            if pause > 0 and not self.closing:
                await asyncio.sleep(pause)
            self._last = time.monotonic()
            self._again = False
            self._running = True
            try:
                deleted += await asyncio.to_thread(self._workspace.cleanup, self._quota, self.protected.__contains__)
            finally:
                self._running = False
            if not self._again:
                return deleted
