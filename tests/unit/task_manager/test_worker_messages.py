"""The messages of the two local channels: each one survives its line, and a bad line is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from task_manager.worker.job_channel import (
    ChannelAddress,
    Finished,
    ForExecutor,
    ForManager,
    Hello,
    RunTask,
    Stop,
    decode_for_executor,
    decode_for_manager,
)
from task_manager.worker.launch_channel import (
    Exited,
    ForkFailed,
    LaunchRequest,
    MalformedMessage,
    Ready,
    Started,
    WorkerAnswer,
    WorkerCommand,
    decode_answer,
)

ANSWERS: list[WorkerAnswer] = [
    Ready(pid=41, runtime="pytorch", preload_seconds=1.25),
    Started(launch=3, task_dir="/ws/tasks/t", pid=42),
    ForkFailed(launch=4, task_dir="/ws/tasks/t", error="fork failed: [Errno 11] try again"),
    Exited(launch=3, task_dir="/ws/tasks/t", pid=42, exit_code=0),
    Exited(launch=5, task_dir="/ws/jobs/j/executor", pid=43, signal=9),
]


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: type(a).__name__)
def test_every_warm_worker_answer_is_read_back_as_it_was_written(answer: WorkerAnswer) -> None:
    line = answer.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_answer(line) == answer


@pytest.mark.parametrize(
    "request_",
    [
        LaunchRequest(launch=1, task_dir="/ws/tasks/t"),
        LaunchRequest(
            launch=2, task_dir="/ws/jobs/j/executor", serve=ChannelAddress("\0nsfl-tm-1-ab", "tok")
        ),
    ],
    ids=["one-task", "job-executor"],
)
def test_a_launch_request_is_read_back_as_it_was_written(request_: LaunchRequest) -> None:
    assert LaunchRequest.from_line(request_.to_line()) == request_


@pytest.mark.parametrize(
    "message",
    [Hello(token="tok", pid=7), Finished(task_dir="/ws/tasks/t", code=3)],
    ids=["hello", "finished"],
)
def test_what_a_job_executor_says_is_read_back_by_its_manager(message: ForManager) -> None:
    assert decode_for_manager(message.to_line()) == message


@pytest.mark.parametrize("message", [RunTask(task_dir="/ws/tasks/t"), Stop()], ids=["run", "stop"])
def test_what_a_manager_says_is_read_back_by_its_job_executor(message: ForExecutor) -> None:
    assert decode_for_executor(message.to_line()) == message


def test_the_lines_keep_the_documented_shapes() -> None:
    """docs/contracts.md spells the job executor channel; the warm worker's lines are its docstring's."""
    assert json.loads(Hello("tok", 7).to_line()) == {"hello": "tok", "pid": 7}
    assert json.loads(RunTask("/t").to_line()) == {"run": "/t"}
    assert json.loads(Finished("/t", 0).to_line()) == {"finished": "/t", "code": 0}
    assert json.loads(Stop().to_line()) == {"stop": True}
    assert json.loads(Exited(1, "/t", 9, signal=15).to_line()) == {
        "event": "exited",
        "launch": 1,
        "task_dir": "/t",
        "pid": 9,
        "signal": 15,
    }
    request = LaunchRequest(2, "/j", ChannelAddress("a", "t"))
    assert json.loads(request.to_line()) == {
        "task_dir": "/j",
        "launch": 2,
        "serve": {"address": "a", "token": "t"},
    }


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"not json\n", "not JSON"),
        (b"\xff\xfe\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"event": "restarted", "launch": 1}\n', "unknown 'event' 'restarted'"),
        (b'{"launch": 1, "pid": 4}\n', "unknown 'event' None"),
        (b'{"event": "started", "task_dir": "/t", "pid": 4}\n', "'started' answer has no 'launch'"),
        (
            b'{"event": "started", "launch": "1", "task_dir": "/t", "pid": 4}\n',
            "'launch' that is not an integer",
        ),
        (
            b'{"event": "started", "launch": true, "task_dir": "/t", "pid": 4}\n',
            "'launch' that is not an integer",
        ),
        (b'{"event": "ready", "pid": 4, "runtime": "pytorch"}\n', "has no 'preload_seconds'"),
        (b'{"event": "exited", "launch": 1, "task_dir": "/t", "pid": 4}\n', "not exactly one of"),
        (
            b'{"event": "exited", "launch": 1, "task_dir": "/t", "pid": 4, "exit_code": 0, "signal": 9}\n',
            "exactly",
        ),
    ],
)
def test_a_malformed_answer_is_refused_with_what_is_wrong(line: bytes, says: str) -> None:
    with pytest.raises(MalformedMessage, match="warm worker channel") as refused:
        decode_answer(line)
    assert says in refused.value.message


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b'{"launch": 1}\n', "launch request has no 'task_dir'"),
        (b'{"task_dir": "/t"}\n', "launch request has no 'launch'"),
        (b'{"task_dir": 5, "launch": 1}\n', "'task_dir' that is not a string"),
        (b'{"task_dir": "/t", "launch": 1, "serve": "x"}\n', "'serve' that is not an object"),
        (
            b'{"task_dir": "/t", "launch": 1, "serve": {"address": "a"}}\n',
            "launch request's serve has no 'token'",
        ),
    ],
)
def test_a_malformed_launch_request_is_refused_with_what_is_wrong(line: bytes, says: str) -> None:
    with pytest.raises(MalformedMessage) as refused:
        LaunchRequest.from_line(line)
    assert says in refused.value.message


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"", "not JSON"),
        (b'{"hello": "tok"}\n', "hello has no 'pid'"),
        (b'{"finished": "/t", "code": "0"}\n', "'code' that is not an integer"),
        (b'{"run": "/t"}\n', "neither 'hello' nor 'finished'"),
    ],
)
def test_a_malformed_line_to_the_manager_is_refused_with_what_is_wrong(line: bytes, says: str) -> None:
    with pytest.raises(MalformedMessage, match="job executor channel") as refused:
        decode_for_manager(line)
    assert says in refused.value.message


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b'{"run": null}\n', "'run' that is not a string"),
        (b'{"stop": false}\n', "'stop' that is not true"),
        (b'{"finished": "/t", "code": 0}\n', "neither 'run' nor 'stop'"),
        (b"{}\n", "neither 'run' nor 'stop'"),
    ],
)
def test_a_malformed_line_to_the_executor_is_refused_with_what_is_wrong(line: bytes, says: str) -> None:
    with pytest.raises(MalformedMessage, match="job executor channel") as refused:
        decode_for_executor(line)
    assert says in refused.value.message


def test_a_malformed_message_is_an_internal_error_on_the_one_error_tree() -> None:
    with pytest.raises(MalformedMessage) as refused:
        decode_for_executor(b"{}\n")
    assert refused.value.code == "Internal"
    assert not isinstance(refused.value, KeyError)


@pytest.mark.parametrize(
    "command",
    [
        WorkerCommand(
            entry="task_executor.runner:run_task",
            parent_pid=100,
            runtime="pytorch",
            preload=("numpy", "torch"),
            warm_up="task_executor.runtimes:warm_up",
        ),
        WorkerCommand(entry="tests.entries:succeed", parent_pid=100, runtime="tensorflow"),
        WorkerCommand(entry="task_executor.runner:run_task", parent_pid=100, once=Path("/ws/tasks/t")),
        WorkerCommand(entry="task_executor.runner:run_task"),
    ],
    ids=["warm", "no-preload", "cold", "bare"],
)
def test_the_worker_parses_the_command_line_the_task_manager_writes(command: WorkerCommand) -> None:
    argv = command.argv()
    assert argv[1:3] == ["-m", "task_manager.worker.warm_worker"]
    assert WorkerCommand.parse(argv[3:]) == command
