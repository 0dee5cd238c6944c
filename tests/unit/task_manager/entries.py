"""Stand-in executor entries for the task manager's tests (``executor_entry = "tests.unit.task_manager.entries:..."``).

Each is called like ``task_executor.runner.run_task``: with the task
directory, in the executor process, stdout and stderr going to
``executor.log``.  Each writes ``entered`` (the wall-clock time it started)
first, so a test can tell when user code began and measure launch latency.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def _entered(task_dir: Path) -> None:
    (task_dir / "entered").write_text(repr(time.time()))


def _parent_death_signal() -> int:
    value = ctypes.c_int(0)
    ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
    return value.value


def succeed(task_dir: Path) -> int:
    """Record what the process looks like from inside: its own session, its parent-death signal."""
    _entered(task_dir)
    facts = {
        "pid": os.getpid(),
        "sid": os.getsid(0),
        "pgid": os.getpgid(0),
        "cwd": os.getcwd(),
        "pdeathsig": _parent_death_signal(),
    }
    (task_dir / "facts.json").write_text(json.dumps(facts))
    if (task_dir / "task.json").exists():
        print(f"running {json.loads((task_dir / 'task.json').read_text())['task_id']}")
    print("hello from the executor")
    return 0


def keep_model(task_dir: Path) -> int:
    """Copy the model that came with the offer (task.json's ``model_file``) to ``seen-model``."""
    _entered(task_dir)
    task = json.loads((task_dir / "task.json").read_text())
    (task_dir / "seen-model").write_bytes((task_dir / task["model_file"]).read_bytes())
    return 0


def fail(task_dir: Path) -> int:
    _entered(task_dir)
    for line in range(1, 31):
        print(f"log line {line}")
    print("the script failed: ValueError: bad learning rate", file=sys.stderr)
    return 3


def raise_error(task_dir: Path) -> int:
    _entered(task_dir)
    raise RuntimeError("an executor bug")


def sleep_forever(task_dir: Path) -> int:
    (task_dir / "pid").write_text(str(os.getpid()))
    _entered(task_dir)
    print("sleeping forever", flush=True)
    while True:
        time.sleep(3600)


def crash_with_signal(task_dir: Path) -> int:
    _entered(task_dir)
    print("about to crash", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
    return 0


def spawn_grandchild_and_sleep(task_dir: Path) -> int:
    """Leave a process that PR_SET_PDEATHSIG does not reach: only the group kill and the pid file do."""
    grandchild = subprocess.Popen(["sleep", "600"])
    (task_dir / "pids.json").write_text(json.dumps({"executor": os.getpid(), "grandchild": grandchild.pid}))
    _entered(task_dir)
    while True:
        time.sleep(3600)


def import_torch(task_dir: Path) -> int:
    """Import torch, then mark the start of user code: the cost a round pays before training begins."""
    import torch  # noqa: F401 - the import is the point

    _entered(task_dir)
    return 0


def dispatch(task_dir: Path) -> int:
    """The entry named in ``<task_dir>/entry``: one warm worker can then play every part."""
    function = globals()[(task_dir / "entry").read_text().strip()]
    return int(function(task_dir))


def by_round(task_dir: Path) -> int:
    """Do what the task's ``parameters.actions`` says for its round (``crash``, ``sleep``, ``fail``, ``pause``),
    else succeed; every run first appends its pid and round to ``<parameters.log>``."""
    task = json.loads((task_dir / "task.json").read_text())
    parameters = task["parameters"]
    with open(parameters["log"], "a") as log:
        log.write(json.dumps({"job": task["job_id"], "round": task["round"], "pid": os.getpid()}) + "\n")
    action = parameters.get("actions", {}).get(str(task["round"]), "succeed")
    if action == "crash":
        return crash_with_signal(task_dir)
    if action == "sleep":
        return sleep_forever(task_dir)
    if action == "fail":
        return fail(task_dir)
    if action == "pause":
        time.sleep(0.5)
    return succeed(task_dir)


def record_wire_environment(task_dir: Path) -> int:
    """Write the ``NSFL_EXECUTOR_*`` variables the executor was given to ``wire.json``."""
    _entered(task_dir)
    wire = {k: v for k, v in os.environ.items() if k.startswith("NSFL_EXECUTOR_")}
    (task_dir / "wire.json").write_text(json.dumps(wire))
    return 0


def environment(task_dir: Path) -> int:
    """Record the environment the executor sees (os.environ and its process's initial block)."""
    _entered(task_dir)
    initial = Path("/proc/self/environ").read_bytes().split(b"\0")
    facts = {"environ": dict(os.environ), "initial": [v.decode(errors="replace") for v in initial if v]}
    (task_dir / "environment.json").write_text(json.dumps(facts))
    return 0


def allocate(task_dir: Path) -> int:
    """Allocate ``<task_dir>/megabytes`` MiB at once (a MemoryError past the memory limit)."""
    _entered(task_dir)
    block = bytearray(int((task_dir / "megabytes").read_text()) * 1024 * 1024)
    return 0 if block else 1


def burn_cpu(task_dir: Path) -> int:
    """Spin until killed (SIGXCPU past the CPU time limit)."""
    _entered(task_dir)
    while True:
        pass


def write_big_file(task_dir: Path) -> int:
    """Write 64 MiB to one file (SIGXFSZ past the file size limit)."""
    _entered(task_dir)
    with open(task_dir / "big.bin", "wb") as big:
        for _ in range(64):
            big.write(b"\0" * 1024 * 1024)
    return 0


def allocate_4_gib(task_dir: Path) -> int:
    """Allocate 4 GiB at once: four times a 1 GiB memory limit."""
    _entered(task_dir)
    block = bytearray(4 * 1024 * 1024 * 1024)
    return 0 if block else 1


def _attempt(action: Callable[[], object]) -> str:
    try:
        action()
    except (OSError, MemoryError) as exc:
        return f"refused: {type(exc).__name__}: {exc}"
    return "succeeded"


def _fork_many(count: int) -> None:
    children = []
    try:
        for _ in range(count):
            pid = os.fork()
            if pid == 0:
                time.sleep(10)
                os._exit(0)
            children.append(pid)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def hostile_or_victim(task_dir: Path) -> int:
    """A job's code as a hostile author would write it (``parameters.role`` "hostile"): try each
    attack named in the parameters and record in ``attempts.json`` how each ended.  A "victim" waits
    for ``go`` in its folder, then succeeds."""
    _entered(task_dir)
    task = json.loads((task_dir / "task.json").read_text())
    parameters = task["parameters"]
    if parameters["role"] == "victim":
        while not (task_dir / "go").exists():
            time.sleep(0.05)
        return 0
    attempts = {name: _attempt(Path(path).read_bytes) for name, path in parameters["read"].items()}
    attempts["write outside its folder"] = _attempt(lambda: Path(parameters["outside"]).write_text("pwned"))
    attempts["read the daemon's variable"] = (
        "succeeded" if parameters["variable"] in os.environ else "refused: not in its environment"
    )
    attempts["connect to another local port"] = _attempt(
        lambda: socket.create_connection(("127.0.0.1", parameters["other_port"]), timeout=2).close()
    )
    attempts["fork many processes"] = _attempt(lambda: _fork_many(parameters["forks"]))
    attempts["allocate 4x its memory"] = _attempt(lambda: bytearray(parameters["allocate_mb"] * 1024 * 1024))
    (task_dir / "attempts.json").write_text(json.dumps(attempts, indent=2))
    return 0
