"""The coordinator's errors: a round that cannot complete, and why.

A :class:`RoundFailed` ends one attempt of a round; the driver's retry
policy (``maxRetries``) then runs the round again, and after the last attempt
the job FAILS with the message.  It never stops the coordinator itself.
"""

from __future__ import annotations

from libs.errors import TaskFailed


class RoundFailed(TaskFailed):
    """One attempt of a round could not be completed (the retry policy applies)."""


class ExtenderFailed(RoundFailed):
    """A job's extender hook raised or returned something unusable.

    The message reads ``extender <hook> failed: <the hook's message>``.
    """

    def __init__(self, hook: str, reason: str) -> None:
        super().__init__(f"extender {hook} failed: {reason}", details={"hook": hook})
        self.hook = hook
