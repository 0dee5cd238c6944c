"""The warm worker's channel: how the task manager starts it, what it asks of it, what it answers.

Everything the two ends of a warm worker (:mod:`.warm_worker`) and its task manager
(:mod:`task_manager.launcher`) must agree on is here, once:

* the command line, :class:`WorkerCommand` (the task manager writes it, the worker parses it; the
  cold path runs one task with ``--once``);
* the environment a child reads: :data:`NICE_VARIABLE` (:data:`MAX_NICE` at most) and the log
  file its output goes to, :data:`LOG_FILE` in the task's folder;
* the JSON lines on the worker's stdin, one :class:`LaunchRequest` per fork (with a
  :class:`~.job_channel.ChannelAddress` for a job executor), and on its stdout, the answers:

  ======================================================================  ============
  ``{"event": "ready", "pid", "runtime", "preload_seconds"}``             :class:`Ready`, once
  ``{"event": "started", "launch", "task_dir", "pid"}``                   :class:`Started`
  ``{"event": "failed", "launch", "task_dir", "error"}``                  :class:`ForkFailed`
  ``{"event": "exited", "launch", "task_dir", "pid", "exit_code" | "signal"}``  :class:`Exited`
  ======================================================================  ============

Each answer names its request's ``launch`` number, which the task manager picked: one folder may
have two processes at once (a job's old executor and its next, see :mod:`task_manager.launcher`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from task_manager.worker.confinement_rules import Confinement
from task_manager.worker.job_channel import ChannelAddress
from task_manager.worker.lines import Fields, MalformedMessage, decode, encode

CHANNEL = "warm worker channel"
WORKER_MODULE = "task_manager.worker.warm_worker"
LOG_FILE = "executor.log"  # in the task's folder (a job executor's own: in its job's folder)
# How many nice levels below the task manager executors run (TaskManagerSettings.executor_nice).
NICE_VARIABLE = "NSFL_NICE_INCREMENT"
MAX_NICE = 19


@dataclass(frozen=True, slots=True)
class WorkerCommand:
    """``python -m task_manager.worker.warm_worker ...``: a warm worker, or (``once``) one cold task."""

    entry: str  # "module:function" called with the task directory
    parent_pid: int | None = None  # exit at once if this is no longer the parent
    runtime: str = ""  # the runtime this worker serves (for logs)
    preload: tuple[str, ...] = ()  # modules to import before forking
    warm_up: str = ""  # "module:function" called with the runtime after the preloads (imports only)
    once: Path | None = None  # run this one task in the worker's own process and exit
    confine: Confinement | None = None  # with ``once``: confine the task so

    def argv(self) -> list[str]:
        """The whole command line, interpreter first."""
        command = [sys.executable, "-m", WORKER_MODULE, "--entry", self.entry]
        if self.runtime:
            command += ["--runtime", self.runtime]
        if self.parent_pid is not None:
            command += ["--parent-pid", str(self.parent_pid)]
        if self.warm_up:
            command += ["--warm-up", self.warm_up]
        if self.once is not None:
            command += ["--once", str(self.once)]
        if self.confine is not None:
            command += ["--confine", self.confine.to_line().decode().strip()]
        if self.preload:
            command += ["--preload", *self.preload]
        return command

    @classmethod
    def parse(cls, argv: Sequence[str] | None = None) -> WorkerCommand:
        """The worker's arguments (``sys.argv[1:]`` by default); argparse's usage error if they are wrong."""
        parser = argparse.ArgumentParser(
            prog=f"python -m {WORKER_MODULE}",
            description="The warm worker: a fork server that has imported the framework, one per runtime.",
        )
        parser.add_argument("--entry", required=True, help="module:function called with the task directory")
        parser.add_argument("--runtime", default="", help="the runtime this worker serves (for logs)")
        parser.add_argument("--preload", nargs="*", default=[], help="modules to import before forking")
        parser.add_argument(
            "--warm-up", default="", help="module:function called with the runtime after the preloads"
        )
        parser.add_argument("--parent-pid", type=int, help="exit at once if this is no longer the parent")
        parser.add_argument("--once", type=Path, metavar="TASK_DIR", help="run one task in this process")
        parser.add_argument(
            "--confine", default="", help="with --once: the task's confinement (a JSON object)"
        )
        args = parser.parse_args(argv)
        return cls(
            entry=args.entry,
            parent_pid=args.parent_pid,
            runtime=args.runtime,
            preload=tuple(args.preload),
            warm_up=args.warm_up,
            once=args.once,
            confine=Confinement.from_line(args.confine) if args.confine else None,
        )


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """Fork an executor for ``task_dir``; with ``serve``, a job executor that connects there; with
    ``confine``, confined so before its body runs."""

    launch: int
    task_dir: str
    serve: ChannelAddress | None = None
    confine: Confinement | None = None

    def to_line(self) -> bytes:
        fields: dict[str, object] = {"task_dir": self.task_dir, "launch": self.launch}
        if self.serve is not None:
            fields["serve"] = self.serve.to_fields()
        if self.confine is not None:
            fields["confine"] = self.confine.to_fields()
        return encode(fields)

    @classmethod
    def from_line(cls, line: bytes | str) -> LaunchRequest:
        fields = decode(line, CHANNEL).named("launch request")
        serve = fields.optional_object("serve")
        confine = fields.optional_object("confine")
        return cls(
            launch=fields.integer("launch"),
            task_dir=fields.text("task_dir"),
            serve=None if serve is None else ChannelAddress.from_fields(serve),
            confine=None if confine is None else Confinement.from_fields(confine),
        )


@dataclass(frozen=True, slots=True)
class Ready:
    """The worker has imported what it preloads and forks from now on."""

    pid: int
    runtime: str
    preload_seconds: float

    def to_line(self) -> bytes:
        return encode(
            {
                "event": "ready",
                "pid": self.pid,
                "runtime": self.runtime,
                "preload_seconds": self.preload_seconds,
            }
        )

    @classmethod
    def from_fields(cls, fields: Fields) -> Ready:
        return cls(
            pid=fields.integer("pid"),
            runtime=fields.text("runtime"),
            preload_seconds=fields.number("preload_seconds"),
        )


@dataclass(frozen=True, slots=True)
class Started:
    """Launch ``launch`` is forked: the child's pid."""

    launch: int
    task_dir: str
    pid: int

    def to_line(self) -> bytes:
        return encode({"event": "started", "launch": self.launch, "task_dir": self.task_dir, "pid": self.pid})

    @classmethod
    def from_fields(cls, fields: Fields) -> Started:
        return cls(
            launch=fields.integer("launch"), task_dir=fields.text("task_dir"), pid=fields.integer("pid")
        )


