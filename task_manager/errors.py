"""Errors of the task manager, on the one nsfl error tree (codes from ``libs.errors.CATALOGUE``)."""

from __future__ import annotations

from libs.errors import InvalidState, Unavailable


class WorkspaceInUse(InvalidState):
    """Another task manager holds the workspace's lock."""


class LaunchFailed(Unavailable):
    """No executor process could be started for a task."""
