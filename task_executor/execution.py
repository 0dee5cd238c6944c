"""Running the user's code for one task, in this process, and collecting what it committed.

:func:`execute` takes a task and the round's global weights and returns an
:class:`~task_executor.session.Outcome`; it does no network I/O, which is
what lets the examples simulate federated rounds offline with the very code
path a client runs.

Why in this process: the task manager forks the executor from a warm worker
that has already imported torch or tensorflow, so ``runpy.run_path`` here
reuses that import; a subprocess would pay it again.  The script sees what
``python script.py`` would give it: ``__name__ == "__main__"``, ``sys.argv =
[script]``, the working directory of the task entry, and the script's folder
first on ``sys.path`` (so it can import its sibling modules).  All of this is
restored afterwards, so tests and a future long-lived executor can run many
tasks in one process.

A failing script is the user's bug, not the platform's: its traceback goes to
stderr (``executor.log``) starting at the user's own frame, and the error
carries the exception line and the script line where it was raised, which is
what the task manager shows the user as the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import runpy
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from libs.weights.tensors import WeightMap
from task_executor import sdk
from task_executor.context import TaskContext
from task_executor.errors import InvalidTask, ScriptFailed
from task_executor.runtimes import runtime_named
from task_executor.session import CACHE, InitCaptured, Outcome, TaskSession, activated
from task_executor.task import TaskSpec

FUNCTION_MODULE_NAME = "__nsfl_entry__"


def job_seed(job_id: str) -> int:
    """A 32-bit seed derived from the job id: the same on every client, different per job."""
    return int.from_bytes(hashlib.sha256(job_id.encode("utf-8")).digest()[:4], "big")


def seed_everything(seed: int, runtime: str) -> None:
    """Seed Python's, numpy's and the framework's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        runtime_named(runtime).seed(seed)
    except ImportError as exc:
        raise InvalidTask(f"the job's runtime {runtime} is not installed on this client: {exc}") from None


@contextlib.contextmanager
def script_environment(spec: TaskSpec) -> Iterator[None]:
    """cwd, argv and ``sys.path`` as ``python <script>`` would set them; ``nsfl`` importable."""
    script = spec.entry.script
    saved_argv, saved_path = sys.argv, list(sys.path)
    # Left installed afterwards: a thread or a lazy import of the script may still import nsfl.
    sys.modules["nsfl"] = sdk
    try:
        # contextlib.chdir returns to the saved directory even if the script chdir'ed elsewhere.
        with contextlib.chdir(spec.entry.working_dir):
            sys.argv = [str(script)]
            sys.path.insert(0, str(script.parent))
            yield
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path


def _user_frames(tb: TracebackType | None, script: Path) -> TracebackType | None:
    """The traceback from the first frame in the user's file (the runner's frames are noise)."""
    start = tb
    while start is not None and Path(start.tb_frame.f_code.co_filename) != script:
        start = start.tb_next
    return start if start is not None else tb


def _last_user_line(tb: TracebackType | None, script: Path) -> int | None:
    line = None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename) == script:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def script_failure(exc: BaseException, script: Path) -> ScriptFailed:
    """Print the user's traceback to stderr and build the error that names its last line."""
    tb = exc.__traceback__
    traceback.print_exception(type(exc), exc, _user_frames(tb, script), file=sys.stderr)
    sys.stderr.flush()
    summary = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]
    line = _last_user_line(tb, script)
    where = f" (at {script.name}, line {line})" if line is not None else ""
    return ScriptFailed(f"the script raised {summary}{where}")


def _exit_status(exc: SystemExit) -> ScriptFailed | None:
    if exc.code in (None, 0):
        return None
    return ScriptFailed(f"the script exited with status {exc.code}")


def weights_from(value: object, session: TaskSession) -> WeightMap:
    """A function's result as a weight map: a model, or a mapping of names to numpy arrays."""
    if isinstance(value, Mapping) and all(isinstance(a, np.ndarray) for a in value.values()):
        return dict(sorted(value.items()))
    return session.runtime_of(value).weights_of(value, session.global_weights)