@dataclass(frozen=True, slots=True)
class ForkFailed:
    """Launch ``launch`` could not be forked: why."""

    launch: int
    task_dir: str
    error: str

    def to_line(self) -> bytes:
        return encode(
            {"event": "failed", "launch": self.launch, "task_dir": self.task_dir, "error": self.error}
        )

    @classmethod
    def from_fields(cls, fields: Fields) -> ForkFailed:
        return cls(
            launch=fields.integer("launch"), task_dir=fields.text("task_dir"), error=fields.text("error")
        )


@dataclass(frozen=True, slots=True)
class Exited:
    """Launch ``launch``'s child has ended: with ``exit_code``, or killed by ``signal`` (exactly one)."""

    launch: int
    task_dir: str
    pid: int
    exit_code: int | None = None
    signal: int | None = None

    def to_line(self) -> bytes:
        end = {"signal": self.signal} if self.signal is not None else {"exit_code": self.exit_code}
        return encode(
            {"event": "exited", "launch": self.launch, "task_dir": self.task_dir, "pid": self.pid, **end}
        )

    @classmethod
    def from_fields(cls, fields: Fields) -> Exited:
        exit_code, signal = fields.optional_integer("exit_code"), fields.optional_integer("signal")
        if (exit_code is None) == (signal is None):
            raise fields.malformed("has not exactly one of 'exit_code' and 'signal'")
        return cls(
            launch=fields.integer("launch"),
            task_dir=fields.text("task_dir"),
            pid=fields.integer("pid"),
            exit_code=exit_code,
            signal=signal,
        )


WorkerAnswer = Ready | Started | ForkFailed | Exited
ANSWERS: dict[str, type[WorkerAnswer]] = {
    "ready": Ready,
    "started": Started,
    "failed": ForkFailed,
    "exited": Exited,
}


def decode_answer(line: bytes | str) -> WorkerAnswer:
    """A line the worker wrote; :class:`MalformedMessage` if it is none of its answers."""
    fields = decode(line, CHANNEL)
    event = fields.values.get("event")
    answer = ANSWERS.get(event) if isinstance(event, str) else None
    if answer is None:
        raise fields.malformed(f"has an unknown 'event' {event!r}")
    return answer.from_fields(fields.named(f"{event!r} answer"))


__all__ = [
    "ANSWERS",
    "CHANNEL",
    "LOG_FILE",
    "MAX_NICE",
    "NICE_VARIABLE",
    "WORKER_MODULE",
    "Exited",
    "ForkFailed",
    "LaunchRequest",
    "MalformedMessage",
    "Ready",
    "Started",
    "WorkerAnswer",
    "WorkerCommand",
    "decode_answer",
]
