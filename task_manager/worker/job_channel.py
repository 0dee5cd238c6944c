"""The job executor's channel: the messages between a job executor and its task manager.

A job executor (:mod:`.job_executor_loop`) is launched with a :class:`ChannelAddress` (an
abstract-namespace Unix socket of the task manager and a one-connection token), connects, and then
the two ends exchange JSON lines (docs/contracts.md)::

    executor -> manager   {"hello": <token>, "pid": <pid>}        once, first     Hello
    manager -> executor   {"run": "<task dir>"}                   one task        RunTask
    executor -> manager   {"finished": "<task dir>", "code": <n>} its exit code   Finished
    manager -> executor   {"stop": true}                          leave (so does EOF)  Stop

Both ends use these classes: the task manager (:mod:`task_manager.job_executors`) writes
``RunTask``/``Stop`` and reads with :func:`decode_for_manager`; the executor writes
``Hello``/``Finished`` and reads with :func:`decode_for_executor`.  A line that is none of the
direction's messages is a :class:`~.lines.MalformedMessage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from task_manager.worker.lines import Fields, MalformedMessage, decode, encode

CHANNEL = "job executor channel"
MAX_LINE = 64 * 1024  # longer than any message: a task directory is a path


@dataclass(frozen=True, slots=True)
class ChannelAddress:
    """Where a job executor connects, and the token that says which executor it is."""

    address: str
    token: str

    def to_fields(self) -> dict[str, str]:
        return {"address": self.address, "token": self.token}

    @classmethod
    def from_fields(cls, fields: Fields) -> ChannelAddress:
        return cls(address=fields.text("address"), token=fields.text("token"))


@dataclass(frozen=True, slots=True)
class Hello:
    """The executor's first line: the token it was launched with, and its pid."""

    token: str
    pid: int

    def to_line(self) -> bytes:
        return encode({"hello": self.token, "pid": self.pid})

    @classmethod
    def from_fields(cls, fields: Fields) -> Hello:
        return cls(token=fields.text("hello"), pid=fields.integer("pid"))


@dataclass(frozen=True, slots=True)
class Finished:
    """A task the executor ran has ended with ``code`` (its exit code, 0-255)."""

    task_dir: str
    code: int

    def to_line(self) -> bytes:
        return encode({"finished": self.task_dir, "code": self.code})

    @classmethod
    def from_fields(cls, fields: Fields) -> Finished:
        return cls(task_dir=fields.text("finished"), code=fields.integer("code"))


@dataclass(frozen=True, slots=True)
class RunTask:
    """Run the task in ``task_dir`` (absolute) once the one running, if any, has finished."""

    task_dir: str

    def to_line(self) -> bytes:
        return encode({"run": self.task_dir})

    @classmethod
    def from_fields(cls, fields: Fields) -> RunTask:
        return cls(task_dir=fields.text("run"))


@dataclass(frozen=True, slots=True)
class Stop:
    """Leave: the job is over on this host, or its executor makes room."""

    LINE: ClassVar[bytes] = encode({"stop": True})

    def to_line(self) -> bytes:
        return self.LINE

    @classmethod
    def from_fields(cls, fields: Fields) -> Stop:
        if fields.values["stop"] is not True:
            raise fields.malformed("has a 'stop' that is not true")
        return cls()


ForManager = Hello | Finished
ForExecutor = RunTask | Stop


def decode_for_manager(line: bytes | str) -> ForManager:
    """A line the executor wrote; :class:`MalformedMessage` if it is neither ``hello`` nor ``finished``."""
    fields = decode(line, CHANNEL)
    if fields.has("finished"):
        return Finished.from_fields(fields.named("finished"))
    if fields.has("hello"):
        return Hello.from_fields(fields.named("hello"))
    raise fields.malformed("is neither 'hello' nor 'finished'")


def decode_for_executor(line: bytes | str) -> ForExecutor:
    """A line the task manager wrote; :class:`MalformedMessage` if it is neither ``run`` nor ``stop``."""
    fields = decode(line, CHANNEL)
    if fields.has("run"):
        return RunTask.from_fields(fields.named("run"))
    if fields.has("stop"):
        return Stop.from_fields(fields.named("stop"))
    raise fields.malformed("is neither 'run' nor 'stop'")


__all__ = [
    "CHANNEL",
    "MAX_LINE",
    "ChannelAddress",
    "Finished",
    "ForExecutor",
    "ForManager",
    "Hello",
    "MalformedMessage",
    "RunTask",
    "Stop",
    "decode_for_executor",
    "decode_for_manager",
]