def _entry_function(namespace: Mapping[str, Any], name: str, script: Path) -> Callable[[TaskContext], Any]:
    function: Callable[[TaskContext], Any] | None = namespace.get(name)
    if not callable(function):
        raise ScriptFailed(
            f"{script.name} has no function {name}(ctx), which a function-mode {name} task calls"
        )
    return function


_function_modules: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}


def function_module(script: Path) -> Mapping[str, Any]:
    """The namespace of a function-mode module, loaded once per process (again if the file changes).

    Why once: function mode is the fast path of a long-lived executor, which calls ``train(ctx)``
    round after round in one process; re-running the module every round would pay its
    compilation and module code (imports, constants, model definitions) again each time.
    """
    stat = script.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _function_modules.get(script)
    if cached is not None and cached[0] == version:
        return cached[1]
    namespace = runpy.run_path(str(script), run_name=FUNCTION_MODULE_NAME)
    _function_modules[script] = (version, namespace)
    return namespace


def _run_functions(spec: TaskSpec, session: TaskSession) -> None:
    """Function mode: load the module (once), call the function the kind names, commit its results."""
    script = spec.entry.script
    namespace = function_module(script)
    function = _entry_function(namespace, spec.kind, script)
    result = function(TaskContext.for_session(session))
    if spec.kind == "init":
        session.outcome.weights = weights_from(result, session)
    elif spec.kind == "evaluate":
        # evaluate(ctx) returns metrics, or (metrics, number of samples evaluated).
        metrics, count = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
        session.commit_metrics(metrics, count)
    else:
        if not (isinstance(result, tuple) and len(result) == 3):
            raise ScriptFailed("train(ctx) must return (model_or_weights, num_samples, metrics)")
        model, num_samples, metrics = result
        weights = weights_from(model, session)
        session.commit_weight_map(weights, session.default_samples() if num_samples is None else num_samples)
        session.commit_metrics(metrics or {})


def missing_commit(spec: TaskSpec, outcome: Outcome) -> ScriptFailed | None:
    """Why ``outcome`` cannot complete the task, if it cannot."""
    functions = spec.entry.mode == "function"
    if spec.kind == "train" and outcome.weights is None:
        return ScriptFailed("the script finished without calling nsfl.commit_weights")
    if spec.kind == "evaluate" and not outcome.metrics:
        if functions:
            return ScriptFailed("evaluate(ctx) returned no metrics")
        return ScriptFailed("the script finished without calling nsfl.commit_metrics")
    if spec.kind == "init" and outcome.weights is None:
        return ScriptFailed(
            "the script finished without calling nsfl.load_weights(model), where an init task captures the model"
        )
    return None


def execute(
    spec: TaskSpec, global_weights: WeightMap | None, *, cache: dict[str, Any] | None = None
) -> Outcome:
    """Run the task's user code against ``global_weights``; what it committed, or :class:`ScriptFailed`."""
    session = TaskSession(spec, global_weights, CACHE if cache is None else cache)
    if spec.kind == "init":
        seed_everything(job_seed(spec.job_id), spec.runtime)
    failure: ScriptFailed | None = None
    with activated(session), script_environment(spec):
        try:
            if spec.entry.mode == "script":
                runpy.run_path(str(spec.entry.script), run_name="__main__")
            else:
                _run_functions(spec, session)
        except InitCaptured:
            pass
        except SystemExit as exc:
            failure = _exit_status(exc)
        except ScriptFailed:
            raise
        except Exception as exc:
            failure = script_failure(exc, spec.entry.script)
    if failure is None:
        failure = missing_commit(spec, session.outcome)
    if failure is not None:
        raise failure
    if session.outcome.num_samples is None:
        # An evaluation that did not say how many samples it used is weighed by the declared count.
        session.outcome.num_samples = spec.total_samples if spec.kind == "evaluate" else 0
    return session.outcome
