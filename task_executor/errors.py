"""Errors of the task executor and of the ``nsfl`` SDK.

They subclass the codes of :mod:`libs.errors`, so the runner can turn any of
them into an exit code and a ``result.json`` reason through the one
catalogue, and a task manager reading the reason sees the same code names as
everywhere else.

:class:`SdkError` is what a user script sees when it calls the SDK wrongly
(an unknown dataset, a bad metric, ``commit_weights`` before
``load_weights``): the message says what is wrong *and* what to do, since a
data scientist reads it in ``executor.log`` without the platform's source at
hand.  :class:`UnknownDataset` is also a :class:`KeyError`, so code written
as ``except KeyError`` around a dataset lookup behaves as it would with a dict.
"""

from __future__ import annotations

from libs.errors import NotFound, TaskFailed, ValidationFailed
from libs.tasks.spec import InvalidTask

__all__ = ["InvalidTask", "NoActiveTask", "ScriptFailed", "SdkError", "TaskWithdrawn", "UnknownDataset"]


class SdkError(ValidationFailed):
    """A user script called the ``nsfl`` SDK in a way that cannot work."""


class UnknownDataset(NotFound, KeyError):
    """``nsfl.get_dataset_path`` was asked for a dataset the task does not grant."""


class NoActiveTask(SdkError):
    """An SDK call outside a task (the runner activates one around the user code)."""


class TaskWithdrawn(Exception):
    """A task offered ahead whose round did not come (``AwaitModel`` said so): it ends without an
    upload and without failing (the coordinator withdrew it, nobody waits for it)."""


class ScriptFailed(TaskFailed):
    """The user code raised, exited non-zero, or finished without its commits."""
